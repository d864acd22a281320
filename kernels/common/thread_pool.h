// The CPU kernels' threads: one pool per process, sized once (SetCpuThreads, `--threads`).
//
// Why not OpenMP: its barriers wait for every thread of a team, and libgomp spins while it
// waits. When another process shares the cores, a team member that is not scheduled holds every
// parallel loop for a whole time slice, and the spinners burn the slices the late thread needs:
// a decode step of a few hundred loops went from milliseconds to seconds (issue 23). Here work is
// handed out in chunks that any thread claims, the caller included, so a loop never waits for a
// thread that has not started: it waits only for chunks that are being run. Idle workers spin
// briefly (steps issue loops back to back) and then sleep on a futex.
#pragma once

#include <cstdint>

#include "absl/functional/function_ref.h"

namespace kvs {

// Work (multiply-adds, or element operations) below which a chunk is not worth handing to
// another thread: a few microseconds, against the tens of nanoseconds a claim and a wake cost.
inline constexpr int64_t kParallelWork = 1 << 14;

// Threads the kernels use, the caller included (>= 1).
int CpuThreads();
// Sets the pool's size; takes effect for the next loop. n <= 0 means DefaultCpuThreads().
void SetCpuThreads(int n);
// The cores this process may run on (its affinity mask), divided among the ranks that share the
// node when launched by mpirun or srun (OMPI_COMM_WORLD_LOCAL_SIZE, MPI_LOCALNRANKS,
// SLURM_NTASKS_PER_NODE), so that ranks x threads <= cores; KVS_THREADS overrides it.
int DefaultCpuThreads();

// Runs body(begin, end) over consecutive ranges that cover [0, n), each at least `grain` long
// (but the last), on the pool's threads; returns when all have run. Loops with fewer than
// 2 x grain items run on the caller alone. Not reentrant: body must not call ParallelFor.
void ParallelFor(int64_t n, int64_t grain, absl::FunctionRef<void(int64_t begin, int64_t end)> body);

}  // namespace kvs
