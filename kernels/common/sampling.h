// Next-token sampling from one row of logits on the host: greedy, temperature, top-k, top-p.
//
// The rule (the CUDA sampler in kernels/cuda/sampling.cu implements exactly the same one, so a
// seeded request draws the same token on either backend):
//   1. temperature <= 0: greedy, the first maximum.
//   2. Rank tokens by (logit descending, id ascending); top_k > 0 keeps the first top_k.
//   3. Weights w = exp((logit - max) / temperature) over the kept tokens, in float.
//   4. top_p < 1 keeps the shortest ranked prefix whose weight reaches top_p x the kept total.
//   5. With the draw u in [0, 1): walk the kept tokens in ascending id order subtracting w from
//      u x (their total); the token that takes it below zero is the sample (rounding that leaves
//      nothing below zero picks the kept token with the highest id).
// Walking in id order rather than rank order draws from the same distribution and lets a GPU
// find the token with one prefix sum instead of a sort.
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
int32_t SampleToken(std::span<const float> logits, const SampleOptions& opt, float uniform,
                    std::vector<std::pair<float, int32_t>>& scratch);

}  // namespace kvs::cpu
