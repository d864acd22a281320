#include "parallel/world.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace kvs {
namespace {

const char* RealGetenv(const char* name) { return std::getenv(name); }

absl::Status ReadInt(const char* (*env)(const char*), const char* name, int& out) {
  const char* v = env(name);
  if (v == nullptr) return absl::OkStatus();
  if (!absl::SimpleAtoi(v, &out) || out < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("environment variable %s='%s' is not a non-negative integer", name, v));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<World> DetectWorld(const char* (*env)(const char*)) {
  if (env == nullptr) env = RealGetenv;
  World w;
  struct Source {
    const char* rank;
    const char* size;
    const char* local;
    const char* name;
  };
  constexpr Source kSources[] = {
      {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "mpirun"},
      {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "srun"},
      {"PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK", "pmix"},
  };
  for (const Source& s : kSources) {
    if (env(s.rank) == nullptr) continue;
    absl::Status st = ReadInt(env, s.rank, w.rank);
    if (st.ok()) st = ReadInt(env, s.size, w.size);
    if (st.ok()) st = ReadInt(env, s.local, w.local_rank);
    if (!st.ok()) return st;
    w.launcher = s.name;
    break;
  }
  if (w.size < 1 || w.rank >= w.size) {
    return absl::InvalidArgumentError(absl::StrFormat("launcher %s reports rank %d of %d", w.launcher, w.rank, w.size));
  }
  return w;
}

}  // namespace kvs
