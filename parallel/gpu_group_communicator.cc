#include "parallel/gpu_group_communicator.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/common/half_convert.h"
#include "kernels/common/status_macros.h"

namespace kvs {
namespace {

// Where a rank's GPU is: its node and PCI bus id (fixed-size, to gather over MPI).
struct GpuPlace {
  char host[64] = {};
  char bus[32] = {};
};

absl::StatusOr<GpuPlace> ThisPlace() {
  GpuPlace p;
  gethostname(p.host, sizeof(p.host) - 1);
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetPCIBusId(p.bus, sizeof(p.bus) - 1, device) != cudaSuccess) {
    return absl::InternalError("cannot read this rank's GPU's PCI bus id");
  }
  return p;
}

// What the group's GPUs are to each other: all on one node, two ranks on one GPU (NCCL refuses
// that), every pair on one node with peer access (agreed by every rank: collective).
struct GroupGpus {
  bool one_node = true, shared_gpu = false, all_accessible = true;
};
absl::StatusOr<GroupGpus> SurveyGroupGpus(MpiCommunicator& c) {
  KVS_ASSIGN_OR_RETURN(const GpuPlace mine, ThisPlace());
  std::vector<GpuPlace> places(c.size());
  KVS_RETURN_IF_ERROR(c.AllGather(&mine, places.data(), sizeof(GpuPlace)));
  GroupGpus g;
  bool accessible = true;
  int device = 0;
  cudaGetDevice(&device);
  auto same = [](const char* a, const char* b) { return std::strcmp(a, b) == 0; };
  for (int r = 0; r < c.size(); ++r) {
    g.one_node = g.one_node && same(places[r].host, mine.host);
    for (int s = 0; s < r; ++s) {
      g.shared_gpu = g.shared_gpu || (same(places[r].host, places[s].host) && same(places[r].bus, places[s].bus));
    }
    if (r == c.rank() || !same(places[r].host, mine.host) || same(places[r].bus, mine.bus)) continue;
    int peer = -1, can = 0;
    accessible = accessible && cudaDeviceGetByPCIBusId(&peer, places[r].bus) == cudaSuccess &&
                 cudaDeviceCanAccessPeer(&can, device, peer) == cudaSuccess && can == 1;
  }
  cudaGetLastError();  // a peer this process cannot see is an answer, not a sticky error
  KVS_ASSIGN_OR_RETURN(const int64_t all_accessible, c.AllReduceMin(accessible ? 1 : 0));
  g.all_accessible = all_accessible == 1;
  return g;
}

// The peer-memory collectives, kept only if every rank could map them (collective); null with
// `problem` saying why otherwise.
absl::StatusOr<std::unique_ptr<PeerAllReduce>> PeerOnEveryRank(MpiCommunicator& c, std::chrono::milliseconds timeout,
                                                                std::string& problem) {
  auto peer = PeerAllReduce::Create(c, timeout);
  if (!peer.ok()) problem = std::string(peer.status().message());
  KVS_ASSIGN_OR_RETURN(const int64_t all_have, c.AllReduceMin(peer.ok() ? 1 : 0));
  if (all_have == 0) {
    if (problem.empty()) problem = "another rank could not map the peer buffers";
    return nullptr;
  }
  return std::move(*peer);
}

// Mean microseconds of `iters` calls of `fn` on `stream` after two warm-ups (collective: every
// rank times the same calls). Negative when a call fails.
template <typename Fn>
double TimeCalls(cudaStream_t stream, int iters, Fn&& fn) {
  for (int i = 0; i < 2; ++i) {
    if (!fn().ok()) return -1.0;
  }
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start, stream);
  bool ok = true;
  for (int i = 0; i < iters; ++i) ok = ok && fn().ok();
  cudaEventRecord(stop, stream);
  cudaEventSynchronize(stop);
  float ms = 0.0f;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ok ? 1e3 * ms / iters : -1.0;
}

// Whether the peer path's sum of `tokens x hidden` random bf16 values equals NCCL's on this rank.
absl::StatusOr<bool> PeerAgreesWithNccl(NcclCommunicator& nccl, PeerAllReduce& peer, cudaStream_t stream, int rank,
                                        int ranks, int64_t hidden) {
  const int64_t n = 8 * hidden + 5;
  std::vector<uint16_t> host(n);
  uint32_t state = 2654435761u * static_cast<uint32_t>(rank + 1);
  for (auto& h : host) {
    state = state * 1664525u + 1013904223u;
    h = FloatToBf16Bits(static_cast<float>(static_cast<int32_t>(state >> 8) % 2000 - 1000) / 256.0f);
  }
  void* buffers = nullptr;
  if (cudaMalloc(&buffers, 2 * n * 2) != cudaSuccess) return absl::ResourceExhaustedError("all-reduce check buffers");
  char* a = static_cast<char*>(buffers);
  char* b = a + n * 2;
  cudaMemcpy(a, host.data(), n * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(b, host.data(), n * 2, cudaMemcpyHostToDevice);
  absl::Status st = nccl.AllReduceSum(TensorView::Contiguous(a, DType::kBF16, 1, n));
  if (st.ok()) st = peer.AllReduceSum(TensorView::Contiguous(b, DType::kBF16, 1, n), stream);
  std::vector<uint16_t> ga(n), gb(n);
  if (st.ok() && cudaStreamSynchronize(stream) == cudaSuccess) {
    cudaMemcpy(ga.data(), a, n * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(gb.data(), b, n * 2, cudaMemcpyDeviceToHost);
  }
  cudaFree(buffers);
  KVS_RETURN_IF_ERROR(st);
  KVS_RETURN_IF_ERROR(peer.CheckError());
  for (int64_t i = 0; i < n; ++i) {
    const float x = Bf16BitsToFloat(ga[i]), y = Bf16BitsToFloat(gb[i]);
    const bool same = ranks == 2 ? ga[i] == gb[i] : std::fabs(x - y) <= std::ldexp(std::fabs(x), -6) + 1e-2f;
    if (!same) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GpuGroupCommunicator>> GpuGroupCommunicator::Create(
    std::unique_ptr<MpiCommunicator> control, Backend& backend, AllReduceMode mode, std::chrono::milliseconds timeout,
    int64_t hidden) {
  std::unique_ptr<GpuGroupCommunicator> g(new GpuGroupCommunicator());
  if (StreamOf(backend) == nullptr)
    return absl::InvalidArgumentError("the GPU group communicator needs a CUDA backend");
  g->stream_ = StreamOf(backend);
  MpiCommunicator& c = *control;
  g->control_ = std::move(control);
  const int ranks = c.size(), rank = c.rank();

  KVS_ASSIGN_OR_RETURN(const GroupGpus gpus, SurveyGroupGpus(c));
  std::string problem = PeerAllReduceProblem(ranks, gpus.one_node, gpus.all_accessible);

  // NCCL where it runs (not with two ranks on one GPU); the peer path where it can and may be used.
  if (!gpus.shared_gpu) {
    KVS_ASSIGN_OR_RETURN(g->nccl_, NcclCommunicator::Create(c, backend));
  }
  if (problem.empty() && mode != AllReduceMode::kNccl) {
    KVS_ASSIGN_OR_RETURN(g->peer_, PeerOnEveryRank(c, timeout, problem));
  }

  // Where both can run and the choice is not forced: first the peer path must give NCCL's sums on
  // random data (bit for bit with two ranks, where both add a + b; within bf16 rounding of the
  // different order otherwise), then both are timed.
  std::vector<AllReduceTiming> timings;
  if (mode == AllReduceMode::kAuto && g->nccl_ != nullptr && g->peer_ != nullptr) {
    // A check that fails (a peer wait timed out, a launch error) counts as disagreement on this
    // rank, so that every rank still reaches the vote below.
    const absl::StatusOr<bool> agree = PeerAgreesWithNccl(*g->nccl_, *g->peer_, StreamOf(backend), rank, ranks, hidden);
    if (!agree.ok()) std::fprintf(stderr, "[kvshard] rank %d: peer all-reduce check failed: %s\n", rank,
                                  std::string(agree.status().message()).c_str());
    KVS_ASSIGN_OR_RETURN(const int64_t all_agree, c.AllReduceMin(agree.ok() && *agree ? 1 : 0));
    if (all_agree == 0) {
      g->peer_.reset();
      problem = "the peer-memory all-reduce disagreed with NCCL on a start-up check (a bug: please report it)";
    }
  }
  if (mode == AllReduceMode::kAuto && g->nccl_ != nullptr && g->peer_ != nullptr) {
    const int64_t widest = hidden * 512;
    void* buffer = nullptr;
    if (cudaMalloc(&buffer, widest * 2) != cudaSuccess) return absl::ResourceExhaustedError("all-reduce timing buffer");
    cudaMemsetAsync(buffer, 0, widest * 2, StreamOf(backend));
    for (int64_t tokens : {1, 8, 32, 128, 512}) {
      const TensorView x = TensorView::Contiguous(buffer, DType::kBF16, tokens, hidden);
      AllReduceTiming t;
      t.bytes = static_cast<size_t>(tokens * hidden * 2);
      t.nccl_us = TimeCalls(StreamOf(backend), 20, [&] { return g->nccl_->AllReduceSum(x); });
      t.custom_us = TimeCalls(StreamOf(backend), 20, [&] { return g->peer_->AllReduceSum(x, StreamOf(backend)); });
      timings.push_back(t);
    }
    cudaFree(buffer);
  }
  KVS_ASSIGN_OR_RETURN(g->choice_, ChooseAllReduce(mode, problem, g->nccl_ != nullptr, timings));
  // Rank 0's cut-over for everyone: timings differ a little between ranks, calls must not.
  std::vector<int32_t> words = {static_cast<int32_t>(g->choice_.custom_below & 0xFFFFFFFFu),
                                static_cast<int32_t>(static_cast<uint64_t>(g->choice_.custom_below) >> 32)};
  KVS_RETURN_IF_ERROR(c.Broadcast(words));
  g->choice_.custom_below = static_cast<uint32_t>(words[0]) | (static_cast<uint64_t>(static_cast<uint32_t>(words[1])) << 32);
  if (g->choice_.custom_below > 0 && g->peer_ == nullptr) {
    return absl::InternalError("rank 0 chose the peer-memory all-reduce, which this rank does not have");
  }
  if (rank == 0) std::fprintf(stderr, "[kvshard] tensor-parallel all-reduce: %s\n", g->choice_.reason.c_str());
  return g;
}

absl::StatusOr<std::vector<AllReduceTiming>> GpuGroupCommunicator::TimeAllReduces(MpiCommunicator& control,
                                                                                  Backend& backend,
                                                                                  const std::vector<size_t>& bytes,
                                                                                  int iters,
                                                                                  std::chrono::milliseconds timeout) {
  KVS_ASSIGN_OR_RETURN(const GroupGpus gpus, SurveyGroupGpus(control));
  std::unique_ptr<NcclCommunicator> nccl;
  if (!gpus.shared_gpu) {
    KVS_ASSIGN_OR_RETURN(nccl, NcclCommunicator::Create(control, backend));
  }
  std::string problem;
  KVS_ASSIGN_OR_RETURN(std::unique_ptr<PeerAllReduce> peer, PeerOnEveryRank(control, timeout, problem));
  if (nccl == nullptr && peer == nullptr) return absl::FailedPreconditionError(problem);
  size_t widest = 0;
  for (size_t b : bytes) widest = std::max(widest, b);
  void* buffer = nullptr;
  if (cudaMalloc(&buffer, std::max<size_t>(widest, 2)) != cudaSuccess) {
    return absl::ResourceExhaustedError("all-reduce benchmark buffer");
  }
  cudaMemset(buffer, 0, widest);
  std::vector<AllReduceTiming> out;
  for (size_t b : bytes) {
    const TensorView x = TensorView::Contiguous(buffer, DType::kBF16, 1, static_cast<int64_t>(b / 2));
    AllReduceTiming t;
    t.bytes = b / 2 * 2;
    if (nccl != nullptr) t.nccl_us = TimeCalls(StreamOf(backend), iters, [&] { return nccl->AllReduceSum(x); });
    if (peer != nullptr) {
      t.custom_us = TimeCalls(StreamOf(backend), iters, [&] { return peer->AllReduceSum(x, StreamOf(backend)); });
    }
    out.push_back(t);
  }
  cudaFree(buffer);
  return out;
}

const char* GpuGroupCommunicator::transport() const {
  if (peer_ != nullptr && choice_.custom_below > 0) return nccl_ != nullptr ? "nccl+peer" : "peer";
  return "nccl";
}

absl::Status GpuGroupCommunicator::AllReduceSum(TensorView x) {
  const size_t bytes = static_cast<size_t>(x.NumElements()) * DTypeSize(x.dtype);
  if (peer_ != nullptr && bytes < choice_.custom_below) return peer_->AllReduceSum(x, stream_);
  return nccl_->AllReduceSum(x);
}

absl::StatusOr<bool> GpuGroupCommunicator::AllReduceAddRmsNorm(TensorView x, TensorView residual, TensorView weight,
                                                              float eps, TensorView out) {
  // Fused where the peer path carries this message (the measured choice) and takes the shapes.
  const size_t bytes = static_cast<size_t>(x.NumElements()) * DTypeSize(x.dtype);
  if (peer_ == nullptr || bytes >= choice_.custom_below || !PeerAllReduce::FusesNorm(x, residual, weight, out)) {
    return false;
  }
  KVS_RETURN_IF_ERROR(peer_->AllReduceAddRmsNorm(x, residual, weight, eps, out, stream_));
  return true;
}

absl::Status GpuGroupCommunicator::AllGather(const void* send, void* recv, size_t bytes) {
  if (nccl_ != nullptr) return nccl_->AllGather(send, recv, bytes);
  return peer_->AllGather(send, recv, bytes, stream_);
}

}  // namespace kvs
