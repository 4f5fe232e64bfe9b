#!/usr/bin/env python3
"""The CPU peer to beat: Z-Pruner masks as API.md defines them, the fastest honest NumPy way, as a capable NumPy user
would write it: float32 scores with few temporaries, np.partition for the k-th value (linear time) and, for N:M, each
key's rank within its group by vectorised comparisons; exactly k pruned, ties to the lower index; masks packed LSB
first; the stats an answer carries. Derived from ../shared/tools/numpy_peer.py, which prunes every key equal to the
k-th (more than k where scores tie), partitions each group of 4 on its own, packs one mask for all patterns and
computes no stats. Single-threaded: nothing here calls BLAS; NumPy's element-wise operations and np.partition use one
core.

Usage: python3 numpy_exact_peer.py [--repeat N] [--data DIR] [--masks DIR] [ROWSxCOLS ...]
  (default 4096x4096 11008x4096)
  --data DIR   read DIR/RxC.w16 (f16 weights, row-major) and DIR/RxC.act (f32 actNormSq) instead of drawing them
  --masks DIR  write each pattern's packed mask to DIR/RxC.PATTERN.mask (PATTERN: layer, row, 2of4)
Prints one JSON line per shape: per stage the best of REPEAT runs after one warm-up (ms), per pattern the best run's
total (decode + score + select + pack + stats), and each pattern's stats."""
import json, sys, time
import numpy as np

def zpruner_scores(W, act_norm_sq):
    """API.md's Z-Pruner scores, float32, and alpha. Matrix temporaries: zr (the scores), zc, t and one of bools."""
    n = W.size; f32 = np.float32
    t = np.abs(W); s = np.count_nonzero(t < t.mean() * f32(0.1)) / n; a = 0.7 * (1 - 0.3 * s)
    rn = np.sqrt(np.einsum("ij,ij->i", W, W)); cn = np.sqrt(np.einsum("ij,ij->j", W, W))
    rn[rn == 0] = np.inf; cn[cn == 0] = np.inf  # a zero norm gives 0, never NaN
    zr = W / rn[:, None]; zr -= zr.mean(); np.square(zr, out=t); sr = np.sqrt(t.sum() / (n - 1)) if n > 1 else 0.0
    np.abs(zr, out=zr); zr *= t; zr *= f32(a / sr**3 if sr > 0 else 0)  # a * |zr / sr|^3
    zc = W / cn[None, :]; zc -= zc.mean(); np.square(zc, out=t); sc = np.sqrt(t.sum() / (n - 1)) if n > 1 else 0.0
    np.abs(zc, out=zc); zc *= t; zc *= f32((1 - a) / sc**3 if sc > 0 else 0)
    zr += zc; zr *= (act_norm_sq ** 0.75).astype(f32)[None, :]
    return zr, a

def layer_mask(S, k):
    """The k lowest of S, ties to the lower row-major index; and the threshold (the largest pruned score)."""
    flat = S.ravel()
    if k == 0: return np.zeros(S.shape, bool), None
    th = np.partition(flat, k - 1)[k - 1]
    m = S <= th; extra = np.count_nonzero(m) - k
    if extra:  # keys equal to th beyond the k-th: keep the highest-indexed of them
        m.ravel()[np.flatnonzero(flat == th)[-extra:]] = False
    return m, float(th)

def row_mask(S, k):
    """The k lowest of every row, ties to the lower column."""
    if k == 0: return np.zeros(S.shape, bool)
    th = np.partition(S, k - 1, axis=1)[:, k - 1:k]
    m = S <= th
    for r in np.flatnonzero(np.count_nonzero(m, axis=1) != k):
        m[r, np.flatnonzero(S[r] == th[r, 0])[k - np.count_nonzero(S[r] < th[r, 0]):]] = False
    return m

def nm_mask(S, n, mm):
    """The n lowest of every group of mm consecutive columns, ties to the lower column: each key's rank in its group
    (how many keys of the group come before it in the contract's order) by mm * (mm - 1) / 2 vectorised comparisons."""
    G = S.reshape(S.shape[0], -1, mm); g = [G[:, :, i] for i in range(mm)]
    rank = [np.zeros(g[0].shape, np.uint8) for _ in range(mm)]
    for i in range(mm):
        for j in range(i + 1, mm):
            before = g[j] < g[i]  # j comes before i (else i before j: ties go to the lower column)
            rank[i] += before; rank[j] += ~before
    m = np.empty(G.shape, bool)
    for i in range(mm): np.less(rank[i], n, out=m[:, :, i])
    return m.reshape(S.shape)

def stats(packed, rows, cols, threshold, alpha):
    """An answer's stats from the packed mask (API.md): pruned, total, sparsity, rowSparsity, threshold, alpha."""
    per_row = np.bitwise_count(packed.reshape(rows, -1)).sum(axis=1, dtype=np.int64) if cols % 8 == 0 else \
        np.count_nonzero(np.unpackbits(packed, bitorder="little")[: rows * cols].reshape(rows, cols), axis=1)
    pruned = int(per_row.sum()); total = rows * cols
    out = {"pruned": pruned, "total": total, "sparsity": pruned / total, "alpha": alpha,
           "rowSparsity": {"min": int(per_row.min()) / cols, "max": int(per_row.max()) / cols, "mean": pruned / total}}
    if threshold is not None: out["threshold"] = threshold
    return out

PATTERNS = ("layer", "row", "2of4")

def main():
    args = sys.argv[1:]; repeat = 3; data = masks = None; shapes = []
    while args:
        a = args.pop(0)
        if a == "--repeat": repeat = int(args.pop(0))
        elif a == "--data": data = args.pop(0)
        elif a == "--masks": masks = args.pop(0)
        else: shapes.append(tuple(map(int, a.split("x"))))
    shapes = shapes or [(4096, 4096), (11008, 4096)]
    rng = np.random.default_rng(0)
    for r, c in shapes:
        if data:
            W16 = np.fromfile(f"{data}/{r}x{c}.w16", dtype="<f2").reshape(r, c)
            act = np.fromfile(f"{data}/{r}x{c}.act", dtype="<f4")
        else:
            W16 = (rng.standard_normal((r, c), dtype=np.float32) * 0.02).astype(np.float16)
            act = rng.gamma(2.0, 1.0, c).astype(np.float32)
        best, totals, out = {}, {p: 1e9 for p in PATTERNS}, {}
        for i in range(repeat + 1):  # the first run warms up, as zprune's does
            t = {}
            t0 = time.perf_counter(); W = W16.astype(np.float32)
            t1 = time.perf_counter(); S, alpha = zpruner_scores(W, act); del W
            t["decode"], t["score"] = t1 - t0, time.perf_counter() - t1
            for p in PATTERNS:
                t0 = time.perf_counter()
                if p == "layer": m, th = layer_mask(S, int(0.5 * r * c))
                elif p == "row": m, th = row_mask(S, int(0.5 * c)), None
                else: m, th = nm_mask(S, 2, 4), None
                t1 = time.perf_counter(); packed = np.packbits(m.ravel(), bitorder="little"); del m
                t2 = time.perf_counter(); st = stats(packed, r, c, th, alpha)
                t3 = time.perf_counter()
                t[f"select_{p}"], t[f"pack_{p}"], t[f"stats_{p}"] = t1 - t0, t2 - t1, t3 - t2
                out[p] = (packed, st)
            del S
            if i == 0: continue
            for k2, v in t.items(): best[k2] = min(best.get(k2, 1e9), v * 1e3)
            for p in PATTERNS:
                totals[p] = min(totals[p], 1e3 * (t["decode"] + t["score"] + t[f"select_{p}"] + t[f"pack_{p}"]
                                                  + t[f"stats_{p}"]))
        if masks:
            for p in PATTERNS: out[p][0].tofile(f"{masks}/{r}x{c}.{p}.mask")
        print(json.dumps({"shape": [r, c], "numpy": np.__version__, "threads": 1,
                          **{f"{k2}_ms": round(v, 2) for k2, v in best.items()},
                          **{f"{p}_total_ms": round(v, 2) for p, v in totals.items()},
                          "stats": {p: out[p][1] for p in PATTERNS}}), flush=True)

if __name__ == "__main__":
    main()
