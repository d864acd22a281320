// The offline batch format (`kvshard generate --input in.jsonl --output out.jsonl`).
// Input: one JSON object per line:
//   {"id": "a", "prompt": "text"}                 plain completion
//   {"id": "b", "messages": [{"role": "user", "content": "hi"}]}   chat (template applied)
//   {"id": "c", "prompt_ids": [1, 2, 3]}         pre-tokenized (no tokenizer needed)
//   optional per line: max_tokens, temperature, top_p, top_k, seed, stop (string or list),
//   n (samples of the prompt; sample i seeds its generator with seed + i), priority (higher first)
// Output: one line per request, in input order:
//   {"id", "text", "finish_reason", "prompt_tokens", "output_tokens", "output_ids", "metrics"}
//   (sample 0's), plus "choices": [{"index", "text", "finish_reason", "output_ids"}, ...] when n > 1
// Every line is validated before any work starts; an error names the file and line. In strict
// mode the first bad line fails the whole file; otherwise a bad line becomes an item carrying its
// error (answered with an error record) and every good line still runs.
// A line without an id gets its position among the file's non-blank lines ("0", "1", ...), so
// ids do not shift when another line is bad.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/chat_template.h"
#include "runtime/sched/request.h"

namespace kvs {

struct BatchItem {
  std::string id;
  std::optional<std::string> prompt;
  std::vector<ChatMessage> messages;  // used when prompt is absent
  std::vector<int32_t> prompt_ids;    // pre-tokenized; used when non-empty
  SamplingParams params;
  int32_t priority = 0;
  int32_t line = 0;   // 1-based line number in the input file
  std::string error;  // non-empty: the line is invalid and nothing else here is meaningful
};

// Parses `path`; `defaults` are the CLI's sampling flags, overridden per line.
absl::StatusOr<std::vector<BatchItem>> ReadBatchFile(const std::string& path, const SamplingParams& defaults,
                                                     bool strict = true);

}  // namespace kvs
