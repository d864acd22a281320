#include "runtime/sched/step_input.h"

namespace kvs {
void PlaceTailsInResiduals(StepInput& in, int32_t block_size, int32_t groups) {
  in.residual.clear();
  for (int32_t s = 0; s < in.num_seqs(); ++s) {
    in.residual.push_back(s);
    const int32_t end = in.context_len[s];
    for (int32_t t = in.query_start[s]; t < in.query_start[s + 1]; ++t) {
      const int32_t p = in.positions[t];
      const bool sealed = (p / block_size + 1) * block_size <= end;
      in.slot_mapping[t] = sealed ? -1 : -(2 + s * groups * block_size + p % block_size);
    }
  }
}

void RepeatForKvGroups(StepInput& in, int32_t groups, int32_t blocks_apart, int32_t block_size) {
  const size_t tokens = in.slot_mapping.size(), table = in.block_table.size();
  for (int32_t g = 1; g < groups; ++g) {
    for (size_t i = 0; i < tokens; ++i) {
      // A residual slot (<= -2) moves to the group's residual block: block r * groups + g.
      const int32_t slot = in.slot_mapping[i];
      in.slot_mapping.push_back(slot == -1 ? slot : slot <= -2 ? slot - g * block_size : slot + g * blocks_apart * block_size);
    }
    for (size_t i = 0; i < table; ++i) in.block_table.push_back(in.block_table[i] + g * blocks_apart);
  }
  in.num_kv_groups = groups;
}

}  // namespace kvs
