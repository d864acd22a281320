#include "launcher/bench_linear.h"

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {
namespace {

struct Matrix {
  std::string name;
  int64_t rows, cols;
};

}  // namespace

absl::Status BenchLinear(Backend& backend, const WeightSource& source, int32_t tokens, int32_t iters) {
  if (tokens < 1 || iters < 1) return absl::InvalidArgumentError("--batch and --iters must be >= 1");
  const ModelConfig& c = source.config();
  const int64_t h = c.hidden_size, q = static_cast<int64_t>(c.num_q_heads) * c.head_dim,
                kv = static_cast<int64_t>(c.num_kv_heads) * c.head_dim, inter = c.intermediate_size;
  const std::string l = "model.layers.0.";
  std::vector<Matrix> matrices = {{l + "self_attn.q_proj.weight", q, h},  {l + "self_attn.k_proj.weight", kv, h},
                                  {l + "self_attn.v_proj.weight", kv, h}, {l + "self_attn.o_proj.weight", h, q},
                                  {l + "mlp.gate_proj.weight", inter, h}, {l + "mlp.up_proj.weight", inter, h},
                                  {l + "mlp.down_proj.weight", h, inter}};
  matrices.push_back({source.Has("lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight", c.vocab_size, h});
  const DType dt = backend.ComputeDType();
  double total_s = 0.0, total_bytes = 0.0;
  for (const Matrix& m : matrices) {
    const std::vector<int64_t> shape = {m.rows, m.cols};
    KVS_ASSIGN_OR_RETURN(std::optional<RawTensor> raw, source.ReadRaw(m.name, shape));
    DeviceBuffer w;
    TensorView wv;
    std::string stored = std::string(DTypeName(dt));
    if (raw && backend.LinearTakesBlocks(raw->type) && raw->row_order.empty()) {
      KVS_ASSIGN_OR_RETURN(w, backend.Allocate(raw->bytes.size()));
      KVS_RETURN_IF_ERROR(backend.CopyToDevice(raw->bytes.data(), w.data(), raw->bytes.size()));
      KVS_RETURN_IF_ERROR(backend.ArrangeBlocks(raw->type, w.data(), m.rows, m.cols));
      wv = TensorView{w.data(), DType::kBlocks, m.rows, m.cols, m.cols, raw->type};
      stored = std::string(LookupGgmlType(static_cast<uint32_t>(raw->type))->name);
    } else {
      // The matrix as the backend would hold it decoded: random values of the compute dtype.
      KVS_ASSIGN_OR_RETURN(w, backend.Allocate(m.rows * m.cols * DTypeSize(dt)));
      wv = w.View(dt, m.rows, m.cols);
      KVS_RETURN_IF_ERROR(backend.FillRandom(wv, 11, 0.0f, 0.02f));
    }
    KVS_ASSIGN_OR_RETURN(DeviceBuffer x, backend.Allocate(tokens * m.cols * DTypeSize(dt)));
    KVS_ASSIGN_OR_RETURN(DeviceBuffer out, backend.Allocate(tokens * m.rows * DTypeSize(dt)));
    const TensorView xv = x.View(dt, tokens, m.cols), ov = out.View(dt, tokens, m.rows);
    KVS_RETURN_IF_ERROR(backend.FillRandom(xv, 3, 0.0f, 1.0f));
    for (int i = 0; i < 3; ++i) KVS_RETURN_IF_ERROR(backend.Linear(xv, wv, TensorView{}, ov));
    KVS_RETURN_IF_ERROR(backend.Synchronize());
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) KVS_RETURN_IF_ERROR(backend.Linear(xv, wv, TensorView{}, ov));
    KVS_RETURN_IF_ERROR(backend.Synchronize());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
    const double bytes = static_cast<double>(wv.BytesOf(m.cols)) * m.rows;
    total_s += s;
    total_bytes += bytes;
    std::printf("| linear | %s | %s [%lld x %lld] %s | T=%d | %.1f us | %.2f TB/s of weight reads |\n",
                backend.Name().c_str(), m.name.c_str(), static_cast<long long>(m.rows), static_cast<long long>(m.cols),
                stored.c_str(), tokens, s * 1e6, bytes / s / 1e12);
  }
  std::printf("| linear | %s | all of layer 0 + LM head | T=%d | %.1f us | %.2f TB/s of weight reads |\n",
              backend.Name().c_str(), tokens, total_s * 1e6, total_bytes / total_s / 1e12);
  return absl::OkStatus();
}

}  // namespace kvs
