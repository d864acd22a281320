// The fast CPU matmul: weights stay in their GGML blocks (a 98 MB Q4_1 file takes 98 MB, not
// 513 MiB of float32) and every dot product is an integer one, as llama.cpp's CPU backend does.
//
// Per step, each token's activations are quantized to int8 in blocks of 32 (scale = max|x| / 127,
// round to nearest). Rows of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K are read straight
// from their blocks in tiles of 4 rows x 4 tokens (x 2 tokens with 16 vector registers): each
// 32-weight unit decoded once for the tile's tokens, each token's activations loaded once for its
// rows, 32 products summed exactly in int32, then scaled in float32, the types' offsets (Q4_0's
// -8, a K-quant's min) against per-block activation sums. The other types (Q2_K, Q3_K, Q8_K, IQ4_NL,
// IQ4_XS) are unpacked per row to int8 with a float scale (and offset) per 16 weights (UnpackerFor:
// the reference decoder's own values) and dotted with every token. A prefill (a few tiles of
// tokens or more) decodes its rows once for all its token tiles, in groups of 16 rows (AVX-512) or
// 8 whose bytes are interleaved so that one instruction adds 4 products to each row of the group.
// AVX-512 VNNI, AVX-VNNI and AVX2 kernels are chosen at run time by what the CPU has
// (KVS_CPU_DOT_KERNELS names one, for benchmarks); a portable loop runs elsewhere. The
// activations' rounding is the only difference from the float32 reference (which stays
// selectable: CpuBackend's CpuMath::kReference): about 0.4% of each block's largest value, well
// inside what the tests allow (tests/kernels/cpu/block_matmul_test.cc). A token's outputs do not
// depend on the tokens or rows beside it: every (row, token) pair takes the same operations in
// the same order.
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

// The dot-product kernels in use: "avx512-vnni" (first where both VNNI forms exist: its 32 vector
// registers hold a 4 x 4 tile), "avx-vnni" (the same instruction in its VEX encoding), "avx2" (those types fused as
// above, the other types unpacked per row) or "portable" (every type unpacked), for logs.
std::string BlockDotKernelName();
// Uses the kernels named `name` if this CPU runs them (tests compare each with the reference,
// benchmarks each with the others); false otherwise.
bool SetBlockDotKernel(const std::string& name);

}  // namespace kvs::cpu
