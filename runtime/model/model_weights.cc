#include "runtime/model/model_weights.h"

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {
namespace {

// Reads named tensors — or a block of rows x columns of each, for a tensor-parallel shard — into
// consecutive rows of one buffer in backend memory. A tensor stored in a GGML type travels to
// the backend as stored and is decoded there (Backend::Dequantize); other tensors are read as
// float32 into a host staging buffer; synthetic ones are filled in place.
class Stager {
 public:
  // Parts start on cache-line boundaries (a Q6_K row is 210 bytes per block).
  static constexpr size_t kPartAlignment = 64;

  Stager(const WeightSource& src, Backend& backend, DType dtype, size_t& bytes)
      : src_(src), backend_(backend), dtype_(dtype), bytes_(bytes) {}

  // Appends rows [rows.begin, rows.end) x columns [cols.begin, cols.end) of tensor `name`,
  // whose HF shape is [full_rows, full_cols] (full_cols == 0 for a vector; then cols is {0, 1}).
  // `matrix`: the rows are a weight matrix's (Linear's or Embedding's), which a backend may keep
  // in their GGML blocks.
  absl::Status Add(const std::string& name, int64_t full_rows, int64_t full_cols, Range rows, Range cols,
                   bool matrix = true) {
    const int64_t width = full_cols == 0 ? 1 : full_cols;
    KVS_CHECK(rows.begin >= 0 && rows.end <= full_rows && cols.begin >= 0 && cols.end <= width);
    const int64_t n = static_cast<int64_t>(rows.size()) * cols.size();
    Piece piece;
    piece.offset = staged_;
    piece.rows = rows.size();
    piece.cols = cols.size();
    staged_ += n;
    if (auto init = src_.RandomInitFor(name)) {  // synthetic: filled in backend memory at Upload
      piece.kind = Piece::kRandom;
      piece.window = RandomWindow{rows.begin * width + cols.begin, width};
      piece.init = *init;
      pieces_.push_back(piece);
      return absl::OkStatus();
    }
    std::vector<int64_t> shape = full_cols == 0 ? std::vector<int64_t>{full_rows} : std::vector<int64_t>{full_rows, full_cols};
    if (full_cols > 0) {
      KVS_ASSIGN_OR_RETURN(std::optional<RawTensor> raw, src_.ReadRaw(name, shape));
      const auto info = raw ? LookupGgmlType(static_cast<uint32_t>(raw->type)) : std::nullopt;
      // Whole blocks only: a column window must start and end on a block boundary.
      const bool whole_blocks = info && cols.begin % info->block_elems == 0 && cols.size() % info->block_elems == 0;
      if (info && !whole_blocks && matrix && backend_.LinearTakesBlocks(raw->type)) {
        // A tensor-parallel share that would cut the file's blocks (the FFN split follows the
        // blocks, sharding_plan.h; a head split cannot).
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: tensor '%s' is stored as %s, in blocks of %d columns; this rank's share is columns [%d, %d), which "
            "would split a block: use a --tp under which every rank's share is whole blocks (or a file whose type "
            "has smaller blocks)",
            src_.path(), name, info->name, info->block_elems, cols.begin, cols.end));
      }
      const bool keep = whole_blocks && matrix && backend_.LinearTakesBlocks(raw->type);
      // The device decodes rows in stored order: reordered rows are kept as blocks or decoded here.
      const bool decode = whole_blocks && backend_.DequantizesType(raw->type) && raw->row_order.empty();
      if (keep || decode) {
        const int64_t row_bytes = full_cols / info->block_elems * info->block_bytes;
        KVS_CHECK(static_cast<int64_t>(raw->bytes.size()) == full_rows * row_bytes);
        piece.kind = Piece::kRaw;
        piece.owner = raw->owner;
        piece.keep_blocks = keep;
        piece.type = raw->type;
        if (keep && !raw->row_order.empty()) {
          piece.raw = raw->bytes;  // every row: the order picks them
          piece.row_order.assign(raw->row_order.begin() + rows.begin, raw->row_order.begin() + rows.end);
        } else {
          piece.raw = raw->bytes.subspan(rows.begin * row_bytes, rows.size() * row_bytes);
        }
        piece.raw_stride = row_bytes;
        piece.raw_offset = cols.begin / info->block_elems * info->block_bytes;
        pieces_.push_back(piece);
        return absl::OkStatus();
      }
    }
    piece.kind = Piece::kHost;
    piece.host_at = host_.size();
    pieces_.push_back(piece);
    host_.resize(host_.size() + n);
    float* dst = host_.data() + piece.host_at;
    if (n == full_rows * width) return src_.ReadF32(name, shape, std::span<float>(dst, n));
    // A shard: read the whole tensor once, keep the block.
    whole_.resize(full_rows * width);
    KVS_RETURN_IF_ERROR(src_.ReadF32(name, shape, std::span<float>(whole_)));
    for (int64_t r = 0; r < rows.size(); ++r) {
      const float* from = whole_.data() + (rows.begin + r) * width + cols.begin;
      std::copy(from, from + cols.size(), dst + r * cols.size());
    }
    return absl::OkStatus();
  }
  // The whole tensor.
  absl::Status Add(const std::string& name, int64_t rows, int64_t cols) {
    return Add(name, rows, cols, Range{0, static_cast<int32_t>(rows)}, Range{0, cols == 0 ? 1 : static_cast<int32_t>(cols)},
               cols > 0);
  }

  // The staged rows as one buffer of `rows` x `cols`, in parts of one storage each (WeightPart).
  absl::StatusOr<WeightMatrix> UploadMatrix(int64_t rows, int64_t cols) {
    KVS_CHECK(staged_ == rows * cols);
    WeightMatrix m;
    m.rows = rows;
    m.cols = cols;
    // Parts: runs of pieces stored the same way; each piece's bytes within the buffer.
    size_t bytes = 0;
    int64_t row = 0;
    std::vector<size_t> dest(pieces_.size());
    for (size_t i = 0; i < pieces_.size(); ++i) {
      const Piece& p = pieces_[i];
      const DType dt = p.keep_blocks ? DType::kBlocks : dtype_;
      const GgmlType bt = p.keep_blocks ? p.type : GgmlType::kF32;
      if (m.parts.empty() || m.parts.back().dtype != dt || m.parts.back().blocks != bt) {
        bytes = (bytes + kPartAlignment - 1) / kPartAlignment * kPartAlignment;
        m.parts.push_back(WeightPart{row, 0, bytes, dt, bt});
      }
      const int64_t piece_rows = p.rows * p.cols / cols;  // a vector's pieces are its elements
      m.parts.back().rows += piece_rows;
      dest[i] = bytes;
      bytes += p.rows * TensorView{nullptr, dt, 0, p.cols, p.cols, bt}.BytesOf(p.cols);
      row += piece_rows;
    }
    KVS_ASSIGN_OR_RETURN(m.buffer, backend_.Allocate(bytes));
    auto* base = m.buffer.as<std::byte>();
    auto region = [&](size_t i) {
      return TensorView::Contiguous(base + dest[i], dtype_, pieces_[i].rows, pieces_[i].cols);
    };
    for (size_t i = 0; i < pieces_.size(); ++i) {
      const Piece& p = pieces_[i];
      switch (p.kind) {
        case Piece::kRandom:
          KVS_RETURN_IF_ERROR(backend_.FillRandom(region(i), p.init.seed, p.init.mean, p.init.half_range, p.window));
          break;
        case Piece::kRaw:
          if (p.keep_blocks) {
            // As stored: the window's bytes of each row (all of it unless a shard takes columns).
            const int64_t window = TensorView{nullptr, DType::kBlocks, 0, p.cols, p.cols, p.type}.BytesOf(p.cols);
            if (window == p.raw_stride && p.row_order.empty()) {
              KVS_RETURN_IF_ERROR(backend_.CopyToDevice(p.raw.data(), base + dest[i], p.raw.size()));
            } else {
              for (int64_t r = 0; r < p.rows; ++r) {
                const int64_t stored = p.row_order.empty() ? r : p.row_order[r];
                KVS_RETURN_IF_ERROR(backend_.CopyToDevice(p.raw.data() + stored * p.raw_stride + p.raw_offset,
                                                          base + dest[i] + r * window, window));
              }
            }
            // Into the backend's own layout of this type (CUDA: F8_E4M3 rows split into codes, scales).
            KVS_RETURN_IF_ERROR(backend_.ArrangeBlocks(p.type, base + dest[i], p.rows, p.cols));
            break;
          }
          if (raw_device_.bytes() < p.raw.size()) {
            raw_device_.Reset();
            KVS_ASSIGN_OR_RETURN(raw_device_, backend_.Allocate(p.raw.size()));
          }
          // Stream-ordered: the previous piece's decode has read the staging buffer first.
          KVS_RETURN_IF_ERROR(backend_.CopyToDevice(p.raw.data(), raw_device_.data(), p.raw.size()));
          KVS_RETURN_IF_ERROR(backend_.Dequantize(p.type, raw_device_.as<uint8_t>() + p.raw_offset, p.raw_stride, region(i)));
          break;
        case Piece::kHost: {
          // Consecutive host pieces are consecutive in both buffers: one upload for the run.
          const size_t first = i;
          int64_t n = p.rows * p.cols;
          while (i + 1 < pieces_.size() && pieces_[i + 1].kind == Piece::kHost) {
            ++i;
            n += pieces_[i].rows * pieces_[i].cols;
          }
          const TensorView dst = TensorView::Contiguous(base + dest[first], dtype_, 1, n);
          KVS_RETURN_IF_ERROR(backend_.UploadFloat(std::span<const float>(host_.data() + p.host_at, n), dst));
          break;
        }
      }
    }
    bytes_ += m.buffer.bytes();
    host_.clear();
    pieces_.clear();
    staged_ = 0;
    return m;
  }

  // A vector (or any rows kept in the compute dtype).
  absl::StatusOr<DeviceBuffer> Upload(int64_t rows, int64_t cols) {
    KVS_ASSIGN_OR_RETURN(WeightMatrix m, UploadMatrix(rows, cols));
    KVS_CHECK(m.parts.size() == 1 && m.parts[0].dtype == dtype_);
    return std::move(m.buffer);
  }

  // The raw staging buffer is reused across tensors; the last decode must finish before it goes.
  absl::Status Finish() {
    KVS_RETURN_IF_ERROR(backend_.Synchronize());
    raw_device_.Reset();
    return absl::OkStatus();
  }

 private:
  const WeightSource& src_;
  Backend& backend_;
  DType dtype_;
  size_t& bytes_;
  struct Piece {
    int64_t offset = 0, rows = 0, cols = 0;  // where in the staged buffer, and its shape
    enum Kind { kHost, kRaw, kRandom } kind = kHost;
    bool keep_blocks = false;          // kRaw: stored as the file stores it (not decoded)
    size_t host_at = 0;                // kHost: start in host_
    GgmlType type = GgmlType::kF32;    // kRaw: the rows as stored,
    std::shared_ptr<const std::vector<uint8_t>> owner;  // kRaw: bytes made at read time, if any
    std::span<const uint8_t> raw;      //   from the first row of the window (of the tensor
    std::vector<int32_t> row_order;    //   when rows are reordered: stored row of each row),
    int64_t raw_stride = 0;            //   bytes per stored row,
    int64_t raw_offset = 0;            //   and the window's first column in bytes
    RandomWindow window;               // kRandom
    RandomInit init;
  };
  std::vector<float> host_, whole_;
  std::vector<Piece> pieces_;
  DeviceBuffer raw_device_;
  int64_t staged_ = 0;
};

}  // namespace

absl::StatusOr<ModelWeights> ModelWeights::Load(const WeightSource& src, Backend& backend) {
  return Load(src, backend, ModelShard::Whole(src.config()));
}

absl::StatusOr<ModelWeights> ModelWeights::Load(const WeightSource& src, Backend& backend, const ModelShard& shard) {
  ModelWeights w;
  w.config_ = src.config();
  w.shard_ = shard;
  w.dtype_ = backend.ComputeDType();
  const ModelConfig& c = w.config_;
  w.local_ = shard.LocalConfig(c);
  const int32_t h = c.hidden_size, d = c.head_dim;
  const int64_t q_all = static_cast<int64_t>(c.num_q_heads) * d, kv_all = static_cast<int64_t>(c.num_kv_heads) * d;
  const auto times_d = [d](Range r) { return Range{r.begin * d, r.end * d}; };
  const Range all_h{0, h};
  const Range q_rows = times_d(shard.ComputedQHeads(c)), kv_rows = times_d(shard.kv_heads);
  const Range q_owned = times_d(shard.q_heads), inter = shard.intermediate, vocab = shard.vocab;
  const int64_t q = q_rows.size(), kv = kv_rows.size(), i = inter.size(), v = vocab.size();
  Stager st(src, backend, w.dtype_, w.bytes_);

  KVS_RETURN_IF_ERROR(st.Add("model.embed_tokens.weight", c.vocab_size, h, vocab, all_h));
  KVS_ASSIGN_OR_RETURN(w.embed_, st.UploadMatrix(v, h));
  KVS_RETURN_IF_ERROR(st.Add("model.norm.weight", h, 0));
  KVS_ASSIGN_OR_RETURN(w.final_norm_, st.Upload(1, h));
  if (!c.tie_word_embeddings) {
    if (!src.Has("lm_head.weight")) {
      return absl::NotFoundError(absl::StrFormat(
          "%s: lm_head.weight is missing and tie_word_embeddings is false", src.path()));
    }
    KVS_RETURN_IF_ERROR(st.Add("lm_head.weight", c.vocab_size, h, vocab, all_h));
    KVS_ASSIGN_OR_RETURN(w.lm_head_, st.UploadMatrix(v, h));
  }
  const Range one{0, 1};
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrFormat("model.layers.%d.", l);
    LayerWeights lw;
    KVS_RETURN_IF_ERROR(st.Add(p + "input_layernorm.weight", h, 0));
    KVS_ASSIGN_OR_RETURN(lw.attn_norm, st.Upload(1, h));
    // Column-parallel QKV: this rank's heads' rows.
    KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.q_proj.weight", q_all, h, q_rows, all_h));
    KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.k_proj.weight", kv_all, h, kv_rows, all_h));
    KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.v_proj.weight", kv_all, h, kv_rows, all_h));
    KVS_ASSIGN_OR_RETURN(lw.qkv, st.UploadMatrix(q + 2 * kv, h));
    if (c.attention_bias) {
      KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.q_proj.bias", q_all, 0, q_rows, one, false));
      KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.k_proj.bias", kv_all, 0, kv_rows, one, false));
      KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.v_proj.bias", kv_all, 0, kv_rows, one, false));
      KVS_ASSIGN_OR_RETURN(lw.qkv_bias, st.Upload(1, q + 2 * kv));
    }
    if (c.qk_norm) {  // one weight per head dimension, shared by every head
      KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.q_norm.weight", d, 0));
      KVS_ASSIGN_OR_RETURN(lw.q_norm, st.Upload(1, d));
      KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.k_norm.weight", d, 0));
      KVS_ASSIGN_OR_RETURN(lw.k_norm, st.Upload(1, d));
    }
    // Row-parallel O: the input columns of the owned heads only.
    KVS_RETURN_IF_ERROR(st.Add(p + "self_attn.o_proj.weight", h, q_all, all_h, q_owned));
    KVS_ASSIGN_OR_RETURN(lw.o, st.UploadMatrix(h, q_owned.size()));
    if (c.sandwich_norms) {
      KVS_RETURN_IF_ERROR(st.Add(p + "post_attention_layernorm.weight", h, 0));
      KVS_ASSIGN_OR_RETURN(lw.post_attn_norm, st.Upload(1, h));
      KVS_RETURN_IF_ERROR(st.Add(p + "pre_feedforward_layernorm.weight", h, 0));
      KVS_ASSIGN_OR_RETURN(lw.ffn_norm, st.Upload(1, h));
      KVS_RETURN_IF_ERROR(st.Add(p + "post_feedforward_layernorm.weight", h, 0));
      KVS_ASSIGN_OR_RETURN(lw.post_ffn_norm, st.Upload(1, h));
    } else {
      KVS_RETURN_IF_ERROR(st.Add(p + "post_attention_layernorm.weight", h, 0));
      KVS_ASSIGN_OR_RETURN(lw.ffn_norm, st.Upload(1, h));
    }
    KVS_RETURN_IF_ERROR(st.Add(p + "mlp.gate_proj.weight", c.intermediate_size, h, inter, all_h));
    KVS_RETURN_IF_ERROR(st.Add(p + "mlp.up_proj.weight", c.intermediate_size, h, inter, all_h));
    KVS_ASSIGN_OR_RETURN(lw.gate_up, st.UploadMatrix(2 * i, h));
    KVS_RETURN_IF_ERROR(st.Add(p + "mlp.down_proj.weight", h, c.intermediate_size, all_h, inter));
    KVS_ASSIGN_OR_RETURN(lw.down, st.UploadMatrix(h, i));
    w.layers_.push_back(std::move(lw));
  }

  const auto factors = src.RopeFreqFactors();
  const std::vector<float> inv_freq = ComputeRopeInvFreq(c, factors ? &*factors : nullptr);
  KVS_ASSIGN_OR_RETURN(w.rope_inv_freq_, backend.Allocate(inv_freq.size() * sizeof(float)));
  // The rope table stays f32 on every backend.
  KVS_RETURN_IF_ERROR(backend.CopyToDevice(inv_freq.data(), w.rope_inv_freq_.data(), inv_freq.size() * sizeof(float)));
  if (c.HasLocalRope()) {
    const std::vector<float> local = ComputeLocalRopeInvFreq(c);
    KVS_ASSIGN_OR_RETURN(w.rope_local_inv_freq_, backend.Allocate(local.size() * sizeof(float)));
    KVS_RETURN_IF_ERROR(backend.CopyToDevice(local.data(), w.rope_local_inv_freq_.data(), local.size() * sizeof(float)));
  }
  KVS_RETURN_IF_ERROR(st.Finish());
  return w;
}

int64_t ModelWeights::BytesFor(const ModelConfig& c, const ModelShard& shard, DType dtype, const WeightSource* source) {
  const int64_t h = c.hidden_size, d = c.head_dim;
  const int64_t q = static_cast<int64_t>(shard.ComputedQHeads(c).size()) * d, kv = static_cast<int64_t>(shard.kv_heads.size()) * d;
  const int64_t q_owned = static_cast<int64_t>(shard.q_heads.size()) * d, i = shard.intermediate.size();
  const int64_t v = shard.vocab.size();
  const double elem = static_cast<double>(DTypeSize(dtype));
  // Bytes of a rows x cols shard of tensor `name`: its blocks' size where the source keeps it in
  // blocks and the shard's rows are whole blocks (as the loader keeps it), else `dtype`'s.
  auto bytes = [&](const std::string& name, int64_t rows, int64_t cols) {
    const std::optional<GgmlType> t = source != nullptr ? source->StoredBlockType(name) : std::nullopt;
    const auto info = t ? LookupGgmlType(static_cast<uint32_t>(*t)) : std::nullopt;
    if (!info || cols % info->block_elems != 0) return static_cast<double>(rows * cols) * elem;
    return static_cast<double>(rows * (cols / info->block_elems) * info->block_bytes);
  };
  double total = bytes("model.embed_tokens.weight", v, h) + h * elem;
  if (!c.tie_word_embeddings) total += bytes("lm_head.weight", v, h);
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    total += 2 * h * elem + bytes(p + "self_attn.q_proj.weight", q, h) + bytes(p + "self_attn.k_proj.weight", kv, h) +
             bytes(p + "self_attn.v_proj.weight", kv, h) + bytes(p + "self_attn.o_proj.weight", h, q_owned) +
             bytes(p + "mlp.gate_proj.weight", i, h) + bytes(p + "mlp.up_proj.weight", i, h) +
             bytes(p + "mlp.down_proj.weight", h, i);
    if (c.attention_bias) total += (q + 2 * kv) * elem;
    if (c.qk_norm) total += 2 * d * elem;
    if (c.sandwich_norms) total += 2 * h * elem;
  }
  const int64_t rope_tables = c.HasLocalRope() ? 2 : 1;
  return static_cast<int64_t>(total) + rope_tables * (d / 2) * static_cast<int64_t>(sizeof(float));
}

TensorView ModelWeights::embed() const { return embed_.View(); }
TensorView ModelWeights::final_norm() const { return final_norm_.View(dtype_, 1, config_.hidden_size); }
const WeightMatrix& ModelWeights::lm_head() const { return config_.tie_word_embeddings ? embed_ : lm_head_; }

TensorView WeightMatrix::PartView(const WeightPart& p) const {
  return TensorView{buffer.as<std::byte>() + p.offset, p.dtype, p.rows, cols, cols, p.blocks};
}

TensorView WeightMatrix::View() const {
  KVS_CHECK_MSG(parts.size() == 1, "a weight matrix of several storage types has no single view");
  return PartView(parts[0]);
}

absl::Status LinearOver(Backend& backend, TensorView x, const WeightMatrix& w, TensorView bias, TensorView out) {
  for (const WeightPart& p : w.parts) {
    const TensorView part_bias = bias.data != nullptr ? bias.Cols(p.first_row, p.rows) : bias;
    KVS_RETURN_IF_ERROR(backend.Linear(x, w.PartView(p), part_bias, out.Cols(p.first_row, p.rows)));
  }
  return absl::OkStatus();
}

}  // namespace kvs
