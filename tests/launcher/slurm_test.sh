#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (munge, slurmctld and slurmd on localhost,
# from Debian's packages; root), running the templates in configs/slurm end to end: a CPU tp=2
# job started by `srun --mpi=pmix` and by `mpirun` inside `sbatch`, whose output must equal a
# single process's; then a longer batch job cancelled mid-way (scancel) and resubmitted with
# --resume, whose output must equal an uninterrupted run's, every line answered once.
#
# usage: slurm_test.sh KVSHARD_BINARY GOLDENS_DIR
set -euo pipefail
BIN=$(readlink -f "$1")
GOLDENS=$(readlink -f "$2")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# Slurm and munge from Debian, installed here (only this test needs them; apt-get is idempotent).
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  command -v apt-get >/dev/null || { echo "FAIL: slurm-wlm and munge are missing and there is no apt-get"; exit 1; }
  echo "[slurm_test] installing slurm-wlm and munge"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    slurm-wlm munge >/dev/null || { echo "FAIL: could not install slurm-wlm and munge"; exit 1; }
fi
for tool in slurmctld slurmd munged sbatch; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool missing after installing slurm-wlm and munge"; exit 1; }
done
WORK=$(mktemp -d /tmp/kvs-slurm.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$WORK"/*.log "$WORK"/*.out; do [ -f "$f" ] && { echo "== $f"; tail -20 "$f"; }; done; exit 1; }

# munge: a private key and socket, so a system munged (if any) is left alone.
mkdir -p "$WORK/munge"
dd if=/dev/urandom bs=1 count=1024 of="$WORK/munge/key" 2>/dev/null
chmod 400 "$WORK/munge/key"
munged --force --key-file="$WORK/munge/key" --socket="$WORK/munge/sock" --pid-file="$WORK/munge/pid" \
  --log-file="$WORK/munge.log" --seed-file="$WORK/munge/seed"
PIDS+=("$(cat "$WORK/munge/pid")")

CPUS=$(nproc)
cat > "$WORK/slurm.conf" <<CONF
ClusterName=kvshard-ci
SlurmctldHost=localhost
AuthType=auth/munge
AuthInfo=socket=$WORK/munge/sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
NodeName=localhost CPUs=$CPUS State=UNKNOWN
PartitionName=ci Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
mkdir -p "$WORK/state" "$WORK/spool"
export SLURM_CONF="$WORK/slurm.conf"
slurmctld -f "$SLURM_CONF" -D > "$WORK/slurmctld.stdout.log" 2>&1 &
PIDS+=($!)
slurmd -f "$SLURM_CONF" -D -N localhost > "$WORK/slurmd.stdout.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 60); do
  sinfo -h -o %t 2>/dev/null | grep -q idle && break
  sleep 1
done
sinfo -h -o %t | grep -q idle || fail "the Slurm node did not come up"
echo "ok: slurmctld and slurmd up ($(sinfo -h -o '%P %D %t %c'))"

cat > "$WORK/in.jsonl" <<'JSONL'
{"id": "a", "prompt_ids": [1, 5, 9, 200, 17, 33], "max_tokens": 12}
{"id": "b", "prompt_ids": [7, 7, 7, 100, 300, 411, 2, 3, 4, 5, 6], "max_tokens": 12}
JSONL
MODEL="$GOLDENS/models/tiny-llama31"
"$BIN" generate --model "$MODEL" --input "$WORK/in.jsonl" --output "$WORK/ref.jsonl" --device cpu \
  --ignore-eos 2>/dev/null
same() { python3 -c '
import json, sys
load = lambda p: [{k: v for k, v in json.loads(l).items() if k != "metrics"} for l in open(p)]
sys.exit(0 if load(sys.argv[1]) == load(sys.argv[2]) else 1)' "$1" "$2"; }

export KVSHARD="$BIN" MODEL="$GOLDENS/models/tiny-llama31" INPUT="$WORK/in.jsonl" TP=2 DEVICE=cpu EXTRA="--ignore-eos"
export KVS_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
wait_job() {  # prints the job's final state
  local state=""
  for _ in $(seq 1 240); do
    state=$(scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
    case "$state" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) break;; esac
    sleep 1
  done
  echo "$state"
}
for template in generate_srun generate_mpirun; do
  export OUTPUT="$WORK/$template.jsonl"
  [ "$template" = generate_mpirun ] && export MPIRUN_FLAGS="--oversubscribe"
  job=$(sbatch --parsable --ntasks=2 --output="$WORK/$template-%j.out" "$ROOT/configs/slurm/$template.sbatch") \
    || fail "sbatch $template"
  state=$(wait_job "$job")
  [ "$state" = COMPLETED ] || fail "$template: job $job ended $state"
  grep -q "tp rank 1/2" "$WORK/$template-$job.out" || fail "$template: no second rank in the job's log"
  same "$WORK/ref.jsonl" "$OUTPUT" || fail "$template: output differs from one process"
  echo "ok: sbatch $template.sbatch (job $job, tp=2 on 2 Slurm tasks) == one process"
done

# A job cancelled mid-way keeps what it answered; the resubmitted job with --resume finishes it.
python3 - "$WORK/long.jsonl" <<'PY'
import json, random, sys
rng = random.Random(3)
with open(sys.argv[1], "w") as f:
    for i in range(64):
        f.write(json.dumps({"id": f"r{i}", "prompt_ids": [rng.randrange(3, 512) for _ in range(rng.randrange(3, 20))]}) + "\n")
PY
LONG_FLAGS="--ignore-eos --max-tokens 256 --max-seqs 1"
"$BIN" generate --model "$MODEL" --input "$WORK/long.jsonl" --output "$WORK/long-ref.jsonl" --device cpu $LONG_FLAGS 2>/dev/null
export INPUT="$WORK/long.jsonl" OUTPUT="$WORK/long.jsonl.out" EXTRA="$LONG_FLAGS"
job=$(sbatch --parsable --ntasks=2 --output="$WORK/cancelled-%j.out" "$ROOT/configs/slurm/generate_srun.sbatch") || fail "sbatch (to cancel)"
for _ in $(seq 1 1200); do
  [ -f "$OUTPUT.journal" ] && [ "$(wc -l < "$OUTPUT.journal")" -ge 3 ] && break
  sleep 0.05
done
[ -f "$OUTPUT.journal" ] || fail "the job to cancel wrote no journal"
scancel "$job"
state=$(wait_job "$job")
[ "$state" = CANCELLED ] || fail "cancelled job $job ended $state"
kept=$(wc -l < "$OUTPUT.journal")
grep -q "interrupted: .* answered and kept in" "$WORK"/cancelled-*.out || fail "the cancelled job did not stop cleanly"
[ -f "$OUTPUT" ] && fail "an output file after a cancelled job"
[ "$kept" -ge 3 ] && [ "$kept" -lt 64 ] || fail "the cancelled job's journal holds $kept answers"
export EXTRA="$LONG_FLAGS --resume"
job=$(sbatch --parsable --ntasks=2 --output="$WORK/resumed-%j.out" "$ROOT/configs/slurm/generate_srun.sbatch") || fail "sbatch --resume"
state=$(wait_job "$job")
[ "$state" = COMPLETED ] || fail "resumed job $job ended $state"
grep -q "resuming: $kept of 64 request(s) already answered" "$WORK/resumed-$job.out" || fail "the resumed job did not skip the answered lines"
[ -f "$OUTPUT.journal" ] && fail "journal left after the resumed job"
same "$WORK/long-ref.jsonl" "$OUTPUT" || fail "cancelled + resumed output differs from an uninterrupted run"
echo "ok: scancel after $kept of 64 answers, resubmitted with --resume: equal to an uninterrupted run"
echo PASS
