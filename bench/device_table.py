"""The ratio table of a device run: zprune.jsonl (bench/gpu_bench.ts) against torch.jsonl (torch_anchor.py).
Usage: python3 bench/device_table.py OUT_DIR  (prints markdown).

The anchor times a back-to-back loop by wall clock (mean of 10 after a warm-up): scoring, then a layer-wide sort or a
sort per row. zprune's like-for-like figure is its span (gpuSpanMs: first pass's start to last pass's end, gaps
included); the sum of its stages' medians leaves the gaps between passes out. `row` is set beside the anchor's per-row
sort, `layer` beside its layer-wide sort; the anchor has no N:M, so an N:M case's ratio, against the layer-wide sort (a
heavier job), is shown in parentheses and left out of the 3x count."""
import json, sys
out = sys.argv[1]
torch = {tuple(r["shape"]): r for r in map(json.loads, open(f"{out}/torch.jsonl")) if "shape" in r}
print(
    "| shape | pattern | weights | zprune GPU span ms | sum of stage medians | sum of stage minima | zprune request ms"
    " | torch case | torch ms | torch / zprune span | torch / zprune sum of stages |"
)
print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
rows = list(map(json.loads, open(f"{out}/zprune.jsonl")))
met, counted, by_sum = 0, 0, False
for r in rows:
    shape = f"{r['shape'][0]}x{r['shape'][1]}"
    if "exactPath" in r:
        print(f"| {shape} | {r['pattern']} | - | exact CPU path: {r['exactPath']} | - | - | - | - | - | - | - |")
        continue
    if r["timing"] == "timestamp-per-dispatch":
        continue
    t = torch.get(tuple(r["shape"]), {})
    own = r["pattern"] in ("layer", "row")  # the anchor's own cases; N:M has none
    case = "row sort" if r["pattern"] == "row" else "layer sort" if own else "layer sort (no N:M)"
    peer = t.get("torch_row_ms" if r["pattern"] == "row" else "torch_layer_ms")
    span = r.get("gpuSpanMs")

    def ratio(ms):
        if not (peer and ms):
            return "-"
        return f"{peer / ms:.2f}x" if own else f"({peer / ms:.2f}x)"

    if own and peer and (span or r["gpuMs"]):
        counted += 1
        met += peer / (span or r["gpuMs"]) >= 3
        by_sum = by_sum or not span
    print(
        f"| {shape} | {r['pattern']} | {r.get('weights', 'uploaded')} | {span if span else '-'} | {r['gpuMs']}"
        f" | {r.get('gpuMsBest', '-')} | {r['requestMs']['best']} | {case} | {peer if peer else '-'} | {ratio(span)}"
        f" | {ratio(r['gpuMs'])} |"
    )
print()
print(
    f"3x target: {met} of {counted} layer and row cases at least 3x faster than the anchor"
    + (" (by the sum of stages where no span was measured, which leaves out the gaps between passes)" if by_sum else "")
    + "; N:M cases have no anchor to compare with."
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
