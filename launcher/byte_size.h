// Parses human byte sizes for flags: "1073741824", "512MiB", "4GiB", "1.5GB".
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace kvs {
absl::StatusOr<size_t> ParseByteSize(const std::string& text);
}

namespace kvs {
// Parses token counts for flags: "4096", "128K" (x 1024), "1M" (x 1024^2).
absl::StatusOr<int64_t> ParseTokenCount(const std::string& text);
}  // namespace kvs
