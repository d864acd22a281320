#include "launcher/batch_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"

namespace kvs {
namespace {

using nlohmann::json;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

absl::Status WriteAll(int fd, const std::string& text, const std::string& path) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::DataLossError(absl::StrFormat("%s: write failed: %s", path, std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// The records of a journal file, by input line. A last line without its newline, or that does
// not parse, was torn by a kill: it is dropped and `good_bytes` ends before it.
absl::StatusOr<std::map<int32_t, json>> ReadJournal(const std::string& path, const std::vector<BatchItem>& items,
                                                    int64_t& good_bytes, bool& torn) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrFormat("%s: cannot read the journal", path));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  absl::flat_hash_map<int32_t, const BatchItem*> by_line;
  for (const BatchItem& item : items) by_line[item.line] = &item;
  std::map<int32_t, json> records;
  good_bytes = 0;
  torn = false;
  for (size_t pos = 0, n = 1; pos < text.size(); ++n) {
    const size_t end = text.find('\n', pos);
    const bool last = end == std::string::npos || end + 1 == text.size();
    const json j = end == std::string::npos ? json(nullptr) : json::parse(text.substr(pos, end - pos), nullptr, false);
    const bool valid = j.is_object() && j.contains("line") && j["line"].is_number_integer() && j.contains("id") &&
                       j["id"].is_string() && j.contains("record") && j["record"].is_object();
    if (!valid) {
      if (last) {
        torn = true;
        break;
      }
      return absl::DataLossError(absl::StrFormat("%s:%zu: not a journal record; the journal is damaged", path, n));
    }
    const int32_t line = j["line"].get<int32_t>();
    const std::string id = j["id"].get<std::string>();
    auto it = by_line.find(line);
    if (it == by_line.end() || it->second->id != id) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s answers id '%s' on input line %d, but that line of the input %s: the journal belongs to another "
          "input file (delete it to start over)",
          path, id, line, it == by_line.end() ? "holds no request" : "has id '" + it->second->id + "'"));
    }
    records[line] = j["record"];
    pos = end + 1;
    good_bytes = static_cast<int64_t>(pos);
  }
  return records;
}

// A finished run's output file read back as answers, matched to the input by position.
absl::StatusOr<std::map<int32_t, json>> ReadCompleteOutput(const std::string& output, const std::vector<BatchItem>& items) {
  std::ifstream in(output);
  std::map<int32_t, json> records;
  std::string text;
  size_t i = 0;
  for (; std::getline(in, text); ++i) {
    const json j = json::parse(text, nullptr, false);
    if (i >= items.size() || !j.is_object() || !j.contains("id") || j["id"] != items[i].id) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s exists without a journal, but its line %zu does not answer input line %d: it is another run's output "
          "(remove it, or run without --resume to overwrite it)",
          output, i + 1, i < items.size() ? items[i].line : -1));
    }
    records[items[i].line] = j;
  }
  if (i != items.size()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s exists without a journal but answers %zu of the input's %zu requests (remove it to start over)", output, i,
        items.size()));
  }
  return records;
}

}  // namespace

json ErrorRecord(const BatchItem& item, const std::string& message) {
  return json{{"id", item.id}, {"line", item.line}, {"error", {{"message", message}, {"type", "invalid_request_error"}}}};
}

absl::StatusOr<BatchJournal> BatchJournal::Open(const std::string& output, const std::vector<BatchItem>& items,
                                                bool resume) {
  const std::string path = output + ".journal";
  std::map<int32_t, json> records;
  std::error_code ec;
  // An empty journal answers nothing (a run stopped before its first answer): as if absent.
  if (std::filesystem::exists(path, ec) && std::filesystem::file_size(path, ec) > 0) {
    if (!resume) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s holds the answers of an interrupted run: pass --resume to continue it, or delete it to start over", path));
    }
    int64_t good_bytes = 0;
    bool torn = false;
    KVS_ASSIGN_OR_RETURN(records, ReadJournal(path, items, good_bytes, torn));
    if (torn) {
      std::fprintf(stderr, "[generate] %s: dropped a last record torn by the interruption\n", path.c_str());
      std::filesystem::resize_file(path, static_cast<uint64_t>(good_bytes), ec);
      if (ec) return absl::DataLossError(absl::StrFormat("%s: cannot cut the torn record: %s", path, ec.message()));
    }
  } else if (resume && std::filesystem::exists(output, ec)) {
    KVS_ASSIGN_OR_RETURN(records, ReadCompleteOutput(output, items));
  }
  // The file is created by the first answer, so a run refused before any leaves none behind.
  BatchJournal journal(output, path, -1);
  journal.records_ = std::move(records);
  return journal;
}

BatchJournal::BatchJournal(BatchJournal&& other) noexcept
    : output_(std::move(other.output_)), path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)),
      records_(std::move(other.records_)) {}

BatchJournal::~BatchJournal() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status BatchJournal::Append(const std::vector<std::pair<const BatchItem*, json>>& answers) {
  if (answers.empty()) return absl::OkStatus();
  if (fd_ < 0) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return absl::PermissionDeniedError(absl::StrFormat("%s: cannot open the journal: %s", path_, std::strerror(errno)));
  }
  std::string text;
  for (const auto& [item, record] : answers) {
    text += Dump(json{{"line", item->line}, {"id", item->id}, {"record", record}});
    text += '\n';
  }
  KVS_RETURN_IF_ERROR(WriteAll(fd_, text, path_));
  if (::fdatasync(fd_) != 0) return absl::DataLossError(absl::StrFormat("%s: fdatasync failed: %s", path_, std::strerror(errno)));
  for (const auto& [item, record] : answers) records_[item->line] = record;
  return absl::OkStatus();
}

absl::Status BatchJournal::Finish(const std::vector<BatchItem>& items) {
  std::string text;
  for (const BatchItem& item : items) {
    auto it = records_.find(item.line);
    if (it == records_.end()) return absl::InternalError(absl::StrFormat("input line %d was never answered", item.line));
    text += Dump(it->second);
    text += '\n';
  }
  // Written beside the target and renamed, so the output file is either absent or whole.
  const std::string tmp = output_ + ".partial";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_TRUNC | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return absl::PermissionDeniedError(absl::StrFormat("%s: cannot write the output file: %s", output_, std::strerror(errno)));
  absl::Status s = WriteAll(fd, text, tmp);
  if (s.ok() && ::fsync(fd) != 0) s = absl::DataLossError(absl::StrFormat("%s: fsync failed: %s", tmp, std::strerror(errno)));
  ::close(fd);
  KVS_RETURN_IF_ERROR(s);
  std::error_code ec;
  std::filesystem::rename(tmp, output_, ec);
  if (ec) return absl::DataLossError(absl::StrFormat("%s: rename failed: %s", output_, ec.message()));
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
  std::filesystem::remove(path_, ec);
  if (ec) return absl::DataLossError(absl::StrFormat("%s: cannot remove the journal: %s", path_, ec.message()));
  return absl::OkStatus();
}

}  // namespace kvs
