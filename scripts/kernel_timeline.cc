// A kernel timeline for the GPU machine, which has no Nsight Systems: a CUPTI injection library
// that records every kernel's start and end (graph-launched ones too, with their graph and node
// ids) and writes them as CSV when the process exits. Nsight Compute times kernels one at a time
// with cold caches and no programmatic dependent launch; this sees the step as it runs.
//
// Build (on the GPU machine): g++ -shared -fPIC -O2 scripts/kernel_timeline.cc -I/usr/local/cuda/include
//   -L/usr/local/cuda/lib64 -lcupti -o /tmp/libkvs_timeline.so
// Use: CUDA_INJECTION64_PATH=/tmp/libkvs_timeline.so KVS_TIMELINE_OUT=/tmp/t.csv <program>;
// then python3 scripts/kernel_timeline.py /tmp/t.csv (scripts/gpu_timeline.sh does all three).
#include <cupti.h>
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Kernel {
  uint64_t start, end;
  uint32_t graph_id;
  uint64_t node_id;
  uint32_t stream_id;
  std::string name;
};

std::mutex g_mu;
std::vector<Kernel> g_kernels;
constexpr size_t kBufferBytes = 8 << 20;

// The function's name without its parameters (template arguments kept: they tell the variants apart).
std::string Short(const char* mangled) {
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string s = status == 0 && d != nullptr ? d : mangled;
  std::free(d);
  for (const std::string anon : {"(anonymous namespace)::", "void "}) {
    for (size_t at; (at = s.find(anon)) != std::string::npos;) s.erase(at, anon.size());
  }
  int depth = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<') ++depth;
    if (s[i] == '>') --depth;
    if (s[i] == '(' && depth == 0) return s.substr(0, i);
  }
  return s;
}

void CUPTIAPI BufferRequested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

void CUPTIAPI BufferCompleted(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  std::lock_guard<std::mutex> lock(g_mu);
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && record->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    g_kernels.push_back({k->start, k->end, k->graphId, k->graphNodeId, k->streamId, Short(k->name)});
  }
  std::free(buffer);
}

void Write() {
  cuptiActivityFlushAll(1);
  const char* path = std::getenv("KVS_TIMELINE_OUT");
  FILE* f = std::fopen(path != nullptr ? path : "kernel_timeline.csv", "w");
  if (f == nullptr) return;
  std::lock_guard<std::mutex> lock(g_mu);
  std::fprintf(f, "start_ns,end_ns,graph_id,node_id,stream_id,name\n");
  for (const Kernel& k : g_kernels) {
    std::string name = k.name;
    for (char& c : name)
      if (c == '"') c = '\'';
    std::fprintf(f, "%llu,%llu,%u,%llu,%u,\"%s\"\n", static_cast<unsigned long long>(k.start),
                 static_cast<unsigned long long>(k.end), k.graph_id, static_cast<unsigned long long>(k.node_id),
                 k.stream_id, name.c_str());
  }
  std::fclose(f);
}

}  // namespace

extern "C" int InitializeInjection() {
  if (cuptiActivityRegisterCallbacks(BufferRequested, BufferCompleted) != CUPTI_SUCCESS) return 0;
  if (cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) return 0;
  std::atexit(Write);
  return 1;
}
