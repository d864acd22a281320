// The channel-quantized KV formats (int4 / int2: keys per channel over a block, values per token,
// the newest tokens in bf16 residual rings) on the GPU against the CPU reference, step by step
// over a ragged batch: prefill chunks that end mid-block, then decodes, so blocks are sealed from
// the step's rows and from the rings. After every step the GPU's cache and rings must hold the CPU
// encoder's bytes exactly (SealKvGroups, WriteKv), and attention over them must match the CPU's
// element by element. Caches, rings and outputs start poisoned with 0xff bytes (NaN), so a read
// of an unwritten slot or an unwritten output shows. Skips where no GPU is visible.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

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

struct KiviCase {
  std::string name;
  KvDType format;
  int32_t q_heads, kv_heads, head_dim, block_size, ring_blocks, window;
  // steps[i][s]: tokens sequence s adds in step i (every sequence runs in every step).
  std::vector<std::vector<int32_t>> steps;
  // Rings with a sink (KvResidualRing): the even sequences hold their first block there, the odd
  // ones read it sealed.
  bool sink = false;
};

class KiviKvTest : public testing::GpuFixture<::testing::TestWithParam<KiviCase>> {
 protected:
  void TearDown() override {
    cuda::SetKiviDecodeKernel(cuda::KiviDecodeKernel::kAuto);
    cuda::SetKiviPrefillKernel(cuda::KiviPrefillKernel::kDecodedFirst);
  }
  template <typename T>
  DeviceBuffer Upload(const std::vector<T>& host) {
    auto buf = gpu_->Allocate(std::max<size_t>(host.size() * sizeof(T), 16));
    EXPECT_TRUE(buf.ok());
    if (!host.empty()) {
      EXPECT_TRUE(gpu_->CopyToDevice(host.data(), buf->data(), host.size() * sizeof(T)).ok());
    }
    return std::move(*buf);
  }
  template <typename T>
  std::vector<T> Download(const DeviceBuffer& buf, size_t n) {
    std::vector<T> host(n);
    EXPECT_TRUE(gpu_->CopyToHost(buf.data(), host.data(), n * sizeof(T)).ok());
    return host;
  }
  DeviceBuffer Bf16(const std::vector<float>& host, int64_t rows, int64_t cols) {
    auto buf = gpu_->Allocate(std::max<int64_t>(rows * cols, 1) * 2);
    EXPECT_TRUE(buf.ok());
    EXPECT_TRUE(gpu_->UploadFloat(host, buf->View(DType::kBF16, rows, cols)).ok());
    return std::move(*buf);
  }
};

TEST_P(KiviKvTest, SealedBlocksRingsAndAttentionMatchTheCpu) {
  const KiviCase& c = GetParam();
  const uint32_t seed = static_cast<uint32_t>(std::hash<std::string>{}(c.name));
  SCOPED_TRACE(::testing::Message() << c.name << ", seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto bf16 = [](float x) { return Bf16BitsToFloat(FloatToBf16Bits(x)); };
  const int32_t seqs = static_cast<int32_t>(c.steps[0].size()), bs = c.block_size, dim = c.head_dim;
  const int64_t width = static_cast<int64_t>(c.kv_heads) * dim, qw = static_cast<int64_t>(c.q_heads) * dim;
  std::vector<int32_t> total(seqs, 0);
  for (const auto& step : c.steps) {
    for (int32_t s = 0; s < seqs; ++s) total[s] += step[s];
  }
  int32_t max_blocks = 0, needed = 0;
  for (int32_t n : total) {
    max_blocks = std::max(max_blocks, (n + bs - 1) / bs);
    needed += (n + bs - 1) / bs;
  }
  const int32_t num_blocks = needed + 3;
  std::vector<int32_t> perm(num_blocks), table(static_cast<size_t>(seqs) * max_blocks, 0);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int32_t s = 0, next = 0; s < seqs; ++s) {
    for (int32_t j = 0; j < (total[s] + bs - 1) / bs; ++j) table[s * max_blocks + j] = perm[next++];
  }
  // Rings in another order than the sequences, plus one nobody uses.
  std::vector<int32_t> residual(seqs);
  std::iota(residual.begin(), residual.end(), 1);
  std::shuffle(residual.begin(), residual.end(), rng);

  PagedKvView layout{nullptr, nullptr, c.format, num_blocks, bs, c.kv_heads, dim, c.window};
  layout.num_residual = seqs + 1;
  layout.residual_blocks = c.ring_blocks + (c.sink ? 1 : 0);
  layout.residual_sink = c.sink;
  const size_t ring_elems = static_cast<size_t>(layout.num_residual) * layout.residual_blocks * bs * width;
  std::vector<int32_t> holds(seqs);
  for (int32_t s = 0; s < seqs; ++s) holds[s] = c.sink && s % 2 == 0;
  const std::vector<uint8_t> poison(layout.Bytes(), 0xff);
  const std::vector<uint16_t> ring_poison(ring_elems, 0xffff);
  std::vector<uint8_t> ck = poison, cv = poison;
  std::vector<uint16_t> crk = ring_poison, crv = ring_poison;
  PagedKvView ccache = layout;
  ccache.k = ck.data();
  ccache.v = cv.data();
  ccache.k_residual = crk.data();
  ccache.v_residual = crv.data();
  DeviceBuffer gk = Upload(poison), gv = Upload(poison), grk = Upload(ring_poison), grv = Upload(ring_poison);
  PagedKvView gcache = layout;
  gcache.k = gk.data();
  gcache.v = gv.data();
  gcache.k_residual = grk.data();
  gcache.v_residual = grv.data();
  const DeviceBuffer gtable = Upload(table), gresidual = Upload(residual);
  CpuBackend cpu(size_t{1} << 30, CpuMath::kReference);
  int32_t max_step = 0;
  for (const auto& step : c.steps) max_step = std::max(max_step, std::accumulate(step.begin(), step.end(), 0));
  ASSERT_TRUE(gpu_->ReserveWorkspace(max_step, seqs, c.q_heads, dim).ok());
  // Prefill steps also run decoded first on Hopper (kivi_decoded_first.cu): the scratch is reserved
  // while that choice is set (the default), for every sequence's pages.
  cuda::SetKiviPrefillKernel(cuda::KiviPrefillKernel::kDecodedFirst);
  ASSERT_TRUE(
      gpu_->ReservePrefillKvScratch(c.format, bs, c.kv_heads, dim, static_cast<int64_t>(seqs) * max_blocks * bs).ok());

  const KvResidualRing ring = layout.ring();
  double worst_cores = 0, worst_mma = 0, worst_decoded = 0;  // worst element / tolerance of each kernel
  std::vector<int32_t> context(seqs, 0), sealed(seqs, 0);
  for (size_t step = 0; step < c.steps.size(); ++step) {
    SCOPED_TRACE(::testing::Message() << "step " << step);
    const std::vector<int32_t>& adds = c.steps[step];
    std::vector<int32_t> query_start{0}, context_len, slots;
    for (int32_t s = 0; s < seqs; ++s) {
      const int32_t n = adds[s], end = context[s] + n;
      for (int32_t p = context[s]; p < end; ++p) {  // a position sealed in this step is not kept in the ring
        const bool kept = p >= ring.SealedEnd(end) || (holds[s] && ring.InSink(p));  // (but in a sink it holds)
        slots.push_back(kept ? -(2 + static_cast<int32_t>(ring.Slot(residual[s], p))) : -1);
      }
      query_start.push_back(query_start.back() + n);
      context_len.push_back(end);
    }
    const int32_t tokens = query_start.back();
    // K with an outlier channel (why keys are quantized per channel), V plain; bf16-exact, since
    // the GPU's rows are bf16.
    std::vector<float> k(tokens * width), v(k.size()), q(tokens * qw);
    for (int64_t i = 0; i < tokens * width; ++i) {
      k[i] = bf16(normal(rng) * (i % dim == 3 ? 20.0f : 1.0f));
      v[i] = bf16(normal(rng));
    }
    for (float& x : q) x = bf16(normal(rng));
    AttentionBatch batch = testing::HostAttentionBatch(query_start, context_len, table, max_blocks, adds);
    batch.residual = residual.data();
    batch.sealed = sealed.data();
    batch.sink = c.sink ? holds.data() : nullptr;
    const float scale = 1.0f / std::sqrt(static_cast<float>(dim));

    // CPU: seal, write the rings, attend.
    const TensorView kt = TensorView::Contiguous(k.data(), DType::kF32, tokens, width);
    const TensorView vt = TensorView::Contiguous(v.data(), DType::kF32, tokens, width);
    ASSERT_TRUE(cpu.SealKvGroups(kt, vt, batch, ccache).ok());
    ASSERT_TRUE(cpu.WriteKv(kt, vt, slots.data(), ccache).ok());
    // The CPU reference's attention costs tokens x context: a long prefill step checks bytes only
    // (its decodes check attention).
    const bool check_attention = static_cast<int64_t>(tokens) * batch.max_context_len <= 4'000'000;
    std::vector<float> want(tokens * qw);
    if (check_attention) {
      ASSERT_TRUE(cpu.PagedAttention(TensorView::Contiguous(q.data(), DType::kF32, tokens, qw), ccache, batch, scale,
                                     TensorView::Contiguous(want.data(), DType::kF32, tokens, qw))
                      .ok());
    }

    // GPU: the same.
    const DeviceBuffer gqs = Upload(query_start), gctx = Upload(context_len), gsealed = Upload(sealed),
                       gslots = Upload(slots), gholds = Upload(holds);
    AttentionBatch gbatch = batch;
    gbatch.query_start = gqs.as<int32_t>();
    gbatch.context_len = gctx.as<int32_t>();
    gbatch.block_table = gtable.as<int32_t>();
    gbatch.residual = gresidual.as<int32_t>();
    gbatch.sealed = gsealed.as<int32_t>();
    gbatch.sink = c.sink ? gholds.as<int32_t>() : nullptr;
    DeviceBuffer gkr = Bf16(k, tokens, width), gvr = Bf16(v, tokens, width), gq = Bf16(q, tokens, qw);
    DeviceBuffer gout = Bf16(std::vector<float>(tokens * qw, NAN), tokens, qw);
    absl::Status st = gpu_->SealKvGroups(gkr.View(DType::kBF16, tokens, width), gvr.View(DType::kBF16, tokens, width),
                                         gbatch, gcache);
    ASSERT_TRUE(st.ok()) << st;
    st = gpu_->WriteKv(gkr.View(DType::kBF16, tokens, width), gvr.View(DType::kBF16, tokens, width),
                       gslots.as<int32_t>(), gcache);
    ASSERT_TRUE(st.ok()) << st;

    // The bytes: paged blocks (sealed ones encoded, the others still poison) and rings.
    const auto hk = Download<uint8_t>(gk, ck.size()), hv = Download<uint8_t>(gv, cv.size());
    const auto hrk = Download<uint16_t>(grk, crk.size()), hrv = Download<uint16_t>(grv, crv.size());
    for (size_t i = 0; i < ck.size(); ++i) {
      ASSERT_EQ(hk[i], ck[i]) << "key byte " << i << " (block " << i / layout.BlockBytes() << ")";
      ASSERT_EQ(hv[i], cv[i]) << "value byte " << i << " (block " << i / layout.BlockBytes() << ")";
    }
    for (size_t i = 0; i < crk.size(); ++i) {
      ASSERT_EQ(hrk[i], crk[i]) << "key ring element " << i;
      ASSERT_EQ(hrv[i], crv[i]) << "value ring element " << i;
    }
    // The outputs of both kernels of the step — decode steps: the tensor-core kernel (in shapes
    // KiviDecodeMmaSupports takes, the default) and the CUDA-core one; prefill steps: the CUDA-core
    // kernel and, on Hopper, the pages decoded first for the fp16 wgmma kernel — element by element
    // (tests/support/elementwise_check.h): within bf16's rounding of the output and of the order of
    // the sums, scaled by the row's spread.
    const bool decode_step = batch.max_query_len == 1;
    for (int variant = 0; variant < 2; ++variant) {
      const bool cuda_cores = decode_step && variant == 1;
      const bool decoded_first = !decode_step && variant == 1;
      if (decoded_first && !(cuda::UseHopperPrefill() && c.window == 0 && (dim == 64 || dim == 128))) continue;
      cuda::SetKiviDecodeKernel(cuda_cores ? cuda::KiviDecodeKernel::kCudaCores : cuda::KiviDecodeKernel::kAuto);
      cuda::SetKiviPrefillKernel(decoded_first ? cuda::KiviPrefillKernel::kDecodedFirst
                                               : cuda::KiviPrefillKernel::kCudaCores);
      ASSERT_TRUE(
          gpu_->CopyToDevice(std::vector<uint16_t>(tokens * qw, 0xffff).data(), gout.data(), tokens * qw * 2).ok());
      st = gpu_->PagedAttention(gq.View(DType::kBF16, tokens, qw), gcache, gbatch, scale,
                                gout.View(DType::kBF16, tokens, qw));
      ASSERT_TRUE(st.ok()) << st;
      std::vector<float> got(tokens * qw);
      ASSERT_TRUE(gpu_->DownloadFloat(gout.View(DType::kBF16, tokens, qw), got).ok());
      const bool mma = !cuda_cores && batch.max_query_len == 1 &&
                       cuda::KiviDecodeMmaSupports(c.format, dim, bs, c.q_heads / c.kv_heads);
      double& worst = decoded_first ? worst_decoded : mma ? worst_mma : worst_cores;
      for (int64_t r = 0; check_attention && r < tokens * c.q_heads; ++r) {
        const std::span<const float> w(want.data() + r * dim, dim), g(got.data() + r * dim, dim);
        double sq = 0;
        for (float x : w) sq += static_cast<double>(x) * x;
        const std::string what = ::testing::PrintToString(c.name) +
                                 (decoded_first ? " (decoded first)"
                                  : mma         ? " (tensor cores)"
                                                : " (CUDA cores)") +
                                 " step " + std::to_string(step) + " row " + std::to_string(r / c.q_heads) + " head " +
                                 std::to_string(r % c.q_heads);
        worst = std::max(worst, testing::ExpectElementwise(g, w, 1e-2 * std::sqrt(sq / dim) + 1e-6, 8e-3, what, seed));
        if (worst > 1) break;
      }
    }
    cuda::SetKiviDecodeKernel(cuda::KiviDecodeKernel::kAuto);
    cuda::SetKiviPrefillKernel(cuda::KiviPrefillKernel::kDecodedFirst);
    if (step + 1 == c.steps.size()) {
      std::printf(
          "%s: %zu steps, contexts up to %d: worst element / tolerance %.2f (CUDA cores), %.2f (tensor cores), "
          "%.2f (prefill decoded first)\n",
          c.name.c_str(), c.steps.size(), batch.max_context_len, worst_cores, worst_mma, worst_decoded);
    }
    for (int32_t s = 0; s < seqs; ++s) {
      context[s] = context_len[s];
      sealed[s] = std::max(sealed[s], ring.SealedEnd(context[s]));
    }
  }
}

// Prefill chunks ending mid-block, then decodes, then another chunk and decodes.
std::vector<std::vector<int32_t>> MixedSteps(std::vector<int32_t> first, std::vector<int32_t> later, int decodes) {
  std::vector<std::vector<int32_t>> steps{first};
  const std::vector<int32_t> ones(first.size(), 1);
  for (int i = 0; i < decodes; ++i) steps.push_back(ones);
  steps.push_back(later);
  for (int i = 0; i < decodes; ++i) steps.push_back(ones);
  return steps;
}

std::vector<KiviCase> Cases() {
  std::vector<KiviCase> out;
  for (KvDType f : {KvDType::kKivi4, KvDType::kKivi2}) {
    const std::string n(f == KvDType::kKivi4 ? "int4" : "int2");
    // Llama-3-8B's heads (group 4), KIVI's ring of 128 tokens in blocks of 16.
    out.push_back({n + "_llama_ring9", f, 32, 8, 128, 16, 9, 0, MixedSteps({37, 5, 150}, {20, 3, 1}, 20)});
    // Rings of one block (sealed when whole) and of three; SmolLM2's heads (group 3, D 64).
    out.push_back({n + "_smollm_ring1", f, 9, 3, 64, 16, 1, 0, MixedSteps({11, 40, 3}, {9, 17, 1}, 18)});
    out.push_back({n + "_group5_ring3_bs8", f, 10, 2, 64, 8, 3, 0, MixedSteps({13, 1, 30}, {5, 2, 9}, 10)});
    // Odd block size (chunks span three blocks), head_dim 32 and 256, MHA.
    out.push_back({n + "_bs7_d32", f, 4, 4, 32, 7, 2, 0, MixedSteps({19, 8}, {15, 1}, 9)});
    out.push_back({n + "_d256", f, 8, 2, 256, 16, 2, 0, MixedSteps({35, 2}, {7, 40}, 6)});
    // A sliding window (Gemma 3's local layers), crossed many times.
    out.push_back({n + "_window24", f, 8, 2, 128, 8, 3, 24, MixedSteps({70, 9}, {33, 50}, 12)});
    // One long decode: the key splits and their combine.
    out.push_back({n + "_long_split", f, 32, 8, 128, 16, 9, 0, MixedSteps({4000}, {1}, 3)});
    // Block size 32 and page size 1 (a chunk of three keys spans three blocks).
    out.push_back({n + "_bs32", f, 16, 4, 128, 32, 5, 0, MixedSteps({100, 33}, {31, 64}, 5)});
    out.push_back({n + "_bs1", f, 8, 2, 64, 1, 4, 0, MixedSteps({9, 2}, {3, 1}, 4)});
    // Shapes of the tensor-core decode kernel (block size a multiple of 16) that the cases above
    // leave out: MHA, a group of 5, 16 query heads per KV head, a window in 16-key blocks.
    out.push_back({n + "_mha_bs16", f, 4, 4, 128, 16, 2, 0, MixedSteps({40, 17, 3}, {16, 1, 30}, 8)});
    out.push_back({n + "_group5_bs16", f, 10, 2, 64, 16, 3, 0, MixedSteps({13, 1, 70}, {5, 33, 9}, 10)});
    out.push_back({n + "_group16_bs32", f, 32, 2, 128, 32, 2, 0, MixedSteps({90, 31}, {2, 64}, 6)});
    out.push_back({n + "_window40_bs16", f, 8, 2, 128, 16, 3, 40, MixedSteps({100, 9}, {33, 50}, 12)});
    // The sink (each sequence's first block in bf16 beside its ring), held by some sequences only:
    // KIVI's ring, odd blocks, a window, page size 1, and a first step that seals the sink's block.
    for (KiviCase sink :
         {KiviCase{n + "_llama_ring9_sink", f, 32, 8, 128, 16, 9, 0, MixedSteps({37, 5, 150}, {20, 3, 1}, 20)},
          KiviCase{n + "_bs7_d32_sink", f, 4, 4, 32, 7, 2, 0, MixedSteps({19, 8}, {15, 1}, 9)},
          KiviCase{n + "_window24_sink", f, 8, 2, 128, 8, 3, 24, MixedSteps({70, 9}, {33, 50}, 12)},
          KiviCase{n + "_bs1_sink", f, 8, 2, 64, 1, 4, 0, MixedSteps({9, 2}, {3, 1}, 4)},
          KiviCase{n + "_window40_bs16_sink", f, 8, 2, 128, 16, 3, 40, MixedSteps({100, 9}, {33, 50}, 12)},
          KiviCase{n + "_smollm_bs32_sink", f, 9, 3, 64, 32, 2, 0, MixedSteps({20, 70, 33}, {9, 1, 40}, 12)}}) {
      sink.sink = true;
      out.push_back(sink);
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Formats, KiviKvTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<KiviCase>& info) { return info.param.name; });

}  // namespace
}  // namespace kvs
