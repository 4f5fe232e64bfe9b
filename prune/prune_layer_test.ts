import assert from "node:assert/strict";
import { createCpuBackend, createPoolExecutor } from "./cpu_backend.ts";
import { type CpuOp, runOp } from "./cpu_ops.ts";
import { type Executor, patternK, pruneLayerWith, selectLayerWith } from "./prune_layer.ts";
import { histogramHigh } from "./select.ts";
import { ZpruneError } from "../contract/errors.ts";
import { childJson } from "../tests/_server.ts";

const invalid = (e: unknown) => e instanceof ZpruneError && e.code === "invalid_request";

Deno.test("patternK(): floor(sparsity x count) per layer or row, 0 for N:M; more than the count refused", () => {
  assert.equal(patternK({ kind: "layer", sparsity: 0.5 }, 3, 5), 7);
  assert.equal(patternK({ kind: "row", sparsity: 0.5 }, 3, 5), 2);
  assert.equal(patternK({ kind: "layer", sparsity: 1 }, 3, 5), 15);
  assert.equal(patternK({ kind: "row", sparsity: 1.5 }, 3, 1), 1); // floor(1.5) of one weight: all of it
  assert.equal(patternK({ kind: "nm", n: 2, m: 4 }, 3, 8), 0);
  // 0.7 of 30 weights is 21: sparsity times the whole count, not (0.7 * 3) * 10, which is 20.999999999999996.
  assert.equal(patternK({ kind: "layer", sparsity: 0.7 }, 3, 10), 21);
  for (const sparsity of [2, -0.1, NaN]) {
    for (const kind of ["layer", "row"] as const) {
      assert.throws(() => patternK({ kind, sparsity }, 3, 5), invalid, `${kind} ${sparsity}`);
    }
  }
});

Deno.test("the CPU backend refuses a sparsity past 1 passed to it directly, not selecting forever", async () => {
  // The route never passes one (the contract's schema stops it); a direct caller gets an error, not a hang.
  const cpu = createCpuBackend({ threads: 0 });
  const layer = { name: "x", rows: 2, cols: 2, dtype: "f32" as const, weight: new Uint8Array(16), actNormSq: null };
  const params = { method: "magnitude" as const, exponent: 1, returnWeight: false, returnScore: false };
  await assert.rejects(cpu.prune({ ...params, pattern: { kind: "layer", sparsity: 2 } }, layer), invalid);
  await cpu.close();
});

/** A LayerJob of f32 `values` shaped [rows, cols], without activations. */
function f32Layer(rows: number, cols: number, values: Float32Array, name = "w") {
  return { name, rows, cols, dtype: "f32" as const, weight: new Uint8Array(values.buffer), actNormSq: null };
}

const magnitudeLayer = { method: "magnitude" as const, exponent: 1, returnWeight: false, returnScore: false };

Deno.test("a layer pattern of all-tied scores split over workers prunes the lowest indices first", async () => {
  // 512 x 1024 = 2^19 equal weights: the workers score and select it in parts (2 per thread, 4 here), each counting
  // its own ties. API.md: of equal scores the lower index goes first, so k = 0.25 * 2^19 = 131072 pruned are bits
  // 0..131071, all within the first part, whose ties must be handed out before any later part's.
  const rows = 512, cols = 1024, k = 131072;
  const cpu = createCpuBackend({ threads: 2, parallelMin: 0 });
  try {
    const out = await cpu.prune(
      { ...magnitudeLayer, pattern: { kind: "layer", sparsity: 0.25 } },
      f32Layer(rows, cols, new Float32Array(rows * cols).fill(1)),
    );
    assert.equal(out.stats.pruned, k);
    assert.ok(out.mask.subarray(0, k / 8).every((b) => b === 0xff), "bits 0..131071 set");
    assert.ok(out.mask.subarray(k / 8).every((b) => b === 0), "bits from 131072 on clear");
  } finally {
    await cpu.close();
  }
});

/** The message of the non_finite error that pruning `layer` (magnitude, half of it) on this thread gives. */
async function nonFiniteMessage(layer: ReturnType<typeof f32Layer>): Promise<string> {
  const cpu = createCpuBackend({ threads: 0 });
  try {
    await cpu.prune({ ...magnitudeLayer, pattern: { kind: "layer", sparsity: 0.5 } }, layer);
  } catch (e) {
    assert.ok(e instanceof ZpruneError && e.code === "non_finite", String(e));
    return e.message;
  } finally {
    await cpu.close();
  }
  assert.fail("a layer with a non-finite weight was pruned");
}

Deno.test("a non-finite weight is named by its index, then its row and its column", async () => {
  // 2 x 4, NaN at index 6: row floor(6 / 4) = 1, column 6 % 4 = 2.
  const w = new Float32Array(8).fill(1);
  w[6] = NaN;
  assert.match(await nonFiniteMessage(f32Layer(2, 4, w, "l")), /weight\[6\] \(row 1, column 2\)/);
});

Deno.test("of non-finite weights in several decode blocks, the first in the layer is named", async () => {
  // 512 x 512 = 2^18 elements decode in two blocks of rows, each reporting its own first bad index: 10 in the
  // first, the last element in the second. The layer's first is 10 (row 0, column 10).
  const w = new Float32Array(512 * 512).fill(1);
  w[10] = NaN;
  w[512 * 512 - 1] = NaN;
  assert.match(await nonFiniteMessage(f32Layer(512, 512, w)), /weight\[10\] \(row 0, column 10\)/);
});

Deno.test("stats.alpha is reported for zpruner only (API.md: zpruner's mixing weight)", async () => {
  const cpu = createCpuBackend({ threads: 0 });
  const layer = f32Layer(2, 2, new Float32Array([1, -2, 3, -4]));
  try {
    for (const method of ["magnitude", "wanda", "ria", "zpruner"] as const) {
      const out = await cpu.prune({ ...magnitudeLayer, method, pattern: { kind: "layer", sparsity: 0.5 } }, layer);
      // No small weights (0.1 * mean|W| = 0.25, every |W| is above it): alpha = 0.7 * (1 - 0.3 * 0) = 0.7.
      if (method === "zpruner") assert.equal(out.stats.alpha, 0.7);
      else assert.ok(!("alpha" in out.stats), `${method}: ${JSON.stringify(out.stats)}`);
    }
  } finally {
    await cpu.close();
  }
});

Deno.test({
  name: "a very tall or very wide layer on the worker pool stays within the server's estimate of its memory",
  ignore: Deno.build.os !== "linux", // the child reads /proc/self/status
  async fn() {
    // Measured in an audit before the fix, as growth / estimate: 16Mx4 zpruner 3.0, 32x2M zpruner 3.0, 1x64M
    // magnitude row 5.4 (per-block row sums sized from row 0, every method's unused sums, per-task vector copies).
    for (
      const args of [["zpruner", "layer", 4 << 20, 4], ["zpruner", "layer", 16, 1 << 20], [
        "magnitude",
        "row",
        1,
        16 << 20,
      ]]
    ) {
      const r = await childJson<{ name: string; growth: number; estimate: number }>(
        new URL("../tests/_layer_peak_child.ts", import.meta.url),
        args.map(String),
        ["--v8-flags=--expose-gc"],
      );
      assert.ok(
        r.growth <= r.estimate,
        `${r.name}: grew ${(r.growth / 2 ** 20).toFixed(0)} MiB, estimated ${(r.estimate / 2 ** 20).toFixed(0)} MiB`,
      );
    }
  },
});

/**
 * An executor sharing its arrays as the worker pool's does, running every op on this thread, that records the scratch
 * it hands out and gets back; `fail`, when set, is what its passes reject with instead of running.
 */
function recordingExecutor(fail?: unknown) {
  const taken: ArrayBufferLike[] = [], released: ArrayBufferLike[] = [];
  const exec: Executor = {
    shared: true,
    threads: 2,
    scratch: (bytes) => {
      const b = new SharedArrayBuffer(bytes);
      taken.push(b);
      return b;
    },
    release: (b) => void released.push(b),
    all<T>(count: number, make: (i: number) => CpuOp | null): Promise<T[]> {
      if (fail !== undefined) return Promise.reject(fail);
      const out: T[] = [];
      for (let i = 0; i < count; i++) {
        const t = make(i);
        if (t) out.push(runOp(t) as T);
      }
      return Promise.resolve(out);
    },
  };
  return { exec, taken, released };
}

Deno.test("a layer failing with no op left running gives its scratch back; one whose worker died, not", async () => {
  const params = { ...magnitudeLayer, pattern: { kind: "layer" as const, sparsity: 0.5 } };
  const w = new Float32Array(64 * 64).fill(1);
  w[100] = NaN;
  // A non-finite weight is found once the decode pass has settled: its buffers are free again.
  const nan = recordingExecutor();
  await assert.rejects(pruneLayerWith(nan.exec, params, f32Layer(64, 64, w)), /non_finite|NaN/);
  assert.ok(nan.taken.length > 0);
  assert.deepEqual(new Set(nan.released), new Set(nan.taken), "every buffer of the failed layer given back");
  // So is a request that goes away between stages.
  const gone = recordingExecutor();
  const abort = AbortSignal.abort(new DOMException("client left", "AbortError"));
  await assert.rejects(pruneLayerWith(gone.exec, params, f32Layer(64, 64, w.fill(1)), abort), /client left/);
  assert.deepEqual(new Set(gone.released), new Set(gone.taken));
  // A worker killed mid-op may still write into them: dropped.
  const dead = recordingExecutor(new ZpruneError("unavailable", "a CPU worker failed"));
  await assert.rejects(pruneLayerWith(dead.exec, params, f32Layer(64, 64, w)), /worker failed/);
  assert.ok(dead.taken.length > 0);
  assert.equal(dead.released.length, 0);
});

/**
 * 256 keys in three top-16-bit buckets: 0x3e00 and 0x4000 around the bucket 0x3f00, whose keys take 5 low values, so
 * ties straddle every cut through it; they lie in every part, at a part's first and last index among others.
 */
function bucketKeys(shared: boolean): { keys: Uint32Array; below: number; bucket: number } {
  const n = 256;
  const keys = new Uint32Array(shared ? new SharedArrayBuffer(4 * n) : new ArrayBuffer(4 * n));
  let s = 11;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const low = (s >>> 8) % 5;
    const inBucket = s % 3 === 0 || [0, 60, 63, 64, 127, 128, 191, 192, 255].includes(i);
    keys[i] = (inBucket ? 0x3f000000 : s & 0x10000 ? 0x40000000 : 0x3e000000) + low;
  }
  const below = keys.filter((k) => k >>> 16 === 0x3e00).length;
  return { keys, below, bucket: keys.filter((k) => k >>> 16 === 0x3f00).length };
}

/** The oracle: the k lowest of `keys` by (key, index), as a mask, and the k-th lowest key (-1 for k = 0). */
function sortedLowest(keys: Uint32Array, k: number): { mask: Uint8Array; threshold: number } {
  const order = Array.from(keys.keys()).sort((a, b) => keys[a]! - keys[b]! || a - b);
  const mask = new Uint8Array(Math.ceil(keys.length / 8));
  for (const i of order.slice(0, k)) mask[i >> 3]! |= 1 << (i & 7);
  return { mask, threshold: k > 0 ? keys[order[k - 1]!]! : -1 };
}

Deno.test("selectLayerWith() marks the k lowest, gathering the threshold's bucket or passing over it", async () => {
  const { keys, below, bucket } = bucketKeys(false);
  assert.ok(below > 20 && bucket > 60 && below + bucket < 230, `buckets of ${below} and ${bucket} keys`);
  // Parts not on byte bounds (ops here run one after another), so the loops over a byte's head and tail run too.
  const bounds = [0, 61, 128, 195, 256];
  const hists = bounds.slice(1).map((e, i) => histogramHigh(keys, bounds[i]!, e));
  for (const gatherMax of [bucket, bucket - 1]) {
    // Every k: a threshold below the bucket, at its first, every middle and its last key, and above it.
    for (let k = 0; k <= keys.length; k++) {
      const { exec } = recordingExecutor();
      const ops: string[] = [];
      const run = exec.all.bind(exec);
      exec.all = (count, make) => run(count, (i) => (((t) => (t && ops.push(t.op), t))(make(i))));
      const mask = new Uint8Array(new SharedArrayBuffer(32));
      const t = await selectLayerWith(exec, keys, k, hists, mask, bounds, (b) => exec.scratch!(b), gatherMax);
      const want = sortedLowest(keys, k);
      assert.deepEqual(mask, want.mask, `gatherMax ${gatherMax}, k ${k}`);
      assert.equal(t, want.threshold, `gatherMax ${gatherMax}, k ${k}`);
      // Gathered exactly when the threshold's bucket (the middle one or another) is within the limit.
      const size = keys.filter((key) => key >>> 16 === want.threshold >>> 16).length;
      if (k > 0) assert.equal(ops.includes("markGather"), size <= gatherMax, `k ${k}: ${ops.join()}`);
    }
  }
});

Deno.test("selectLayerWith() on the worker pool gathers into shared scratch at each part's own offset", async () => {
  const { keys, below, bucket } = bucketKeys(true);
  const bounds = [0, 64, 128, 192, 256];
  const hists = bounds.slice(1).map((e, i) => histogramHigh(keys, bounds[i]!, e));
  const exec = createPoolExecutor(2);
  try {
    for (const gatherMax of [bucket, 0]) {
      for (const k of [below + 1, below + 2, below + 50, below + bucket - 1, below + bucket]) {
        const mask = new Uint8Array(new SharedArrayBuffer(32));
        const t = await selectLayerWith(exec, keys, k, hists, mask, bounds, (b) => exec.scratch!(b), gatherMax);
        const want = sortedLowest(keys, k);
        assert.deepEqual(new Uint8Array(mask), want.mask, `gatherMax ${gatherMax}, k ${k}`);
        assert.equal(t, want.threshold);
      }
    }
  } finally {
    exec.close();
  }
});
