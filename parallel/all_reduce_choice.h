// Which all-reduce a tensor-parallel group of GPUs uses, and why: NCCL, or kvshard's peer-memory
// all-reduce (parallel/peer_all_reduce.h), chosen per message size by timing both at start-up,
// forced by --all-reduce, and never silently: every fallback carries its reason for the log.
// Pure logic with no CUDA, so the rules are unit-tested on any machine.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kvs {

enum class AllReduceMode { kAuto, kNccl, kCustom };

// "auto", "nccl" or "custom"; anything else is an error naming the flag.
absl::StatusOr<AllReduceMode> ParseAllReduceMode(std::string_view s);

// Why the peer-memory path cannot run for this group, or "" when it can: more ranks than it
// takes, ranks on other nodes, or a pair of GPUs without peer access (the same GPU counts as
// accessible: CUDA IPC works between processes on one device).
inline constexpr int kMaxPeerRanks = 8;
std::string PeerAllReduceProblem(int ranks, bool one_node, bool all_peers_accessible);

// One message size timed both ways (microseconds per call; nccl_us < 0: NCCL is not available,
// as with two ranks on one GPU, which NCCL refuses).
struct AllReduceTiming {
  size_t bytes = 0;
  double nccl_us = -1.0;
  double custom_us = -1.0;
};

// The decision: messages of fewer than `custom_below` bytes take the peer-memory path (0: none
// do; SIZE_MAX: all do), with the sentence the start-up log prints.
struct AllReduceChoice {
  size_t custom_below = 0;
  std::string reason;
};

// auto: the peer-memory path up to the largest timed size where it beat NCCL, and only while it
// kept beating it at every smaller size (a single crossing, as measured on NVLink); everything
// when NCCL is unavailable. nccl: never. custom: always (an error if `problem` is set, or if
// NCCL is missing and the peer path cannot run, there being no path at all).
absl::StatusOr<AllReduceChoice> ChooseAllReduce(AllReduceMode mode, const std::string& problem, bool nccl_available,
                                                std::span<const AllReduceTiming> timings);

}  // namespace kvs
