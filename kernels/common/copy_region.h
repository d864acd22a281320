// CopyRegion: one piece of a Backend::CopyRegions batch (plain data, read by the CUDA kernel too).
#pragma once

#include <cstddef>

namespace kvs {

struct CopyRegion {
  const void* src;
  void* dst;
  size_t bytes;
};

}  // namespace kvs
