#include "runtime/sched/preemption.h"

#include "absl/strings/str_format.h"

namespace kvs {

absl::StatusOr<PreemptionMode> ParsePreemptionMode(const std::string& s) {
  if (s == "auto") return PreemptionMode::kAuto;
  if (s == "swap") return PreemptionMode::kSwap;
  if (s == "recompute") return PreemptionMode::kRecompute;
  return absl::InvalidArgumentError(absl::StrFormat("--preemption-mode '%s' is unknown (auto, swap, recompute)", s));
}

const char* PreemptionModeName(PreemptionMode m) {
  switch (m) {
    case PreemptionMode::kAuto: return "auto";
    case PreemptionMode::kSwap: return "swap";
    case PreemptionMode::kRecompute: return "recompute";
  }
  return "?";
}

}  // namespace kvs
