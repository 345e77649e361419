#!/usr/bin/env bash
# Thread scaling and the GPU feature path on a many-core machine with a GPU, in one
# prepared run of under 8 minutes that writes JSON (issue 17). From the repository root:
#
#   bash bench/device_check.sh              # full: threads 1 2 4 8 16, n = 1e6 and 1e7
#   bash bench/device_check.sh --reduced    # a smoke run (threads 1 2, n = 1e5), ~1-2 min
#
# Writes $OUT/device_check.json (OUT defaults to build/device_check): the machine, then
#   bulk    one update(ids, 1.0, threads=T) of n random +1s then top(1000), T = 1..16
#           (bench/bench_threads.py --workloads bulk; wall time, interleaved medians), and
#           the same call timed inside C++ (build/bench/bench_bulk T)
#   stream  P Python threads sharing 1e7 +1s in batches of 1000, each batch followed by
#           top(1000) (bench/bench_threads.py --workloads stream), P = 1..16
#   round   the So-CBI round (bench/bench_round.py) with threads=T at n = 1e6 and 1e7,
#           b = 1000 and 100000, wall clock (n = 1e7 at the fewest and most threads only)
#   gpu     the GPU feature path (bench/bench_features.py --only gpu), as its text output
# Each step has its own time limit; a step that fails or times out is recorded with its
# exit status and the run goes on. Uses the python3 on PATH (or $PYTHON) and builds the
# extension into it when `import socbi._core` fails (no network needed: pybind11,
# scikit-build-core, cmake and ninja must be installed).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-build/device_check}
mkdir -p "$OUT/logs"
REDUCED=0
[[ "${1:-}" == "--reduced" ]] && REDUCED=1
start=$(date +%s)

# The round runs at N_ROUND for every thread count, and at N_ROUND_BIG for the first and
# last thread counts only. DEADLINE: steps that would start later are skipped (recorded
# with rc "skipped"), so the whole run stays under 8 minutes.
if [[ $REDUCED == 1 ]]; then
  THREADS="1 2"; N_BULK="100000"; STREAM_TOTAL=200000; N_ROUND="100000"; N_ROUND_BIG=""; B_ROUND="1000 10000"
  REPEATS=3; ROUNDS=3
  LIMIT_BULK=120; LIMIT_STREAM=120; LIMIT_ROUND=150; LIMIT_GPU=120; DEADLINE=900
else
  THREADS="1 2 4 8 16"; N_BULK="1000000 10000000"; STREAM_TOTAL=10000000; N_ROUND="1000000"; N_ROUND_BIG="10000000"
  B_ROUND="1000 100000"; REPEATS=5; ROUNDS=5
  LIMIT_BULK=90; LIMIT_STREAM=80; LIMIT_ROUND=40; LIMIT_GPU=60; DEADLINE=420
fi

step() {  # step NAME LIMIT_S CMD...: runs CMD with a time limit, logs, records its status
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  if (( t0 - start > DEADLINE )); then
    echo "{\"step\": \"$name\", \"rc\": \"skipped\", \"seconds\": 0}" >> "$OUT/logs/steps.jsonl"
    echo "[$(( t0 - start ))s] $name: skipped (past the ${DEADLINE}s deadline)"
    return
  fi
  timeout --kill-after=10 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
  local rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}" >> "$OUT/logs/steps.jsonl"
  echo "[$(( $(date +%s) - start ))s] $name: rc=$rc"
}
: > "$OUT/logs/steps.jsonl"

# --- build (skipped when the extension already imports) ---
if ! "$PY" -c "import socbi._core" 2>/dev/null; then
  step build 240 "$PY" -m pip install --no-build-isolation --no-deps -q .
fi
step build_cpp_bench 120 bash -c "cmake -S . -B build/device_bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DSOCBI_BUILD_BENCH=ON >/dev/null && cmake --build build/device_bench --target bench_bulk bench_machine_probe"

# --- machine ---
step machine 30 "$PY" -c "
import json, os, platform, subprocess
d = {'cpus': os.cpu_count(), 'platform': platform.platform(), 'python': platform.python_version()}
try:
    import numpy; d['numpy'] = numpy.__version__
    import socbi._core as c; d['build'] = c.build_info() if hasattr(c, 'build_info') else None
except Exception as e: d['import_error'] = repr(e)
try:
    d['nvidia_smi'] = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version', '--format=csv,noheader'],
                                     capture_output=True, text=True, timeout=20).stdout.strip()
except Exception as e: d['nvidia_smi'] = repr(e)
json.dump(d, open('$OUT/machine.json', 'w'), indent=1)
"

# --- bulk call: thread scaling (Python call, then inside C++) ---
for n in $N_BULK; do
  step "bulk_n$n" $LIMIT_BULK "$PY" bench/bench_threads.py --n "$n" --threads $THREADS --workloads bulk \
    --repeats $REPEATS --json "$OUT/bulk_n$n.json"
done
if [[ -x build/device_bench/bench_bulk && $REDUCED == 0 ]]; then
  for t in $THREADS; do step "bulk_cpp_t$t" 30 build/device_bench/bench_bulk "$t" 5; done
fi
step probe 30 bash -c "[[ -x build/device_bench/bench_machine_probe ]] && build/device_bench/bench_machine_probe"

# --- stream with P Python threads ---
step stream $LIMIT_STREAM "$PY" bench/bench_threads.py --n "${N_BULK%% *}" --threads $THREADS --workloads stream \
  --stream-total $STREAM_TOTAL --json "$OUT/stream.json"

# --- the So-CBI round at 1..16 threads ---
for t in $THREADS; do
  step "round_t$t" $LIMIT_ROUND "$PY" bench/bench_round.py --n $N_ROUND --b $B_ROUND --starts rounds20 \
    --structures socbi,numpy_bincount --rounds $ROUNDS --threads "$t" --clock wall --json "$OUT/round_t$t.json"
done
if [[ -n "$N_ROUND_BIG" ]]; then
  for t in ${THREADS%% *} ${THREADS##* }; do
    step "round_big_t$t" 90 "$PY" bench/bench_round.py --n $N_ROUND_BIG --b $B_ROUND --starts rounds20 \
      --structures socbi,numpy_bincount --rounds 3 --threads "$t" --clock wall --json "$OUT/round_big_t$t.json"
  done
fi

# --- GPU feature path ---
step gpu $LIMIT_GPU "$PY" bench/bench_features.py --only gpu --quick

# --- one JSON ---
"$PY" - "$OUT" "$REDUCED" "$(( $(date +%s) - start ))" <<'EOF'
import glob, json, os, sys
out, reduced, seconds = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
def load(p):
    try:
        with open(p) as f:
            return json.load(f)
    except Exception as e:
        return {"missing": os.path.basename(p), "error": repr(e)}
def text(p):
    try:
        with open(p) as f:
            return f.read()[-6000:]
    except OSError:
        return None
logs = os.path.join(out, "logs")
report = {
    "reduced": reduced, "seconds": seconds,
    "steps": [json.loads(l) for l in open(os.path.join(logs, "steps.jsonl")) if l.strip()],
    "machine": load(os.path.join(out, "machine.json")),
    "bulk": {os.path.basename(p)[:-5]: load(p) for p in sorted(glob.glob(os.path.join(out, "bulk_n*.json")))},
    "bulk_cpp": {os.path.basename(p)[:-4]: text(p) for p in sorted(glob.glob(os.path.join(logs, "bulk_cpp_t*.log")))},
    "probe": text(os.path.join(logs, "probe.log")),
    "stream": load(os.path.join(out, "stream.json")),
    "round": {os.path.basename(p)[:-5]: load(p) for p in sorted(glob.glob(os.path.join(out, "round_*t*.json")))},
    "gpu": text(os.path.join(logs, "gpu.log")),
}
with open(os.path.join(out, "device_check.json"), "w") as f:
    json.dump(report, f, indent=1)
print(f"wrote {os.path.join(out, 'device_check.json')} ({seconds} s)")
EOF
