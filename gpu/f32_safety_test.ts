import assert from "node:assert/strict";
import type { DType } from "../contract/api.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { encode } from "../contract/dtype_codec.ts";
import { smallWeightBound, zprunerAlpha } from "../prune/scores.ts";
import { normal, rng } from "../tests/_random.ts";
import {
  activationCubeRoots,
  ALPHA_CAP,
  ALPHA_REL,
  alphaUnsettled,
  blockChain,
  exactSmallCount,
  firstZeroWeight,
  lowRowThreshold,
  splitActivations,
  spreadTooSmall,
  sumChain,
  sumsBeyondModel,
  sumsOutOfRange,
  Z_CHAIN_LIMIT,
  zeroWeightsUnsettled,
  zSafeThreshold,
  zSelectionUnsafe,
} from "./f32_safety.ts";
import { Z_SCALARS } from "./kernels/z_means.ts";

Deno.test("splitActivations() gives act = m * 2^e, m in [1, 2] to float32 precision, beyond float32's range", () => {
  const exponent = 64; // act = actNormSq^32
  // 2e-10^32 is a subnormal double; 3.4e38^32 overflows a double, 1e-30^32 underflows it.
  const norms = [0, 1, 2, 0.5, 0.06, 17, 1e-3, 3, 1e3, 3.4e38, 1e-30, 8.5e-39, 2e-10];
  const out = splitActivations(new Float32Array(norms), exponent, norms.length);
  const m = new Float32Array(out.buffer), e = new Int32Array(out.buffer);
  for (let j = 0; j < norms.length; j++) {
    const act = Math.fround(norms[j]!) ** 32;
    const mj = m[2 * j]!, ej = e[2 * j + 1]!;
    if (act === 0 || act === Infinity) {
      assert.deepEqual([mj, ej], [act, 0], `column ${j}`);
      continue;
    }
    assert.ok(mj >= 1 && mj <= 2, `column ${j}: m = ${mj}`);
    // m * 2^e in two steps, so that 2^e itself cannot overflow or underflow a double.
    const back = mj * 2 ** Math.trunc(ej / 2) * 2 ** (ej - Math.trunc(ej / 2));
    assert.ok(Math.abs(back - act) <= act * 2 ** -24, `column ${j}: ${back} vs ${act}`);
  }
  // Just below the largest double, where log2 rounds up to 1024 (and 2^1024 is infinite): m must not come out 0.
  const top = splitActivations(new Float32Array([9.394387249981439e29]), 20.568916584491834, 1);
  const topAct = Math.fround(9.394387249981439e29) ** (20.568916584491834 / 2);
  assert.ok(topAct > 2 ** 1023 && Number.isFinite(topAct));
  const [mTop, eTop] = [new Float32Array(top.buffer)[0]!, new Int32Array(top.buffer)[1]!];
  assert.equal(eTop, 1023);
  // (m may round up to 2.0 there, so compare in log2: m * 2^1023 itself would overflow a double.)
  assert.ok(mTop >= 1 && mTop <= 2, `m = ${mTop}`);
  assert.ok(Math.abs(Math.log2(mTop) + eTop - Math.log2(topAct)) <= 2 ** -23, `${mTop} * 2^${eTop} vs ${topAct}`);
  // Without activations every column is 1 = 1 * 2^0.
  assert.deepEqual([...splitActivations(null, 1.5, 2)], [0x3f800000, 0, 0x3f800000, 0]);
});

Deno.test("sumsOutOfRange() flags overflowed sums and vanishing sums of squares, not zero or ordinary lines", () => {
  const ok = new Float32Array([1, 0.5, 2, 0, 0, 0, 1e-20, 1e-12, 1e-10]); // ordinary, all-zero, small but exact
  assert.equal(sumsOutOfRange(ok, 100, "row", "zpruner"), null);
  assert.equal(sumsOutOfRange(ok, 100, "row", "ria"), null);
  const sqOverflow = new Float32Array([Infinity, 1, 1]);
  assert.match(sumsOutOfRange(sqOverflow, 10, "row", "zpruner")!, /row 0's sums overflow/);
  assert.equal(sumsOutOfRange(sqOverflow, 10, "row", "ria"), null, "RIA does not use the sum of squares");
  assert.match(sumsOutOfRange(new Float32Array([1, 1, 1, 1, 1, Infinity]), 10, "column", "ria")!, /column 1's sum of/);
  // 3e-45 from weights of about 1e-23: squares below 2^-126 are subnormal or flushed, so the sum is not to be trusted.
  const tiny = new Float32Array([3e-45, 1e-22, 5e-23]);
  assert.match(sumsOutOfRange(tiny, 10, "row", "zpruner")!, /sum of squares underflows/);
  assert.equal(sumsOutOfRange(tiny, 10, "row", "ria"), null);
  // RIA divides by sums of |w|: from 2^126 on, a GPU that divides as x * (1 / y) flushes 1 / y to zero.
  const big = new Float32Array([1, 1, 2 ** 126 - 2 ** 102, Infinity, 1, 2 ** 126]); // the f32 below 2^126, then 2^126
  assert.match(sumsOutOfRange(big, 10, "column", "ria")!, /^column 1's sum of \|w\| is 2\^126 or more/);
  assert.equal(sumsOutOfRange(big.subarray(0, 3), 10, "column", "ria"), null);
  // The floor: each of `terms` squares below 2^-126 may lose up to 2^-126 (subnormal or flushed), so a sum under
  // terms * 2^-126 / 2^-23 = terms * 2^-103 may be off by more than 2^-23 of itself. Either side of it, for 100 terms:
  const floor = 100 * 2 ** -103;
  assert.match(sumsOutOfRange(new Float32Array([0.9 * floor, 1e-15, 1e-14]), 100, "row", "zpruner")!, /underflows/);
  assert.equal(sumsOutOfRange(new Float32Array([1.1 * floor, 1e-15, 1e-14]), 100, "row", "zpruner"), null);
});

Deno.test("spreadTooSmall() refuses either axis whose std is under a quarter of its root mean square", () => {
  // n large: rms = sqrt(std^2 (n - 1) / n + mean^2) ~ sqrt(std^2 + mean^2) = 1 for these pairs.
  const n = 1e6;
  const scalars = (row: [mean: number, std: number], col: [mean: number, std: number]) => {
    const z = new Float32Array(11);
    [z[Z_SCALARS.meanR], z[Z_SCALARS.invStdR]] = [row[0], 1 / row[1]];
    [z[Z_SCALARS.meanC], z[Z_SCALARS.invStdC]] = [col[0], 1 / col[1]];
    return z;
  };
  const spread = (std: number): [number, number] => [Math.sqrt(1 - std * std), std];
  assert.equal(spreadTooSmall(scalars(spread(0.3), spread(0.3)), n), null);
  assert.match(spreadTooSmall(scalars(spread(0.2), spread(0.3)), n)!, /^the row-normalised weights spread too little/);
  assert.match(spreadTooSmall(scalars(spread(0.3), spread(0.2)), n)!, /^the column-normalised weights/);
  // A zero mean is all spread: never refused.
  assert.equal(spreadTooSmall(scalars([0, 1e-3], [0, 1e-3]), n), null);
});

Deno.test("zSelectionUnsafe() takes the exact path for a layer threshold below zSafeThreshold, not above it", () => {
  const rows = 8, cols = 8, n = rows * cols;
  const z = new Float32Array(11);
  [z[Z_SCALARS.meanR], z[Z_SCALARS.meanC], z[Z_SCALARS.invStdR], z[Z_SCALARS.invStdC]] = [0.5, 0.5, 2, 2];
  z[Z_SCALARS.alpha] = 0.7;
  const tSafe = zSafeThreshold(z, n, 1); // no activations: the largest is 1
  assert.ok(tSafe > 0);
  const layer = { name: "t", rows, cols, dtype: "f32" as const, weight: new Uint8Array(n * 4), actNormSq: null };
  const params = {
    method: "zpruner" as const,
    pattern: { kind: "layer" as const, sparsity: 0.5 },
    exponent: 1.5,
    returnWeight: false,
    returnScore: false,
  };
  const unsafe = (threshold: number) =>
    zSelectionUnsafe(
      z,
      params,
      layer,
      n / 2,
      threshold,
      new Uint32Array(2),
      new Float32Array(0),
      new Float32Array(0),
      null,
    );
  assert.match(unsafe(0.75 * tSafe)!, /^the layer's threshold score .* is below/);
  assert.equal(unsafe(1.25 * tSafe), null);
});

Deno.test("zSafeThreshold() grows with |mean| / std and the largest activation; 0 where no score can move", () => {
  const n = 2048 * 4096;
  // [meanR, meanC, thr, invStdR, invStdC, alpha]: means 2 stds from zero, then 0 (the floor 0.5 / sqrt(n) remains).
  const far = new Float32Array([2 / 64, 2 / 64, 0, 64, 64, 0.7]);
  const zero = new Float32Array([0, 0, 0, 64, 64, 0.7]);
  // A score (α zr³ + (1 - α) zc³ with zr = zc) at the threshold needs z >= 1.93: a shift of 17 * 2^-24 * 2
  // (2.03e-6) must stay within what the band leaves after rel = 31 * 2^-24 (1.85e-6):
  // (1 + 5e-6) / (1 + 1.85e-6) = 1 + 3 * 1.05e-6.
  assert.ok(Math.cbrt(zSafeThreshold(far, n, 1)) > 1.9 && Math.cbrt(zSafeThreshold(far, n, 1)) < 1.96);
  assert.ok(Math.abs(zSafeThreshold(far, n, 8) / zSafeThreshold(far, n, 1) - 8) < 1e-9);
  // Zero means: only the floor's shift, 17 * 2^-24 * 0.5 / sqrt(n) = 1.75e-10, so z >= 1.66e-4.
  const zZero = Math.cbrt(zSafeThreshold(zero, n, 1));
  assert.ok(zZero > 1.6e-4 && zZero < 1.7e-4, `z ${zZero}`);
  assert.equal(zSafeThreshold(far, n, 0), 0);
  assert.equal(zSafeThreshold(new Float32Array([1, 1, 0, 0, 0, 0.7]), n, 1), 0, "zero stds: every z is 0");
});

Deno.test("zSafeThreshold() counts weights at the small-weight bound within ALPHA_CAP, and no more", () => {
  const n = 2048 * 4096;
  const scalars = (near: number) => {
    const z = new Float32Array(11);
    z.set([2 / 64, 2 / 64, 0, 64, 64, 0.7]);
    new Uint32Array(z.buffer)[Z_SCALARS.near] = near;
    return z;
  };
  const t0 = zSafeThreshold(scalars(0), n, 1);
  const capped = Math.floor((ALPHA_CAP * n) / ALPHA_REL);
  assert.ok(zSafeThreshold(scalars(capped), n, 1) > t0 * 1.3, "near weights take part of the band");
  // Past the cap the host counts them exactly instead (alphaUnsettled), and the bound is the plain one again.
  assert.equal(zSafeThreshold(scalars(capped + 1), n, 1), t0);
});

Deno.test("exactSmallCount() is the CPU backend's count, bit for bit: its alpha for every dtype", async () => {
  const cpu = createCpuBackend({ threads: 0 });
  try {
    const rand = rng(0x5a11);
    for (const dtype of ["f32", "f16", "bf16"] as DType[]) {
      for (const [rows, cols] of [[1, 1], [3, 7], [37, 129], [200, 64]] as const) {
        // Many weights of a few magnitudes, so that some sit at 0.1 mean|W| or near it.
        const w = new Float32Array(rows * cols).map(() => (rand() < 0.3 ? 0.05 : rand() < 0.5 ? 1 : rand() - 0.5));
        const layer = { name: "l", rows, cols, dtype, weight: encode(w, dtype), actNormSq: null };
        const out = await cpu.prune(
          {
            method: "zpruner",
            pattern: { kind: "row", sparsity: 0.5 },
            exponent: 1.5,
            returnWeight: false,
            returnScore: false,
          },
          layer,
        );
        assert.equal(zprunerAlpha(exactSmallCount(layer), rows * cols), out.stats.alpha, `${dtype} ${rows}x${cols}`);
      }
    }
  } finally {
    await cpu.close();
  }
});

Deno.test("alphaUnsettled() trusts the GPU's count below the cap, else compares it with the exact one", () => {
  const rows = 4, cols = 8, n = rows * cols;
  // Weights 0.1 and 1: mean|W| 0.55 at half and half, bound 0.055, so the 16 weights of 0.1 are not small.
  const w = new Float32Array(n).map((_, i) => (i % 2 ? 0.1 : 1));
  const layer = { name: "l", rows, cols, dtype: "f32" as const, weight: encode(w, "f32"), actNormSq: null };
  assert.equal(exactSmallCount(layer), 0);
  const z = (small: number, near: number) => {
    const s = new Float32Array(11);
    const u = new Uint32Array(s.buffer);
    u[Z_SCALARS.small] = small;
    u[Z_SCALARS.near] = near;
    return s;
  };
  assert.equal(alphaUnsettled(z(16, 0), layer), null, "no weight near the bound: the GPU's count stands");
  assert.equal(alphaUnsettled(z(0, 16), layer), null, "near, but the exact count agrees");
  assert.match(alphaUnsettled(z(16, 16), layer)!, /^16 weights lie below the float32 .*, 0 below the exact one/);
});

Deno.test("lowRowThreshold() finds the first row whose largest pruned score is below the bound (mask words)", () => {
  const rows = 4, cols = 37; // rows straddle the 32-bit mask words
  const mask = new Uint32Array(Math.ceil((rows * cols) / 32));
  const scores = new Map<number, number>();
  const prune = (r: number, c: number, s: number) => {
    const i = r * cols + c;
    mask[i >>> 5]! |= 1 << (i & 31);
    scores.set(i, s);
  };
  prune(0, 0, 1), prune(0, 36, 5); // 5 reaches 3
  prune(1, 0, 0), prune(1, 36, 0); // only zero scores (zero activations): safe
  prune(2, 26, 2.5), prune(2, 27, 1); // largest 2.5, below 3
  prune(3, 0, 7);
  const seen: number[] = [];
  const score = (i: number) => (seen.push(i), scores.get(i)!);
  assert.deepEqual(lowRowThreshold(mask, rows, cols, 3, score), { row: 2, threshold: 2.5 });
  assert.deepEqual(seen, [0, 36, 37, 73, 100, 101], "pruned weights only, each row up to its first safe score");
  assert.equal(lowRowThreshold(mask, rows, cols, 2, (i) => scores.get(i)!), null);
});

/**
 * The most roundings any term of a k-term lib/block_sum.wgsl sum goes through, by following the kernel's order: an
 * add rounds unless one side is still zero (an empty accumulator), and a partial's depth is its deepest term's.
 */
function simulatedBlockChain(k: number): number {
  const add = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.max(a, b) + 1);
  let total: number | null = null, group: number | null = null, block: number | null = null;
  let terms = 0, blocks = 0;
  for (let i = 0; i < k; i++) {
    block = add(block, 0);
    if (++terms === 8) {
      [group, block, terms] = [add(group, block), null, 0];
      if (++blocks === 8) [total, group, blocks] = [add(total, group), null, 0];
    }
  }
  return add(add(total, group), block) ?? 0;
}

Deno.test("blockChain() bounds lib/block_sum.wgsl's order, within 1 rounding of its longest path", () => {
  for (let k = 1; k <= 20000; k += k < 600 ? 1 : 37) {
    const path = simulatedBlockChain(k), bound = blockChain(k);
    assert.ok(bound >= path && bound <= path + 1, `k ${k}: bound ${bound}, longest path ${path}`);
  }
});

Deno.test("sumChain() gives the chains the kernels' headers state", () => {
  // row_stats.wgsl; col_stats.wgsl with col_reduce.wgsl.
  assert.deepEqual(sumChain({ rows: 4096, cols: 4096 }), { row: 16, col: 24 });
  assert.deepEqual(sumChain({ rows: 8192, cols: 28672 }), { row: 24, col: 26 });
  assert.deepEqual(sumChain({ rows: 28672, cols: 8192 }), { row: 18, col: 32 });
  assert.deepEqual(sumChain({ rows: 128256, cols: 4096 }), { row: 16, col: 38 });
  // 1,048,576 columns: 4096 terms per thread, 14 + 64 + 8 = 86 roundings.
  assert.equal(sumChain({ rows: 2, cols: 2 ** 20 }).row, 86);
  // A tile plan whose tiles end inside blocks of 256 rows has more column partials, and a longer chain.
  assert.equal(sumChain({ rows: 16384, cols: 8 }).col, 30);
  assert.equal(sumChain({ rows: 16384, cols: 8, colBlocks: 72 }).col, 32);
});

Deno.test("sumsBeyondModel() sends a layer to the exact path when its sums alone could leave the band", () => {
  // Z-Pruner: chains past Z_CHAIN_LIMIT, measured on crafted layers: 22 + ceil(cols/16384), 30 + ceil(rows/16384).
  assert.equal(Z_CHAIN_LIMIT, 40);
  assert.equal(sumsBeyondModel("zpruner", { rows: 2, cols: 16384 * 18 }), null);
  assert.match(
    sumsBeyondModel("zpruner", { rows: 2, cols: 16384 * 18 + 1 })!,
    /^a 2x294913 layer's float32 row sums may be off by 41 roundings: zpruner masks could leave the 1e-5 band$/,
  );
  assert.equal(sumsBeyondModel("zpruner", { rows: 16384 * 10, cols: 8 }), null);
  assert.match(sumsBeyondModel("zpruner", { rows: 16384 * 10 + 1, cols: 8 })!, /column sums may be off by 41/);
  // Every benchmark shape, a 70B model's up projection and a 128K-vocabulary head (the columns' chain 38) on the GPU;
  // a 256K one (46) not.
  const shapes = [[4096, 4096], [4096, 11008], [14336, 4096], [8192, 28672], [28672, 8192], [128256, 4096]] as const;
  for (const [rows, cols] of shapes) assert.equal(sumsBeyondModel("zpruner", { rows, cols }), null, `${rows}x${cols}`);
  assert.notEqual(sumsBeyondModel("zpruner", { rows: 262144, cols: 2048 }), null);
  // RIA, a worst case: 16 roundings plus the longest chain reach half the band at a chain of 68.
  assert.equal(sumsBeyondModel("ria", { rows: 2, cols: 16384 * 45 }), null);
  assert.match(sumsBeyondModel("ria", { rows: 2, cols: 16384 * 45 + 1 })!, /off by 68 roundings: ria masks/);
  assert.equal(sumsBeyondModel("ria", { rows: 16384 * 37, cols: 2 }), null);
  assert.match(sumsBeyondModel("ria", { rows: 16384 * 37 + 1, cols: 2 })!, /column sums may be off by 68 roundings/);
  // ... the tile plan's partial blocks included: more partials make the same height one rounding longer.
  assert.match(sumsBeyondModel("ria", { rows: 16384 * 37, cols: 2, colBlocks: 37 * 64 + 1 })!, /off by 68/);
  assert.equal(sumsBeyondModel("ria", { rows: 14336, cols: 28672 }), null);
  // Wanda and magnitude use no sums.
  assert.equal(sumsBeyondModel("wanda", { rows: 2, cols: 2 ** 24 }), null);
  assert.equal(sumsBeyondModel("magnitude", { rows: 2, cols: 2 ** 24 }), null);
  assert.equal(sumsBeyondModel("zpruner", { rows: 8192, cols: 28672 }), null);
});

/** [sumSq, sum, sumAbs] per row and per column of a rows x cols matrix, in f64, and the two means of Z-Pruner. */
function lineSums(w: number[][]): { rowSums: Float32Array; colSums: Float32Array; meanR: number; meanC: number } {
  const n = w.length * w[0]!.length;
  const lines = (all: number[][]) => {
    const sums = new Float32Array(all.length * 3);
    let mean = 0;
    all.forEach((line, i) => {
      const sq = line.reduce((a, x) => a + x * x, 0), sum = line.reduce((a, x) => a + x, 0);
      sums.set([sq, sum, line.reduce((a, x) => a + Math.abs(x), 0)], 3 * i);
      if (sq > 0) mean += sum / Math.sqrt(sq) / n;
    });
    return { sums, mean };
  };
  const r = lines(w), c = lines(w[0]!.map((_, j) => w.map((row) => row[j]!)));
  return { rowSums: r.sums, colSums: c.sums, meanR: r.mean, meanC: c.mean };
}

Deno.test("firstZeroWeight() finds +0 and -0 in every dtype, and takes no subnormal for 0", () => {
  for (const dtype of ["f32", "f16", "bf16"] as const) {
    const layer = (values: number[]) => ({
      name: "z",
      rows: 1,
      cols: values.length,
      dtype,
      weight: encode(values, dtype),
      actNormSq: null,
    });
    assert.equal(firstZeroWeight(layer([1, -2, 0, 0])), 2, dtype);
    assert.equal(firstZeroWeight(layer([1, -0, 3])), 1, dtype);
    // The smallest subnormal of each dtype, either sign: not zero.
    const tiny = { f32: 2 ** -149, f16: 2 ** -24, bf16: 2 ** -133 }[dtype];
    assert.equal(firstZeroWeight(layer([tiny, -tiny, 5])), -1, dtype);
  }
});

Deno.test("zeroWeightsUnsettled() flags zero weights only where both means may be 0 in float32", () => {
  const B = 2 ** 24;
  const check = (w: number[][], means?: [number, number]) => {
    const { rowSums, colSums, meanR, meanC } = lineSums(w);
    const z = new Float32Array(11);
    [z[Z_SCALARS.meanR], z[Z_SCALARS.meanC]] = means ?? [meanR, meanC];
    const layer = {
      name: "z",
      rows: w.length,
      cols: w[0]!.length,
      dtype: "f32" as const,
      weight: encode(w.flat(), "f32"),
      actNormSq: null,
    };
    return zeroWeightsUnsettled(z, layer, rowSums, colSums, { rows: layer.rows, cols: layer.cols });
  };
  const cancelling = [[B, -B, 1, 0], [-B, B, 0, 1], [-B, -B, B, B], [B, B, -B, -B]];
  // The GPU's f32 means are exactly 0 here; the exact ones are about 5e-9, far inside the bound: s0 = 0 on the GPU
  // alone.
  assert.match(check(cancelling, [0, 0]) ?? "", /weight\[3\] is 0/);
  // Both means inside the bound but not 0, and the exact ones not 0 either: s0 > 0 on both backends.
  assert.equal(check(cancelling), null);
  // Exact sums all 0 (the CPU's s0 is 0) while the GPU's f32 column sum is not: s0 > 0 on the GPU alone.
  const balanced = [[0, 0, -B, B], [-1, 0, 0, 1], [1, -1, B, -B], [0, 1, 0, -1]];
  assert.match(check(balanced, [0, 1e-9]) ?? "", /weight\[0\] is 0/);
  // No zero weight: nothing scores s0 alone.
  assert.equal(check(cancelling.map((row) => row.map((x) => x || 2)), [0, 0]), null);
  // One mean far from 0: s0 > 0 on both backends, whatever the other does.
  assert.equal(check(cancelling, [0.01, 0]), null);
  assert.equal(check(cancelling, [0, -0.01]), null);
  // A layer of ordinary weights with a zero: its means are far outside the bound; and were the GPU's means inside it
  // (a large zero-mean layer's may be), its exact means settle it unless the GPU's are both 0.
  const g = rng(3);
  const plain = Array.from({ length: 64 }, () => Array.from({ length: 64 }, () => g() - 0.5));
  plain[5]![7] = 0;
  assert.equal(check(plain), null);
  assert.equal(check(plain, [1e-12, -1e-12]), null);
  assert.match(check(plain, [0, 0]) ?? "", /weight\[327\] is 0/);

  // The bound itself, on the balanced layer (exact means 0, so only the f32 means decide): the column mean's, as
  // docs/GPU.md states it, 2 * roundings * 2^-24 * spread / n with spread = sum over columns of |col|_1 / |col|_2 and
  // roundings = col_stats's 16 + col_reduce's blocks over one block of rows (0) + z_means's 8 + 8 = 32.
  const columns = balanced[0]!.map((_, j) => balanced.map((row) => row[j]!));
  const spread = columns.reduce((a, c) => a + c.reduce((s, x) => s + Math.abs(x), 0) / Math.hypot(...c), 0);
  const bound = (2 * 32 * 2 ** -24 * spread) / 16;
  assert.match(check(balanced, [0, 0.5 * bound]) ?? "", /weight\[0\] is 0/);
  assert.equal(check(balanced, [0, 2 * bound]), null);
  // Within a rounding's share (1/32) of it, either side: the bound itself, not one near it.
  assert.match(check(balanced, [0, 0.99 * bound]) ?? "", /weight\[0\] is 0/);
  assert.equal(check(balanced, [0, 1.01 * bound]), null);
  // All zeros: every line's bound is 0 and both means are exactly 0 on both backends, so every score is 0 alike.
  assert.equal(check([[0, 0, 0], [0, 0, 0]], [0, 0]), null);
  // Rows that cancel exactly (an exact row mean of 0) but columns that do not quite: the exact column mean, about
  // 2e-11, is far beyond f64's rounding, so s0 > 0 on the CPU backend too, and the GPU's is not 0 either.
  const b = 1024;
  const rowsCancel = [[b, -b, b, -b], [-b, b, -b, b], [1, 0, -1, 0], [0, 1, -1, 0]];
  const sums = lineSums(rowsCancel);
  assert.ok(sums.meanR === 0 && sums.meanC !== 0 && Math.abs(sums.meanC) < 1e-9, `${sums.meanR}, ${sums.meanC}`);
  assert.equal(check(rowsCancel), null);
  assert.match(check(rowsCancel, [0, 0]) ?? "", /weight\[9\] is 0/);
});

Deno.test("activationCubeRoots() gives cbrt(act), act = actNormSq^(exponent/2), as float32", () => {
  const norms = [0, 1, 2, 0.5, 1e-3, 1e3, 17];
  for (const exponent of [1, 1.5, 4]) {
    const out = activationCubeRoots(new Float64Array(norms), exponent, norms.length);
    norms.forEach((v, j) => {
      const act = v ** (exponent / 2);
      assert.ok(Math.abs(out[j]! ** 3 - act) <= 4 * 2 ** -24 * act, `exponent ${exponent}, column ${j}: ${out[j]}`);
    });
  }
  // Past float32's range: infinity. Without activations every act is 1.
  assert.equal(activationCubeRoots(new Float64Array([1e30]), 30, 1)[0], Infinity);
  assert.deepEqual([...activationCubeRoots(null, 1.5, 3)], [1, 1, 1]);
});

Deno.test("spreadTooSmall() compares the std with the root mean square of the entries themselves", () => {
  // Scalars for row-normalised entries `x` (their mean and unbiased std, as z_spread forms them); columns spread well.
  const scalars = (x: number[]) => {
    const mean = x.reduce((a, v) => a + v, 0) / x.length;
    const std = Math.sqrt(x.reduce((a, v) => a + (v - mean) ** 2, 0) / (x.length - 1));
    const z = new Float32Array(11);
    [z[Z_SCALARS.meanR], z[Z_SCALARS.invStdR]] = [mean, std > 0 ? 1 / std : 0];
    [z[Z_SCALARS.meanC], z[Z_SCALARS.invStdC]] = [0, 1];
    return { z, std, rms: Math.sqrt(x.reduce((a, v) => a + v * v, 0) / x.length) };
  };
  // Few entries, either side of std = rms / 4, where rms is not sqrt(std^2 + mean^2).
  for (const x of [[1, 1.442], [1, 1.43], [1, 1.3455, 1.691], [1, 1.34, 1.68], [2, 3, 2.5, 2.2], [2, 2.6, 2.3, 2.1]]) {
    const { z, std, rms } = scalars(x);
    assert.ok(Math.abs(std / rms - 0.25) > 1e-3, `${x}: too close to call`);
    assert.equal(spreadTooSmall(z, x.length) !== null, std < rms / 4, `${x}: std / rms ${std / rms}`);
  }
  // Equal entries (a constant layer: z_spread leaves 1/std at 0) do not spread at all.
  assert.match(spreadTooSmall(scalars([3, 3, 3]).z, 3)!, /^the row-normalised weights spread too little/);
  // One entry: z = 0 on both backends, whatever its mean.
  assert.equal(spreadTooSmall(scalars([3]).z, 1), null);
});

Deno.test("exactSmallCount() takes a weight exactly at the small-weight bound as the CPU backend does", async () => {
  // mean|W| = (1 + 9 * 11) / 10 = 10, so the bound 0.1 mean|W| is 1 exactly, the first weight's magnitude.
  assert.equal(smallWeightBound(100, 10), 1);
  const cpu = createCpuBackend({ threads: 0 });
  try {
    for (const dtype of ["f32", "f16", "bf16"] as DType[]) {
      const w = [-1, ...Array(9).fill(11)];
      const layer = { name: "b", rows: 2, cols: 5, dtype, weight: encode(w, dtype), actNormSq: null };
      const out = await cpu.prune(
        {
          method: "zpruner",
          pattern: { kind: "row", sparsity: 0.4 },
          exponent: 1,
          returnWeight: false,
          returnScore: false,
        },
        layer,
      );
      assert.equal(zprunerAlpha(exactSmallCount(layer), 10), out.stats.alpha, dtype);
    }
  } finally {
    await cpu.close();
  }
});

/** Z-Pruner's scalars of a layer in f64 from their definitions (API.md, Scores), as z_spread would leave them. */
function exactScalars(w: Float32Array, rows: number, cols: number): Float32Array {
  const n = rows * cols;
  const norm = (i: number, line: "row" | "col") => {
    let sq = 0;
    for (let k = 0; k < (line === "row" ? cols : rows); k++) {
      const v = line === "row" ? w[Math.floor(i / cols) * cols + k]! : w[k * cols + (i % cols)]!;
      sq += v * v;
    }
    return Math.sqrt(sq);
  };
  const z = new Float32Array(11);
  const moments = (line: "row" | "col"): [mean: number, invStd: number] => {
    const x = Array.from(w, (v, i) => v / norm(i, line));
    const mean = x.reduce((a, v) => a + v, 0) / n;
    return [mean, 1 / Math.sqrt(x.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1))];
  };
  [z[Z_SCALARS.meanR], z[Z_SCALARS.invStdR]] = moments("row");
  [z[Z_SCALARS.meanC], z[Z_SCALARS.invStdC]] = moments("col");
  const bound = smallWeightBound(w.reduce((a, v) => a + Math.abs(v), 0), n);
  z[Z_SCALARS.alpha] = zprunerAlpha(w.filter((v) => Math.abs(v) < bound).length, n);
  return z;
}

/** [sumSq, sum, sumAbs] per row and per column of a row-major f32 matrix, as row_stats and col_stats leave them. */
function flatLineSums(w: Float32Array, rows: number, cols: number) {
  const rowSums = new Float32Array(rows * 3), colSums = new Float32Array(cols * 3);
  const r64 = new Float64Array(rows * 3), c64 = new Float64Array(cols * 3);
  w.forEach((v, i) => {
    const r = Math.floor(i / cols), c = i % cols;
    for (const [a, k] of [[r64, r], [c64, c]] as const) {
      a[3 * k]! += v * v;
      a[3 * k + 1]! += v;
      a[3 * k + 2]! += Math.abs(v);
    }
  });
  rowSums.set(r64), colSums.set(c64);
  return { rowSums, colSums };
}

/**
 * zSelectionUnsafe() on a layer the CPU backend pruned with its mask, from exact scalars and sums; `why` is its answer
 * and `cpuMax(from, to)` the CPU backend's largest pruned score among elements [from, to).
 */
async function flaggedAgainstCpu(
  w: Float32Array,
  rows: number,
  cols: number,
  actNormSq: Float64Array,
  pattern: { kind: "row"; sparsity: number } | { kind: "nm"; n: number; m: number },
) {
  const layer = { name: "h", rows, cols, dtype: "f32" as const, weight: encode(w, "f32"), actNormSq };
  const params = { method: "zpruner" as const, pattern, exponent: 2, returnWeight: false, returnScore: true };
  const cpu = createCpuBackend({ threads: 0 });
  try {
    const out = await cpu.prune(params, layer);
    const words = new Uint32Array(Math.ceil((rows * cols) / 32));
    new Uint8Array(words.buffer).set(out.mask);
    const { rowSums, colSums } = flatLineSums(w, rows, cols);
    const k = pattern.kind === "row" ? Math.floor(pattern.sparsity * cols) : 0;
    const why = zSelectionUnsafe(exactScalars(w, rows, cols), params, layer, k, 0, words, rowSums, colSums, null);
    const cpuMax = (from: number, to: number) => {
      let max = 0;
      for (let i = from; i < to; i++) if ((out.mask[i >> 3]! >> (i & 7)) & 1) max = Math.max(max, out.score![i]!);
      return max;
    };
    return { why, cpuMax };
  } finally {
    await cpu.close();
  }
}

Deno.test("zSelectionUnsafe() scores a row's pruned weights on the host as the CPU backend scores them", async () => {
  // Weights 1 + U(-0.5, 0.5): means well away from 0, and a row mean unlike the column mean (8 rows, 64 columns).
  // Column 0's activation is 1, every other about 1e-12: its weights are never pruned, and its act lifts the safe
  // threshold far above every row's, so row 0 is flagged with its largest pruned score.
  const rows = 8, cols = 64, rand = rng(0x2b0);
  const w = Float32Array.from({ length: rows * cols }, () => 1 + rand() - 0.5);
  const act = Float64Array.from({ length: cols }, (_, j) => (j === 0 ? 1 : 1e-12 * (1 + j / cols)));
  const { why, cpuMax } = await flaggedAgainstCpu(w, rows, cols, act, { kind: "row", sparsity: 0.5 });
  const got = /^row 0's threshold score (\S+) is below/.exec(why ?? "");
  assert.ok(got, String(why));
  const expected = cpuMax(0, cols);
  assert.ok(Math.abs(Number(got[1]) / expected - 1) < 6e-3, `${got[1]} vs the CPU's ${expected}`);
});

Deno.test("zSelectionUnsafe() checks N:M groups of more than 64 (no select_nm count) one group at a time", async () => {
  // Zero-mean weights (a small safe threshold); 64:128 groups, two to a row of 256. Columns 0-127 have activation 1,
  // so each row's first group is safe; columns 128-255 about 1e-12, so its second group is not.
  const rows = 4, cols = 256, rand = rng(0x2b1);
  const w = Float32Array.from({ length: rows * cols }, () => normal(rand));
  const act = Float64Array.from({ length: cols }, (_, j) => (j < 128 ? 1 : 1e-12 * (1 + j / cols)));
  const { why, cpuMax } = await flaggedAgainstCpu(w, rows, cols, act, { kind: "nm", n: 64, m: 128 });
  const got = /^group 1's threshold score (\S+) is below/.exec(why ?? "");
  assert.ok(got, String(why));
  const expected = cpuMax(128, 256);
  assert.ok(Math.abs(Number(got[1]) / expected - 1) < 6e-3, `${got[1]} vs the CPU's ${expected}`);
});

Deno.test("zSelectionUnsafe() bounds a layer threshold by the largest finite act; 0 or nothing pruned is safe", () => {
  const rows = 4, cols = 4, n = rows * cols;
  const z = new Float32Array(11);
  [z[Z_SCALARS.meanR], z[Z_SCALARS.meanC], z[Z_SCALARS.invStdR], z[Z_SCALARS.invStdC]] = [0.5, 0.5, 2, 2];
  z[Z_SCALARS.alpha] = 0.7;
  // act_j = actNormSq_j^(3/2): 1, 8, infinity (its scores are infinite, never near a threshold), 0.
  const actNormSq = new Float64Array([1, 4, Infinity, 0]);
  const layer = { name: "a", rows, cols, dtype: "f32" as const, weight: new Uint8Array(n * 4), actNormSq };
  const params = {
    method: "zpruner" as const,
    pattern: { kind: "layer" as const, sparsity: 0.5 },
    exponent: 3,
    returnWeight: false,
    returnScore: false,
  };
  const tSafe = zSafeThreshold(z, n, 4 ** 1.5);
  assert.ok(tSafe > 0 && Number.isFinite(tSafe));
  const empty = new Float32Array(0);
  const unsafe = (k: number, threshold: number) =>
    zSelectionUnsafe(z, params, layer, k, threshold, new Uint32Array(1), empty, empty, null);
  assert.equal(unsafe(n / 2, 1.25 * tSafe), null);
  assert.match(unsafe(n / 2, 0.75 * tSafe)!, /^the layer's threshold score/);
  // A threshold of 0 (zero scores are zero on both backends) is safe, and so is a layer that prunes nothing, whatever
  // the select state holds (select_pick does not run for k = 0: the pooled buffer keeps an earlier layer's words).
  assert.equal(unsafe(n / 2, 0), null);
  assert.equal(unsafe(0, 0.75 * tSafe), null);
});
