// The identity of a full KV block for prefix caching: FNV-1a over its parent block's hash and
// its own token ids, so equal hashes mean equal whole prefixes (up to 64-bit collisions). Used
// by the scheduler's prefix cache and by the data-parallel router's prefix affinity.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kvs {

inline uint64_t ChainBlockHash(uint64_t parent, std::span<const int32_t> block_tokens) {
  uint64_t h = 0xcbf29ce484222325ull ^ parent;
  for (int32_t token : block_tokens) {
    const auto t = static_cast<uint32_t>(token);
    for (int byte = 0; byte < 4; ++byte) h = (h ^ ((t >> (8 * byte)) & 0xff)) * 0x100000001b3ull;
  }
  return h;
}

// The chained hashes of the full blocks of `tokens`, starting from `salt`.
inline std::vector<uint64_t> PrefixBlockHashes(std::span<const int32_t> tokens, int32_t block_size, uint64_t salt) {
  std::vector<uint64_t> out;
  uint64_t parent = salt;
  for (size_t at = 0; at + block_size <= tokens.size(); at += block_size) {
    parent = ChainBlockHash(parent, tokens.subspan(at, block_size));
    out.push_back(parent);
  }
  return out;
}

}  // namespace kvs
