#!/usr/bin/env bash
# An offline batch killed mid-way and resumed answers every line exactly once, equal to an
# uninterrupted run: one process, mpirun tp=2 and mpirun dp=2 (tp=1 x 2 groups). Each run is
# stopped by SIGTERM once its journal holds a few answers (as scancel or a Slurm time limit would
# stop it), must exit with the journal kept and no output file, and `--resume` then finishes it.
# (The Slurm version of the same, scancel and a resubmitted job, is in slurm_test.sh.)
#
# usage: batch_resume_test.sh KVSHARD_BINARY GOLDENS_DIR
set -euo pipefail
BIN=$(readlink -f "$1")
MODEL=$(readlink -f "$2")/models/tiny-llama31
WORK=$(mktemp -d /tmp/kvs-resume.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -15 "$f"; }; done; exit 1; }
export KVS_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
MPIRUN=(mpirun --oversubscribe --bind-to none)

# 64 requests of 256 greedy tokens, one sequence at a time: long enough to be stopped mid-way.
python3 - "$WORK/in.jsonl" <<'PY'
import json, random, sys
rng = random.Random(7)
with open(sys.argv[1], "w") as f:
    for i in range(64):
        f.write(json.dumps({"id": f"r{i}", "prompt_ids": [rng.randrange(3, 512) for _ in range(rng.randrange(3, 20))]}) + "\n")
    f.write("{not json\n")  # a bad line: an error record, answered once like the others
PY
FLAGS=(--model "$MODEL" --device cpu --ignore-eos --max-tokens 256 --max-seqs 1 --input "$WORK/in.jsonl")
"$BIN" generate "${FLAGS[@]}" --output "$WORK/ref.jsonl" > "$WORK/ref.log" 2>&1 || fail "uninterrupted run"
same() { python3 -c '
import json, sys
load = lambda p: [{k: v for k, v in json.loads(l).items() if k != "metrics"} for l in open(p)]
a, b = load(sys.argv[1]), load(sys.argv[2])
sys.exit(0 if a == b and len(a) == 65 else 1)' "$1" "$2"; }

# Starts `cmd...` in the background, SIGTERMs it once the journal holds 3 answers, then resumes.
interrupt_and_resume() {
  local name=$1; shift
  local out="$WORK/$name.jsonl"
  "$@" "${FLAGS[@]}" --output "$out" > "$WORK/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 600); do
    [ -f "$out.journal" ] && [ "$(wc -l < "$out.journal")" -ge 3 ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$pid" 2>/dev/null || fail "$name: finished (or died) before it could be interrupted"
  # As scancel does: every process of the job at once (mpirun and its ranks).
  kill -TERM $(pgrep -P "$pid") "$pid" 2>/dev/null || true
  local rc=0
  wait "$pid" || rc=$?
  [ "$rc" -ne 0 ] || fail "$name: an interrupted run exited 0"
  grep -q "interrupted: .* answered and kept in" "$WORK/$name.log" || fail "$name: no interruption message (exit $rc)"
  [ -f "$out" ] && fail "$name: an output file after an interrupted run"
  local kept
  kept=$(wc -l < "$out.journal")
  [ "$kept" -ge 3 ] && [ "$kept" -lt 65 ] || fail "$name: the journal holds $kept answers"
  # Without --resume the journal is not clobbered.
  "$@" "${FLAGS[@]}" --output "$out" > "$WORK/$name-refused.log" 2>&1 && fail "$name: ran over the journal without --resume"
  grep -q "pass --resume" "$WORK/$name-refused.log" || fail "$name: no --resume hint"
  "$@" "${FLAGS[@]}" --output "$out" --resume > "$WORK/$name-resume.log" 2>&1 || fail "$name: resume failed"
  grep -q "resuming: $kept of 65 request(s) already answered" "$WORK/$name-resume.log" || fail "$name: resume did not skip the answered lines"
  [ -f "$out.journal" ] && fail "$name: journal left after a finished run"
  same "$WORK/ref.jsonl" "$out" || fail "$name: resumed output differs from the uninterrupted run"
  echo "ok: $name stopped after $kept of 65 answers (exit $rc), resumed, equal to the uninterrupted run"
}

interrupt_and_resume single "$BIN" generate
interrupt_and_resume mpirun-tp2 "${MPIRUN[@]}" -np 2 "$BIN" generate --tp 2
interrupt_and_resume mpirun-dp2 "${MPIRUN[@]}" -np 2 "$BIN" generate --tp 1
echo PASS
