// GGML block decoding against values worked out by hand from the documented layouts, and the
// K-quants / IQ4 against the `gguf` package's decoder bit for bit (tests/goldens/ggml, made by
// tests/reference/make_ggml_goldens.py).
#include "kernels/common/ggml_decode.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace kvs::cpu {
namespace {

void PutHalf(std::vector<uint8_t>& b, size_t at, uint16_t bits) { std::memcpy(b.data() + at, &bits, 2); }
constexpr uint16_t kHalfOne = 0x3C00, kHalfTwo = 0x4000, kHalfMinusHalf = 0xB800, kHalfQuarter = 0x3400;

TEST(DequantizeTest, Q4_0LowNibblesFirstThenHigh) {
  std::vector<uint8_t> b(18, 0);
  PutHalf(b, 0, kHalfTwo);  // d = 2
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<uint8_t>((15 - j) << 4 | j);
  std::vector<float> out(32);
  DequantizeToF32(GgmlType::kQ4_0, b, out);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], (j - 8) * 2.0f);
    EXPECT_EQ(out[j + 16], (15 - j - 8) * 2.0f);
  }
}

TEST(DequantizeTest, Q4_1AddsTheMinimum) {
  std::vector<uint8_t> b(20, 0);
  PutHalf(b, 0, kHalfQuarter);    // d = 0.25
  PutHalf(b, 2, kHalfMinusHalf);  // m = -0.5
  for (int j = 0; j < 16; ++j) b[4 + j] = static_cast<uint8_t>(j << 4 | (15 - j));
  std::vector<float> out(32);
  DequantizeToF32(GgmlType::kQ4_1, b, out);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], (15 - j) * 0.25f - 0.5f);
    EXPECT_EQ(out[j + 16], j * 0.25f - 0.5f);
  }
}

TEST(DequantizeTest, Q5_0AndQ5_1TakeTheFifthBitFromQh) {
  std::vector<uint8_t> b0(22, 0), b1(24, 0);
  PutHalf(b0, 0, kHalfOne);
  PutHalf(b1, 0, kHalfOne);
  PutHalf(b1, 2, kHalfOne);         // m = 1
  const uint32_t qh = 0x80000001u;  // element 0 and element 31 have the high bit
  std::memcpy(b0.data() + 2, &qh, 4);
  std::memcpy(b1.data() + 4, &qh, 4);
  for (int j = 0; j < 16; ++j) b0[6 + j] = b1[8 + j] = 0x21;  // low nibble 1, high nibble 2
  std::vector<float> o0(32), o1(32);
  DequantizeToF32(GgmlType::kQ5_0, b0, o0);
  DequantizeToF32(GgmlType::kQ5_1, b1, o1);
  EXPECT_EQ(o0[0], (1 + 16) - 16.0f);
  EXPECT_EQ(o0[1], 1 - 16.0f);
  EXPECT_EQ(o0[31], (2 + 16) - 16.0f);
  EXPECT_EQ(o0[16], 2 - 16.0f);
  EXPECT_EQ(o1[0], 17 + 1.0f);
  EXPECT_EQ(o1[1], 1 + 1.0f);
  EXPECT_EQ(o1[31], 18 + 1.0f);
}

TEST(DequantizeTest, Q8_0IsSignedBytesTimesScale) {
  std::vector<uint8_t> b(34, 0);
  PutHalf(b, 0, kHalfMinusHalf);
  for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
  std::vector<float> out(32);
  DequantizeToF32(GgmlType::kQ8_0, b, out);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], (j - 16) * -0.5f);
}

std::vector<uint8_t> ReadGolden(const std::string& name) {
  std::ifstream f(std::string(KVS_TEST_DATA) + "/ggml/" + name, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

TEST(DequantizeTest, KQuantsAndIq4EqualTheGgufPackageBitForBit) {
  for (GgmlType type : {GgmlType::kQ2_K, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K,
                        GgmlType::kIQ4_NL, GgmlType::kIQ4_XS}) {
    const auto info = *LookupGgmlType(static_cast<uint32_t>(type));
    const std::string name(info.name);
    const std::vector<uint8_t> blocks = ReadGolden(name + ".blocks"), want = ReadGolden(name + ".f32");
    ASSERT_FALSE(blocks.empty()) << name << ": golden missing";
    ASSERT_EQ(blocks.size() % info.block_bytes, 0u) << name;
    const size_t n = blocks.size() / info.block_bytes * info.block_elems;
    ASSERT_EQ(want.size(), n * 4) << name;
    std::vector<float> got(n);
    DequantizeToF32(type, blocks, got);
    int64_t differ = 0;
    for (size_t i = 0; i < n; ++i) {
      uint32_t g, w;
      std::memcpy(&g, &got[i], 4);
      std::memcpy(&w, want.data() + 4 * i, 4);
      if (g != w && differ++ < 5) {
        float wf;
        std::memcpy(&wf, &w, 4);
        ADD_FAILURE() << name << " element " << i << " (block " << i / info.block_elems << "): " << got[i]
                      << " vs gguf " << wf;
      }
    }
    EXPECT_EQ(differ, 0) << name << ": " << differ << " of " << n << " weights differ";
  }
}

TEST(DequantizeTest, Q8_KIsSignedBytesTimesAFloatScale) {
  std::vector<uint8_t> b(292, 0);
  const float d = -0.125f;
  std::memcpy(b.data(), &d, 4);
  for (int j = 0; j < 256; ++j) b[4 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 128));
  std::vector<float> out(256);
  DequantizeToF32(GgmlType::kQ8_K, b, out);
  for (int j = 0; j < 256; ++j) EXPECT_EQ(out[j], (j - 128) * d) << j;
}

TEST(DequantizeTest, HalfAndBfloatIncludingSubnormalsAndSpecials) {
  const uint16_t h[] = {0x0001, 0x03FF, 0x7C00, 0xFC00, 0x8000, 0x3555};
  std::vector<uint8_t> b(sizeof h);
  std::memcpy(b.data(), h, sizeof h);
  std::vector<float> out(6);
  DequantizeToF32(GgmlType::kF16, b, out);
  EXPECT_EQ(out[0], std::ldexp(1.0f, -24));
  EXPECT_EQ(out[1], std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::isinf(out[2]) && out[2] > 0);
  EXPECT_TRUE(std::isinf(out[3]) && out[3] < 0);
  EXPECT_TRUE(std::signbit(out[4]) && out[4] == 0);
  EXPECT_NEAR(out[5], 0.33325195f, 1e-7);
  const uint16_t bf[] = {0x3F80, 0xC040};
  std::memcpy(b.data(), bf, sizeof bf);
  std::vector<float> o2(2);
  DequantizeToF32(GgmlType::kBF16, std::span<const uint8_t>(b.data(), 4), o2);
  EXPECT_EQ(o2[0], 1.0f);
  EXPECT_EQ(o2[1], -3.0f);
}

TEST(DequantizeTest, BackendDecodesAColumnWindowOfStridedRows) {
  // Three Q8_0 rows of 4 blocks (d = 1, q = row * 100 + column); decode columns 32..95.
  std::vector<uint8_t> rows(3 * 4 * 34, 0);
  for (int r = 0; r < 3; ++r) {
    for (int blk = 0; blk < 4; ++blk) {
      uint8_t* block = rows.data() + (r * 4 + blk) * 34;
      const uint16_t one = kHalfOne;
      std::memcpy(block, &one, 2);
      for (int j = 0; j < 32; ++j)
        block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>((r * 20 + blk * 32 + j) % 127));
    }
  }
  CpuBackend be(size_t{1} << 24);
  std::vector<float> out(3 * 64, -1.0f);
  ASSERT_TRUE(
      be.Dequantize(GgmlType::kQ8_0, rows.data() + 34, 4 * 34, TensorView::Contiguous(out.data(), DType::kF32, 3, 64))
          .ok());
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 64; ++c)
      EXPECT_EQ(out[r * 64 + c], static_cast<float>((r * 20 + 32 + c) % 127)) << r << "," << c;
  }
  // A window that splits a block, or rows that overlap, is refused.
  EXPECT_FALSE(
      be.Dequantize(GgmlType::kQ8_0, rows.data(), 4 * 34, TensorView::Contiguous(out.data(), DType::kF32, 3, 48)).ok());
  EXPECT_FALSE(
      be.Dequantize(GgmlType::kQ8_0, rows.data(), 34, TensorView::Contiguous(out.data(), DType::kF32, 3, 64)).ok());
}

}  // namespace
}  // namespace kvs::cpu
