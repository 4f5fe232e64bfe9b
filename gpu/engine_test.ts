import assert from "node:assert/strict";
import { f32AtLeast, planTiles } from "./engine.ts";

Deno.test("planTiles() cuts whole rows within the byte budget and numbers blocks globally", () => {
  const tiles = planTiles(1000, 300, 300 * 4 * 333);
  assert.deepEqual(tiles.map((t) => t.rows), [333, 333, 333, 1]);
  assert.deepEqual(tiles.map((t) => t.row0), [0, 333, 666, 999]);
  assert.deepEqual(tiles.map((t) => t.base), [0, 99900, 199800, 299700]);
  // Blocks of 256 rows and of 8192 keys restart at each tile; global numbering is cumulative.
  assert.deepEqual(tiles.map((t) => t.colBlock0), [0, 2, 4, 6]);
  assert.deepEqual(tiles.map((t) => t.keyBlock0), [0, 13, 26, 39]);
  assert.equal(planTiles(8192, 28672, 2 ** 27).length, 8);
  assert.equal(planTiles(7, 5, 1 << 20).length, 1);
});

Deno.test("f32AtLeast() gives the smallest float32 not below x", () => {
  for (const x of [0, 1, 0.1, 1e-30, 0.0012345678901234, 3.4e38, 1.401298464324817e-45 / 3]) {
    const f = f32AtLeast(x);
    assert.equal(Math.fround(f), f);
    assert.ok(f >= x, `${f} < ${x}`);
    // The float32 just below f is below x, so |w| < f exactly when |w| < x for every float32 w.
    const below = new Float32Array([f]);
    const u = new Uint32Array(below.buffer);
    if (f > 0) {
      u[0] = u[0]! - 1;
      assert.ok(below[0]! < x, `${below[0]} >= ${x}`);
    }
  }
});
