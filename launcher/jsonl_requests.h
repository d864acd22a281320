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
// Every line is validated before any work starts; an error names the file and line.
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
};

// Parses `path`; `defaults` are the CLI's sampling flags, overridden per line.
absl::StatusOr<std::vector<BatchItem>> ReadBatchFile(const std::string& path, const SamplingParams& defaults);

}  // namespace kvs
