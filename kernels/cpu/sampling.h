// Next-token sampling from one row of logits on the host: greedy, temperature, top-k, top-p.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kvs::cpu {

struct SampleOptions {
  float temperature = 0.0f;  // <= 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 0;         // <= 0: no limit
  float top_p = 1.0f;        // keep the smallest set of tokens whose probability reaches top_p
};

// Picks a token. `uniform` is a caller-supplied draw in [0, 1) (so a per-request seeded
// generator makes sampling reproducible); `scratch` avoids allocating per call.
int32_t SampleToken(std::span<const float> logits, const SampleOptions& opt, double uniform,
                    std::vector<std::pair<float, int32_t>>& scratch);

}  // namespace kvs::cpu
