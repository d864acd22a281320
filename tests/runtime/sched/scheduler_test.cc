// The scheduler without a model: budgets, admission, chunked prefill, preemption, and a
// randomized run that checks the block accounting at every step and ends with an empty pool.
#include "runtime/sched/scheduler.h"

#include <functional>
#include <map>
#include <random>
#include <set>

#include "gtest/gtest.h"

namespace kvs {
namespace {

Request Req(const std::string& id, int32_t prompt, int32_t max_tokens) {
  Request r;
  r.id = id;
  r.prompt_ids.assign(prompt, 5);
  r.params.max_tokens = max_tokens;
  return r;
}

// A stand-in for the KV memory: each device and host slot holds a fingerprint of the token
// prefix whose KV it stores (token ids up to and including its position). Steps write their
// tokens' slots; swaps and copy-on-write move whole blocks; before each step every scheduled
// sequence's earlier positions must read back its own prefix — so a swap, fork or prefix-cache
// hit that loses, misplaces or overwrites a block is caught without a model. With KV groups
// (sliding-window layers) each group's slots hold the fingerprint mixed with the group, and a
// windowed group's positions are read only within the window of the step's first query, as the
// kernels read them.
// A scheduler's sizes, the rest defaulted.
SchedulerConfig Config(int32_t block_size, int32_t max_seqs, int32_t max_tokens_per_step, int32_t max_model_len) {
  SchedulerConfig c;
  c.block_size = block_size;
  c.max_seqs = max_seqs;
  c.max_tokens_per_step = max_tokens_per_step;
  c.max_model_len = max_model_len;
  return c;
}

struct FakeKv {
  int32_t bs;
  KvGroups groups;
  std::map<int64_t, uint64_t> device{}, host{};
  std::map<int64_t, uint64_t> residual{};  // channel-quantized KV: residual slots (sealed blocks)
  KvResidualRing ring{bs, 1};              // its rings (SchedulerConfig::residual_blocks)
  static std::vector<uint64_t> Prefixes(const Sequence& s) {
    std::vector<uint64_t> f(s.tokens.size());
    uint64_t h = 1469598103934665603ull;
    for (size_t p = 0; p < s.tokens.size(); ++p) f[p] = h = (h ^ static_cast<uint32_t>(s.tokens[p])) * 1099511628211ull;
    return f;
  }
  void Move(const std::vector<int32_t>& pairs, std::map<int64_t, uint64_t>& from, std::map<int64_t, uint64_t>& to) {
    for (size_t i = 0; i < pairs.size(); i += 2) {
      for (int32_t k = 0; k < bs; ++k) {
        auto it = from.find(static_cast<int64_t>(pairs[i]) * bs + k);
        if (it == from.end()) to.erase(static_cast<int64_t>(pairs[i + 1]) * bs + k);
        else to[static_cast<int64_t>(pairs[i + 1]) * bs + k] = it->second;
      }
    }
  }
  void Step(const StepInput& in, const std::vector<ScheduledSeq>& plan) {
    // In the runner's order: swap-outs, copies (copy-on-write of blocks shared by forks, device
    // blocks an offloading sequence moves to the offload tier), swap-ins.
    Move(in.swap_out, device, host);
    Move(in.copy_blocks, device, device);
    Move(in.swap_in, host, device);
    // As in each layer of the forward pass, every token's KV is written before attention reads:
    // a prefix-cache hit may read a block another sequence fills in this very step.
    ASSERT_EQ(in.num_kv_groups, groups.num_groups());
    ASSERT_TRUE(in.GroupArraysConsistent());
    const int32_t ng = groups.num_groups();
    const bool sealed = !in.residual.empty();
    if (sealed) {  // Backend::SealKvGroups: the blocks each sequence's ring lets go of, from the ring and the step
      ASSERT_EQ(in.residual.size(), plan.size());
      ASSERT_EQ(in.sealed.size(), plan.size());
      ASSERT_EQ(in.sink.size(), plan.size());
      for (int32_t g = 0; g < ng; ++g) {
        const std::span<const int32_t> table = in.GroupTable(g);
        for (size_t r = 0; r < plan.size(); ++r) {
          const std::vector<uint64_t> prefix = Prefixes(*plan[r].seq);
          const int32_t end = in.context_len[r], first_new = end - plan[r].num_tokens;
          // A sink refill computes block 0 again (context = its queries), which is sealed already.
          const int32_t sealed_max = plan[r].sink_refill ? bs : first_new;
          ASSERT_TRUE(in.sealed[r] % bs == 0 && in.sealed[r] >= ring.SealedEnd(first_new) &&
                      in.sealed[r] <= sealed_max);
          if (plan[r].sink_refill) {
            ASSERT_TRUE(in.sink[r] == 1 && end == bs && first_new == 0 && !plan[r].samples);
          }
          for (int32_t j = in.sealed[r] / bs; j < std::max(in.sealed[r], ring.SealedEnd(end)) / bs; ++j) {
            for (int32_t p = j * bs; p < (j + 1) * bs; ++p) {
              uint64_t value = prefix[p] ^ static_cast<uint64_t>(g);
              if (p < first_new) {
                auto it = residual.find(ring.Slot(in.residual[r] * ng + g, p));
                ASSERT_TRUE(it != residual.end()) << "group " << g << " position " << p << " never reached the residual";
                ASSERT_EQ(it->second, value) << "group " << g << " position " << p << ": another sequence's residual";
              }
              if (table[r * in.max_blocks_per_seq + j] >= 0) device[static_cast<int64_t>(table[r * in.max_blocks_per_seq + j]) * bs + p % bs] = value;
            }
          }
        }
      }
    }
    for (int32_t g = 0; g < ng; ++g) {
      const std::span<const int32_t> slots = in.GroupSlots(g);
      for (int32_t t = 0, r = 0; t < in.num_tokens(); ++t) {
        while (t >= in.query_start[r + 1]) ++r;
        const uint64_t value = Prefixes(*plan[r].seq)[in.positions[t]] ^ static_cast<uint64_t>(g);
        if (slots[t] >= 0) {
          ASSERT_FALSE(sealed) << "a token of a channel-quantized cache written to its block directly";
          device[slots[t]] = value;
        } else if (slots[t] <= -2) {
          ASSERT_TRUE(sealed);
          residual[-(slots[t] + 2)] = value;
        } else {  // -1: the seal wrote it
          ASSERT_TRUE(sealed && in.positions[t] < ring.SealedEnd(in.context_len[r]));
        }
      }
    }
    for (int32_t g = 0; g < groups.num_groups(); ++g) {
      const std::span<const int32_t> table = in.GroupTable(g);
      for (size_t r = 0; r < plan.size(); ++r) {
        const Sequence& s = *plan[r].seq;
        const std::vector<uint64_t> prefix = Prefixes(s);
        const int32_t first_new = in.context_len[r] - plan[r].num_tokens;
        const int32_t first_read = groups.windowed(g) ? std::max(0, first_new - groups.window(g) + 1) : 0;
        const int32_t whole = sealed ? std::max(in.sealed[r], ring.SealedEnd(in.context_len[r])) : in.context_len[r];
        const bool holds_sink = sealed && in.sink[r] != 0;
        for (int32_t p = first_read; p < first_new; ++p) {
          const int64_t slot = static_cast<int64_t>(table[r * in.max_blocks_per_seq + p / bs]) * bs + p % bs;
          // As the kernels read (KvResidualRing::Reads): the ring past the sealed positions, and the
          // sink where the sequence holds it.
          const bool from_ring = sealed ? ring.Reads(p, whole, holds_sink) : false;
          auto& tier = from_ring ? residual : device;
          auto it = from_ring ? residual.find(ring.Slot(in.residual[r] * ng + g, p)) : device.find(slot);
          ASSERT_TRUE(it != tier.end()) << s.request.id << " group " << g << " position " << p << " was never written";
          ASSERT_EQ(it->second, prefix[p] ^ static_cast<uint64_t>(g))
              << s.request.id << " group " << g << " position " << p << " reads another prefix's KV";
        }
      }
    }
  }
};

// Plays the engine: samples token 7 for every sequence that samples; finishes at max_tokens.
int RunToCompletion(Scheduler& s, std::mt19937* abort_rng = nullptr) {
  StepInput in;
  FakeKv kv{.bs = s.config().block_size, .groups = s.kv_groups()};
  kv.ring = s.ring();
  int steps = 0, empty_in_a_row = 0;
  while (s.HasWork()) {
    auto plan = s.Schedule(in);
    s.CheckInvariants();
    kv.Step(in, plan);
    s.StepSubmitted();  // as the engine does once a step's copies are queued
    // A step that only preempts (everything swapped or dropped) may be empty; two in a row
    // would mean no progress.
    if (plan.empty()) {
      EXPECT_LT(++empty_in_a_row, 2) << "work left but nothing schedulable: running " << s.num_running() << " waiting "
                                     << s.num_waiting() << " swapped " << s.num_swapped() << " free "
                                     << s.pool().num_free() << "/" << s.pool().num_blocks() << " host free "
                                     << s.host_pool().num_free() << " offload held " << s.offload_blocks_held();
      if (empty_in_a_row >= 2) break;
      continue;
    }
    EXPECT_LE(in.num_tokens(), s.config().max_tokens_per_step);
    EXPECT_LE(static_cast<int32_t>(plan.size()), s.config().max_seqs);
    // Every slot of this step belongs to a block the sequence owns, and no slot is used twice.
    // (every group's; -1, a token its block's seal writes, is no slot)
    std::vector<int32_t> used;
    std::copy_if(in.slot_mapping.begin(), in.slot_mapping.end(), std::back_inserter(used), [](int32_t x) { return x != -1; });
    EXPECT_EQ(std::set<int32_t>(used.begin(), used.end()).size(), used.size());
    empty_in_a_row = 0;
    std::vector<Sequence*> samplers;
    for (const auto& ss : plan) {
      if (!ss.samples) continue;
      samplers.push_back(ss.seq);
      // n > 1: the siblings fork off the finished prompt, as the engine does.
      if (ss.seq->request.params.n > 1 && !ss.seq->forked) {
        for (int32_t i = 1; i < ss.seq->request.params.n; ++i) samplers.push_back(s.Fork(*ss.seq, i));
      }
    }
    std::vector<std::string> ids;  // read now: an abort destroys every sample of its request
    for (Sequence* seq : samplers) ids.push_back(seq->request.id);
    std::set<std::string> aborted;
    for (size_t k = 0; k < samplers.size(); ++k) {
      if (aborted.contains(ids[k])) continue;
      Sequence* seq = samplers[k];
      s.Append(seq, 7);
      if (seq->num_generated() >= seq->request.params.max_tokens) {
        s.Finish(seq);
      } else if (abort_rng && (*abort_rng)() % 50 == 0) {
        const std::string id = seq->request.id;  // Abort destroys seq
        EXPECT_TRUE(s.Abort(id));                // every sample of the request
        aborted.insert(id);
      }
    }
    ++steps;
  }
  return steps;
}

TEST(SchedulerTest, DecodesFirstThenChunksPrefillWithinTheBudget) {
  Scheduler s(Config(4, 8, 10, 256), 100);
  ASSERT_TRUE(s.Add(Req("a", 3, 5)).ok());
  StepInput in;
  auto p1 = s.Schedule(in);
  ASSERT_EQ(p1.size(), 1u);
  EXPECT_TRUE(p1[0].samples);
  s.Append(p1[0].seq, 7);
  ASSERT_TRUE(s.Add(Req("b", 25, 5)).ok());
  auto p2 = s.Schedule(in);
  ASSERT_EQ(p2.size(), 2u);
  EXPECT_EQ(p2[0].num_tokens, 1);   // a decodes first
  EXPECT_EQ(p2[1].num_tokens, 9);   // b gets the rest of the 10-token budget
  EXPECT_FALSE(p2[1].samples);      // mid-prompt: nothing to sample
  EXPECT_EQ(in.logit_rows, std::vector<int32_t>{0});
  EXPECT_EQ(in.positions[1], 0);
  EXPECT_EQ(in.context_len, (std::vector<int32_t>{4, 9}));
}

TEST(SchedulerTest, PreemptsTheNewestSequenceWhenBlocksRunOut) {
  // 4 blocks of 4 tokens: two 7-token prompts fit (2 blocks each) until they grow.
  Scheduler s(Config(4, 8, 64, 64), 4);
  ASSERT_TRUE(s.Add(Req("old", 7, 8)).ok());
  ASSERT_TRUE(s.Add(Req("new", 7, 8)).ok());
  RunToCompletion(s);
  EXPECT_GT(s.num_preemptions(), 0);
  EXPECT_EQ(s.pool().num_free(), 4);
}

TEST(SchedulerTest, RejectsRequestsThatCanNeverFit) {
  Scheduler s(Config(16, 8, 64, 100), 2);
  auto st = s.Add(Req("big", 40, 20));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("KV blocks"), std::string::npos);
  EXPECT_EQ(s.Add(Req("long", 100, 1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.Add(Req("empty", 0, 1)).code(), absl::StatusCode::kInvalidArgument);
  Request bad = Req("t", 3, 1);
  bad.params.top_p = 0;
  EXPECT_NE(s.Add(bad).message().find("top_p"), std::string::npos);
}

TEST(SchedulerTest, SwapsTheNewestSequenceOutAndBackWhenBlocksRunOut) {
  SchedulerConfig c = Config(4, 8, 64, 64);
  c.num_host_blocks = 8;
  c.preemption.mode = PreemptionMode::kSwap;
  Scheduler s(c, 4);
  ASSERT_TRUE(s.Add(Req("old", 7, 8)).ok());
  ASSERT_TRUE(s.Add(Req("new", 7, 8)).ok());
  RunToCompletion(s);
  EXPECT_GT(s.num_swap_preemptions(), 0);
  EXPECT_EQ(s.num_swap_preemptions(), s.num_preemptions());
  EXPECT_EQ(s.pool().num_free(), 4);
  EXPECT_EQ(s.host_pool().num_free(), 8);
}

TEST(SchedulerTest, OffloadAdmitsASequenceLongerThanTheDeviceCache) {
  SchedulerConfig c = Config(4, 8, 64, 64);
  Scheduler without(c, 4);  // 16 device tokens
  const absl::Status refused = without.Add(Req("long", 20, 8));
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.message().find("--kv-offload-memory"), std::string::npos) << refused.message();

  c.num_offload_blocks = 3;  // 28 tokens in all: 20 + 8 fit, 20 + 9 do not
  c.bytes_per_block = 1 << 20;
  c.offload_bytes_per_s = 50e9;
  Scheduler s(c, 4);
  EXPECT_EQ(s.Add(Req("too long", 20, 9)).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(s.Add(Req("long", 20, 8)).ok());
  const std::vector<std::string> notes = s.TakeNotes();
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("3 more than the device holds"), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("ms per decode step"), std::string::npos) << notes[0];
  ASSERT_TRUE(s.Add(Req("short", 3, 2)).ok());
  EXPECT_TRUE(s.TakeNotes().empty()) << "a request that fits the device is not offloaded";
  RunToCompletion(s);  // FakeKv: every position reads back its own prefix, through offload ids too
  EXPECT_EQ(s.num_offloaded_blocks(), 3);
  EXPECT_EQ(s.num_preemptions(), 0);
  EXPECT_EQ(s.pool().num_free(), 4);
  EXPECT_EQ(s.offload_blocks_held(), 0);
}

TEST(SchedulerTest, AnOffloadingSequenceMovesItsBlocksOutInsteadOfBeingPreempted) {
  SchedulerConfig c = Config(4, 8, 64, 64);
  c.num_offload_blocks = 8;
  Scheduler s(c, 6);
  StepInput in;
  FakeKv kv{.bs = 4, .groups = s.kv_groups()};
  ASSERT_TRUE(s.Add(Req("old", 3, 16)).ok());  // grows from 1 block to 5
  auto p1 = s.Schedule(in);
  ASSERT_EQ(p1.size(), 1u);
  kv.Step(in, p1);
  s.Append(p1[0].seq, 7);
  ASSERT_TRUE(s.Add(Req("long", 24, 4)).ok());  // 7 blocks > 6: may offload
  int64_t steps = 0;
  while (s.HasWork() && steps++ < 100) {
    auto plan = s.Schedule(in);
    s.CheckInvariants();
    kv.Step(in, plan);
    s.StepSubmitted();
    for (const auto& ss : plan) {
      if (!ss.samples) continue;
      s.Append(ss.seq, 7);
      if (ss.seq->num_generated() >= ss.seq->request.params.max_tokens) s.Finish(ss.seq);
    }
  }
  EXPECT_FALSE(s.HasWork());
  EXPECT_EQ(s.num_preemptions(), 0) << "the old sequence's growth moved the long one's blocks instead";
  EXPECT_GT(s.num_demoted_blocks(), 0);
  EXPECT_EQ(s.pool().num_free(), 6);
  EXPECT_EQ(s.offload_blocks_held(), 0);
}

TEST(SchedulerTest, StaticBatchingBaselineReservesWholeContextsAndWaitsForTheBatch) {
  SchedulerConfig c = Config(4, 8, 64, 32);  // 32-token contexts: 8 blocks each
  c.static_batching = true;
  Scheduler s(c, 20);               // room for two reservations
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(s.Add(Req(id, 3, 2)).ok());
  StepInput in;
  auto p1 = s.Schedule(in);
  ASSERT_EQ(p1.size(), 2u);
  EXPECT_EQ(s.pool().num_free(), 4) << "each admitted request holds a whole context";
  for (auto& ss : p1) s.Append(ss.seq, 7);
  auto p2 = s.Schedule(in);
  EXPECT_EQ(p2.size(), 2u) << "c must wait for the batch to finish, although blocks would page in";
  for (auto& ss : p2) s.Finish(ss.seq);
  auto p3 = s.Schedule(in);
  ASSERT_EQ(p3.size(), 1u);
  EXPECT_EQ(p3[0].seq->request.id, "c");
  EXPECT_EQ(s.num_preemptions(), 0);
}

TEST(SchedulerTest, HigherPriorityIsAdmittedFirstAndEqualPrioritiesKeepArrivalOrder) {
  Scheduler s(Config(4, 1, 64, 64), 100);  // one sequence at a time
  const std::pair<const char*, int> reqs[] = {{"low1", 0}, {"high1", 5}, {"low2", 0}, {"high2", 5}, {"mid", 2}};
  for (auto [id, prio] : reqs) {
    Request r = Req(id, 3, 1);
    r.priority = prio;
    ASSERT_TRUE(s.Add(std::move(r)).ok());
  }
  std::vector<std::string> order;
  StepInput in;
  while (s.HasWork()) {
    auto plan = s.Schedule(in);
    ASSERT_EQ(plan.size(), 1u);
    order.push_back(plan[0].seq->request.id);
    s.Append(plan[0].seq, 7);
    s.Finish(plan[0].seq);
  }
  EXPECT_EQ(order, (std::vector<std::string>{"high1", "high2", "mid", "low1", "low2"}));
}

TEST(PreemptionCostModelTest, SwapsWhenMovingTheBlocksBeatsRecomputingTheTokens) {
  PreemptionCostModel m;
  m.mode = PreemptionMode::kAuto;
  m.host_bytes_per_s = 20e9;      // a PCIe-class link
  m.prefill_tokens_per_s = 10e3;  // a big model's prefill
  m.bytes_per_block = 2e6;        // 16 tokens x 128 KiB
  // 100 blocks: 2 x 200 MB / 20 GB/s = 20 ms to swap; 1600 tokens / 10k tok/s = 160 ms to recompute.
  EXPECT_NEAR(m.SwapSeconds(100), 0.02, 1e-9);
  EXPECT_TRUE(m.PreferSwap(100, 1600));
  m.prefill_tokens_per_s = 200e3;  // a tiny model recomputes faster than it copies
  EXPECT_FALSE(m.PreferSwap(100, 1600));
  m.mode = PreemptionMode::kSwap;
  EXPECT_TRUE(m.PreferSwap(100, 1600));
  m.mode = PreemptionMode::kRecompute;
  EXPECT_FALSE(m.PreferSwap(100, 1));
  EXPECT_EQ(*ParsePreemptionMode("auto"), PreemptionMode::kAuto);
  EXPECT_FALSE(ParsePreemptionMode("sometimes").ok());
}

struct StressTotals {
  int64_t swaps = 0, recomputes = 0, copies = 0, prefix_hits = 0, host_hits = 0, offloaded = 0, demoted = 0;
  int64_t sink_refills = 0;
};

// 30 rounds of 150 requests each over random block sizes, budgets, swap and offload tiers, forks,
// aborts and shared prompt stems. `layers`: the model's layer windows (0: global), drawn per
// round; none: no sliding windows.
StressTotals StressRounds(std::function<std::vector<int32_t>(std::mt19937&)> layers, bool sealed_blocks = false) {
  std::mt19937 rng(99);
  StressTotals total;
  for (int round = 0; round < 30; ++round) {
    const int32_t bs = 1 + rng() % 8;
    SCOPED_TRACE(testing::Message() << "round " << round << " (seed 99)");
    SchedulerConfig c = Config(bs, 1 + static_cast<int32_t>(rng() % 16), 8 + static_cast<int32_t>(rng() % 64), 128);
    if (layers) {
      const std::vector<int32_t> windows = layers(rng);
      c.kv_groups = KvGroups(static_cast<int32_t>(windows.size()), windows);
    }
    const KvGroups groups = c.kv_groups.num_groups() > 0 ? c.kv_groups : KvGroups(1, {});
    if (sealed_blocks) {             // channel-quantized KV: a residual ring per running sequence, of 1, 3 or 5 blocks
      c.residual_seqs = c.max_seqs;  // (and a sink for the first block beside the 3 and the 5)
      const KvResidualRing ring = groups.Ring(static_cast<int32_t>(rng() % 3) * 2 * bs, bs);
      c.residual_blocks = ring.blocks;
      c.residual_sink = ring.sink;
    }
    // A third of the rounds recompute, a third swap, a third mix (a small host pool fills up).
    c.num_host_blocks = round % 3 == 0 ? 0 : static_cast<int32_t>(rng() % (round % 3 == 1 ? 400 : 12));
    c.preemption.mode = c.num_host_blocks > 0 ? PreemptionMode::kSwap : PreemptionMode::kRecompute;
    c.host_prefix_cache = c.num_host_blocks > 0;  // evicted prefix blocks park in the host pool
    // Every fourth round the device holds only half a context; offload blocks hold the rest.
    const bool offload = round % 4 == 3;
    const auto context_blocks = static_cast<int32_t>(groups.BlocksHeld(128, bs, c.max_tokens_per_step));
    c.num_offload_blocks = offload ? context_blocks + static_cast<int32_t>(rng() % 64) : 0;
    Scheduler s(c, offload ? context_blocks / 2 + 1 : context_blocks + static_cast<int32_t>(rng() % 64));
    for (int i = 0; i < 150; ++i) {
      const int32_t prompt = 1 + rng() % 100;
      const int32_t out = 1 + rng() % 27;
      Request r = Req(std::to_string(i), prompt, out);
      // A few shared stems, then random tokens: many prompts share a prefix of whole blocks.
      const int32_t stem = static_cast<int32_t>(rng() % 4);
      for (int32_t k = 0; k < prompt; ++k) r.prompt_ids[k] = k < prompt / 2 ? stem : static_cast<int32_t>(rng() % 3);
      r.params.n = std::min<int32_t>(1 + rng() % 3, c.max_seqs);  // forks share their prompt's blocks
      const absl::Status added = s.Add(std::move(r));
      EXPECT_TRUE(added.ok()) << added;
    }
    RunToCompletion(s, &rng);
    s.CheckInvariants();
    EXPECT_EQ(s.pool().num_free(), s.pool().num_blocks());
    EXPECT_EQ(s.host_pool().num_free(), s.host_pool().num_blocks());
    EXPECT_EQ(s.offload_blocks_held(), 0);
    total.swaps += s.num_swap_preemptions();
    total.offloaded += s.num_offloaded_blocks();
    total.demoted += s.num_demoted_blocks();
    total.recomputes += s.num_preemptions() - s.num_swap_preemptions();
    total.copies += s.num_copied_blocks();
    total.prefix_hits += s.prefix_hit_tokens();
    total.host_hits += s.host_prefix_hit_tokens();
    total.sink_refills += s.num_sink_refills();
  }
  return total;
}

TEST(SchedulerTest, RandomizedStressEndsWithEveryBlockBack) {
  const StressTotals t = StressRounds(nullptr);
  // Thousands of requests went through both kinds of preemption and through copy-on-write.
  EXPECT_GT(t.swaps, 100);
  EXPECT_GT(t.recomputes, 100);
  EXPECT_GT(t.copies, 100);
  EXPECT_GT(t.prefix_hits, 1000);
  EXPECT_GT(t.host_hits, 100);  // and prefixes came back from the host tier, checked by FakeKv
  EXPECT_GT(t.offloaded, 100);   // and long sequences ran partly in offload blocks
  EXPECT_GT(t.demoted, 10);
}

// The same with sliding-window layers: a global layer or two among windowed ones (one or two
// window sizes from 1 to 40 tokens), so every group's blocks go through forks, swaps, offload and
// prefix hits while windowed groups give blocks back as sequences grow. FakeKv checks that every
// position a kernel would read (the window, in windowed groups) still holds its own prefix.
TEST(SchedulerTest, RandomizedStressWithSlidingWindowLayers) {
  const StressTotals t = StressRounds([](std::mt19937& rng) {
    const int32_t layers = 2 + static_cast<int32_t>(rng() % 7);
    const int32_t w1 = 1 + static_cast<int32_t>(rng() % 40), w2 = rng() % 2 ? w1 : 1 + static_cast<int32_t>(rng() % 40);
    std::vector<int32_t> windows(layers);
    for (int32_t l = 0; l < layers; ++l) windows[l] = l % 3 == 2 ? 0 : l % 2 ? w1 : w2;
    return windows;
  });
  EXPECT_GT(t.swaps, 50);
  EXPECT_GT(t.recomputes, 50);
  EXPECT_GT(t.copies, 50);
  EXPECT_GT(t.prefix_hits, 500);
  EXPECT_GT(t.host_hits, 20);
  EXPECT_GT(t.offloaded, 50);
}

// The same with channel-quantized KV (blocks sealed whole, the newest tokens in residual rings of
// one block or several), with and without sliding windows: FakeKv seals blocks from the ring and
// the step as the backend does and reads a sequence's newest tokens from its ring.
TEST(SchedulerTest, RandomizedStressWithSealedBlocksAndResiduals) {
  for (bool windows : {false, true}) {
    auto layers = [](std::mt19937& rng) {
      const int32_t n = 2 + static_cast<int32_t>(rng() % 5), w = 1 + static_cast<int32_t>(rng() % 40);
      std::vector<int32_t> windows(n);
      for (int32_t l = 0; l < n; ++l) windows[l] = l % 3 == 2 ? 0 : w;
      return windows;
    };
    const StressTotals t = StressRounds(windows ? std::function<std::vector<int32_t>(std::mt19937&)>(layers) : nullptr,
                                        /*sealed_blocks=*/true);
    EXPECT_GT(t.swaps, 50) << windows;
    EXPECT_GT(t.recomputes, 50) << windows;
    EXPECT_GT(t.prefix_hits, 500) << windows;
    EXPECT_GT(t.offloaded, 50) << windows;
    // Sequences resumed from sealed blocks (prefix hits, swap-ins, forks) had their sinks refilled,
    // and FakeKv saw every later read of the sink find the sequence's own first block.
    EXPECT_GT(t.sink_refills, 100) << windows;
  }
}

// A windowed group holds only its window: a long sequence of a model with one global and three
// windowed layers takes a third of the blocks it would take without windows, its windowed
// blocks return to the pool as it grows, and it fits a cache that the same model without
// windows could not hold.
TEST(SchedulerTest, WindowedGroupsHoldOnlyTheirWindow) {
  const int32_t bs = 4, window = 8, prompt = 200;
  SchedulerConfig c = Config(bs, 4, 16, 512);
  // Groups of one layer: the global one first (group 0), then the three windowed ones.
  c.kv_groups = KvGroups(4, std::vector<int32_t>{window, window, 0, window});
  ASSERT_EQ(c.kv_groups.num_groups(), 4);
  ASSERT_EQ(c.kv_groups.group_of(2), 0);
  // Per windowed group: the window's keys and one step's 16 tokens, over block edges.
  const int64_t span = (window - 1 + 16 + bs - 1) / bs + 1;
  EXPECT_EQ(c.kv_groups.BlocksHeld(prompt + 1, bs, 16), (prompt + 1 + bs - 1) / bs + 3 * span);
  const auto fits = static_cast<int32_t>(c.kv_groups.BlocksHeld(prompt + 1, bs, 16));
  EXPECT_LT(fits, 4 * ((prompt + 1 + bs - 1) / bs) / 2);  // all four layers global: 4x the global group
  Scheduler s(c, fits);
  ASSERT_TRUE(s.Add(Req("long", prompt, 1)).ok());
  StepInput in;
  int32_t most_held = 0;
  while (s.HasWork()) {
    const auto plan = s.Schedule(in);
    ASSERT_FALSE(plan.empty());
    s.CheckInvariants();
    most_held = std::max(most_held, s.pool().num_blocks() - s.pool().num_free());
    // The windowed groups' tables name only blocks from the window of the step's first query.
    const Sequence& seq = *plan[0].seq;
    const int32_t first_query = seq.num_computed - plan[0].num_tokens;
    for (int32_t g : {1, 2, 3}) {  // the windowed groups (window 8)
      ASSERT_TRUE(s.kv_groups().windowed(g));
      for (int32_t j = 0; j < (first_query - window + 1) / bs; ++j) EXPECT_EQ(seq.blocks[g][j].value, -1) << j;
    }
    for (const auto& ss : plan) {
      if (!ss.samples) continue;
      s.Append(ss.seq, 7);
      s.Finish(ss.seq);
    }
  }
  EXPECT_LE(most_held, fits);
  EXPECT_EQ(s.pool().num_free(), s.pool().num_blocks());
  // Without windows the same memory refuses the request: there a block is a slab of all four
  // layers, so it holds a quarter as many.
  SchedulerConfig global = c;
  global.kv_groups = KvGroups(4, {});
  ASSERT_EQ(global.kv_groups.slots(), 4);
  Scheduler all_global(global, fits * c.kv_groups.slots() / global.kv_groups.slots());
  EXPECT_EQ(all_global.Add(Req("long", prompt, 1)).code(), absl::StatusCode::kResourceExhausted);
}

// A prefix hit in a windowed model: the second request with the same prompt reuses the global
// group's whole prefix and, in the windowed group, only the window before its first new token —
// found among the blocks the first request gave back (parked in the prefix cache).
TEST(SchedulerTest, PrefixHitsNeedOnlyTheWindowInWindowedGroups) {
  const int32_t bs = 4, window = 6;
  SchedulerConfig c = Config(bs, 4, 64, 512);
  c.kv_groups = KvGroups(2, std::vector<int32_t>{window, 0});  // group 0 global, group 1 windowed
  Scheduler s(c, 200);
  Request first = Req("a", 41, 1);
  for (int32_t k = 0; k < 41; ++k) first.prompt_ids[k] = k;
  Request second = first;
  second.id = "b";
  ASSERT_TRUE(s.Add(std::move(first)).ok());
  RunToCompletion(s);
  ASSERT_TRUE(s.Add(std::move(second)).ok());
  StepInput in;
  const auto plan = s.Schedule(in);
  ASSERT_EQ(plan.size(), 1u);
  // 40 of 41 prompt tokens are whole blocks (the last token is always computed).
  EXPECT_EQ(plan[0].num_tokens, 1);
  EXPECT_EQ(s.prefix_hit_tokens(), 40);
  const Sequence& seq = *plan[0].seq;
  const int32_t first_live = (40 - window + 1) / bs;  // block of key 35
  for (int32_t j = 0; j < first_live; ++j) EXPECT_EQ(seq.blocks[1][j].value, -1);
  for (int32_t j = first_live; j < 11; ++j) EXPECT_GE(seq.blocks[1][j].value, 0);
  for (int32_t j = 0; j < 11; ++j) EXPECT_GE(seq.blocks[0][j].value, 0);
  s.CheckInvariants();
}

}  // namespace
}  // namespace kvs
