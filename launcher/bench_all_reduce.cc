#include "launcher/bench_all_reduce.h"

#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "kernels/common/status_macros.h"
#include "launcher/engine_flags.h"
#include "launcher/flags.h"
#include "parallel/mpi_communicator.h"
#include "parallel/mpi_session.h"
#include "parallel/world.h"
#if defined(KVS_HAVE_CUDA)
#include "parallel/gpu_group_communicator.h"
#endif

namespace kvs {

absl::Status BenchAllReduce(int iters) {
#if defined(KVS_HAVE_CUDA)
  if (iters < 1) return absl::InvalidArgumentError("--iters must be >= 1");
  KVS_ASSIGN_OR_RETURN(const World world, DetectWorld());
  if (world.size < 2) return absl::InvalidArgumentError("bench --kernel all-reduce runs under mpirun -np 2 (or more)");
  KVS_ASSIGN_OR_RETURN(auto session, MpiSession::Start(world));
  KVS_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, RankBackend(world.local_rank, world.size));
  if (backend->NativeStream() == nullptr)
    return absl::InvalidArgumentError("bench --kernel all-reduce needs --device cuda");
  MPI_Comm dup;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(absl::GetFlag(FLAGS_comm_timeout) * 1000));
  MpiCommunicator control(dup, timeout);
  std::vector<size_t> bytes;
  for (size_t b = 1024; b <= (size_t{64} << 20); b *= 4) bytes.push_back(b);
  KVS_ASSIGN_OR_RETURN(const auto rows, GpuGroupCommunicator::TimeAllReduces(control, *backend, bytes, iters, timeout));
  if (world.rank == 0) {
    for (const AllReduceTiming& t : rows) {
      const std::string nccl = t.nccl_us >= 0 ? absl::StrFormat("%.1f us", t.nccl_us) : "n/a";
      const std::string peer = t.custom_us >= 0 ? absl::StrFormat("%.1f us", t.custom_us) : "n/a";
      const std::string ratio = t.nccl_us > 0 && t.custom_us > 0 ? absl::StrFormat("%.2f", t.custom_us / t.nccl_us) : "";
      std::printf("| all-reduce | %s | %d ranks | %zu bytes bf16 | NCCL %s | peer %s | peer / NCCL %s |\n",
                  backend->Name().c_str(), world.size, t.bytes, nccl.c_str(), peer.c_str(), ratio.c_str());
    }
  }
  return control.Barrier();
#else
  return absl::UnimplementedError("bench --kernel all-reduce needs a build with CUDA");
#endif
}

}  // namespace kvs
