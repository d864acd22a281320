#include "parallel/all_reduce_choice.h"

#include <cstdint>

#include "absl/strings/str_format.h"

namespace kvs {

absl::StatusOr<AllReduceMode> ParseAllReduceMode(std::string_view s) {
  if (s == "auto") return AllReduceMode::kAuto;
  if (s == "nccl") return AllReduceMode::kNccl;
  if (s == "custom") return AllReduceMode::kCustom;
  return absl::InvalidArgumentError(absl::StrFormat("--all-reduce must be auto, nccl or custom, not '%s'", s));
}

std::string PeerAllReduceProblem(int ranks, bool one_node, bool all_peers_accessible) {
  if (ranks > kMaxPeerRanks) {
    return absl::StrFormat("%d ranks in the group (the peer-memory all-reduce takes up to %d)", ranks, kMaxPeerRanks);
  }
  if (!one_node) return "the group spans nodes (peer memory reaches only GPUs of one node)";
  if (!all_peers_accessible) return "a pair of the group's GPUs has no peer access (cudaDeviceCanAccessPeer)";
  return "";
}

absl::StatusOr<AllReduceChoice> ChooseAllReduce(AllReduceMode mode, const std::string& problem, bool nccl_available,
                                                std::span<const AllReduceTiming> timings) {
  AllReduceChoice c;
  switch (mode) {
    case AllReduceMode::kNccl:
      if (!nccl_available) {
        return absl::FailedPreconditionError(
            "--all-reduce nccl: NCCL is not available to this group (two ranks on one GPU, which NCCL refuses?); use "
            "--all-reduce custom or auto");
      }
      c.reason = "NCCL for every size (--all-reduce nccl)";
      return c;
    case AllReduceMode::kCustom:
      if (!problem.empty()) return absl::FailedPreconditionError("--all-reduce custom: " + problem);
      c.custom_below = SIZE_MAX;
      c.reason = "the peer-memory all-reduce for every size (--all-reduce custom)";
      return c;
    case AllReduceMode::kAuto:
      break;
  }
  if (!problem.empty()) {
    if (!nccl_available) {
      return absl::FailedPreconditionError("no all-reduce for this group: NCCL is not available and " + problem);
    }
    c.reason = "NCCL for every size: " + problem;
    return c;
  }
  if (!nccl_available) {
    c.custom_below = SIZE_MAX;
    c.reason = "the peer-memory all-reduce for every size: NCCL is not available to this group";
    return c;
  }
  // Sizes in increasing order; the cut-over is the first size where NCCL is at least as fast
  // (sizes below the smallest timed one go the way it went).
  std::string detail;
  for (size_t i = 0; i < timings.size(); ++i) {
    if (i > 0 && timings[i].bytes < timings[i - 1].bytes) {
      return absl::InvalidArgumentError("all-reduce timings must be in increasing size order");
    }
    detail += absl::StrFormat(" %d B: %.1f vs %.1f us;", timings[i].bytes, timings[i].custom_us, timings[i].nccl_us);
  }
  for (size_t i = 0; i < timings.size(); ++i) {
    const AllReduceTiming& t = timings[i];
    if (!(t.custom_us >= 0 && t.custom_us < t.nccl_us)) {
      c.custom_below = i == 0 ? 0 : t.bytes;
      c.reason = i == 0 ? absl::StrFormat("NCCL for every size: the peer-memory all-reduce was not faster (custom vs NCCL:%s)", detail)
                        : absl::StrFormat("the peer-memory all-reduce below %d bytes, NCCL from there (custom vs NCCL:%s)",
                                          t.bytes, detail);
      return c;
    }
  }
  c.custom_below = timings.empty() ? 0 : SIZE_MAX;
  c.reason = timings.empty() ? "NCCL for every size: nothing was timed"
                             : absl::StrFormat("the peer-memory all-reduce for every size (custom vs NCCL:%s)", detail);
  return c;
}

}  // namespace kvs
