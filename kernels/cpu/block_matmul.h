// The fast CPU matmul: weights stay in their GGML blocks (a 98 MB Q4_1 file takes 98 MB, not
// 513 MiB of float32) and every dot product is an integer one, as llama.cpp's CPU backend does.
//
// Per step, each token's activations are quantized to int8 in blocks of 32 (scale = max|x| / 127,
// round to nearest); per output row, the weight row's blocks are unpacked to int8 with a float
// scale (and offset) per 16 weights (UnpackerFor: the reference decoder's own values) and
// dotted with every token: 32 products summed in int32 at a time, then scaled in float32. Rows of
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K are read straight from their blocks, each block
// decoded once for up to 4 tokens (the other types: Q2_K, Q3_K, Q8_K, IQ4_NL, IQ4_XS, go through the
// unpacker). AVX2, AVX-VNNI and AVX-512 VNNI kernels are chosen at run time by what the CPU has; a
// portable loop runs elsewhere. The activations' rounding is the only difference from the float32 reference
// (which stays selectable: CpuBackend's CpuMath::kReference): about 0.4% of each block's largest
// value, well inside what the tests allow (tests/kernels/cpu/block_matmul_test.cc).
#pragma once

#include <cstdint>
#include <string>

#include "kernels/common/ggml_types.h"

namespace kvs::cpu {

// Whether MatMulBlocks takes weights of `type`: every GGML block type the decoder knows.
bool BlockMatMulSupports(GgmlType type);

// out[t * out_stride + j] = x[t] . w[j] (+ bias[j]) for t < rows, j < n. w: n rows of
// k / block_elems blocks each, `row_bytes` apart; k a multiple of the block; bias may be null.
void MatMulBlocks(GgmlType type, const float* x, int64_t x_stride, const uint8_t* w, int64_t row_bytes,
                  const float* bias, int64_t rows, int64_t k, int64_t n, float* out, int64_t out_stride);

// The dot-product kernels in use: "avx-vnni", "avx512-vnni" (the same VNNI instruction in its
// AVX-512 encoding, for CPUs without AVX-VNNI), "avx2" (those types fused as above, the other types
// unpacked per row) or "portable" (every type unpacked), for logs.
std::string BlockDotKernelName();
// Uses the kernels named `name` if this CPU runs them (tests compare each with the reference,
// benchmarks each with the others); false otherwise.
bool SetBlockDotKernel(const std::string& name);

}  // namespace kvs::cpu
