// `kvshard bench --url URL`: the serving benchmark. Requests arrive as a Poisson process at
// --rate per second (inf: all at once) against a running OpenAI-compatible server, each
// streamed; it reports what vLLM's serving benchmark reports — throughput, TTFT, TPOT and
// inter-token latency percentiles — as a table and, with --result-json, as JSON.
#pragma once

#include "absl/status/status.h"

namespace kvs {

absl::Status ServingBenchmark();

}  // namespace kvs
