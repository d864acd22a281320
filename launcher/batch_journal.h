// The durable record of an offline batch (`generate --input in.jsonl --output out.jsonl`), so
// that a job killed mid-way (scancel, a Slurm time limit, a lost node) loses only the requests
// that were running.
//
// While the batch runs, every answer (a result or an error record) is appended to
// `<output>.journal` as one line {"line": N, "id": ..., "record": {...}}, and the file is
// fdatasync'ed before the next engine step: each answered line survives a kill. When every line
// of the input is answered, Finish writes `<output>` in input order (beside it, then renamed)
// and removes the journal. `--resume` reads the journal back and skips the lines it answers; a
// journal whose lines or ids do not match the input is refused (another input file), and a last
// line torn by the kill is dropped.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launcher/jsonl_requests.h"
#include "nlohmann/json.hpp"

namespace kvs {

class BatchJournal {
 public:
  // Opens the journal of `output` for the batch `items`. Without `resume`, an existing journal
  // is an error (it holds the answers of an interrupted run); with it, those answers are loaded.
  static absl::StatusOr<BatchJournal> Open(const std::string& output, const std::vector<BatchItem>& items, bool resume);
  BatchJournal(BatchJournal&& other) noexcept;
  BatchJournal& operator=(BatchJournal&&) = delete;
  ~BatchJournal();

  // Whether input line `line` was answered (by this run or an earlier one).
  bool Answered(int32_t line) const { return records_.contains(line); }
  int64_t answered() const { return static_cast<int64_t>(records_.size()); }
  // Appends answers and makes them durable (one fdatasync for the lot).
  absl::Status Append(const std::vector<std::pair<const BatchItem*, nlohmann::json>>& answers);
  // Every line answered: writes the output file in input order and removes the journal.
  absl::Status Finish(const std::vector<BatchItem>& items);
  const std::string& path() const { return path_; }

 private:
  BatchJournal(std::string output, std::string path, int fd) : output_(std::move(output)), path_(std::move(path)), fd_(fd) {}
  std::string output_, path_;
  int fd_ = -1;
  std::map<int32_t, nlohmann::json> records_;  // input line -> its answer
};

// The error record of a request that could not run: {"id", "line", "error": {"message", "type"}}.
nlohmann::json ErrorRecord(const BatchItem& item, const std::string& message);

}  // namespace kvs
