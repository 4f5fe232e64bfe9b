"""The ratio table of a device run: zprune.jsonl (bench/gpu_bench.ts) against torch.jsonl (torch_anchor.py).
Usage: python3 bench/device_table.py OUT_DIR  (prints markdown)."""
import json, sys
out = sys.argv[1]
torch = {tuple(r["shape"]): r for r in map(json.loads, open(f"{out}/torch.jsonl")) if "shape" in r}
print(
    "| shape | pattern | weights | zprune GPU ms (median) | sum of stage minima | zprune request ms | torch ms"
    " | torch / zprune GPU |"
)
print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
rows = list(map(json.loads, open(f"{out}/zprune.jsonl")))
for r in rows:
    if "exactPath" in r:
        shape = f"{r['shape'][0]}x{r['shape'][1]}"
        print(f"| {shape} | {r['pattern']} | - | exact CPU path: {r['exactPath']} | - | - | - | - |")
        continue
    if r["timing"] == "timestamp-per-dispatch":
        continue
    t = torch.get(tuple(r["shape"]), {})
    peer = t.get("torch_row_ms" if r["pattern"] == "row" else "torch_layer_ms")
    ratio = f"{peer / r['gpuMs']:.2f}x" if peer and r["gpuMs"] else "-"
    print(
        f"| {r['shape'][0]}x{r['shape'][1]} | {r['pattern']} | {r.get('weights', 'uploaded')} | {r['gpuMs']}"
        f" | {r.get('gpuMsBest', '-')} | {r['requestMs']['best']} | {peer} | {ratio} |"
    )
detail = [r for r in rows if r.get("timing") == "timestamp-per-dispatch"]
if detail:
    print()
    print("Per dispatch (each in a timed pass of its own; median ms, summed per stage.kernel):")
    print()
    print("| shape | pattern | weights | " + " | ".join(["dispatches (ms)"]) + " |")
    print("| --- | --- | --- | --- |")
    for r in detail:
        parts = ", ".join(f"{k} {v}" for k, v in r["stageMs"].items())
        print(f"| {r['shape'][0]}x{r['shape'][1]} | {r['pattern']} | {r.get('weights', 'uploaded')} | {parts} |")
