#include "parallel/rank_context.h"

#include <mpi.h>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/common/status_macros.h"
#include "parallel/mpi_check.h"
#if defined(KVS_HAVE_CUDA)
#include "parallel/gpu_group_communicator.h"
#endif

namespace kvs {

absl::StatusOr<GroupLayout> LayoutFor(const World& world, int tp) {
  if (tp < 1 || world.size % tp != 0) {
    std::vector<int> valid;
    for (int t = 1; t <= world.size; ++t) {
      if (world.size % t == 0) valid.push_back(t);
    }
    return absl::InvalidArgumentError(absl::StrFormat(
        "--tp %d does not divide the %d rank(s) this job started (world = dp x tp); valid tp values for %d rank(s): %s%s",
        tp, world.size, world.size, absl::StrJoin(valid, ", "),
        world.size == 1 ? " (start more ranks with mpirun -np N or srun -n N)" : ""));
  }
  GroupLayout l;
  l.tp = tp;
  l.dp = world.size / tp;
  l.group = world.rank / tp;
  l.group_rank = world.rank % tp;
  return l;
}

absl::StatusOr<std::unique_ptr<RankContext>> RankContext::Create(const World& world, int tp, const ModelConfig& model,
                                                                 Backend& backend, std::chrono::milliseconds timeout,
                                                                 AllReduceMode all_reduce, int32_t ffn_align) {
  std::unique_ptr<RankContext> c(new RankContext());
  c->world_ = world;
  KVS_ASSIGN_OR_RETURN(c->layout_, LayoutFor(world, tp));
  KVS_ASSIGN_OR_RETURN(c->plan_, PlanSharding(model, tp, ffn_align));
  if (world.size == 1) return c;

  const GroupLayout& l = c->layout_;
  MPI_Comm group_comm = MPI_COMM_NULL, leader_comm = MPI_COMM_NULL;
  KVS_MPI_RETURN_IF_ERROR(MPI_Comm_split(MPI_COMM_WORLD, l.group, l.group_rank, &group_comm));
  KVS_MPI_RETURN_IF_ERROR(MPI_Comm_split(MPI_COMM_WORLD, l.leader() ? 0 : MPI_UNDEFINED, l.group, &leader_comm));
  auto control = std::make_unique<MpiCommunicator>(group_comm, timeout);
  if (leader_comm != MPI_COMM_NULL) {
    if (l.dp > 1) c->leaders_ = std::make_unique<MpiCommunicator>(leader_comm, timeout);
    else MPI_Comm_free(&leader_comm);
  }
  if (tp == 1) return c;
#if defined(KVS_HAVE_CUDA)
  if (backend.NativeStream() != nullptr) {  // the CUDA backend: tensors in device memory
    KVS_ASSIGN_OR_RETURN(
        auto group, GpuGroupCommunicator::Create(std::move(control), backend, all_reduce, timeout, model.hidden_size));
    c->transport_ = group->transport();
    c->group_ = std::move(group);
    return c;
  }
#endif
  if (all_reduce == AllReduceMode::kCustom) {
    return absl::InvalidArgumentError("--all-reduce custom needs the CUDA backend (the CPU backend's ranks sum over MPI)");
  }
  c->group_ = std::move(control);
  c->transport_ = "mpi";
  return c;
}

TensorParallel RankContext::tensor_parallel() const {
  TensorParallel tp;
  if (layout_.tp == 1) return tp;
  tp.comm = group_.get();
  for (const ModelShard& s : plan_.ranks) tp.vocab_by_rank.push_back(s.vocab);
  return tp;
}

}  // namespace kvs
