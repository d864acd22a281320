#include "parallel/world.h"

#include <map>
#include <string>

#include "gtest/gtest.h"

namespace kvs {
namespace {

std::map<std::string, std::string>* g_env;
const char* FakeEnv(const char* name) {
  auto it = g_env->find(name);
  return it == g_env->end() ? nullptr : it->second.c_str();
}

World Detect(std::map<std::string, std::string> env) {
  g_env = &env;
  auto w = DetectWorld(FakeEnv);
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? *w : World{};
}

TEST(WorldTest, SingleProcessWithoutALauncher) {
  const World w = Detect({});
  EXPECT_EQ(w.size, 1);
  EXPECT_EQ(w.launcher, "single");
}

TEST(WorldTest, ReadsMpirunThenSlurm) {
  World w = Detect({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                    {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "9"}});
  EXPECT_EQ(w.rank, 3);
  EXPECT_EQ(w.size, 4);
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.launcher, "mpirun");
  w = Detect({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "1"}});
  EXPECT_EQ(w.launcher, "srun");
  EXPECT_EQ(w.rank, 1);
}

TEST(WorldTest, InconsistentEnvironmentIsAnError) {
  std::map<std::string, std::string> env = {{"SLURM_PROCID", "2"}, {"SLURM_NTASKS", "2"}};
  g_env = &env;
  EXPECT_FALSE(DetectWorld(FakeEnv).ok());
  env = {{"OMPI_COMM_WORLD_RANK", "x"}, {"OMPI_COMM_WORLD_SIZE", "2"}};
  EXPECT_NE(DetectWorld(FakeEnv).status().message().find("OMPI_COMM_WORLD_RANK"), std::string::npos);
}

}  // namespace
}  // namespace kvs
