// Everything one rank needs to take its part in a (data parallel x tensor parallel) job: where
// it sits, the sharding plan and its shard, and the communicators of its tensor-parallel group.
//
// World = dp x tp ranks. Ranks [g * tp, (g + 1) * tp) form TP group g (consecutive ranks, so a
// group stays on one node when nodes hold multiples of tp); each group's rank 0 is its leader
// and runs the scheduler; global rank 0 also routes requests between the groups' leaders.
#pragma once

#include <chrono>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "parallel/all_reduce_choice.h"
#include "parallel/mpi_communicator.h"
#include "parallel/sharding_plan.h"
#include "parallel/world.h"
#include "runtime/engine/collectives.h"

namespace kvs {

struct GroupLayout {
  int tp = 1, dp = 1;
  int group = 0;       // which TP group (data-parallel index)
  int group_rank = 0;  // rank within the group
  bool leader() const { return group_rank == 0; }
};

// Checks that `tp` divides the world and places `world.rank`; the error names the valid tp.
absl::StatusOr<GroupLayout> LayoutFor(const World& world, int tp);

class RankContext {
 public:
  // Collective over the world when it has more than one rank. `ffn_align`: PlanSharding's. Tensors
  // travel by NCCL and/or the
  // peer-memory collectives on a CUDA backend (GpuGroupCommunicator, `all_reduce` choosing), by
  // MPI otherwise.
  static absl::StatusOr<std::unique_ptr<RankContext>> Create(const World& world, int tp, const ModelConfig& model,
                                                             Backend& backend, std::chrono::milliseconds timeout,
                                                             AllReduceMode all_reduce = AllReduceMode::kAuto,
                                                             int32_t ffn_align = 1);

  const World& world() const { return world_; }
  const GroupLayout& layout() const { return layout_; }
  const ShardingPlan& plan() const { return plan_; }
  const ModelShard& shard() const { return plan_.ranks[layout_.group_rank]; }
  // What the runtime needs to run its shard (comm null at tp = 1).
  TensorParallel tensor_parallel() const;
  // Global rank 0 and the other groups' leaders (null on non-leaders and when dp = 1).
  MpiCommunicator* leaders() const { return leaders_.get(); }
  const char* transport() const { return transport_; }

 private:
  RankContext() = default;
  World world_;
  GroupLayout layout_;
  ShardingPlan plan_;
  std::unique_ptr<Collectives> group_;
  std::unique_ptr<MpiCommunicator> leaders_;
  const char* transport_ = "none";
};

}  // namespace kvs
