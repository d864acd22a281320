#include "parallel/step_wire.h"

#include "absl/strings/str_format.h"

namespace kvs {
namespace {

constexpr size_t kHeaderWords = 11;

void Append(std::vector<int32_t>& words, const std::vector<int32_t>& v) {
  words.insert(words.end(), v.begin(), v.end());
}

}  // namespace

void EncodeStep(const StepInput& in, bool greedy_only, std::vector<int32_t>& words) {
  words.clear();
  words.push_back(static_cast<int32_t>(StepCommand::kRun));
  words.push_back(greedy_only ? 1 : 0);
  words.push_back(in.max_blocks_per_seq);
  words.push_back(in.num_tokens());
  words.push_back(in.num_seqs());
  words.push_back(static_cast<int32_t>(in.logit_rows.size()));
  words.push_back(static_cast<int32_t>(in.swap_out.size()));
  words.push_back(static_cast<int32_t>(in.swap_in.size()));
  words.push_back(static_cast<int32_t>(in.copy_blocks.size()));
  words.push_back(in.num_kv_groups);
  words.push_back(static_cast<int32_t>(in.residual.size()));
  Append(words, in.token_ids);
  Append(words, in.positions);
  Append(words, in.slot_mapping);
  Append(words, in.query_start);
  Append(words, in.context_len);
  Append(words, in.block_table);
  Append(words, in.logit_rows);
  Append(words, in.swap_out);
  Append(words, in.swap_in);
  Append(words, in.copy_blocks);
  Append(words, in.residual);
  Append(words, in.sealed);
  Append(words, in.sink);
}

void EncodeStop(std::vector<int32_t>& words) {
  words.assign(kHeaderWords, 0);
  words[0] = static_cast<int32_t>(StepCommand::kStop);
}

absl::StatusOr<StepCommand> DecodeStep(std::span<const int32_t> words, StepInput& in, bool& greedy_only) {
  if (words.size() < kHeaderWords) return absl::DataLossError("step message shorter than its header");
  const auto command = static_cast<StepCommand>(words[0]);
  if (command == StepCommand::kStop) return command;
  if (command != StepCommand::kRun) return absl::DataLossError(absl::StrFormat("unknown step command %d", words[0]));
  greedy_only = words[1] != 0;
  const int64_t blocks_per_seq = words[2], t = words[3], s = words[4], rows = words[5], outs = words[6], ins = words[7],
                copies = words[8], groups = words[9], residuals = words[10];
  if (blocks_per_seq < 0 || t < 0 || s < 0 || rows < 0 || outs < 0 || ins < 0 || copies < 0) {
    return absl::DataLossError("negative size in step message");
  }
  if (groups < 1 || groups > 4096)
    return absl::DataLossError(absl::StrFormat("step message names %d KV groups", groups));
  if (residuals != 0 && residuals != s)
    return absl::DataLossError("step message has residuals for some sequences only");
  const int64_t expected = static_cast<int64_t>(kHeaderWords) + (2 + groups) * t + (s + 1) + s +
                           groups * s * blocks_per_seq + rows + outs + ins + copies + 3 * residuals;
  if (static_cast<int64_t>(words.size()) != expected) {
    return absl::DataLossError(
        absl::StrFormat("step message has %d words, its header implies %d", words.size(), expected));
  }
  size_t at = kHeaderWords;
  auto take = [&](std::vector<int32_t>& v, int64_t n) {
    v.assign(words.begin() + at, words.begin() + at + n);
    at += n;
  };
  in.max_blocks_per_seq = static_cast<int32_t>(blocks_per_seq);
  in.num_kv_groups = static_cast<int32_t>(groups);
  take(in.token_ids, t);
  take(in.positions, t);
  take(in.slot_mapping, groups * t);
  take(in.query_start, s + 1);
  take(in.context_len, s);
  take(in.block_table, groups * s * blocks_per_seq);
  take(in.logit_rows, rows);
  take(in.swap_out, outs);
  take(in.swap_in, ins);
  take(in.copy_blocks, copies);
  take(in.residual, residuals);
  take(in.sealed, residuals);
  take(in.sink, residuals);
  return command;
}

}  // namespace kvs
