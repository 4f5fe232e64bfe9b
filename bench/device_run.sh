#!/usr/bin/env bash
# The prepared GPU-machine run (the `device` tool), in one invocation:
#   1. the torch anchor and zprune's WebGPU bench on the same shapes, then the ratio table, and a per-dispatch
#      breakdown of two shapes;
#   2. the WebGPU parity tests (goldens, random layers against the CPU backend, crafted sums) on that GPU;
#   3. bench/full_shape_parity.ts: 8192x28672 masks against the CPU backend (skipped with NO_FULL=1);
#   4. its Z-Pruner scores against the f32 error model (bench/z_error_fit.ts --quick) (NO_PARITY=1 skips 2 and 4);
#   5. the end-to-end CLI (bundled model, zpruner/layer) against a server forced onto WebGPU (skipped with NO_E2E=1);
#   6. bench/grouped_layers.ts: small layers grouped against one at a time, appended to e2e.log (NO_GROUPED=1 skips).
# In that order of what matters most, each within what is left of DEADLINE_S (540 s; one try has 600).
# Prepare on the CPU machine first (node_modules is too large to travel: the run takes a bundle and a slim copy):
#   npm ci && ../shared/tools/device-prep.sh \
#     && ./node_modules/.bin/deno bundle bench/gpu_bench.ts -o .gpu-bundle/gpu-bench.js \
#     && tar -cJf .gpu-bundle/nm.tar.xz node_modules/{msgpackr,zod,hono,@huggingface}
# then run, carrying .gpu-bundle:  bash bench/device_run.sh
# Results in $OUT, at most 8 files (the device tool returns no more; a ninth would be left out): stderr.log (first the
# date, nvidia-smi, Deno's version and the cores, then each step's progress), clocks.csv, torch.jsonl, zprune.jsonl,
# parity.log, z_error.jsonl, e2e.log, full_shape.jsonl. The ratio table goes to stdout only: `python3
# bench/device_table.py OUT` makes it again from the two .jsonl files. bench/device_run_test.ts counts the files.
set -uo pipefail
# DRY_RUN=1 rehearses the script here (lavapipe, small shapes): it leaves this machine's libraries alone.
if [ -z "${DRY_RUN:-}" ]; then
  for f in .gpu-bundle/debs/*.deb; do dpkg -x "$f" /; done
  ldconfig
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
# A dry run unpacks Deno to a directory of its own, not over a /tmp/deno of this machine's.
deno=/tmp/deno; [ -z "${DRY_RUN:-}" ] || deno=$(mktemp -d)/deno
xz -dc .gpu-bundle/deno.xz > "$deno" && chmod +x "$deno"
export XDG_RUNTIME_DIR=/tmp DENO_NO_UPDATE_CHECK=1
OUT=${OUT:-/tmp/zprune-device}
# One try has 600 s: every step's timeout is cut to what is left of DEADLINE_S (from here), so a stall early on costs
# the steps after it their time, not the whole run's results; a step with under 10 s left is skipped and says so.
started=$SECONDS deadline=${DEADLINE_S:-540}
# within LIMIT: prints the seconds a step may take (LIMIT, or what is left if less); fails when under 10 s are left.
within() {
  local left=$((deadline - (SECONDS - started)))
  [ "$left" -ge 10 ] || return 1
  echo $((left < $1 ? left : $1))
}
mkdir -p "$OUT"
log="$OUT/stderr.log"
{ date -u; nvidia-smi; "$deno" --version; nproc; } > "$log" 2>&1
# GPU clocks, load and power every 200 ms while everything runs: a host-bound run leaves the GPU idle most of the time,
# and its clocks may fall between layers (see docs/PERFORMANCE.md on the 8192x28672 row and 2:4 cases).
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw --format=csv -lms 200 \
  > "$OUT/clocks.csv" 2>&1 &
clocks=$!
trap 'kill $clocks 2>/dev/null' EXIT

# 1. Bench: the anchor first, then zprune, on one quiet GPU.
shapes=${SHAPES:-"4096x4096 4096x11008 11008x4096 14336x4096 8192x28672"}
echo "== torch anchor $(date -u +%T)" >> "$log"
# The first step runs whatever DEADLINE_S says (10 s at the least): the rest needs its figures.
PYTHONUNBUFFERED=1 timeout "$(within 60 || echo 10)" python3 .gpu-bundle/torch_anchor.py $shapes \
  > "$OUT/torch.jsonl" 2>> "$log"
echo "== zprune bench $(date -u +%T)" >> "$log"
# One process per shape, pattern and weights mode, so that a stall loses one case, not the table, and no case runs
# after another in the same process (on the H200, 2026-11-28, the row and 2:4 runs of 8192x28672 that followed its
# layer run in one process measured even decode, the same kernel on the same bytes, 3.65x slower). Each case is timed
# with the weights uploaded per call and with them resident (--resident: uploaded once, profiled runs back to back,
# as the anchor's loop runs). A case that times out ends the bench, and skips the per-dispatch breakdown.
stalled=
for shape in $shapes; do
  limit=40; [ "$shape" = 8192x28672 ] && limit=70
  for pattern in layer row 2:4; do
    for mode in "" --resident; do
      echo "-- $shape $pattern ${mode:-uploaded} $(date -u +%T)" >> "$log"
      t=$(within "$limit") || { echo "-- out of time" >> "$log"; stalled=1; break 3; }
      timeout "$t" "$deno" run -A .gpu-bundle/gpu-bench.js --shapes "$shape" --patterns "$pattern" --repeat 5 \
        $mode ${DRY_RUN:+--fallback} >> "$OUT/zprune.jsonl" 2>> "$log" ||
        { echo "-- exit $?" >> "$log"; stalled=1; break 3; }
    done
  done
done
# Where the time goes: every dispatch in a timed pass of its own, on resident weights, smallest and largest shape.
for shape in ${DETAIL_SHAPES:-4096x4096 8192x28672}; do
  [ -z "$stalled" ] || { echo "-- per dispatch skipped: the bench stalled" >> "$log"; break; }
  echo "-- $shape per dispatch $(date -u +%T)" >> "$log"
  t=$(within 90) || { echo "-- out of time" >> "$log"; break; }
  timeout "$t" "$deno" run -A .gpu-bundle/gpu-bench.js --shapes "$shape" --patterns layer,row,2:4 --repeat 5 \
    --resident --per-dispatch ${DRY_RUN:+--fallback} >> "$OUT/zprune.jsonl" 2>> "$log" || echo "-- exit $?" >> "$log"
done
python3 bench/device_table.py "$OUT" 2>> "$log"

# The source runs below need the dependencies (node_modules is too large to travel whole). Only where none are
# installed: a dry run keeps this machine's own.
if [ -z "${NO_PARITY:-}" ] || [ -z "${NO_E2E:-}" ] || [ -z "${NO_FULL:-}" ]; then
  [ -d node_modules/hono ] || tar -xJf .gpu-bundle/nm.tar.xz
fi

# step NAME LIMIT OUTFILE CMD...: runs CMD within LIMIT seconds (or what is left), its stdout to OUTFILE and its
# stderr to the log, then logs its exit status and shows OUTFILE's last SHOW lines (default 3). STDERR=out sends
# stderr and the exit status to OUTFILE as well (a log of its own, not JSON lines).
step() {
  local name=$1 limit=$2 file=$3 t status
  shift 3
  echo "== $name $(date -u +%T)" >> "$log"
  t=$(within "$limit") || { echo "-- out of time" >> "$log"; return; }
  if [ "${STDERR:-}" = out ]; then timeout "$t" "$@" > "$file" 2>&1; else timeout "$t" "$@" > "$file" 2>> "$log"; fi
  status=$?
  echo "$name exit $status" >> "$log"
  [ "${STDERR:-}" != out ] || echo "$name exit $status" >> "$file"
  tail -"${SHOW:-3}" "$file"
}

# 2. Parity on this GPU: the same test files CI runs on lavapipe, with the crafted-sum tests (on lavapipe only, their
# layers were checked with nearly exact division and sqrt). NO_PARITY=1 skips it and step 4.
[ -n "${NO_PARITY:-}" ] || STDERR=out step parity 150 "$OUT/parity.log" \
  "$deno" test -A --no-check tests/gpu_parity_test.ts tests/crafted_sums_test.ts gpu/

# 3. The largest shape's masks on this GPU against the CPU backend (Z-Pruner layer, row and 2:4; NO_FULL=1 skips;
# FULL_SHAPES picks others): tiling, dispatch limits and 32-bit indexing at full size.
[ -n "${NO_FULL:-}" ] || SHOW=3 step "full shape" 150 "$OUT/full_shape.jsonl" \
  "$deno" run -A --no-check bench/full_shape_parity.ts --shapes "${FULL_SHAPES:-8192x28672}" ${DRY_RUN:+--fallback}

# 4. This GPU's own division and inverseSqrt against the Z-Pruner error model, which was fitted by emulating WGSL's
# least accurate arithmetic on lavapipe: cover < 1 means every weight within the model (bench/z_error_fit.ts).
[ -n "${NO_PARITY:-}" ] || SHOW=1 step "z error fit" 60 "$OUT/z_error.jsonl" \
  "$deno" run -A --no-check bench/z_error_fit.ts --quick ${DRY_RUN:+--fallback}

# 5. End to end: the CLI prunes the bundled model through a server on the WebGPU backend (skipped with NO_E2E=1).
if [ -z "${NO_E2E:-}" ]; then
  echo "== e2e $(date -u +%T)" >> "$log"
  if t=$(within 130); then
    ZPRUNE_BACKEND=webgpu PORT=8787 ZPRUNE_LOG=0 "$deno" run -A main.ts >> "$log" 2>&1 &
    server=$!
    python3 - >> "$OUT/e2e.log" 2>&1 <<'PY'
import time, urllib.request
for _ in range(60):
    try:
        print(urllib.request.urlopen("http://127.0.0.1:8787/v1/info", timeout=2).read().decode()); break
    except OSError:
        time.sleep(0.5)
PY
    if t=$(within 100); then
      timeout "$t" "$deno" run -A cli/prune.ts --server http://127.0.0.1:8787 >> "$OUT/e2e.log" 2>&1
      echo "e2e exit $?" >> "$OUT/e2e.log"
    else echo "-- out of time (the server took the rest)" >> "$log"; fi
    kill "$server" 2>/dev/null
    tail -12 "$OUT/e2e.log"
  else echo "-- out of time" >> "$log"; fi
fi

# 6. What a request's small layers gain from sharing a read-back wait (docs/GPU.md, "Threads"), with the same backend
# one layer at a time as the peer. Appended to e2e.log: the device tool returns 8 files. The layers that take the exact
# path are counted on stdout; their lines on stderr are left out of the log.
if [ -z "${NO_GROUPED:-}" ]; then
  echo "== grouped layers $(date -u +%T)" >> "$log"
  if t=$(within 60); then
    timeout "$t" "$deno" run -A --no-check bench/grouped_layers.ts --runs 3 >> "$OUT/e2e.log" \
      2> >(grep -v "computed on the CPU path" >> "$log")
    echo "grouped exit $?" >> "$OUT/e2e.log"
    tail -4 "$OUT/e2e.log"
  else echo "-- out of time" >> "$log"; fi
fi
echo "== done $(date -u +%T)" >> "$log"
files=$(find "$OUT" -type f | wc -l)
[ "$files" -le 8 ] || echo "warning: $files files in $OUT; the device tool returns 8 at most" | tee -a "$log"
