// Decode attention whose key splits merge inside a thread-block cluster (decode_merge.cuh) against
// the same launch with partials written and combined by CombineSplitsKernel: the output and its
// int8 rounding for the block GEMV must be the same bits, and both must match the CPU's attention
// element by element (seed printed on failure). Caches are NaN outside the mapped slots, the split
// workspace and the rounding buffers NaN / 0xff before each launch, block tables shuffled, batches
// ragged (a short sequence leaves splits empty). Which path ran is checked by the launch counter.
// Skips where no GPU is visible.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/half_convert.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_kernels.h"
#include "tests/support/attention_batch.h"
#include "tests/support/elementwise_check.h"
#include "tests/support/gpu_fixture.h"

namespace kvs {
namespace {

struct MergeCase {
  std::string name;
  KvDType format;  // kBF16: PagedDecodeMmaKernel; kF16: PagedDecodeCodesKernel (permuted dims)
  int32_t q_heads, kv_heads, head_dim, block_size;
  std::vector<int32_t> context_lens;  // one decode token each
  // How the keys split on an H100/H200 (132 SMs; kernels/cuda/paged_attention_common.cuh's
  // PlanSplits cuts short contexts into 128-key pieces): split at all (then the merge rounds the
  // output for the block GEMV), and into few enough splits for one cluster (2..8).
  bool split;
  bool clustered;
};

class DecodeClusterMergeTest : public testing::GpuFixture<::testing::TestWithParam<MergeCase>> {
 protected:
  void TearDown() override { cuda::SetDecodeClusterMergeOn(cuda::kDecodeClusterMergeByDefault); }

  DeviceBuffer Alloc(size_t bytes, unsigned char fill) {
    auto buf = gpu_->Allocate(std::max<size_t>(bytes, 4));
    EXPECT_TRUE(buf.ok());
    EXPECT_EQ(cudaMemset(buf->data(), fill, std::max<size_t>(bytes, 4)), cudaSuccess);
    return std::move(*buf);
  }
  // host's values as bf16 or fp16 bits (the cache's formats: no scales).
  DeviceBuffer Upload(const std::vector<float>& host, DType dtype) {
    std::vector<uint16_t> bits(host.size());
    for (size_t i = 0; i < host.size(); ++i) {
      bits[i] = dtype == DType::kBF16 ? FloatToBf16Bits(host[i]) : FloatToFp16Bits(host[i]);
    }
    DeviceBuffer buf = Alloc(bits.size() * 2, 0);
    EXPECT_EQ(cudaMemcpy(buf.data(), bits.data(), bits.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
    return buf;
  }
  DeviceBuffer UploadInts(const std::vector<int32_t>& v) {
    auto buf = Alloc(v.size() * 4, 0);
    EXPECT_EQ(cudaMemcpy(buf.data(), v.data(), v.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
    return buf;
  }
  static std::vector<unsigned char> Bytes(const DeviceBuffer& b, size_t n) {
    std::vector<unsigned char> host(n);
    EXPECT_EQ(cudaMemcpy(host.data(), b.data(), n, cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }

  CpuBackend cpu_{size_t{1} << 30};
  const uint32_t seed_ = std::random_device{}();
  std::mt19937 rng_{seed_};
};

TEST_P(DecodeClusterMergeTest, SameBitsAsThePartialsCombinedAndMatchesTheCpu) {
  const MergeCase& c = GetParam();
  const int32_t seqs = static_cast<int32_t>(c.context_lens.size());
  const int64_t width = static_cast<int64_t>(c.kv_heads) * c.head_dim,
                qw = static_cast<int64_t>(c.q_heads) * c.head_dim;
  const DType storage = c.format == KvDType::kBF16 ? DType::kBF16 : DType::kF16;
  auto stored = [&](float x) {  // the value the cache holds
    return storage == DType::kBF16 ? Bf16BitsToFloat(FloatToBf16Bits(x)) : Fp16BitsToFloat(FloatToFp16Bits(x));
  };
  std::normal_distribution<float> normal(0.0f, 1.0f);

  int32_t needed = 0, max_blocks = 0;
  for (int32_t len : c.context_lens) {
    needed += (len + c.block_size - 1) / c.block_size;
    max_blocks = std::max(max_blocks, (len + c.block_size - 1) / c.block_size);
  }
  const int32_t num_blocks = needed + 5;
  const int64_t slots = static_cast<int64_t>(num_blocks) * c.block_size;
  std::vector<float> kc(slots * width, std::numeric_limits<float>::quiet_NaN()), vc = kc;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng_);
  std::vector<int32_t> table(seqs * max_blocks, 0), query_start{0}, context_len, query_lens(seqs, 1);
  int32_t next = 0;
  for (int32_t s = 0; s < seqs; ++s) {
    const int32_t nb = (c.context_lens[s] + c.block_size - 1) / c.block_size;
    for (int32_t j = 0; j < nb; ++j) table[s * max_blocks + j] = perm[next++];
    for (int32_t p = 0; p < c.context_lens[s]; ++p) {
      const int64_t slot =
          static_cast<int64_t>(table[s * max_blocks + p / c.block_size]) * c.block_size + p % c.block_size;
      for (int64_t e = 0; e < width; ++e) {
        kc[slot * width + e] = stored(normal(rng_));
        vc[slot * width + e] = stored(normal(rng_));
      }
    }
    query_start.push_back(s + 1);
    context_len.push_back(c.context_lens[s]);
  }
  std::vector<float> q(seqs * qw);
  for (float& x : q) x = Bf16BitsToFloat(FloatToBf16Bits(normal(rng_)));
  const AttentionBatch batch = testing::HostAttentionBatch(query_start, context_len, table, max_blocks, query_lens);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  std::vector<float> want(seqs * qw);
  PagedKvView ccache{kc.data(), vc.data(), KvDType::kF32, num_blocks, c.block_size, c.kv_heads, c.head_dim};
  ASSERT_TRUE(cpu_.PagedAttention(TensorView::Contiguous(q.data(), DType::kF32, seqs, qw), ccache, batch, scale,
                                  TensorView::Contiguous(want.data(), DType::kF32, seqs, qw))
                  .ok());

  DeviceBuffer gk = Upload(kc, storage), gv = Upload(vc, storage), gq = Upload(q, DType::kBF16);
  DeviceBuffer gqs = UploadInts(query_start), gctx = UploadInts(context_len), gtab = UploadInts(table);
  AttentionBatch gbatch = batch;
  gbatch.query_start = gqs.as<int32_t>();
  gbatch.context_len = gctx.as<int32_t>();
  gbatch.block_table = gtab.as<int32_t>();
  const PagedKvView gcache{gk.data(), gv.data(), c.format, num_blocks, c.block_size, c.kv_heads, c.head_dim};
  int sms = 0, major = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);

  const int64_t units = qw / 32;
  const size_t out_bytes = seqs * qw * 2, q_bytes = seqs * units * 32, d_bytes = seqs * units * 4,
               sum_bytes = seqs * units * 2 * 4;
  struct Side {
    std::vector<unsigned char> out, codes, d, sum16;
    bool rounded = false;
  } side[2];
  for (int on = 0; on < 2; ++on) {
    cuda::SetDecodeClusterMergeOn(on == 1);
    const int64_t partial_floats = int64_t{64} * seqs * qw;
    DeviceBuffer out = Alloc(out_bytes, 0xff), partial = Alloc(partial_floats * 4, 0xff),
                 ml = Alloc(partial_floats / c.head_dim * 2 * 4, 0xff);
    DeviceBuffer codes = Alloc(q_bytes, 0xff), d = Alloc(d_bytes, 0xff), sum16 = Alloc(sum_bytes, 0xff);
    cuda::AttentionWorkspace ws;
    ws.partial_out = partial.as<float>();
    ws.partial_ml = ml.as<float>();
    ws.capacity_floats = partial_floats;
    ws.num_sms = sms;
    cuda::QuantizedActivations round{codes.as<int8_t>(), d.as<float>(), sum16.as<float>()};
    const int64_t before = cuda::DecodeClusterMergeLaunches();
    ASSERT_EQ(cuda::LaunchPagedAttention(gq.as<cuda::bf16>(), qw, c.q_heads, gcache, gbatch, scale,
                                         out.as<cuda::bf16>(), qw, ws, nullptr, &round, &side[on].rounded),
              cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const bool clustered = cuda::DecodeClusterMergeLaunches() - before == 1;
    EXPECT_EQ(clustered, on == 1 && c.clustered && major >= 9) << "the cluster merge ran where it should not, or not";
    side[on].out = Bytes(out, out_bytes);
    if (side[on].rounded) {
      side[on].codes = Bytes(codes, q_bytes);
      side[on].d = Bytes(d, d_bytes);
      side[on].sum16 = Bytes(sum16, sum_bytes);
    }
  }
  // Split launches round as they combine; both sides took the same number of splits.
  EXPECT_EQ(side[0].rounded, side[1].rounded);
  EXPECT_EQ(side[1].rounded, c.split) << "the keys were not split as the case expects";
  for (size_t i = 0; i < out_bytes; i += 2) {
    if (std::memcmp(&side[0].out[i], &side[1].out[i], 2) != 0) {
      ADD_FAILURE() << "output element " << i / 2 << " differs between the two merges (seed " << seed_ << ")";
      break;
    }
  }
  EXPECT_TRUE(side[0].codes == side[1].codes) << "rounded codes differ (seed " << seed_ << ")";
  EXPECT_TRUE(side[0].d == side[1].d) << "rounding scales differ (seed " << seed_ << ")";
  EXPECT_TRUE(side[0].sum16 == side[1].sum16) << "rounding sums differ (seed " << seed_ << ")";

  std::vector<float> got(seqs * qw);
  for (size_t i = 0; i < got.size(); ++i) {
    uint16_t bits;
    std::memcpy(&bits, &side[1].out[2 * i], 2);
    got[i] = Bf16BitsToFloat(bits);
  }
  const double worst = testing::ExpectElementwise(got, want, 1e-2, 2e-2, "attention output", seed_);
  std::printf("%s: splits merged in a cluster %s, worst element %.2f of its tolerance\n", c.name.c_str(),
              c.clustered ? "yes" : "no", worst);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DecodeClusterMergeTest,
    ::testing::Values(
        MergeCase{"llama3_8b_640", KvDType::kBF16, 32, 8, 128, 16, {640}, true, true},  // the batch-1 bench: 5 splits
        MergeCase{"llama3_8b_1000_fp16", KvDType::kF16, 32, 8, 128, 16, {1000}, true, true},      // 7, permuted dims
        MergeCase{"ragged_odd_pages", KvDType::kBF16, 32, 8, 128, 7, {900, 3, 257}, true, true},  // empty splits
        MergeCase{"group3_d64", KvDType::kBF16, 9, 3, 64, 16, {700, 40}, true, true},       // SmolLM2 heads: 6 units
        MergeCase{"group8_1024_fp16", KvDType::kF16, 64, 8, 128, 1, {1024}, true, true},    // 8 splits, page size 1
        MergeCase{"mha_d64_fp16", KvDType::kF16, 4, 4, 64, 16, {300, 299}, true, true},     // group 1: 2 splits
        MergeCase{"too_many_splits", KvDType::kBF16, 32, 8, 128, 16, {2000}, true, false},  // 15: the combine kernel
        MergeCase{"one_split", KvDType::kBF16, 32, 8, 128, 16, {200}, false, false}),       // nothing to merge
    [](const ::testing::TestParamInfo<MergeCase>& info) { return info.param.name; });

}  // namespace
}  // namespace kvs
