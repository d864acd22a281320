#include "runtime/kv/kv_groups.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {

KvGroups::KvGroups(int32_t num_layers, std::span<const int32_t> layer_windows) {
  KVS_CHECK(num_layers > 0 && (layer_windows.empty() || static_cast<int32_t>(layer_windows.size()) == num_layers));
  // Layers by window, global first, each kind in layer order.
  std::map<int32_t, std::vector<int32_t>> by_window;
  for (int32_t l = 0; l < num_layers; ++l) by_window[layer_windows.empty() ? 0 : layer_windows[l]].push_back(l);
  slots_ = num_layers;
  for (const auto& [w, layers] : by_window) slots_ = std::min<int32_t>(slots_, static_cast<int32_t>(layers.size()));
  layer_group_.assign(num_layers, 0);
  layer_slot_.assign(num_layers, 0);
  for (const auto& [w, layers] : by_window) {
    for (size_t i = 0; i < layers.size(); ++i) {
      if (i % slots_ == 0) window_.push_back(w);
      layer_group_[layers[i]] = num_groups() - 1;
      layer_slot_[layers[i]] = static_cast<int32_t>(i % slots_);
    }
  }
}

bool KvGroups::any_windowed() const {
  return std::any_of(window_.begin(), window_.end(), [](int32_t w) { return w > 0; });
}

KvResidualRing KvGroups::Ring(int32_t residual_tokens, int32_t block_size, bool with_sink) const {
  int32_t blocks = (std::max(residual_tokens, 0) + block_size - 1) / block_size + 1;
  for (int32_t w : window_) {
    if (w > 0) blocks = std::min(blocks, w / block_size);
  }
  const bool sink = with_sink && residual_tokens > 0;
  return KvResidualRing{block_size, std::max(blocks, 1) + (sink ? 1 : 0), sink};
}

int32_t KvGroups::FirstLiveBlock(int32_t group, int32_t first_query, int32_t block_size) const {
  if (window_[group] <= 0) return 0;
  return std::max(0, first_query - window_[group] + 1) / block_size;
}

int64_t KvGroups::BlocksHeld(int64_t tokens, int32_t block_size, int32_t max_step_tokens) const {
  const int64_t all = (tokens + block_size - 1) / block_size;
  int64_t total = 0;
  for (int32_t w : window_) {
    if (w <= 0) {
      total += all;
      continue;
    }
    total += std::min(all, WindowSpanBlocks(w, block_size, max_step_tokens));
  }
  return total;
}

int64_t KvGroups::WindowSpanBlocks(int32_t window, int32_t block_size, int32_t max_step_tokens) {
  // A step's queries [q, q + n) read keys from q - window + 1: the blocks over window - 1 + n
  // keys, one more when they straddle a block edge.
  return (static_cast<int64_t>(window) - 1 + max_step_tokens + block_size - 1) / block_size + 1;
}

int64_t KvGroups::LongestFitting(int64_t blocks, int32_t block_size, int32_t max_step_tokens, int64_t cap) const {
  if (BlocksHeld(cap, block_size, max_step_tokens) <= blocks) return cap;
  int64_t lo = 0, hi = cap;  // BlocksHeld grows with tokens: the largest lo that fits
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (BlocksHeld(mid, block_size, max_step_tokens) <= blocks) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

std::string KvGroups::Describe() const {
  std::map<int32_t, int32_t> count;
  for (int32_t w : window_) ++count[w];
  std::string out;
  for (const auto& [w, n] : count) {
    if (!out.empty()) out += " + ";
    out += w == 0 ? absl::StrFormat("%d global", n) : absl::StrFormat("%d windowed (%d)", n, w);
  }
  return absl::StrFormat("%s group%s of %d layer%s", out, num_groups() == 1 ? "" : "s", slots_, slots_ == 1 ? "" : "s");
}

}  // namespace kvs
