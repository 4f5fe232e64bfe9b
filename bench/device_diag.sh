#!/usr/bin/env bash
# A GPU-machine diagnosis run (the `device` tool), prepared as bench/device_run.sh is: where does the WebGPU bench
# stall? Small shapes with --trace first (each stage submitted and waited on its own, every event logged to
# diag.log), then the full bench beside the torch anchor only if 4096x4096 got through.
set -uo pipefail
if [ -z "${DRY_RUN:-}" ]; then
  for f in .gpu-bundle/debs/*.deb; do dpkg -x "$f" /; done
  ldconfig
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
xz -dc .gpu-bundle/deno.xz > /tmp/deno && chmod +x /tmp/deno
export XDG_RUNTIME_DIR=/tmp DENO_NO_UPDATE_CHECK=1
OUT=${OUT:-/tmp/zprune-device}
mkdir -p "$OUT"
bench() { /tmp/deno run -A .gpu-bundle/gpu-bench.js ${DRY_RUN:+--fallback} "$@"; }
diag() { # diag SECONDS ARGS...: one traced bench run, its output and trace appended to diag.log
  local s=$1; shift
  echo "== diag $* ($(date -u +%T))" >> "$OUT/diag.log"
  timeout "$s" /tmp/deno run -A .gpu-bundle/gpu-bench.js ${DRY_RUN:+--fallback} --trace --repeat 1 "$@" \
    >> "$OUT/diag.log" 2>&1
  echo "== exit $?" >> "$OUT/diag.log"
}
diag 30 --shapes 1024x1024 --patterns layer
diag 40 --shapes 4096x4096 --patterns layer,row,2:4
tail -5 "$OUT/diag.log"
if ! grep -q '"pattern":"2:4"' <(sed -n '/diag --shapes 4096x4096/,$p' "$OUT/diag.log"); then
  diag 30 --shapes 4096x4096 --patterns layer --dtype f32
  diag 30 --shapes 2048x2048 --patterns layer
  diag 30 --shapes 4096x4096 --patterns 2:4 --method magnitude
  exit 0
fi
shapes=${SHAPES:-"4096x4096 4096x11008 11008x4096 14336x4096 8192x28672"}
PYTHONUNBUFFERED=1 timeout 120 python3 .gpu-bundle/torch_anchor.py $shapes > "$OUT/torch.jsonl" 2>> "$OUT/stderr.log"
timeout 150 /tmp/deno run -A .gpu-bundle/gpu-bench.js ${DRY_RUN:+--fallback} --shapes "${shapes// /,}" \
  --patterns layer,row,2:4 --repeat 5 > "$OUT/zprune.jsonl" 2>> "$OUT/stderr.log"
python3 bench/device_table.py "$OUT" > "$OUT/table.md"
cat "$OUT/table.md"
