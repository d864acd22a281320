// The CLI's boundary: flags, sizes and JSONL batch files are validated with clear messages,
// and the real binary runs a batch end to end on the random checkpoint.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>

#include "gtest/gtest.h"
#include "launcher/batch_journal.h"
#include "launcher/byte_size.h"
#include "launcher/command_flags.h"
#include "launcher/jsonl_requests.h"
#include "nlohmann/json.hpp"
#include "runtime/model/tokenizer.h"
#include "tests/support/model_paths.h"

namespace kvs {
namespace {

// A directory of this test process's own under the test temp dir: files a manual run left in
// /tmp (an output, its .journal) must not change what a test reads.
std::string Scratch() {
  static const std::string dir = [] {
    const std::string d = ::testing::TempDir() + "/kvs-cli-test-" + std::to_string(getpid());
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

std::string Write(const std::string& name, const std::string& body) {
  const std::string p = Scratch() + "/" + name;
  std::ofstream(p) << body;
  return p;
}

// Runs the kvshard binary; returns exit code and combined output.
std::pair<int, std::string> Kvshard(const std::string& args) {
  const std::string cmd = std::string(KVS_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int rc = pclose(p);
  return {WEXITSTATUS(rc), out};
}

TEST(ByteSizeTest, ParsesUnitsAndRejectsNonsense) {
  EXPECT_EQ(*ParseByteSize("512MiB"), 512u << 20);
  EXPECT_EQ(*ParseByteSize("4GiB"), size_t{4} << 30);
  EXPECT_EQ(*ParseByteSize("1.5GB"), 1500000000u);
  EXPECT_EQ(*ParseByteSize("100"), 100u);
  EXPECT_NE(ParseByteSize("lots").status().message().find("not a byte size"), std::string::npos);
  EXPECT_NE(ParseByteSize("4XB").status().message().find("unknown unit"), std::string::npos);
  EXPECT_FALSE(ParseByteSize("0").ok());
}

TEST(JsonlRequestsTest, ParsesPromptsChatsAndOverrides) {
  SamplingParams d;
  d.max_tokens = 9;
  auto items = ReadBatchFile(Write("ok.jsonl", R"({"id": "x", "prompt": "hi", "temperature": 0.5, "stop": "\n"}

{"messages": [{"role": "user", "content": "yo"}], "max_tokens": 3, "stop": ["a", "b"]}
)"), d);
  ASSERT_TRUE(items.ok()) << items.status();
  ASSERT_EQ(items->size(), 2u);
  EXPECT_EQ((*items)[0].id, "x");
  EXPECT_EQ((*items)[0].params.max_tokens, 9);
  EXPECT_FLOAT_EQ((*items)[0].params.temperature, 0.5f);
  EXPECT_EQ((*items)[1].id, "1");
  EXPECT_EQ((*items)[1].params.max_tokens, 3);
  EXPECT_EQ((*items)[1].messages.size(), 1u);
  EXPECT_EQ((*items)[1].params.stop.size(), 2u);
}

TEST(JsonlRequestsTest, NamesTheLineAndTheProblem) {
  const std::pair<const char*, const char*> cases[] = {
      {"{\"prompt\": \"a\"}\n{oops\n", ":2: not valid JSON"},
      {"{\"prompt\": 3}\n", "'prompt' must be a string"},
      {"{\"prompt\": \"a\", \"max_tokens\": -1}\n", "max_tokens must be >= 1"},
      {"{\"prompt\": \"a\", \"temperature\": \"hot\"}\n", "'temperature' must be a number"},
      {"{\"prompt\": \"a\", \"messages\": []}\n", "exactly one of 'prompt', 'prompt_ids' or 'messages'"},
      {"{\"prompt_ids\": [1, -2]}\n", "'prompt_ids' entries must be non-negative integers"},
      {"{\"prompt_ids\": []}\n", "'prompt_ids' must be a non-empty array"},
      {"{\"messages\": [{\"role\": \"user\"}]}\n", "string 'role' and 'content'"},
      {"{\"prompt\": \"a\", \"tmperature\": 1}\n", "unknown field 'tmperature'"},
      {"{\"id\": 1, \"prompt\": \"a\"}\n{\"id\": \"1\", \"prompt\": \"b\"}\n", "id '1' appears twice"},
      {"\n\n", "no requests"},
  };
  for (const auto& [body, want] : cases) {
    auto r = ReadBatchFile(Write("bad.jsonl", body), SamplingParams{});
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_NE(r.status().message().find(want), std::string::npos) << r.status() << " / wanted: " << want;
  }
  EXPECT_EQ(ReadBatchFile("/nonexistent.jsonl", SamplingParams{}).status().code(), absl::StatusCode::kNotFound);
}

TEST(JsonlRequestsTest, LenientModeKeepsBadLinesAsErrorsWithStableIds) {
  const std::string path = Write("mixed.jsonl",
                                 "{\"prompt\": \"a\"}\n"
                                 "{oops\n"
                                 "\n"
                                 "{\"id\": \"k\", \"prompt\": \"b\", \"tmperature\": 1}\n"
                                 "{\"prompt\": \"c\"}\n"
                                 "{\"id\": \"2\", \"prompt\": \"d\"}\n");
  auto items = ReadBatchFile(path, SamplingParams{}, /*strict=*/false);
  ASSERT_TRUE(items.ok()) << items.status();
  ASSERT_EQ(items->size(), 5u);
  const std::tuple<const char*, int, const char*> want[] = {
      {"0", 1, ""}, {"1", 2, "not valid JSON"}, {"k", 4, "unknown field 'tmperature'"}, {"3", 5, ""},
      {"2", 6, ""}};
  for (size_t i = 0; i < 5; ++i) {
    const auto& [id, line, error] = want[i];
    EXPECT_EQ((*items)[i].id, id) << i;
    EXPECT_EQ((*items)[i].line, line) << i;
    EXPECT_NE((*items)[i].error.find(error), std::string::npos) << i << ": " << (*items)[i].error;
    EXPECT_EQ((*items)[i].error.empty(), std::string(error).empty()) << i;
  }
  // A repeated id is a bad line too, naming where the id was first.
  auto dup = ReadBatchFile(Write("dup.jsonl", "{\"id\": \"x\", \"prompt\": \"a\"}\n{\"id\": \"x\", \"prompt\": \"b\"}\n"),
                           SamplingParams{}, false);
  ASSERT_TRUE(dup.ok());
  EXPECT_TRUE((*dup)[0].error.empty());
  EXPECT_EQ((*dup)[1].error, "id 'x' appears twice (first on line 1)");
  // Strict mode: the first bad line fails the file, as before.
  EXPECT_NE(ReadBatchFile(path, SamplingParams{}, true).status().message().find(":2: not valid JSON"), std::string::npos);
}

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(f, l);) out.push_back(l);
  return out;
}

TEST(BatchJournalTest, AnswersSurviveAndResumeInInputOrder) {
  const std::string in = Write("j.jsonl", "{\"id\": \"a\", \"prompt\": \"x\"}\n{oops\n{\"id\": \"c\", \"prompt\": \"y\"}\n");
  auto items = ReadBatchFile(in, SamplingParams{}, false);
  ASSERT_TRUE(items.ok());
  const std::string out = Scratch() + "/j.out.jsonl";
  std::filesystem::remove(out);
  std::filesystem::remove(out + ".journal");
  {
    auto j = BatchJournal::Open(out, *items, /*resume=*/false);
    ASSERT_TRUE(j.ok()) << j.status();
    EXPECT_FALSE(std::filesystem::exists(j->path())) << "nothing answered: no journal yet";
    ASSERT_TRUE(j->Append({{&(*items)[2], nlohmann::json{{"id", "c"}, {"text", "C"}}}}).ok());
    ASSERT_TRUE(j->Append({{&(*items)[1], ErrorRecord((*items)[1], (*items)[1].error)}}).ok());
  }  // the "kill": the journal holds lines 3 and 2
  // A torn last record (the kill came mid-write) is dropped on resume.
  std::ofstream(out + ".journal", std::ios::app) << "{\"line\": 1, \"id\": \"a\", \"rec";
  auto again = BatchJournal::Open(out, *items, false);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("pass --resume"), std::string::npos) << again.status();
  auto j = BatchJournal::Open(out, *items, /*resume=*/true);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_FALSE(j->Answered(1));
  EXPECT_TRUE(j->Answered(2));
  EXPECT_TRUE(j->Answered(3));
  EXPECT_EQ(j->answered(), 2);
  EXPECT_FALSE(j->Finish(*items).ok()) << "line 1 is not answered yet";
  ASSERT_TRUE(j->Append({{&(*items)[0], nlohmann::json{{"id", "a"}, {"text", "A"}}}}).ok());
  ASSERT_TRUE(j->Finish(*items).ok());
  const std::vector<std::string> rows = Lines(out);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(nlohmann::json::parse(rows[0])["text"], "A");
  EXPECT_EQ(nlohmann::json::parse(rows[1])["error"]["message"], "not valid JSON");
  EXPECT_EQ(nlohmann::json::parse(rows[1])["line"], 2);
  EXPECT_EQ(nlohmann::json::parse(rows[2])["text"], "C");
  EXPECT_FALSE(std::filesystem::exists(out + ".journal"));
  // Resuming a finished run answers everything from the output file and leaves it as it was.
  auto done = BatchJournal::Open(out, *items, true);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->answered(), 3);
  ASSERT_TRUE(done->Finish(*items).ok());
  EXPECT_EQ(Lines(out), rows);
}

TEST(BatchJournalTest, RefusesAJournalOfAnotherInput) {
  auto items = ReadBatchFile(Write("k.jsonl", "{\"id\": \"a\", \"prompt\": \"x\"}\n"), SamplingParams{}, false);
  ASSERT_TRUE(items.ok());
  const std::string out = Scratch() + "/k.out.jsonl";
  std::filesystem::remove(out);
  std::ofstream(out + ".journal", std::ios::trunc) << "{\"line\": 1, \"id\": \"zz\", \"record\": {}}\n";
  auto j = BatchJournal::Open(out, *items, true);
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.status().message().find("another input file"), std::string::npos) << j.status();
  std::ofstream(out + ".journal", std::ios::trunc) << "garbage\n{\"line\": 1, \"id\": \"a\", \"record\": {}}\n";
  auto damaged = BatchJournal::Open(out, *items, true);
  ASSERT_FALSE(damaged.ok());
  EXPECT_NE(damaged.status().message().find(":1: not a journal record"), std::string::npos) << damaged.status();
  std::filesystem::remove(out + ".journal");
}

TEST(CliTest, BadFlagsAndInputsExitNonZeroWithAMessage) {
  const std::string model = testing::GoldenPath("models/tiny-llama31");
  const std::pair<std::string, std::string> cases[] = {
      {"", "usage: kvshard"},
      {"frobnicate", "unknown command 'frobnicate'"},
      {"generate --prompt hi", "--model is required"},
      {"generate --model " + model, "exactly one of --prompt or --input"},
      {"generate --model /nope.gguf --prompt hi", "does not exist"},
      {"generate --model " + model + " --prompt hi --top-p 1.5", "top_p must be in (0, 1]"},
      {"generate --model " + model + " --prompt hi --kv-cache-memory lots", "not a byte size"},
      {"generate --model " + model + " --prompt hi --block-size 0", "--block-size must be in 1..1024"},
      {"generate --model " + model + " --prompt hi --no-such-flag", "Unknown command line flag 'no_such_flag'"},
      {"generate --model " + model + " --prompt hi", "no tokenizer"},
      {"inspect", "--model is required"},
      // A flag the command does not read is refused by name, not parsed and ignored.
      {"inspect --model " + model + " --kv-dtype fp8", "--kv-dtype is not a flag of `kvshard inspect`"},
      {"plan --model llama-3-8b --gpu-mem 80GiB --prompt hi", "--prompt is not a flag of `kvshard plan`"},
      {"generate --model " + model + " --prompt hi --gpu-mem 80GiB", "--gpu-mem is not a flag of `kvshard generate`"},
  };
  for (const auto& [args, want] : cases) {
    auto [rc, out] = Kvshard(args);
    EXPECT_NE(rc, 0) << args;
    EXPECT_NE(out.find(want), std::string::npos) << args << "\n" << out;
  }
}

// Each command declares the flags it reads (launcher/command_flags.cc): every one it lists is a
// flag the binary defines, every flag the launcher defines is some command's, and `--help` lists
// the command's own with their help text.
TEST(CommandFlagsTest, EveryLauncherFlagIsSomeCommandsAndExists) {
  // The flags the launcher's files define, as Abseil's --helpfull lists them by file.
  auto [rc, full] = Kvshard("inspect --helpfull");
  std::set<std::string> defined;
  bool in_launcher = false;
  std::istringstream lines(full);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("  Flags from ", 0) == 0) in_launcher = line.find("launcher/") != std::string::npos;
    if (in_launcher && line.rfind("    --", 0) == 0) defined.insert(line.substr(6, line.find_first_of(" (", 6) - 6));
  }
  EXPECT_GT(defined.size(), 50u) << full;
  // Each command's --help lists its flags (dashed); their union must cover every defined flag.
  std::set<std::string> listed;
  for (const CommandFlags& c : AllCommandFlags()) {
    auto [help_rc, help] = Kvshard(std::string(c.name) + " --help");
    EXPECT_EQ(help_rc, 0) << c.name;
    for (std::string_view f : c.flags) {
      std::string dashed(f);
      std::replace(dashed.begin(), dashed.end(), '_', '-');
      // Listed by name and present in the binary (the binary also refuses to start otherwise).
      EXPECT_NE(help.find("  --" + dashed + "  "), std::string::npos) << c.name << " --" << dashed;
      listed.insert(std::string(f));
    }
  }
  for (const std::string& name : defined) EXPECT_TRUE(listed.contains(name)) << "--" << name << " is no command's";
}

TEST(CommandFlagsTest, HelpListsTheCommandsOwnFlags) {
  auto [rc, out] = Kvshard("generate --help");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("usage: kvshard generate"), std::string::npos) << out;
  EXPECT_NE(out.find("  --prompt  Prompt text"), std::string::npos) << out;
  EXPECT_NE(out.find("  --kv-dtype  "), std::string::npos) << out;
  EXPECT_EQ(out.find("--gpu-mem"), std::string::npos) << out;
  std::tie(rc, out) = Kvshard("plan --help");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("  --gpu-mem  "), std::string::npos) << out;
  EXPECT_EQ(out.find("--prompt"), std::string::npos) << out;
  // A boolean's negation is its own flag's.
  std::tie(rc, out) = Kvshard("inspect --model " + testing::GoldenPath("models/tiny-llama31") + " --noverbose");
  EXPECT_EQ(rc, 0) << out;
}

// A Hugging Face checkpoint that carries a SentencePiece-style tokenizer.json (Llama 2's layout,
// written by HF tokenizers) and Llama 2's chat template: inspect names both, and generate runs
// text in and out through them (random weights: only that it runs and answers in valid text).
TEST(CliTest, SentencePieceCheckpointGeneratesFromTextAndChat) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(Scratch()) / "tiny-llama-spm";
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors"}) {
    fs::copy_file(fs::path(testing::GoldenPath("models/tiny-llama31")) / f, dir / f);
  }
  fs::copy_file(testing::GoldenPath("tokenizer/spm_legacy_tokenizer.json"), dir / "tokenizer.json");
  nlohmann::json chat;
  std::ifstream(testing::GoldenPath("chat_templates_spm.json")) >> chat;
  nlohmann::json config;
  config["chat_template"] = chat["llama2_template"];
  config["bos_token"] = "<s>";
  config["eos_token"] = "</s>";
  std::ofstream(dir / "tokenizer_config.json") << config.dump();

  auto [rc, out] = Kvshard("inspect --model " + dir.string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("tokenizer:        506 tokens"), std::string::npos) << out;
  EXPECT_NE(out.find("chat template:    Llama 2"), std::string::npos) << out;
  for (const std::string extra : {"", " --chat --system 'Be terse.'"}) {
    auto [grc, gout] = Kvshard("generate --model " + dir.string() + " --device cpu-reference --max-tokens 12 --ignore-eos"
                               " --prompt 'Über naïve café 日本語'" + extra);
    ASSERT_EQ(grc, 0) << extra << "\n" << gout;
    EXPECT_EQ(FindInvalidUtf8(gout), std::string::npos) << gout;
  }
}

TEST(CliTest, InspectPrintsArchitectureAndKvBytes) {
  auto [rc, out] = Kvshard("inspect --model " + testing::GoldenPath("models/tiny-llama31"));
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("attention heads:  4 query, 2 KV (group 2), head_dim 32"), std::string::npos) << out;
  // 2 x 3 layers x 2 KV heads x 32 x 2 bytes; int8: 32 codes + a 4-byte scale per head; int4:
  // 16 bytes of codes + one (scale, zero) pair per head (per token); int4 (keys per channel): 16
  // bytes of codes + a 16-token block's 32 key-channel pairs (128 bytes) shared by its tokens.
  EXPECT_NE(out.find("KV bytes/token:   768 (bf16)"), std::string::npos) << out;
  EXPECT_NE(out.find("KV bytes/token:   432 (int8)"), std::string::npos) << out;
  EXPECT_NE(out.find("KV bytes/token:   240 (int4-token)"), std::string::npos) << out;
  EXPECT_NE(out.find("KV bytes/token:   288 (int4)"), std::string::npos) << out;
  EXPECT_NE(out.find("scaling llama3"), std::string::npos) << out;
}

TEST(CliTest, BenchRunsOnTheCpuAndPrintsTheTable) {
  auto [rc, out] = Kvshard("bench --device cpu --model random:smollm2-135m --input-len 24 --output-len 8 --num-prompts 3");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("| offline 3 x (24 in / 8 out) | cpu tp=1 |"), std::string::npos) << out;
  EXPECT_NE(out.find("| decode steps |"), std::string::npos) << out;
  auto [rc2, out2] = Kvshard("bench --device cpu --model random:smollm2-135m --kernel attention --batch 2 --context 300 --iters 2");
  ASSERT_EQ(rc2, 0) << out2;
  EXPECT_NE(out2.find("TB/s of KV reads"), std::string::npos) << out2;
  // int4 / int2 KV: blocks sealed whole, the newest tokens in each sequence's bf16 ring.
  auto [rc8, out8] = Kvshard(
      "bench --device cpu --model random:smollm2-135m --kernel attention --batch 2 --context 300 "
      "--iters 1 --kv-dtype int2");
  ASSERT_EQ(rc8, 0) << out8;
  EXPECT_NE(out8.find("KV int2 B=2 L=300"), std::string::npos) << out8;
  auto [rc4, out4] = Kvshard("bench --device cpu --model random:smollm2-135m --kernel prefill --batch 1 --context 64 --iters 1");
  ASSERT_EQ(rc4, 0) << out4;
  EXPECT_NE(out4.find("TFLOP/s"), std::string::npos) << out4;
  // Sampling on the backend against the host path: same draws.
  auto [rc5, out5] = Kvshard("bench --device cpu --model random:smollm2-135m --kernel sample --batch 3 --iters 1 "
                             "--temperature 0.8 --top-p 0.9 --top-k 40");
  ASSERT_EQ(rc5, 0) << out5;
  EXPECT_NE(out5.find("| 3/3 draws identical |"), std::string::npos) << out5;
  // The engine bench with sampling, run op by op.
  auto [rc6, out6] = Kvshard("bench --device cpu --model random:smollm2-135m --input-len 16 --output-len 4 --num-prompts 2 "
                             "--temperature 1.0 --seed 5 --enforce-eager");
  ASSERT_EQ(rc6, 0) << out6;
  EXPECT_NE(out6.find("(0 replayed from CUDA graphs)"), std::string::npos) << out6;
  // A decode step with block swaps beside it (timings on the CPU mean nothing; the table must come).
  auto [rc7, out7] = Kvshard("bench --device cpu --model random:smollm2-135m --kernel kv-moves --batch 2 --context 32 "
                             "--move-blocks 8 --iters 1");
  ASSERT_EQ(rc7, 0) << out7;
  EXPECT_NE(out7.find("8 blocks out + 8 in"), std::string::npos) << out7;
  auto [rc3, out3] = Kvshard("bench --device cpu --model random:smollm2-135m --kernel gemm");
  EXPECT_NE(rc3, 0);
  EXPECT_NE(out3.find("--kernel 'gemm' is unknown"), std::string::npos) << out3;
}

TEST(CliTest, BatchGenerateWritesOneResultPerLineInOrder) {
  KVS_REQUIRE_SMOLLM2(model);
  const std::string in = Write("in.jsonl",
                               "{\"id\": \"capital\", \"messages\": [{\"role\": \"user\", \"content\": \"What is the capital of France? Answer in one sentence.\"}]}\n"
                               "{\"id\": \"count\", \"prompt\": \"1, 2, 3, 4,\", \"max_tokens\": 12, \"stop\": [\"8\"]}\n");
  const std::string out = Scratch() + "/out.jsonl";
  std::filesystem::remove(out);
  // The CPU backend: these tests are about the CLI, and the CPU path is the exact reference
  // (on a GPU, bf16 may pick the other side of this prompt's first-token near-tie).
  auto [rc, log] = Kvshard("generate --device cpu --model " + model + " --input " + in + " --output " + out +
                           " --max-tokens 24");
  ASSERT_EQ(rc, 0) << log;
  std::ifstream f(out);
  std::string line;
  std::vector<nlohmann::json> rows;
  while (std::getline(f, line)) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["id"], "capital");
  EXPECT_NE(rows[0]["text"].get<std::string>().find("Paris"), std::string::npos) << rows[0];
  EXPECT_EQ(rows[0]["finish_reason"], "stop");
  EXPECT_EQ(rows[1]["id"], "count");
  EXPECT_EQ(rows[1]["finish_reason"], "stop") << rows[1];
  EXPECT_EQ(rows[1]["text"].get<std::string>().find('8'), std::string::npos) << "the stop string must be cut";
  EXPECT_FALSE(std::filesystem::exists(out + ".partial"));
}

TEST(CliTest, BatchAnswersEveryGoodLineAndGivesBadOnesErrorRecords) {
  const std::string model = testing::GoldenPath("models/tiny-llama31");
  const std::string in = Write("mixed_run.jsonl",
                               "{\"id\": \"a\", \"prompt_ids\": [1, 5, 9], \"max_tokens\": 4}\n"
                               "{bad\n"
                               "{\"id\": \"t\", \"prompt\": \"text needs a tokenizer\"}\n"
                               "{\"id\": \"v\", \"prompt_ids\": [100000]}\n"
                               "{\"id\": \"b\", \"prompt_ids\": [7, 7, 7], \"max_tokens\": 4, \"n\": 2, \"temperature\": 1}\n");
  const std::string out = Scratch() + "/mixed_out.jsonl";
  std::filesystem::remove(out);
  std::filesystem::remove(out + ".journal");
  auto [rc, log] = Kvshard("generate --device cpu --ignore-eos --model " + model + " --input " + in + " --output " + out);
  ASSERT_EQ(rc, 0) << log;
  EXPECT_NE(log.find("3 of 5 line(s) could not run"), std::string::npos) << log;
  const std::vector<std::string> rows = Lines(out);
  ASSERT_EQ(rows.size(), 5u) << log;
  std::vector<nlohmann::json> j;
  for (const std::string& r : rows) j.push_back(nlohmann::json::parse(r));
  EXPECT_EQ(j[0]["id"], "a");
  EXPECT_EQ(j[0]["output_ids"].size(), 4u);
  EXPECT_EQ(j[1]["line"], 2);
  EXPECT_EQ(j[1]["error"]["message"], "not valid JSON");
  EXPECT_EQ(j[2]["id"], "t");
  EXPECT_NE(j[2]["error"]["message"].get<std::string>().find("no tokenizer"), std::string::npos) << j[2];
  EXPECT_EQ(j[3]["id"], "v");
  EXPECT_NE(j[3]["error"]["message"].get<std::string>().find("outside the vocabulary"), std::string::npos) << j[3];
  EXPECT_EQ(j[4]["id"], "b");
  EXPECT_EQ(j[4]["choices"].size(), 2u) << j[4];
  EXPECT_FALSE(std::filesystem::exists(out + ".journal"));
  // --strict: the first bad line fails the batch before anything runs.
  std::filesystem::remove(out);
  std::tie(rc, log) = Kvshard("generate --device cpu --strict --model " + model + " --input " + in + " --output " + out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(log.find("mixed_run.jsonl:2: not valid JSON"), std::string::npos) << log;
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(std::filesystem::exists(out + ".journal"));
  std::tie(rc, log) = Kvshard("generate --device cpu --model " + model + " --prompt hi --resume");
  EXPECT_NE(rc, 0);
  EXPECT_NE(log.find("--resume and --strict are for --input batches"), std::string::npos) << log;
}

// The README's question. (Without "Answer in one sentence." SmolLM2's first answer token is a
// near-tie — HF's "The" 25.325 vs "L" 25.243 — that the int8 activations of --device cpu may flip,
// as bf16 does on the GPU; cpu_fast_model_test checks the greedy tokens where the choice is clear.)
TEST(CliTest, ChatPromptStreamsACoherentAnswer) {
  KVS_REQUIRE_SMOLLM2(model);
  auto [rc, out] = Kvshard("generate --device cpu --model " + model +
                           " --chat --prompt 'What is the capital of France? Answer in one sentence.' --max-tokens 32");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("The capital of France is Paris."), std::string::npos) << out;
}

}  // namespace
// The planner reproduces the KV arithmetic of the vLLM paper and the design notes.
TEST(PlanCommandTest, ReproducesThePublishedKvFigures) {
  auto [rc, out] = Kvshard("plan --model opt-13b --gpu-mem 80GiB --context 2048");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("KV per token     819200 bytes"), std::string::npos) << out;  // ~800 KB
  EXPECT_NE(out.find("1.68 GB"), std::string::npos) << out;                      // ~1.6 GB for 2048 tokens
  std::tie(rc, out) = Kvshard("plan --model opt-30b --gpu-mem 80GiB --tp 4 --context 1024 --batch 128");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("180.39 GB"), std::string::npos) << out;  // ~180 GB for 128 x 1024
  std::tie(rc, out) = Kvshard("plan --model llama-3-70b --gpu-mem 80GiB --tp 8 --context 1000000");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("327.68 GB"), std::string::npos) << out;  // ~330 GB for 1M tokens in fp16
  EXPECT_NE(out.find("40960 bytes/token"), std::string::npos) << out;  // one KV head per device
  // GQA: Llama-2-70B's 8 KV heads for 64 query heads hold 8x less than multi-head attention.
  std::tie(rc, out) = Kvshard("plan --model llama-2-70b --gpu-mem 80GiB --tp 8");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("KV per token     327680 bytes"), std::string::npos) << out;  // 2*80*8*128*2; MHA: 2621440
  // fp8 halves bf16 up to its scales; a workload that cannot fit names the shortfall and the options.
  std::tie(rc, out) = Kvshard("plan --model llama-2-7b --gpu-mem 141GB --context 256K --kv-dtype fp8");
  EXPECT_NE(out.find("KV per token     270336 bytes"), std::string::npos) << out;  // 2*32*4096*(1+4/128)
  std::tie(rc, out) = Kvshard("plan --model llama-2-7b --gpu-mem 141GB --context 256K");
  EXPECT_NE(out.find("fits             NO: short by"), std::string::npos) << out;
  EXPECT_NE(out.find("more --tp"), std::string::npos) << out;
  std::tie(rc, out) = Kvshard("plan --model llama-2-7b --gpu-mem 141GB --context 256K --tp 2");
  EXPECT_NE(out.find("fits             yes"), std::string::npos) << out;
  std::tie(rc, out) = Kvshard("plan --model llama-2-7b --kv-dtype fp6");
  EXPECT_EQ(rc, 2);
  EXPECT_NE(out.find("--kv-dtype 'fp6' is unknown"), std::string::npos) << out;
}

// With --kv-offload-memory the plan counts the offload tier: the 256K request that one H200 lacks
// ~14 GiB for fits with 16 GiB offloaded, and 8 GiB leaves a named remainder. The tier's staging
// window (one layer of it: 16 GiB / 32 = 0.5 GiB, 8 GiB / 32 = 0.25 GiB) comes off the device's
// KV first, 0.9 of it (the memory fraction) off the cache: 13.97 GiB short without a window.
TEST(PlanCommandTest, CountsTheOffloadTier) {
  const std::string base = "plan --model llama-2-7b-256k --gpu-mem 140.4GiB --context 262400 --max-tokens-per-step 8192 --max-seqs 8";
  auto [rc, out] = Kvshard(base + " --kv-offload-memory 16GiB");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("offload staging window 0.50 GiB"), std::string::npos) << out;
  EXPECT_NE(out.find("fits             yes, with 14.42 GiB of KV per device in the offload tier"), std::string::npos) << out;
  std::tie(rc, out) = Kvshard(base + " --kv-offload-memory 8GiB");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("offload staging window 0.25 GiB"), std::string::npos) << out;
  EXPECT_NE(out.find("short by 14.20 GiB"), std::string::npos) << out;
  EXPECT_NE(out.find("6.20 GiB more than the offload tier holds"), std::string::npos) << out;
}

// `perplexity` scores a text through the paged cache; int8 KV costs SmolLM2 little on it.
TEST(CliTest, PerplexityOfATextWithF32AndInt8Kv) {
  const std::string model = testing::RequireSmolLm2();
  if (model.empty()) return;
  const std::string text = Write("ppl.txt",
                                 "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
                                 "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, "
                                 "it was the season of Light, it was the season of Darkness.");
  auto ppl = [&](const std::string& kv) {
    auto [rc, out] = Kvshard("perplexity --device cpu --model " + model + " --text " + text + " --kv-dtype " + kv +
                             " --context 32 --max-tokens-per-step 16");
    EXPECT_EQ(rc, 0) << out;
    const size_t at = out.find("perplexity ");
    EXPECT_NE(at, std::string::npos) << out;
    EXPECT_NE(out.find("kv " + kv), std::string::npos) << out;
    return at == std::string::npos ? 0.0 : std::stod(out.substr(at + 11));
  };
  const double f32 = ppl("f32"), int8 = ppl("int8");
  EXPECT_GT(f32, 1.0);
  EXPECT_LT(f32, 30.0);  // a famous sentence, even across 32-token windows
  EXPECT_NEAR(int8, f32, 0.05 * f32);
  // As llama-perplexity scores: whole 32-token windows only (the text's ~50 tokens hold one),
  // each from position 16 on: 15 predictions.
  auto [rc, out] = Kvshard("perplexity --device cpu --model " + model + " --text " + text +
                           " --context 32 --llama-cpp-windows");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("tokens 15 "), std::string::npos) << out;
}

// The flags this change added refuse bad values with a message naming the flag.
TEST(CliFlagsTest, NewFlagsRejectBadValuesByName) {
  const std::string tiny = std::string(KVS_TEST_DATA) + "/models/tiny-llama31";
  const std::pair<std::string, const char*> cases[] = {
      {"plan --model llama-3-8b --context 12Q", "not a positive token count"},
      {"plan --model llama-3-8b --context 0", "not a positive token count"},
      {"plan --model llama-3-8b --gpu-mem lots", "not a byte size"},
      {"plan --model llama-3-8b --batch 0", "--batch must be >= 1"},
      {"generate --model " + tiny + " --prompt hi --threads -1", "--threads -1 is not between 0"},
      {"generate --model " + tiny + " --prompt hi --device gpu", "--device must be cpu, cpu-reference, cuda or auto"},
      {"bench --model " + tiny + " --device cpu --dataset imagenet", "--dataset 'imagenet' is unknown"},
      {"bench --model " + tiny + " --device cpu --dataset sharegpt-like --length-scale 0", "--length-scale"},
      {"bench --url ftp://x --num-prompts 1", "--url must start with http://"},
      {"bench --model " + tiny + " --device cpu --kernel sample --top-p 1.5", "top_p must be in (0, 1]"},
      {"bench --url http://127.0.0.1:1 --rate -2", "--rate >= 0"},
      {"bench --model " + tiny + " --device cpu --kernel kv-moves --move-blocks 0", "--move-blocks 1..65536"},
      {"generate --model " + tiny + " --device cpu --prompt x --overlap-kv-moves=maybe", "flag 'overlap_kv_moves'"},
      {"generate --model " + tiny + " --device cpu --prompt x --comm-timeout 0", "--comm-timeout must be in"},
      {"generate --model " + tiny + " --device cpu --prompt x --dp-routing random",
       "--dp-routing must be kv or round-robin, got 'random'"},
      {"generate --model " + tiny + " --device cpu --prompt x --preemption-mode later", "--preemption-mode 'later'"},
      {"generate --model " + tiny + " --device cpu --prompt x --quantize int3",
       "--quantize int3 is not one of none, fp8"},
      {"inspect --model " + tiny + " --quantize fp4", "--quantize fp4 is not one of none, fp8"},
      {"plan --model llama-3-8b --quantize q4", "--quantize q4 is not one of none, fp8"},
      {"generate --model " + tiny + " --device cpu --prompt x --swap-space 3XB", "unknown unit"},
      {"generate --model " + tiny + " --device cpu --prompt x --kv-offload-memory 3XB", "--kv-offload-memory: "},
      {"generate --model " + tiny + " --device cpu --prompt x --kv-offload-memory 100",
       "--kv-offload-memory must hold at least one KV block"},
      {"generate --model " + tiny + " --device cpu --prompt x --memory-fraction 1.5", "--memory-fraction"},
      {"generate --model " + tiny + " --device cpu --prompt x --tp 0", "--tp 0"},
      {"generate --model " + tiny + " --device cpu --prompt x --kv-dtype fp6", "--kv-dtype 'fp6' is unknown"},
      {"generate --model " + tiny + " --device cpu --prompt x --kv-residual-tokens -1",
       "--kv-residual-tokens must be >= 0, got -1"},
      {"perplexity --model " + tiny + " --text " + tiny + "/config.json --kv-residual-tokens -1",
       "--kv-residual-tokens must be >= 0, got -1"},
      {"inspect --model " + tiny + " --kv-residual-tokens 8", "kv-residual-tokens"},
      {"perplexity --model " + tiny + " --text /nonexistent/text.txt", "--text /nonexistent/text.txt"},
      {"perplexity --model " + tiny + " --text " + tiny + "/config.json --context 1", "--context must be in"},
      {"bench --model random:smollm2-135m --device cpu --kernel prefill --context 64 --query-len 65",
       "--query-len must be in 0..--context"},
  };
  for (const auto& [args, want] : cases) {
    auto [rc, out] = Kvshard(args);
    EXPECT_NE(rc, 0) << args;
    EXPECT_NE(out.find(want), std::string::npos) << args << " -> " << out;
  }
#if defined(KVS_HAVE_SERVER)
  auto [rc, out] = Kvshard("serve --model " + tiny + " --device cpu --port 70000");
  EXPECT_EQ(rc, 2);
  EXPECT_NE(out.find("--port 70000 is not a TCP port"), std::string::npos) << out;
  std::tie(rc, out) = Kvshard("serve --model " + tiny + " --device cpu --max-in-flight 0");
  EXPECT_NE(out.find("--max-in-flight must be >= 1"), std::string::npos) << out;
#endif
}

}  // namespace kvs
