#include "launcher/byte_size.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace kvs {

absl::StatusOr<size_t> ParseByteSize(const std::string& text) {
  const absl::string_view t = absl::StripAsciiWhitespace(text);
  size_t split = 0;
  while (split < t.size() && (absl::ascii_isdigit(t[split]) || t[split] == '.')) ++split;
  double value;
  if (split == 0 || !absl::SimpleAtod(t.substr(0, split), &value)) {
    return absl::InvalidArgumentError(absl::StrFormat("'%s' is not a byte size (try 512MiB or 4GiB)", text));
  }
  const std::string unit = absl::AsciiStrToLower(t.substr(split));
  double mult;
  if (unit.empty() || unit == "b") mult = 1;
  else if (unit == "kib" || unit == "k") mult = 1024.0;
  else if (unit == "mib" || unit == "m") mult = 1024.0 * 1024;
  else if (unit == "gib" || unit == "g") mult = 1024.0 * 1024 * 1024;
  else if (unit == "kb") mult = 1e3;
  else if (unit == "mb") mult = 1e6;
  else if (unit == "gb") mult = 1e9;
  else return absl::InvalidArgumentError(absl::StrFormat("'%s': unknown unit '%s' (use B, KiB, MiB, GiB, KB, MB, GB)", text, unit));
  const double bytes = value * mult;
  if (!(bytes >= 1) || bytes > 1e15) return absl::InvalidArgumentError(absl::StrFormat("'%s' is out of range", text));
  return static_cast<size_t>(std::llround(bytes));
}

}  // namespace kvs

namespace kvs {

absl::StatusOr<int64_t> ParseTokenCount(const std::string& s) {
  int64_t mult = 1;
  std::string digits = s;
  if (!s.empty() && (s.back() == 'K' || s.back() == 'k')) mult = 1024;
  if (!s.empty() && (s.back() == 'M' || s.back() == 'm')) mult = 1024 * 1024;
  if (mult != 1) digits.pop_back();
  int64_t v = 0;
  if (!absl::SimpleAtoi(digits, &v) || v <= 0 || v > (int64_t{1} << 40) / mult) {
    return absl::InvalidArgumentError(absl::StrFormat("'%s' is not a positive token count (e.g. 4096, 128K, 1M)", s));
  }
  return v * mult;
}

}  // namespace kvs
