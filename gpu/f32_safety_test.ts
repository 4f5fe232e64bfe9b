import assert from "node:assert/strict";
import { lowRowThreshold, splitActivations, sumsOutOfRange, zSafeThreshold } from "./f32_safety.ts";

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
});

Deno.test("zSafeThreshold() grows with |mean| / std and the largest activation; 0 where no score can move", () => {
  const n = 2 ** 23;
  // [meanR, meanC, thr, invStdR, invStdC, alpha]: means 2 stds from zero, then 0 (the floor 0.25 / sqrt(n) remains).
  const far = new Float32Array([2 / 64, 2 / 64, 0, 64, 64, 0.7]);
  const zero = new Float32Array([0, 0, 0, 64, 64, 0.7]);
  // A score (α zr³ + (1 - α) zc³ with zr = zc) at the threshold needs z >= 2.3 for a shift of 20 * 2^-24 * 2.
  assert.ok(Math.cbrt(zSafeThreshold(far, n, 1)) > 2.2 && Math.cbrt(zSafeThreshold(far, n, 1)) < 2.4);
  assert.ok(Math.abs(zSafeThreshold(far, n, 8) / zSafeThreshold(far, n, 1) - 8) < 1e-9);
  assert.ok(Math.cbrt(zSafeThreshold(zero, n, 1)) < 1e-4);
  assert.equal(zSafeThreshold(far, n, 0), 0);
  assert.equal(zSafeThreshold(new Float32Array([1, 1, 0, 0, 0, 0.7]), n, 1), 0, "zero stds: every z is 0");
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
