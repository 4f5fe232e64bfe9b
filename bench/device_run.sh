#!/usr/bin/env bash
# The prepared GPU-machine run (the `device` tool): the torch anchor and zprune's WebGPU bench on the same
# shapes in one invocation, then the ratio table. Prepare on the CPU machine first:
#   npm ci && ../shared/tools/device-prep.sh \
#     && ./node_modules/.bin/deno bundle bench/gpu_bench.ts -o .gpu-bundle/gpu-bench.js
# then run, carrying .gpu-bundle:  bash bench/device_run.sh      (results in $OUT: *.jsonl and table.md)
set -uo pipefail
for f in .gpu-bundle/debs/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
xz -dc .gpu-bundle/deno.xz > /tmp/deno && chmod +x /tmp/deno
OUT=${OUT:-/tmp/zprune-device}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
shapes="4096x4096 4096x11008 11008x4096 14336x4096 8192x28672"
python3 .gpu-bundle/torch_anchor.py $shapes > "$OUT/torch.jsonl" 2> "$OUT/torch.err"
/tmp/deno run -A .gpu-bundle/gpu-bench.js --shapes "${shapes// /,}" --patterns layer,row,2:4 --repeat 10 \
  > "$OUT/zprune.jsonl" 2> "$OUT/zprune.err"
python3 - "$OUT" <<'PY' | tee "$OUT/table.md"
import json, sys
out = sys.argv[1]
torch = {tuple(r["shape"]): r for r in map(json.loads, open(f"{out}/torch.jsonl")) if "shape" in r}
print("| shape | pattern | zprune GPU ms | zprune request ms | torch ms | torch / zprune GPU |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
for r in map(json.loads, open(f"{out}/zprune.jsonl")):
    t = torch.get(tuple(r["shape"]), {})
    peer = t.get("torch_row_ms" if r["pattern"] == "row" else "torch_layer_ms")
    ratio = f"{peer / r['gpuMs']:.2f}x" if peer and r["gpuMs"] else "-"
    print(f"| {r['shape'][0]}x{r['shape'][1]} | {r['pattern']} | {r['gpuMs']} | {r['requestMs']['best']} | {peer} | {ratio} |")
PY
