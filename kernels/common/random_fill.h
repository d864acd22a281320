// Counter-based pseudo-random values shared by host and device code, so a random-weight model
// is the same on the CPU and the GPU and whichever writes it: element i of a tensor with seed s
// is mean + half_range * u, u = splitmix64(s + i * golden) mapped to [-1, 1) with 24 bits.
#pragma once

#include <cstdint>

#include "kernels/common/host_device.h"

namespace kvs {

KVS_HOST_DEVICE inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Exactly representable: (24-bit integer) * 2^-23 - 1.
KVS_HOST_DEVICE inline float UniformSigned(uint64_t seed, uint64_t index) {
  const uint64_t bits = SplitMix64(seed + index * 0x9E3779B97F4A7C15ull) >> 40;
  return static_cast<float>(static_cast<int64_t>(bits)) * (1.0f / 8388608.0f) - 1.0f;
}

// Which part of a larger seeded tensor a fill writes: element (r, c) of the destination gets the
// value of element first + r * row_stride + c of the whole tensor (row_stride 0: the
// destination's own width). A tensor-parallel rank fills its slice of a weight with exactly
// the values that weight has on one rank.
struct RandomWindow {
  int64_t first = 0;
  int64_t row_stride = 0;
};

// FNV-1a of a tensor name: per-tensor seeds that do not depend on load order.
inline uint64_t NameSeed(const char* name, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ull ^ seed;
  for (; *name; ++name) h = (h ^ static_cast<unsigned char>(*name)) * 0x100000001b3ull;
  return h;
}

}  // namespace kvs
