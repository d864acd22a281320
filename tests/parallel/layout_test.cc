// Rank placement in a dp x tp job and the data-parallel router's choices.
#include "gtest/gtest.h"
#include "parallel/dp_router.h"
#include "parallel/rank_context.h"

namespace kvs {
namespace {

TEST(LayoutTest, ConsecutiveRanksFormATensorParallelGroup) {
  World w;
  w.size = 8;
  w.rank = 5;
  auto l = LayoutFor(w, 4);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->dp, 2);
  EXPECT_EQ(l->group, 1);
  EXPECT_EQ(l->group_rank, 1);
  EXPECT_FALSE(l->leader());
  w.rank = 4;
  EXPECT_TRUE(LayoutFor(w, 4)->leader());
}

TEST(LayoutTest, TpThatDoesNotDivideTheWorldIsRefusedWithTheValidValues) {
  World w;
  w.size = 6;
  auto l = LayoutFor(w, 4);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("valid tp values for 6 rank(s): 1, 2, 3, 6"), std::string::npos) << l.status();
  w.size = 1;
  l = LayoutFor(w, 2);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("mpirun -np N"), std::string::npos) << l.status();
  EXPECT_FALSE(LayoutFor(w, 0).ok());
}

TEST(DpRouterTest, SendsEachRequestToTheGroupWithTheMostFreeKv) {
  DpRouter r({100, 300, 300});
  EXPECT_EQ(r.Route(50), 1);   // ties go to the lower group
  EXPECT_EQ(r.Route(50), 2);
  EXPECT_EQ(r.Route(150), 1);  // 250 vs 250: group 1
  EXPECT_EQ(r.Route(10), 2);
  EXPECT_EQ(r.free_blocks(), (std::vector<int64_t>{100, 100, 240}));
  r.Release(0, 500);
  EXPECT_EQ(r.Route(1), 0);
}

TEST(DpRouterTest, RoundRobinTakesTheGroupsInTurnWhateverTheirKvOrPrefixes) {
  DpRouter r({100, 1000, 1000}, DpRouting::kRoundRobin);
  std::vector<int> got;
  for (int i = 0; i < 7; ++i) got.push_back(r.Route(50, {11, 12}));  // same prefix every time
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 0, 1, 2, 0}));
  EXPECT_EQ(r.affinity_hits(), 0);
  EXPECT_EQ(r.free_blocks(), (std::vector<int64_t>{-50, 900, 900})) << "charged even past capacity (the baseline)";
  r.Release(0, 50);
  EXPECT_EQ(r.Route(1), 1);
}

TEST(DpRouterTest, RoutingFlagValues) {
  EXPECT_EQ(*ParseDpRouting("kv"), DpRouting::kKvAware);
  EXPECT_EQ(*ParseDpRouting("round-robin"), DpRouting::kRoundRobin);
  const auto bad = ParseDpRouting("random");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--dp-routing must be kv or round-robin, got 'random'"), std::string::npos)
      << bad.status();
}

TEST(DpRouterTest, PrefersTheGroupThatWasSentTheSamePrefix) {
  DpRouter r({1000, 1000});
  EXPECT_EQ(r.Route(10, {11, 12, 13}), 0);  // new prefix: most free (tie: group 0)
  EXPECT_EQ(r.Route(10, {21, 22}), 1);      // new prefix: group 1 is freer now
  EXPECT_EQ(r.Route(10, {11, 12, 99}), 0);  // shares two blocks with the first: its group
  EXPECT_EQ(r.Route(10, {21}), 1);
  EXPECT_EQ(r.affinity_hits(), 2);
  EXPECT_EQ(r.Route(500), 0);  // 980 / 980: tie -> group 0, now 480 / 980
  EXPECT_EQ(r.Route(600, {11}), 1) << "no room in the affine group: the freest instead";
}

TEST(DpRouterTest, ASharedSystemPromptDoesNotPullEveryRequestToOneGroup) {
  DpRouter r({10000, 10000});
  std::vector<int> per_group(2, 0);
  for (int i = 0; i < 12; ++i) per_group[r.Route(4, {7, 8, 9, static_cast<uint64_t>(100 + i)})]++;
  EXPECT_GE(per_group[0], 5);
  EXPECT_GE(per_group[1], 5);
  EXPECT_GT(r.affinity_hits(), 0);
}

}  // namespace
}  // namespace kvs
