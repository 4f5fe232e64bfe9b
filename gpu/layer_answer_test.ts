import assert from "node:assert/strict";
import { ZpruneError } from "../contract/errors.ts";
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { layerAnswer, type ReadBack } from "./layer_answer.ts";
import { type LayerPlan, planLayer } from "./layer_plan.ts";
import { Z_SCALARS } from "./kernels/mod.ts";

const roomy = { tileBytes: 2 ** 27, bindingBytes: 2 ** 27 };

/** The plan of a layer `shape` (3x5 f16 unless given) pruned by `method` and `pattern` (and `extra`). */
function plan(
  method: PruneParams["method"],
  pattern: PruneParams["pattern"],
  extra: Partial<PruneParams> = {},
  shape: Pick<LayerJob, "rows" | "cols" | "dtype"> = { rows: 3, cols: 5, dtype: "f16" },
) {
  const bytes = shape.rows * shape.cols * (shape.dtype === "f32" ? 4 : 2);
  const layer: LayerJob = { name: "q", ...shape, weight: new Uint8Array(bytes), actNormSq: null };
  const params = { method, pattern, exponent: 1, returnWeight: false, returnScore: false, ...extra };
  return planLayer(params, layer, roomy) as LayerPlan;
}

/** What the kernels would read back for a 3x5 layer: every even index pruned, select_pick's threshold 1.5. */
function back(extra: Partial<ReadBack> = {}): ReadBack {
  const state = new ArrayBuffer(16);
  new Float32Array(state)[0] = 1.5;
  return {
    mask: new Uint32Array([0b101010101010101]).buffer,
    state,
    bad: new Uint32Array([0xffffffff, 0]).buffer,
    rowSums: new Float32Array(0),
    colSums: new Float32Array(0),
    zScalars: null,
    weights: [],
    scores: [],
    ...extra,
  };
}

/** A 3x5 mask that prunes 2 in every row: columns 0 and 1 of each (bits 0-1, 5-6, 10-11). */
const twoPerRow = () => new Uint32Array([0b110001100011]).buffer;

Deno.test("layerAnswer() gives the mask's bytes, its statistics and the layer pattern's threshold", () => {
  const out = layerAnswer(plan("magnitude", { kind: "layer", sparsity: 0.5 }), back(), 8);
  assert.ok(typeof out === "object");
  // Bits 0, 2, ..., 14: rows of 5 hold 3, 2 and 3 of them.
  assert.deepEqual([...out.mask], [0x55, 0x55]);
  assert.deepEqual(out.stats, {
    pruned: 8,
    total: 15,
    sparsity: 8 / 15,
    rowSparsity: { min: 2 / 5, max: 3 / 5, mean: 8 / 15 },
    nonFinite: 0,
    threshold: 1.5,
  });
  assert.equal(out.weight, undefined);
  assert.equal(out.score, undefined);
  // The row pattern has no layer threshold; neither has a layer pattern that prunes nothing (k = 0).
  const row = layerAnswer(plan("wanda", { kind: "row", sparsity: 0.5 }), back({ mask: twoPerRow() }), 2);
  assert.ok(typeof row === "object" && !("threshold" in row.stats));
  const nothing = new Uint32Array([0]).buffer;
  const none = layerAnswer(plan("magnitude", { kind: "layer", sparsity: 0 }), back({ mask: nothing }), 0);
  assert.ok(typeof none === "object" && !("threshold" in none.stats));
});

Deno.test("layerAnswer() joins each tile's weights and scores in order", () => {
  const p = plan("magnitude", { kind: "layer", sparsity: 0.5 }, { returnWeight: true, returnScore: true });
  const w = Uint8Array.from({ length: 30 }, (_, i) => i);
  const s = Float32Array.from({ length: 15 }, (_, i) => i / 4);
  const out = layerAnswer(p, back({ weights: [w.slice(0, 10).buffer, w.slice(10).buffer], scores: [s.buffer] }), 8);
  assert.ok(typeof out === "object");
  assert.deepEqual([...out.weight!], [...w]);
  assert.deepEqual([...out.score!], [...s]);
});

Deno.test("layerAnswer() refuses a non-finite weight by its index, as the CPU backend does", () => {
  assert.throws(
    () =>
      layerAnswer(plan("magnitude", { kind: "row", sparsity: 0.5 }), back({ bad: new Uint32Array([7, 0]).buffer }), 2),
    (e: unknown) => e instanceof ZpruneError && e.code === "non_finite" && /row 1, column 2/.test(e.message),
  );
});

Deno.test("layerAnswer() sends a layer to the exact path where f32 could differ from f64", () => {
  const magnitude = plan("magnitude", { kind: "row", sparsity: 0.5 });
  const flagged = layerAnswer(magnitude, back({ bad: new Uint32Array([0xffffffff, 1]).buffer }), 2);
  assert.match(flagged as string, /subnormal/);
  // RIA divides by row and column sums of |w|: one that overflowed float32 cannot stand in for the f64 one.
  const ria = plan("ria", { kind: "row", sparsity: 0.5 });
  const sums = (rows: number[]) => new Float32Array(rows.flatMap((abs) => [1, 1, abs]));
  const over = layerAnswer(ria, back({ rowSums: sums([1, Infinity, 1]), colSums: sums([1, 1, 1, 1, 1]) }), 2);
  assert.match(over as string, /^row 1's sum of \|w\| overflows float32$/);
  const fine = layerAnswer(
    ria,
    back({ rowSums: sums([1, 2, 1]), colSums: sums([1, 1, 1, 1, 1]), mask: twoPerRow() }),
    2,
  );
  assert.equal(typeof fine, "object");
});

Deno.test("layerAnswer() sends a mask that prunes other counts than its pattern's to the exact path", () => {
  // What a kernel cut short by its driver answers (lavapipe ends a shader's loops after 65,535 iterations).
  const layer = plan("magnitude", { kind: "layer", sparsity: 0.6 }); // k = 9 of 15; back()'s mask prunes 8
  assert.equal(
    layerAnswer(layer, back(), 9),
    "the GPU's mask prunes 8 weights (2 to 3 a row) where the pattern prunes 9",
  );
  assert.equal(typeof layerAnswer(layer, back(), 8), "object"); // 8 is what a sparsity of 8/15 prunes
  // The row pattern: 2 in every row. back()'s mask has 3, 2 and 3; one of 3, 1 and 2 has the right total, 6.
  const row = plan("magnitude", { kind: "row", sparsity: 0.5 });
  assert.match(layerAnswer(row, back(), 2) as string, /prunes 8 weights \(2 to 3 a row\) where the pattern prunes 6$/);
  const uneven = back({ mask: new Uint32Array([0b011000010000111]).buffer });
  assert.match(layerAnswer(row, uneven, 2) as string, /prunes 6 weights \(1 to 3 a row\) where the pattern prunes 6$/);
  assert.equal(typeof layerAnswer(row, back({ mask: twoPerRow() }), 2), "object");
  // N:M, 1:2 of a 2x4 layer: 1 of every 2, so 2 a row.
  const nm = plan("magnitude", { kind: "nm", n: 1, m: 2 }, {}, { rows: 2, cols: 4, dtype: "f16" });
  assert.equal(typeof layerAnswer(nm, back({ mask: new Uint32Array([0b01011010]).buffer }), 0), "object");
  assert.match(layerAnswer(nm, back({ mask: new Uint32Array([0b00011010]).buffer }), 0) as string, /pattern prunes 4$/);
});

Deno.test("layerAnswer() sizes the joined weights by the layer's dtype", () => {
  // f32: 15 weights of 4 bytes each, in two tiles.
  const half = { kind: "layer", sparsity: 0.5 } as const;
  const p = plan("magnitude", half, { returnWeight: true }, { rows: 3, cols: 5, dtype: "f32" });
  const w = Uint8Array.from({ length: 60 }, (_, i) => i + 1);
  const out = layerAnswer(p, back({ weights: [w.slice(0, 20).buffer, w.slice(20).buffer] }), 8);
  assert.ok(typeof out === "object");
  assert.deepEqual([...out.weight!], [...w]);
});

Deno.test("layerAnswer()'s mask owns its buffer, so the worker can transfer it rather than copy the read-back", () => {
  const out = layerAnswer(plan("magnitude", { kind: "layer", sparsity: 0.5 }), back(), 8);
  assert.ok(typeof out === "object");
  // The read-back is 4 bytes of u32 words; the 3x5 mask is 2 of them.
  assert.equal(out.mask.byteLength, 2);
  assert.equal(out.mask.buffer.byteLength, 2);
});

Deno.test("layerAnswer() answers with the read-back's own mask, weights and scores, uncopied, where they fit", () => {
  // 4x8: 32 weights, so the mask is one whole u32 word; one tile of weights and of scores.
  const both = { returnWeight: true, returnScore: true };
  const p = plan("magnitude", { kind: "layer", sparsity: 0.5 }, both, { rows: 4, cols: 8, dtype: "f16" });
  const mask = new Uint32Array([0x0f0f0f0f]).buffer;
  const weights = Uint8Array.from({ length: 64 }, (_, i) => i).buffer;
  const scores = Float32Array.from({ length: 32 }, (_, i) => i / 2).buffer;
  const out = layerAnswer(p, back({ mask, weights: [weights], scores: [scores] }), 16);
  assert.ok(typeof out === "object");
  assert.deepEqual([...out.mask], [0x0f, 0x0f, 0x0f, 0x0f]);
  assert.equal(out.stats.pruned, 16);
  // Each is the read-back's buffer itself, whole (so the worker transfers it): a copy of a layer's mask, weights or
  // scores costs a fresh allocation of their size.
  assert.equal(out.mask.buffer, mask);
  assert.equal(out.weight!.buffer, weights);
  assert.equal(out.weight!.byteLength, 64);
  assert.equal(out.score!.buffer, scores);
  assert.equal(out.score!.length, 32);
});

Deno.test("layerAnswer() keeps a subnormal flag when the row and column sums are fine", () => {
  const sums = (lines: number) => new Float32Array(lines * 3).fill(1);
  const ria = plan("ria", { kind: "row", sparsity: 0.5 });
  const out = layerAnswer(
    ria,
    back({ bad: new Uint32Array([0xffffffff, 1]).buffer, rowSums: sums(3), colSums: sums(5) }),
    2,
  );
  assert.match(out as string, /subnormal/);
});

Deno.test("layerAnswer() bounds each line's sum of squares by that line's own count of terms", () => {
  // Z-Pruner's floor for a sum of squares is terms * 2^-103: a row of the 3x5 layer sums 5 terms, a column 3.
  // sq = 4 * 2^-103 lies under a row's floor and over a column's. (zScalars null: only the sums are checked.)
  const z = plan("zpruner", { kind: "row", sparsity: 0.5 });
  const zScalars = new Uint32Array(12);
  const line = (sq: number) => [sq, 1, 1];
  const fine = line(1);
  const low = line(4 * 2 ** -103);
  const rowLow = layerAnswer(
    z,
    back({
      zScalars,
      rowSums: new Float32Array([...low, ...fine, ...fine]),
      colSums: new Float32Array(Array(5).fill(fine).flat()),
    }),
    2,
  );
  assert.match(rowLow as string, /^row 0's sum of squares underflows float32$/);
  const colLow = layerAnswer(
    z,
    back({
      zScalars,
      rowSums: new Float32Array([...fine, ...fine, ...fine]),
      colSums: new Float32Array([...fine, ...low, ...fine, ...fine, ...fine]),
    }),
    2,
  );
  // Past the sums come Z-Pruner's scalar checks (all-zero scalars here, which they may refuse): not this one.
  assert.ok(!/sum of squares/.test(String(colLow)), `a column of 3 terms with sq 4 * 2^-103 was refused: ${colLow}`);
});

Deno.test("layerAnswer() sends a Z-Pruner layer whose normalised weights barely spread to the exact path", () => {
  // Row-normalised weights with mean 1 and std 1e-6 (invStd 1e6): z = (w - mean) * invStd keeps few bits in f32.
  const zScalars = new Uint32Array(12);
  const z = new Float32Array(zScalars.buffer);
  z[Z_SCALARS.meanR] = 1;
  z[Z_SCALARS.invStdR] = 1e6;
  z[Z_SCALARS.meanC] = 0;
  z[Z_SCALARS.invStdC] = 1;
  const fine = (lines: number) => new Float32Array(lines * 3).fill(1);
  const p = plan("zpruner", { kind: "row", sparsity: 0.5 });
  const out = layerAnswer(p, back({ zScalars, rowSums: fine(3), colSums: fine(5) }), 2);
  assert.match(out as string, /^the row-normalised weights spread too little for float32 z-scores/);
});
