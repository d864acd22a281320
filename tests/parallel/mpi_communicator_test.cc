// The MPI communicator's collectives, run under `mpirun -np 3` (registered that way in
// tests/CMakeLists.txt): every rank checks what it received against what each peer must have
// sent. An odd size catches rank-0/rank-1-only assumptions.
#include "parallel/mpi_communicator.h"

#include <mpi.h>

#include <numeric>

#include "gtest/gtest.h"
#include "tests/support/mpi_test_main.h"

namespace kvs {
namespace {

std::unique_ptr<MpiCommunicator> WorldComm() { return testing::WorldCommunicator(std::chrono::seconds(30)); }

TEST(MpiCommunicatorTest, AllReduceSumsEveryRanksTensor) {
  auto c = WorldComm();
  const int n = c->size(), me = c->rank();
  ASSERT_GE(n, 2) << "run under mpirun -np 3";
  std::vector<float> x(1000);
  for (int i = 0; i < 1000; ++i) x[i] = static_cast<float>(me * 1000 + i);
  ASSERT_TRUE(c->AllReduceSum(TensorView::Contiguous(x.data(), DType::kF32, 10, 100)).ok());
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(x[i], static_cast<float>(1000 * n * (n - 1) / 2 + n * i)) << i;
  EXPECT_FALSE(c->AllReduceSum(TensorView::Contiguous(x.data(), DType::kBF16, 1, 10)).ok());
}

TEST(MpiCommunicatorTest, AllGatherConcatenatesInRankOrder) {
  auto c = WorldComm();
  const int n = c->size(), me = c->rank();
  std::vector<int32_t> send = {me, me * 10, me * 100}, recv(3 * n, -1);
  ASSERT_TRUE(c->AllGather(send.data(), recv.data(), send.size() * 4).ok());
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(recv[3 * r], r);
    EXPECT_EQ(recv[3 * r + 2], r * 100);
  }
}

TEST(MpiCommunicatorTest, BroadcastGivesEveryRankRankZerosWordsWhateverTheirLength) {
  auto c = WorldComm();
  for (int len : {6, 1, 5000}) {
    std::vector<int32_t> words;
    if (c->rank() == 0) {
      words.resize(len);
      std::iota(words.begin(), words.end(), 7);
    } else {
      words.assign(3, -1);  // stale contents of another size
    }
    ASSERT_TRUE(c->Broadcast(words).ok());
    ASSERT_EQ(words.size(), static_cast<size_t>(len));
    EXPECT_EQ(words.back(), 7 + len - 1);
  }
}

TEST(MpiCommunicatorTest, MinScatterAndGather) {
  auto c = WorldComm();
  const int n = c->size(), me = c->rank();
  auto m = c->AllReduceMin(100 - me);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(*m, 100 - (n - 1));

  std::vector<std::string> parts;
  if (me == 0) {
    for (int r = 0; r < n; ++r) parts.push_back(std::string(r * 3, 'a' + r));
  }
  auto mine = c->Scatter(parts, 0);
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(*mine, std::string(me * 3, 'a' + me));
  auto all = c->Gather(*mine + "!", 0);
  ASSERT_TRUE(all.ok());
  if (me == 0) {
    ASSERT_EQ(all->size(), static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) EXPECT_EQ((*all)[r], std::string(r * 3, 'a' + r) + "!");
  } else {
    EXPECT_TRUE(all->empty());
  }
  ASSERT_TRUE(c->Barrier().ok());
}

}  // namespace
}  // namespace kvs

int main(int argc, char** argv) { return kvs::testing::RunMpiTests(argc, argv); }
