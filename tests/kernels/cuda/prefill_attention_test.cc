// Prefill and chunked-prefill attention on the GPU against the CPU reference, element by element:
// both prefill kernels (Hopper's warpgroup-MMA kernel where the device is compute capability 9.0,
// and the mma.sync kernel), every cache format (bf16, fp16, fp8, int8, int4: the caches encoded by
// the CPU codec, the reference computed over the same codes), head_dim 64 and 128, ragged batches
// of whole prompts, chunks over earlier pages and decode rows, block sizes 1, 7 and 16, random
// block tables, 0xff bytes (NaN codes and scales) in every cache slot no sequence maps, and key
// splits. The seed is printed with any failure; KVS_TEST_SEED=<n> replays one.
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "gtest/gtest.h"
#include "kernels/common/half_convert.h"
#include "kernels/common/status_macros.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/kv_codec.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_kernels.h"
#include "tests/support/attention_batch.h"
#include "tests/support/elementwise_check.h"
#include "tests/support/gpu_fixture.h"

namespace kvs {
namespace {

// Per element, the prefill rule of tests/support/elementwise_check.h.
constexpr double kAbs = testing::kPrefillAbs, kRel = testing::kPrefillRel;

// A key of the first sequence set to `factor` in every dimension, with every query drawn around +1
// (so each query scores it at about factor x head_dim x the scale, far above the other keys).
struct Spike {
  int32_t pos;
  float factor;
};

struct Shape {
  int32_t q_heads, kv_heads, head_dim, block_size;
  std::vector<int32_t> context_lens, query_lens;
  std::vector<Spike> spikes = {};
};

class PrefillAttentionTest : public testing::GpuFixture<::testing::TestWithParam<Shape>> {
 protected:
  void TearDown() override {
    cuda::SetPrefillKernel(cuda::PrefillKernel::kAuto);
    cuda::SetQuantizedPrefillLoads(cuda::QuantizedPrefillLoads::kAuto);
    cuda::SetHopperPrefillBlocks(0);
    cuda::SetHopperPrefillKvLoads(cuda::HopperPrefillKvLoads::kTensorCopies);
    cuda::SetHopperPrefillEagerRescale(false);
    cuda::SetHopperPrefillSoftmax(cuda::HopperPrefillSoftmax::kByHeadDim);
  }
};

// The values Hopper's kernel attends over for an fp8/int8/int4-token cache: it decodes each row to
// fp16 (CodesToHalf8) — code x fp16(scale) rounded to fp16 for fp8/int8, fp16(code x scale +
// zero) for int4 — and runs its fp16 MMAs on them, where the CPU reference (and the mma.sync
// kernel, which folds fp8/int8 key scales into the f32 scores) use code x scale in f32. That
// rounding (2^-11 relative, far below the codes' own) moves an output by up to ~1.7x the
// tolerance on rare elements (seed 3771173526: one of 8.4M, 2026-12-05), so the Hopper kernel's
// quantized paths are held to a reference over these fp16 values. `data`: the cache's k or v;
// rows [slot][kv_heads * dim].
std::vector<float> AsKernelHalves(const PagedKvView& cache, const void* data, const std::vector<int32_t>& slots) {
  const int32_t dim = cache.head_dim;
  std::vector<float> out(slots.size() * cache.SlotStride());
  auto* bytes = static_cast<const std::byte*>(data);
  auto half = [](float x) { return Fp16BitsToFloat(FloatToFp16Bits(x)); };
  for (size_t i = 0; i < slots.size(); ++i) {
    for (int32_t h = 0; h < cache.kv_heads; ++h) {
      const std::byte* codes = bytes + cache.RowOffset(slots[i], h);
      const std::byte* scales = bytes + cache.ScaleOffset(slots[i], h);
      float* row = out.data() + i * cache.SlotStride() + h * dim;
      if (cache.dtype == KvDType::kINT4) {
        for (int32_t e = 0; e < dim; ++e) {
          const auto code = static_cast<float>((std::to_integer<uint8_t>(codes[e / 2]) >> (4 * (e % 2))) & 0xf);
          uint16_t sz[2];
          std::memcpy(sz, scales + (e / kKvInt4Group) * 4, 4);
          row[e] = half(std::fma(code, Fp16BitsToFloat(sz[0]), Fp16BitsToFloat(sz[1])));
        }
      } else {  // fp8 / int8: the bare codes decoded with a scale of 1, then the kernel's arithmetic
        float scale = 0;
        std::memcpy(&scale, scales, 4);
        std::vector<std::byte> one(4);
        const float unit = 1.0f;
        std::memcpy(one.data(), &unit, 4);
        cpu::DecodeKvRow(codes, one.data(), cache.dtype, dim, row);
        for (int32_t e = 0; e < dim; ++e) row[e] = half(row[e] * half(scale));
      }
    }
  }
  return out;
}

uint32_t TestSeed() {
  if (const char* s = std::getenv("KVS_TEST_SEED")) return static_cast<uint32_t>(std::strtoul(s, nullptr, 10));
  return std::random_device{}();
}

TEST_P(PrefillAttentionTest, EveryElementMatchesTheCpuReferenceOnBothKernelsAndCaches) {
  const Shape& c = GetParam();
  const uint32_t seed = TestSeed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (KVS_TEST_SEED replays it)");
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto bf16_random = [&] { return Bf16BitsToFloat(FloatToBf16Bits(normal(rng))); };

  const int32_t seqs = static_cast<int32_t>(c.context_lens.size());
  const int64_t width = static_cast<int64_t>(c.kv_heads) * c.head_dim;
  int32_t needed = 0, max_blocks = 0;
  for (int32_t len : c.context_lens) {
    needed += (len + c.block_size - 1) / c.block_size;
    max_blocks = std::max(max_blocks, (len + c.block_size - 1) / c.block_size);
  }
  const int32_t num_blocks = needed + 5;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> table(seqs * max_blocks, 0), query_start{0}, context_len, slots;
  int32_t next = 0, tokens = 0;
  for (int32_t s = 0; s < seqs; ++s) {
    const int32_t nb = (c.context_lens[s] + c.block_size - 1) / c.block_size;
    for (int32_t j = 0; j < nb; ++j) table[s * max_blocks + j] = perm[next++];
    for (int32_t p = 0; p < c.context_lens[s]; ++p) {
      slots.push_back(table[s * max_blocks + p / c.block_size] * c.block_size + p % c.block_size);
    }
    tokens += c.query_lens[s];
    query_start.push_back(tokens);
    context_len.push_back(c.context_lens[s]);
  }
  // The mapped slots' K/V rows (keys with an outlier channel, as real keys have), bf16-exact.
  const int64_t rows = static_cast<int64_t>(slots.size());
  std::vector<float> k(rows * width), v(rows * width);
  for (int64_t i = 0; i < rows * width; ++i) {
    k[i] = (i % c.head_dim == 5 ? 8.0f : 1.0f) * bf16_random();
    v[i] = bf16_random();
  }
  for (const Spike& sp : c.spikes) {
    for (int64_t i = 0; i < width; ++i) k[sp.pos * width + i] = sp.factor;  // the first sequence's rows come first
  }
  const int64_t qw = static_cast<int64_t>(c.q_heads) * c.head_dim;
  std::vector<float> q(tokens * qw);
  const float q_mean = c.spikes.empty() ? 0.0f : 1.0f;
  for (float& x : q) x = Bf16BitsToFloat(FloatToBf16Bits(q_mean + normal(rng)));
  const AttentionBatch batch = testing::HostAttentionBatch(query_start, context_len, table, max_blocks, c.query_lens);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  CpuBackend cpu(size_t{1} << 30);

  auto upload = [&](const void* data, size_t bytes) {
    auto buf = gpu_->Allocate(std::max<size_t>(bytes, 16));
    EXPECT_TRUE(buf.ok());
    EXPECT_TRUE(gpu_->CopyToDevice(data, buf->data(), bytes).ok());
    return std::move(*buf);
  };
  std::vector<uint16_t> q16(q.size());
  for (size_t i = 0; i < q.size(); ++i) q16[i] = FloatToBf16Bits(q[i]);
  auto gq = upload(q16.data(), q16.size() * 2);
  auto gqs = upload(query_start.data(), query_start.size() * 4), gctx = upload(context_len.data(), context_len.size() * 4);
  auto gtab = upload(table.data(), table.size() * 4);
  AttentionBatch gbatch = batch;
  gbatch.query_start = gqs.as<int32_t>();
  gbatch.context_len = gctx.as<int32_t>();
  gbatch.block_table = gtab.as<int32_t>();
  ASSERT_TRUE(gpu_->ReserveWorkspace(tokens, seqs, c.q_heads, c.head_dim).ok());

  // The CPU codec encodes rows kr / vr into a cache of `t` over 0xff bytes (NaN codes and scales
  // where no sequence maps; kb / vb hold it) and the reference attends over those codes.
  auto reference = [&](KvDType t, std::vector<float>& kr, std::vector<float>& vr, std::vector<uint8_t>& kb,
                       std::vector<uint8_t>& vb, std::vector<float>& out) -> absl::StatusOr<PagedKvView> {
    PagedKvView view{nullptr, nullptr, t, num_blocks, c.block_size, c.kv_heads, c.head_dim};
    kb.assign(view.Bytes(), 0xff);
    vb.assign(view.Bytes(), 0xff);
    view.k = kb.data();
    view.v = vb.data();
    KVS_RETURN_IF_ERROR(cpu.WriteKv(TensorView::Contiguous(kr.data(), DType::kF32, rows, width),
                                    TensorView::Contiguous(vr.data(), DType::kF32, rows, width), slots.data(), view));
    out.resize(tokens * qw);
    KVS_RETURN_IF_ERROR(cpu.PagedAttention(TensorView::Contiguous(q.data(), DType::kF32, tokens, qw), view, batch,
                                           scale, TensorView::Contiguous(out.data(), DType::kF32, tokens, qw)));
    return view;
  };
  for (const KvDType dtype : {KvDType::kBF16, KvDType::kF16, KvDType::kFP8, KvDType::kINT8, KvDType::kINT4}) {
    const std::string format(KvDTypeName(dtype));
    // The GPU attends over a copy of the reference's codes.
    std::vector<uint8_t> ck, cv;
    std::vector<float> want;
    const absl::StatusOr<PagedKvView> ccache = reference(dtype, k, v, ck, cv, want);
    ASSERT_TRUE(ccache.ok()) << ccache.status();
    // The Hopper kernel's reference for the quantized formats: the same attention over an fp16
    // cache of the values it decodes (AsKernelHalves).
    std::vector<float> want_halves;
    if (KvQuantized(dtype)) {
      std::vector<float> kh = AsKernelHalves(*ccache, ck.data(), slots), vh = AsKernelHalves(*ccache, cv.data(), slots);
      std::vector<uint8_t> hk, hv;
      const absl::StatusOr<PagedKvView> hcache = reference(KvDType::kF16, kh, vh, hk, hv, want_halves);
      ASSERT_TRUE(hcache.ok()) << hcache.status();
    }
    auto gk = upload(ck.data(), ck.size()), gv = upload(cv.data(), cv.size());
    PagedKvView gcache{gk.data(), gv.data(), dtype, num_blocks, c.block_size, c.kv_heads, c.head_dim};
    // The Hopper kernel reads quantized caches three ways (staged in place, through registers,
    // decoded first into the scratch: every sequence's pages, so the scratch is reserved for
    // all of them).
    const bool quantized = KvQuantized(dtype);
    ASSERT_TRUE(gpu_->ReservePrefillKvScratch(dtype, c.block_size, c.kv_heads, c.head_dim,
                                              static_cast<int64_t>(seqs) * max_blocks * c.block_size)
                    .ok());
    // Variants 4 and 5 run the Hopper kernel on 3 blocks (each takes many work items in turn, the
    // ring of stages running on across them) and on a block per item; the others on the default
    // grid (as many blocks as the GPU holds: several items each for the larger shapes). bf16/fp16
    // pages of a multiple of 16 keys (quantized caches decoded first into them) are loaded by
    // tensor copies but in variant 6, which forces cp.async everywhere; checked below. Variant 7
    // moves the running max at every new maximum and rescales O every tile, where the others let
    // it lag (kMaxLag): so a max that moves from a finite value is checked too. The others take
    // the softmax chosen by head dim (HopperPrefillSoftmax) but variants 8 and 9, which force one
    // for both head dims: 8 takes each row's max on its first tile only and checks the later
    // tiles' exponentials against the lagging max (the spikes' shapes make them move it, and
    // overflow), 9 takes the max on every tile.
    const std::vector<int> variants =
        quantized ? std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9} : std::vector<int>{0, 1, 4, 5, 6, 7, 8, 9};
    for (const int v : variants) {
      const cuda::PrefillKernel kernel = v == 1 ? cuda::PrefillKernel::kMma : cuda::PrefillKernel::kAuto;
      cuda::SetPrefillKernel(kernel);
      cuda::SetQuantizedPrefillLoads(v == 2             ? cuda::QuantizedPrefillLoads::kRegisters
                                     : v == 3 || v == 6 ? cuda::QuantizedPrefillLoads::kDecodedFirst
                                                        : cuda::QuantizedPrefillLoads::kStagedInPlace);
      cuda::SetHopperPrefillBlocks(v == 4 ? 3 : v == 5 ? cuda::kHopperPrefillBlockPerItem : 0);
      cuda::SetHopperPrefillEagerRescale(v == 7);
      cuda::SetHopperPrefillSoftmax(v == 8   ? cuda::HopperPrefillSoftmax::kLagging
                                    : v == 9 ? cuda::HopperPrefillSoftmax::kEveryTile
                                             : cuda::HopperPrefillSoftmax::kByHeadDim);
      cuda::SetHopperPrefillKvLoads(v == 6 ? cuda::HopperPrefillKvLoads::kCopies
                                           : cuda::HopperPrefillKvLoads::kTensorCopies);
      if (v >= 2 && !cuda::UseHopperPrefill()) continue;
      const int64_t tensor_copy_launches = cuda::HopperPrefillTensorCopyLaunches();
      const char* names[] = {"wgmma",
                             "mma.sync",
                             "wgmma, codes through registers",
                             "wgmma, decoded first",
                             "wgmma on 3 blocks",
                             "wgmma, a block per item",
                             "wgmma, tiles by cp.async only",
                             "wgmma, O rescaled every tile",
                             "wgmma, the row max on first tiles only",
                             "wgmma, the row max on every tile"};
      const char* name = v == 0 && !cuda::UseHopperPrefill() ? "auto" : names[v];
      SCOPED_TRACE(format + " cache, " + name + " kernel");
      const std::vector<uint16_t> poison(tokens * qw, 0x7FC0);  // bf16 NaN: an unwritten output shows
      auto gout = upload(poison.data(), poison.size() * 2);
      const absl::Status st = gpu_->PagedAttention(TensorView::Contiguous(gq.data(), DType::kBF16, tokens, qw), gcache,
                                                   gbatch, scale, TensorView::Contiguous(gout.data(), DType::kBF16, tokens, qw));
      ASSERT_TRUE(st.ok()) << st;
      ASSERT_TRUE(gpu_->Synchronize().ok());
      std::vector<uint16_t> got16(tokens * qw);
      ASSERT_TRUE(gpu_->CopyToHost(gout.data(), got16.data(), got16.size() * 2).ok());
      int64_t bad = 0;
      double worst = 0;
      const bool halves = !want_halves.empty() && kernel == cuda::PrefillKernel::kAuto && cuda::UseHopperPrefill();
      for (int64_t i = 0; i < tokens * qw; ++i) {
        const double got = Bf16BitsToFloat(got16[i]), ref = halves ? want_halves[i] : want[i];
        const double err = std::fabs(got - ref), allowed = kAbs + kRel * std::fabs(ref);
        if (!(err <= allowed)) {  // NaN fails too
          if (bad++ < 5) {
            ADD_FAILURE() << "token " << i / qw << " head " << (i % qw) / c.head_dim << " dim " << i % c.head_dim
                          << ": gpu " << got << " cpu " << ref;
          }
        }
        if (err == err) worst = std::max(worst, err / allowed);
      }
      EXPECT_EQ(bad, 0) << bad << " of " << tokens * qw << " elements outside tolerance";
      // The tensor-copy path ran exactly where it should: the Hopper kernel over bf16/fp16 pages
      // (a quantized cache's only when decoded first) of a multiple of 16 keys, unless forced off.
      const bool fp16_pages = !quantized || v == 3;
      const bool tensor_copies = v != 1 && v != 6 && fp16_pages && c.block_size % 16 == 0;
      EXPECT_EQ(cuda::HopperPrefillTensorCopyLaunches() > tensor_copy_launches, tensor_copies) << name;
      std::printf("prefill %s %s Hq=%d Hk=%d D=%d bs=%d tokens=%d max_ctx=%d: worst error %.2f of the tolerance\n",
                  format.c_str(), name, c.q_heads, c.kv_heads, c.head_dim, c.block_size, tokens,
                  batch.max_context_len, worst);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PrefillAttentionTest,
    ::testing::Values(
        Shape{32, 8, 128, 16, {2048}, {2048}},                           // Llama-3-8B heads, whole prompt
        Shape{32, 8, 128, 16, {1000, 3000, 77, 1}, {1000, 200, 77, 1}},  // ragged: a chunk over 2,800 keys, a decode
        Shape{8, 2, 64, 1, {300, 129}, {300, 17}},                       // page size 1
        Shape{9, 3, 64, 7, {517, 54}, {517, 3}},                         // SmolLM2 heads, odd page, group 3
        Shape{8, 2, 64, 32, {1500, 700}, {1500, 41}},                    // pages of 32, head_dim 64, a chunk
        Shape{8, 8, 128, 16, {700}, {700}},                              // MHA
        Shape{32, 8, 128, 16, {20000}, {64}},                            // few rows, long context: key splits
        // Keys far above the first tile's (whose max is ~5 in log2 units): at 300 about 16-23
        // units past it, so the lagging max has to move; at 700 about 160-230, so exponentials
        // against it overflow. A whole prompt beside another, and a chunk over them.
        Shape{32, 8, 128, 16, {1024, 200}, {1024, 200}, {{300, 1.0f}, {700, 10.0f}}},
        Shape{9, 3, 64, 16, {2900}, {400}, {{300, 2.0f}, {700, 20.0f}}}),
    [](const ::testing::TestParamInfo<Shape>& info) {
      const Shape& s = info.param;
      return "Hq" + std::to_string(s.q_heads) + "_Hk" + std::to_string(s.kv_heads) + "_D" + std::to_string(s.head_dim) +
             "_bs" + std::to_string(s.block_size) + "_" + std::to_string(info.index);
    });

}  // namespace
}  // namespace kvs
