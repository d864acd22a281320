// The device side of the peer-memory collectives (peer_all_reduce.h): every rank of a group maps
// every other rank's buffer (CUDA IPC) and the kernels read and write them directly.
//
// Synchronisation is by flags in peer memory, never by the host, so the kernels can be captured
// in CUDA graphs: a barrier is each block announcing an epoch to every rank's flags
// (st.release.sys) and waiting until every block of every rank has announced it there
// (ld.acquire.sys). The epochs live in device memory and advance inside the kernels, so a
// replayed graph keeps counting. A wait longer than the timeout records the rank it waited for
// in host-mapped memory and gives up, so a dead peer is an error naming it, not a hang.
//
// Sums run in rank order 0, 1, ... on every rank (in f32 for bf16), so every rank gets
// bit-identical results.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace kvs::peer {

inline constexpr int kMaxRanks = 8;
// Blocks of every collective launch: always the same number, since each block keeps its own
// epoch and waits for every other block's; few enough to be resident beside anything.
inline constexpr int kBlocks = 24;
inline constexpr int kThreads = 512;
// Bytes of a rank's flag area ([kBlocks][kMaxRanks] epochs, padded).
inline constexpr size_t kFlagBytes = 4096;

// Every rank's areas, as this rank maps them.
struct Peers {
  uint32_t* flags[kMaxRanks];  // [kBlocks][kMaxRanks]: the epoch block b of rank s announced here
  char* data[kMaxRanks];       // inputs, staged
  char* result[kMaxRanks];     // two-shot: each rank's reduced slice
  int rank = 0, ranks = 1;
};

struct Control {
  uint32_t* epochs = nullptr;  // this rank's, [kBlocks], device memory
  int32_t* error = nullptr;    // host-mapped: -1, or the rank a wait timed out on
  uint64_t timeout_ns = 0;
};

// x[0, n) (bf16 when bf16, else f32; in device memory) = the sum over the group of every rank's
// x, n * element size <= the staging area. two_shot: reduce-scatter + all-gather (each rank sums
// 1/ranks of the elements) instead of every rank summing all of them.
cudaError_t LaunchPeerAllReduce(void* x, int64_t n, bool bf16, bool two_shot, const Peers& peers, const Control& c,
                                cudaStream_t stream);
// The row-parallel output's all-reduce fused with the residual add and the next RMSNorm (one-shot,
// bf16): s = bf16(sum over ranks of x, in rank order, f32) — the value the plain all-reduce
// leaves in x —, residual += s, out = bf16(residual / rms(residual) * w), row by row. x [rows,
// cols] contiguous, cols a multiple of 8, rows * cols * 2 bytes <= the one-shot limit; residual f32
// and out bf16 with 16-byte-aligned rows. Every rank computes every row, identically.
cudaError_t LaunchPeerAllReduceAddRmsNorm(const void* x, int64_t rows, int64_t cols, float* residual,
                                          int64_t residual_stride, const void* w, float eps, void* out,
                                          int64_t out_stride, const Peers& peers, const Control& c,
                                          cudaStream_t stream);
// recv[r * recv_stride, r * recv_stride + bytes) = rank r's send[0, bytes), bytes <= the staging
// area (a larger gather is several calls, recv offset and the stride kept).
cudaError_t LaunchPeerAllGather(const void* send, void* recv, size_t bytes, size_t recv_stride, const Peers& peers,
                                const Control& c, cudaStream_t stream);

}  // namespace kvs::peer
