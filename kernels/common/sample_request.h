// SampleRequest: one token to draw from a row of logits, by the sampling rule of
// kernels/common/sampling.h. Plain data, so a batch of them is copied to the device as is.
#pragma once

#include <cstdint>

namespace kvs {

struct SampleRequest {
  int32_t row;        // logits row
  float temperature;  // <= 0: greedy
  int32_t top_k;      // <= 0: no limit
  float top_p;        // >= 1: no limit
  float uniform;      // the request's draw in [0, 1)
};

}  // namespace kvs
