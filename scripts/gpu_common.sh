# Sourced by the scripts/gpu_*.sh scripts (run on the GPU machine through the device tool): the
# repository root as working folder, CUDA on PATH, logs under $OUT, and two helpers.
#   gpu_build          builds (SmolLM2 not fetched: no network there), prints the build time;
#                      it sources the build's env.sh (library paths) into the calling shell, so
#                      redirect its output rather than pipe it (a pipe runs it in a subshell, and
#                      the test binaries then fail to load their libraries)
#   gpu_tests T1 T2..  runs those test binaries, one log each under $OUT, a line per verdict
#   gpu_copy_ceiling   prints the device-to-device copy rate (bytes read + written), the ceiling
#                      of the memory-bound kernels
#   gpu_sdpa_ceiling   prints torch SDPA's causal prefill rate (B=1, enable_gqa) on Llama-3-8B
#                      heads at 4K and 16K and SmolLM2's at 16K: the ceiling of the prefill kernel
#   gpu_timeline_lib   builds scripts/kernel_timeline.cc (the CUPTI tracer) into /tmp/libkvs_timeline.so
#   gpu_long_prompt STEP [FLAGS..]  the 65,536-token prompt on random:llama-3.1-8b, STEP tokens a
#                      step: prints its offline and ttft lines, or its last lines when it has none
#                      (settings come from the caller's environment)
#   gpu_kernel_durations CSV LABEL  sums Nsight Compute's `--csv --page raw` gpu__time_duration per
#                      kernel name and prints the costliest
#   gpu_step LABEL N FLAGS..  a whole run of N requests of 512 in / 128 out (bench's offline mode),
#                      N at once; prints its decode-step line
#   gpu_serving_checkpoint DIR  writes (once) a Llama-3-8B-shaped checkpoint with random bf16
#                      weights and SmolLM2's tokenizer and 49,152-token vocabulary, so that
#                      `serve` can detokenize
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH=/usr/local/cuda/bin:$PATH
OUT=${OUT:-/tmp/kvs-out}
mkdir -p "$OUT"
start=$(date +%s)
BUILD=${KVS_BUILD_DIR:-build}
K=$BUILD/launcher/kvshard

gpu_build() {
  KVS_SKIP_MODEL=1 bash scripts/setup.sh > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
  source "$BUILD/env.sh"
  echo "built in $(( $(date +%s) - start )) s"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
}

gpu_tests() {
  for t in "$@"; do
    timeout 300 "$BUILD"/tests/$t > "$OUT/$t.log" 2>&1 && echo "$t: ok" \
      || { echo "$t: FAILED"; grep -E 'Failure|Expected|Which|FAILED|differ' "$OUT/$t.log" | head -20; }
  done
}

gpu_copy_ceiling() {
  python3 - <<'PY' 2>/dev/null
import torch
x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record(); [y.copy_(x) for _ in range(20)]; e.record(); torch.cuda.synchronize()
print(f"| ceiling | device-to-device copy | {2 * x.numel() * 20 / (s.elapsed_time(e) / 1e3) / 1e12:.2f} TB/s |")
PY
}

gpu_step() {
  local label=$1 n=$2; shift 2
  echo "## $label, batch $n"
  timeout 150 $K bench --device cuda --input-len 512 --output-len 128 --num-prompts $n --max-seqs $n "$@" 2>&1 \
    | grep -E "^\| decode|rror" | head -3
}

gpu_serving_checkpoint() {
  local dir=$1
  [ -f "$dir/tokenizer.json" ] && return 0
  mkdir -p /tmp/kvs-presets/models
  python3 -c '
import json
c = json.load(open("configs/models/llama-3-8b.json")); c["vocab_size"] = 49152
json.dump(c, open("/tmp/kvs-presets/models/llama-3-8b-smolvocab.json", "w"))'
  KVS_CONFIG_DIR=/tmp/kvs-presets $K make-model --preset llama-3-8b-smolvocab --out "$dir" > "$OUT/make_model.log" 2>&1 \
    || { tail -5 "$OUT/make_model.log"; return 1; }
  cp tests/goldens/tokenizer/smollm2_tokenizer.json "$dir/tokenizer.json"
}

gpu_kernel_durations() {
  python3 - "$1" "$2" <<'PY'
import csv, collections, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head = rows[0]; name, dur = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
total, count = collections.Counter(), collections.Counter()
for r in rows[2:]:
    try: t = float(r[dur].replace(",", ""))
    except ValueError: continue
    total[r[name][:70]] += t; count[r[name][:70]] += 1
unit = rows[1][dur]
print(f"## {sys.argv[2]}: {sum(count.values())} kernels, {sum(total.values()):.0f} {unit} in all")
for k, t in total.most_common(14): print(f"{t:12.0f} {unit} {count[k]:5d}x  {k}")
PY
}

gpu_sdpa_ceiling() {
  python3 - <<'PY' 2>&1
import torch, torch.nn.functional as F
def sdpa(hq, hk, d, L):
    q = torch.randn(1, hq, L, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, hk, L, d, device="cuda", dtype=torch.bfloat16); v = torch.randn_like(k)
    f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    for _ in range(3): f()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    n = 20; s.record(); [f() for _ in range(n)]; e.record(); torch.cuda.synchronize()
    t = s.elapsed_time(e) / n / 1e3
    flops = 4.0 * hq * d * L * (L + 1) / 2
    print(f"| causal prefill attention | torch SDPA | Hq={hq} Hk={hk} D={d} B=1 L={L} | {t * 1e6:.1f} us | {flops / t / 1e12:.1f} TFLOP/s |")
for hq, hk, d, L in ((32, 8, 128, 4096), (32, 8, 128, 16384), (9, 3, 64, 16384)):
    sdpa(hq, hk, d, L)
PY
}

gpu_timeline_lib() {
  local cupti
  cupti=$(dirname "$(find / -name 'libcupti.so*' -not -path '/proc/*' 2> /dev/null | head -1)")
  g++ -shared -fPIC -O2 scripts/kernel_timeline.cc -I/usr/local/cuda/include -L"$cupti" -lcupti \
    -Wl,-rpath,"$cupti" -o /tmp/libkvs_timeline.so
}

gpu_long_prompt() {
  local step=$1; shift
  timeout 200 $K bench --device cuda --model random:llama-3.1-8b --input-len 65536 --output-len 1 --num-prompts 1 \
    --max-tokens-per-step "$step" "$@" > /tmp/prompt.log 2>&1
  grep -E "^\| (offline|ttft)|scratch" /tmp/prompt.log || tail -3 /tmp/prompt.log  # no result: say why
}
