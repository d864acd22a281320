#include "runtime/sched/step_input.h"

#include "kernels/common/paged_kv.h"

namespace kvs {

void PlaceTailsInResiduals(StepInput& in, const KvResidualRing& ring, int32_t groups) {
  in.residual.clear();
  in.sealed.clear();
  in.sink.clear();
  for (int32_t s = 0; s < in.num_seqs(); ++s) {
    in.residual.push_back(s);
    const int32_t end = in.context_len[s], first = end - (in.query_start[s + 1] - in.query_start[s]);
    in.sealed.push_back(ring.SealedEnd(first));
    in.sink.push_back(ring.sink ? 1 : 0);  // a step from position 0 on, or a later one of the same sequence
    for (int32_t t = in.query_start[s]; t < in.query_start[s + 1]; ++t) {
      const int32_t p = in.positions[t];
      // Group 0's ring of sequence s is ring s * groups (RepeatForKvGroups moves it per group).
      const bool ring_keeps = p >= ring.SealedEnd(end) || ring.InSink(p);
      in.slot_mapping[t] = ring_keeps ? -(2 + ring.Slot(static_cast<int64_t>(s) * groups, p)) : -1;
    }
  }
}

void RepeatForKvGroups(StepInput& in, int32_t groups, int32_t blocks_apart, int32_t block_size, int32_t ring_blocks) {
  const int32_t ring_slots = ring_blocks * block_size;
  const size_t tokens = in.slot_mapping.size(), table = in.block_table.size();
  for (int32_t g = 1; g < groups; ++g) {
    for (size_t i = 0; i < tokens; ++i) {
      // A residual slot (<= -2) moves to the group's ring, ring r * groups + g: `ring_slots` slots on.
      const int32_t slot = in.slot_mapping[i];
      in.slot_mapping.push_back(slot == -1   ? slot
                                : slot <= -2 ? slot - g * ring_slots
                                             : slot + g * blocks_apart * block_size);
    }
    for (size_t i = 0; i < table; ++i) in.block_table.push_back(in.block_table[i] + g * blocks_apart);
  }
  in.num_kv_groups = groups;
}

}  // namespace kvs
