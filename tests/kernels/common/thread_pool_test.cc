// The CPU kernels' thread pool: every index runs exactly once whatever the sizes, loops from two
// threads at once and nested loops run (the second alone), and many back-to-back loops on more
// threads than cores finish (the pool never waits for a thread that has not started).
#include "kernels/common/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace kvs::cpu {
namespace {

class ThreadPoolTest : public ::testing::Test {
 protected:
  void TearDown() override { SetCpuThreads(before_); }
  int before_ = CpuThreads();
};

TEST_F(ThreadPoolTest, EveryIndexRunsExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    SetCpuThreads(threads);
    for (int64_t n : {0, 1, 2, 7, 64, 1000, 100003}) {
      for (int64_t grain : {1, 3, 1000}) {
        std::vector<std::atomic<int>> hits(n);
        ParallelFor(n, grain, [&](int64_t b, int64_t e) {
          ASSERT_LE(0, b);
          ASSERT_LT(b, e);
          ASSERT_LE(e, n);
          for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(hits[i].load(), 1) << "threads " << threads << " n " << n << " grain " << grain << " index " << i;
      }
    }
  }
}

// Chunks are at least `grain` long (but the one that ends the loop), few, and the loop's last
// chunk is short: a thread that ends its last chunk waits for the other's at most that long.
TEST_F(ThreadPoolTest, ChunksAreGrainLongFewAndEndShort) {
  for (int threads : {2, 3, 8}) {
    SetCpuThreads(threads);
    for (int64_t n : {64, 1000, 12288, 100003}) {
      for (int64_t grain : {1, 7, 100}) {
        if (n < 2 * grain) continue;
        std::mutex mu;
        std::vector<std::pair<int64_t, int64_t>> chunks;
        ParallelFor(n, grain, [&](int64_t b, int64_t e) {
          std::lock_guard<std::mutex> lock(mu);
          chunks.emplace_back(b, e);
        });
        std::sort(chunks.begin(), chunks.end());
        const std::string where =
            "threads " + std::to_string(threads) + " n " + std::to_string(n) + " grain " + std::to_string(grain);
        ASSERT_EQ(chunks.back().second, n) << where;
        for (size_t c = 0; c + 1 < chunks.size(); ++c) {
          ASSERT_EQ(chunks[c].second, chunks[c + 1].first) << where;
          EXPECT_GE(chunks[c].second - chunks[c].first, grain) << where << " chunk " << c;
        }
        EXPECT_LE(chunks.size(), static_cast<size_t>(5 * threads)) << where;
        // Under two of the shortest chunks (max(grain, n / 16T)); the even schedule's is n / 2T.
        EXPECT_LE(chunks.back().second - chunks.back().first, std::max(2 * grain - 1, n / (8 * threads) + 1)) << where;
      }
    }
  }
}

TEST_F(ThreadPoolTest, LoopsFromTwoThreadsAndNestedLoopsAllRun) {
  SetCpuThreads(4);
  std::atomic<int64_t> total{0};
  auto work = [&] {
    for (int rep = 0; rep < 200; ++rep) {
      ParallelFor(64, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          ParallelFor(10, 1, [&](int64_t b2, int64_t e2) { total.fetch_add(e2 - b2); });  // runs alone
        }
      });
    }
  };
  std::thread other(work);
  work();
  other.join();
  EXPECT_EQ(total.load(), 2 * 200 * 64 * 10);
}

TEST_F(ThreadPoolTest, ManyShortLoopsOnMoreThreadsThanCoresFinish) {
  SetCpuThreads(3 * static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 20000; ++rep) {
    ParallelFor(16, 1, [&](int64_t b, int64_t e) { sum.fetch_add(e - b); });
  }
  EXPECT_EQ(sum.load(), 20000 * 16);
}

TEST_F(ThreadPoolTest, TheDefaultDividesTheCoresAmongTheRanksOfANode) {
  const int alone = DefaultCpuThreads();
  EXPECT_GE(alone, 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "64", 1);
  EXPECT_EQ(DefaultCpuThreads(), std::max(1, alone / 64));
  unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
}

}  // namespace
}  // namespace kvs::cpu
