#include "kernels/common/thread_pool.h"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVS_CPU_RELAX() _mm_pause()
#else
#define KVS_CPU_RELAX() std::atomic_signal_fence(std::memory_order_seq_cst)
#endif

namespace kvs {
namespace {

// How long an idle thread polls before it sleeps: long enough to span the gap between two loops
// of one forward pass (tens of microseconds), short enough that a shared machine loses little.
constexpr auto kSpinFor = std::chrono::microseconds(100);
// A loop's chunks: a thread that starts late, or is descheduled, leaves a share to the others,
// and each thread still streams long runs of a matrix. Decode's matrices are small (SmolLM2's
// 576-wide ones take ~20 us at 2 threads), and 8 even chunks a thread cost a claim (a contended
// compare-and-swap) and a cold start of the tiles' prefetch every ~1 us of work: 2 even chunks a
// thread decoded SmolLM2 7% (Q4_K_M) and 4% (Q4_1) faster than 8 (docs/performance.md,
// 2026-12-06). But with even chunks a thread that finishes its last one waits for the other's,
// on average half a chunk (an eighth of the loop at 2 threads): 16% of a 2-thread decode's
// samples were spent waiting. So chunks shrink: each round of `threads` chunks half as long as the one
// before, from n / 2T down to n / (kShrinkTo x T); the last chunks are short, the claims still
// few (10 at 2 threads where the even schedule at that length would take 32).
constexpr int64_t kChunksPerThread = 2;  // the even schedule (KVS_POOL_CHUNKS=even)
constexpr int64_t kShrinkTo = 16;
constexpr int64_t kMaxChunks = 0xffff;
// KVS_POOL_CHUNKS=even: threads x kChunksPerThread chunks of one length, for comparison.
const bool g_even_chunks = [] {
  const char* v = std::getenv("KVS_POOL_CHUNKS");
  return v != nullptr && std::string_view(v) == "even";
}();

int EnvInt(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return (end != nullptr && *end == '\0' && x > 0 && x < 1 << 16) ? static_cast<int>(x) : 0;
}

// Futex calls on a 32-bit atomic (Linux; std::atomic::wait in GCC 12's libstdc++ missed wake-ups here).
void FutexWait(const std::atomic<uint32_t>& word, uint32_t old) {
  syscall(SYS_futex, reinterpret_cast<const uint32_t*>(&word), FUTEX_WAIT_PRIVATE, old, nullptr, nullptr, 0);
}
void FutexWakeAll(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

// Spins for kSpinFor, then sleeps on `word` until it differs from `old`. `sleepers` counts the
// threads asleep so that the waker makes a system call only then.
void WaitWhileEqual(const std::atomic<uint32_t>& word, uint32_t old, std::atomic<int>& sleepers) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinFor;
  for (int i = 0; word.load(std::memory_order_acquire) == old; ++i) {
    KVS_CPU_RELAX();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) {
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      if (word.load(std::memory_order_seq_cst) == old) FutexWait(word, old);
      sleepers.fetch_sub(1, std::memory_order_seq_cst);
    }
  }
}

void Wake(std::atomic<uint32_t>& word, std::atomic<int>& sleepers) {
  if (sleepers.load(std::memory_order_seq_cst) > 0) FutexWakeAll(word);
}

class Pool {
 public:
  ~Pool() { Stop(); }

  void Run(int threads, int64_t n, int64_t grain, absl::FunctionRef<void(int64_t, int64_t)> body) {
    // One loop at a time; a second caller (another engine's thread, or a nested loop) runs its
    // loop alone rather than wait.
    std::unique_lock<std::mutex> lock(run_mu_, std::try_to_lock);
    if (!lock.owns_lock()) return body(0, n);
    if (static_cast<int>(workers_.size()) != threads - 1) Restart(threads - 1);
    const int64_t chunks = PlanChunks(threads, n, grain);
    body_ = &body;
    done_.store(0, std::memory_order_relaxed);
    const uint32_t gen = ++generation_value_;
    claim_.store(Pack(gen, static_cast<uint32_t>(chunks), 0), std::memory_order_release);
    generation_.store(gen, std::memory_order_seq_cst);
    Wake(generation_, worker_sleepers_);
    RunChunks(gen);
    // Only chunks that a thread has claimed and is running remain.
    for (uint32_t d; (d = done_.load(std::memory_order_acquire)) != chunks;) {
      WaitWhileEqual(done_, d, caller_sleepers_);
    }
  }

 private:
  // Fills bounds_ for a loop of n items (chunks of at least `grain`, but the last) and returns
  // the number of chunks: shrinking, or even with KVS_POOL_CHUNKS=even (kChunksPerThread above).
  int64_t PlanChunks(int threads, int64_t n, int64_t grain) {
    bounds_.assign(1, 0);
    // At most ~5 chunks a thread (kMaxChunks bounds the count claim_ packs); more threads than
    // this take chunks of a smaller thread count's plan.
    threads = std::min(threads, static_cast<int>(kMaxChunks / 8));
    if (g_even_chunks) {
      int64_t chunks = std::min({(n + grain - 1) / grain, threads * kChunksPerThread, kMaxChunks});
      const int64_t len = (n + chunks - 1) / chunks;
      for (int64_t b = len; b < n; b += len) bounds_.push_back(b);
      bounds_.push_back(n);
      return static_cast<int64_t>(bounds_.size()) - 1;
    }
    const int64_t floor = std::max(grain, (n + kShrinkTo * threads - 1) / (kShrinkTo * threads));
    int64_t len = std::max(floor, (n + 2 * threads - 1) / (2 * threads));
    for (int64_t b = 0; b < n;) {
      for (int t = 0; t < threads && b < n; ++t) {
        b = n - (b + len) < floor ? n : b + len;  // no remainder shorter than the floor after it
        bounds_.push_back(b);
      }
      len = std::max(floor, len / 2);
    }
    return static_cast<int64_t>(bounds_.size()) - 1;
  }

  // claim_: generation (32 bits) | chunks (16) | next unclaimed chunk (16). A thread claims a chunk
  // only of the generation it read, so a late thread never runs a chunk of a later loop.
  static uint64_t Pack(uint32_t gen, uint32_t chunks, uint32_t next) {
    return static_cast<uint64_t>(gen) << 32 | static_cast<uint64_t>(chunks) << 16 | next;
  }

  void RunChunks(uint32_t gen) {
    uint64_t c = claim_.load(std::memory_order_acquire);
    for (;;) {
      const uint32_t chunks = (c >> 16) & 0xffff, next = c & 0xffff;
      if (static_cast<uint32_t>(c >> 32) != gen || next >= chunks) return;
      if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      // Claimed: the loop of `gen` cannot end before this chunk is done, so its fields hold.
      (*body_)(bounds_[next], bounds_[next + 1]);
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) Wake(done_, caller_sleepers_);
      c = claim_.load(std::memory_order_acquire);
    }
  }

  // `seen`: the generation when the thread was made. Not read by the thread itself: it may first
  // run after the next Stop, whose change it must not take for its starting point.
  void WorkerLoop(uint32_t seen) {
    for (;;) {
      WaitWhileEqual(generation_, seen, worker_sleepers_);
      seen = generation_.load(std::memory_order_acquire);
      if (stop_.load(std::memory_order_acquire)) return;
      RunChunks(seen);
    }
  }

  void Stop() {
    stop_.store(true, std::memory_order_seq_cst);
    generation_.fetch_add(1, std::memory_order_seq_cst);
    FutexWakeAll(generation_);
    for (std::thread& t : workers_) t.join();
    workers_.clear();
    stop_.store(false);
    generation_value_ = generation_.load();
  }

  void Restart(int workers) {
    Stop();
    const uint32_t now = generation_.load(std::memory_order_seq_cst);
    for (int i = 0; i < workers; ++i) workers_.emplace_back([this, now] { WorkerLoop(now); });
  }

  std::mutex run_mu_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stop_{false};
  std::atomic<uint32_t> generation_{0};  // the futex word idle workers wait on
  uint32_t generation_value_ = 0;
  std::atomic<uint64_t> claim_{0};
  std::atomic<uint32_t> done_{0};  // chunks finished in this generation
  std::atomic<int> worker_sleepers_{0}, caller_sleepers_{0};
  const absl::FunctionRef<void(int64_t, int64_t)>* body_ = nullptr;
  std::vector<int64_t> bounds_;  // chunk c covers [bounds_[c], bounds_[c + 1])
};

Pool& ThePool() {
  // Never destroyed: kernels may run from static destructors' threads; workers die with the process.
  static Pool* pool = new Pool();
  return *pool;
}

std::atomic<int> g_threads{0};

}  // namespace

int DefaultCpuThreads() {
  if (const int forced = EnvInt("KVS_THREADS")) return forced;
  cpu_set_t set;
  int cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 0;
  if (cores <= 0) cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int ranks_here = 1;
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"}) {
    if (const int r = EnvInt(name)) {
      ranks_here = r;
      break;
    }
  }
  return std::max(1, cores / ranks_here);
}

int CpuThreads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n <= 0) {
    n = DefaultCpuThreads();
    g_threads.store(n, std::memory_order_relaxed);
  }
  return n;
}

void SetCpuThreads(int n) { g_threads.store(n > 0 ? n : DefaultCpuThreads(), std::memory_order_relaxed); }

void ParallelFor(int64_t n, int64_t grain, absl::FunctionRef<void(int64_t, int64_t)> body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int threads = CpuThreads();
  if (threads <= 1 || n < 2 * grain) return body(0, n);
  ThePool().Run(threads, n, grain, body);
}

}  // namespace kvs
