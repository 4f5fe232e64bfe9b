import assert from "node:assert/strict";
import { layerVectorBytes, workingMemoryBytes } from "./working_memory.ts";

Deno.test("workingMemoryBytes(): a returned score or weight costs its bytes twice (kept, then encoded)", () => {
  const n = 64 * 64;
  for (const dtype of ["f32", "f16", "bf16"] as const) {
    const layer = [{ rows: 64, cols: 64, dtype }];
    const base = workingMemoryBytes(layer, 0);
    const size = dtype === "f32" ? 4 : 2;
    assert.equal(workingMemoryBytes(layer, 0, { score: true }) - base, 2 * 4 * n, `${dtype}: scores are f32`);
    assert.equal(workingMemoryBytes(layer, 0, { weight: true }) - base, 2 * size * n, `${dtype}: weights as sent`);
    assert.equal(workingMemoryBytes(layer, 1000, {}) - base, 1000, "the body counts once");
  }
});

Deno.test("workingMemoryBytes(): scratch for the largest layer only, masks and returns for every layer", () => {
  const small = { rows: 8, cols: 16, dtype: "f16" as const }, large = { rows: 64, cols: 128, dtype: "f32" as const };
  const alone = (l: typeof small | typeof large) => workingMemoryBytes([l], 0);
  // A layer's answer (mask bits, twice) is what it adds beside a larger layer; its scratch is not.
  const keptSmall = 2 * (small.rows * small.cols) / 8;
  assert.equal(workingMemoryBytes([large, small], 0), alone(large) + keptSmall);
  assert.equal(workingMemoryBytes([small, large], 0), alone(large) + keptSmall, "order does not matter");
  const scratchLarge = 64 * 128 * (8 + 4) + 64 * 128 / 8 + layerVectorBytes(64, 128);
  assert.equal(alone(large), scratchLarge + 2 * 64 * 128 / 8);
});

Deno.test("layerVectorBytes(): zpruner counts the most, magnitude the least, and the default is zpruner's", () => {
  for (const [rows, cols] of [[1, 1], [4096, 4096], [32, 2_000_000], [16_000_000, 4]]) {
    const z = layerVectorBytes(rows!, cols!), m = layerVectorBytes(rows!, cols!, "magnitude");
    assert.equal(layerVectorBytes(rows!, cols!, "zpruner"), z);
    assert.ok(
      z > layerVectorBytes(rows!, cols!, "ria") && layerVectorBytes(rows!, cols!, "ria") > m,
      `${rows}x${cols}`,
    );
    assert.ok(layerVectorBytes(rows!, cols!, "wanda") >= m);
  }
});
