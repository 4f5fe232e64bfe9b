import assert from "node:assert/strict";
import { ZpruneError } from "../contract/errors.ts";
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { type LayerPlan, planLayer, planTiles } from "./layer_plan.ts";

Deno.test("planTiles() cuts whole rows within the byte budget and numbers blocks globally", () => {
  // 333 rows fit; whole blocks of 256 are taken.
  const tiles = planTiles(1000, 300, 300 * 4 * 333);
  assert.deepEqual(tiles.map((t) => t.rows), [256, 256, 256, 232]);
  assert.deepEqual(tiles.map((t) => t.row0), [0, 256, 512, 768]);
  assert.deepEqual(tiles.map((t) => t.base), [0, 76800, 153600, 230400]);
  assert.deepEqual(tiles.map((t) => t.colBlock0), [0, 1, 2, 3]);
  assert.deepEqual(tiles.map((t) => t.keyBlock0), [0, 10, 20, 30]);
  // Under 256 rows per tile, blocks of 256 rows and of 8192 keys restart at each tile; numbering is cumulative.
  const narrow = planTiles(1000, 300, 300 * 4 * 100);
  assert.deepEqual(narrow.map((t) => t.rows), Array(10).fill(100));
  assert.deepEqual(narrow.map((t) => t.colBlock0), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(narrow.map((t) => t.keyBlock0), [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]);
  assert.equal(planTiles(8192, 28672, 2 ** 27).length, 8);
  assert.equal(planTiles(7, 5, 1 << 20).length, 1);
  // Where a tile holds 256 rows or more, it holds whole blocks: 5461 rows of 6144 f32 fit 128 MiB, 5376 are taken, so
  // the column partials are ceil(rows/256), as if untiled.
  const big = planTiles(6144, 6144, 2 ** 27);
  assert.deepEqual(big.map((t) => t.rows), [5376, 768]);
  assert.deepEqual(big.map((t) => t.colBlock0), [0, 21]);
  // A row wider than a tile cannot be cut: refused, never an endless plan.
  assert.throws(() => planTiles(2, 300, 1024), RangeError);
  assert.deepEqual(planTiles(0, 300, 1024), []);
});

/** A layer of this shape; planLayer reads no weight bytes, so none are given. */
function layer(rows: number, cols: number): LayerJob {
  return { name: "l", rows, cols, dtype: "f16", weight: new Uint8Array(0), actNormSq: null };
}

function params(method: PruneParams["method"], pattern: PruneParams["pattern"]): PruneParams {
  return { method, pattern, exponent: 1, returnWeight: false, returnScore: false };
}

const LAYER = { kind: "layer", sparsity: 0.5 } as const;
const roomy = { tileBytes: 2 ** 27, bindingBytes: 2 ** 27 };

Deno.test("planLayer() sizes the whole-layer arrays over all tiles", () => {
  const plan = planLayer(params("zpruner", LAYER), layer(1000, 300), {
    tileBytes: 300 * 4 * 333,
    bindingBytes: 2 ** 27,
  });
  assert.equal(typeof plan, "object");
  const p = plan as LayerPlan;
  assert.equal(p.n, 300_000);
  assert.equal(p.size, 2); // f16
  assert.equal(p.tiles.length, 4); // rows 256, 256, 256, 232
  assert.equal(p.colBlocks, 4);
  // Blocks restart at each tile: 76,800 keys are 10 blocks of 8192 (three tiles), 69,600 are 9.
  assert.equal(p.keyBlocks, 3 * 10 + 9);
  // centred workgroups of 16,384 elements: 5 per tile.
  assert.equal(p.centredWgs, 4 * 5);
  assert.equal(p.maskBytes, Math.ceil(300_000 / 32) * 4);
  assert.equal(p.statsMethod, "zpruner");
  assert.equal(p.nmThread, false);
});

Deno.test("planLayer() names the statistics methods and the N:M patterns select_nm ranks", () => {
  const kinds = (method: PruneParams["method"], pattern: PruneParams["pattern"]) => {
    const p = planLayer(params(method, pattern), layer(8, 128), roomy) as LayerPlan;
    return [p.statsMethod, p.nmThread];
  };
  assert.deepEqual(kinds("ria", LAYER), ["ria", false]);
  assert.deepEqual(kinds("wanda", { kind: "row", sparsity: 0.5 }), [null, false]);
  assert.deepEqual(kinds("magnitude", { kind: "nm", n: 32, m: 64 }), [null, true]);
  assert.deepEqual(kinds("zpruner", { kind: "nm", n: 2, m: 4 }), ["zpruner", true]);
  assert.deepEqual(kinds("zpruner", { kind: "nm", n: 64, m: 128 }), ["zpruner", false]);
});

Deno.test("planLayer() sends a layer the device cannot hold to the exact path, saying why", () => {
  // A row wider than a tile.
  const wide = planLayer(params("magnitude", LAYER), layer(2, 300), { tileBytes: 1024, bindingBytes: 2 ** 27 });
  assert.match(wide as string, /^a row of 300 columns, over the device's 1024-byte tiles$/);
  // A mask of 33 x 256 bits (1056 bytes) over a 1024-byte binding, though each 256-column row fits a tile.
  const small = { tileBytes: 1024, bindingBytes: 1024 };
  assert.match(planLayer(params("magnitude", LAYER), layer(33, 256), small) as string, /^its mask need 1056 bytes/);
  assert.equal(typeof planLayer(params("magnitude", LAYER), layer(32, 256), small), "object");
  // Activations (8 bytes a column) count only for methods that read them.
  const acts = { tileBytes: 2048, bindingBytes: 2048 };
  assert.match(
    planLayer(params("wanda", { kind: "row", sparsity: 0.5 }), layer(1, 512), acts) as string,
    /activations/,
  );
  assert.equal(typeof planLayer(params("magnitude", { kind: "row", sparsity: 0.5 }), layer(1, 512), acts), "object");
  // RIA's column partials, one per block of rows per tile: 8 rows of 60,000 columns in 1 MiB tiles are 2 tiles of 4
  // rows, so 2 x 60,000 x 12 bytes = 1.44 MB, over a 1 MiB binding, where every other array fits.
  const mib = { tileBytes: 2 ** 20, bindingBytes: 2 ** 20 };
  assert.match(planLayer(params("ria", LAYER), layer(8, 60_000), mib) as string, /^its column partials need 1440000/);
  // Z-Pruner's column sums over 200,000 rows are longer chains than its f32 error model covers; magnitude has none.
  assert.match(planLayer(params("zpruner", LAYER), layer(200_000, 4), roomy) as string, /roundings/);
  assert.equal(typeof planLayer(params("magnitude", LAYER), layer(200_000, 4), roomy), "object");
  // The row pattern ranks a row in one workgroup, whose loops lavapipe cuts short past about 3.17M columns: 2^21 at
  // most. Other patterns rank such rows in blocks.
  const row = params("magnitude", { kind: "row", sparsity: 0.5 });
  assert.equal(typeof planLayer(row, layer(2, 2 ** 21), { tileBytes: 2 ** 30, bindingBytes: 2 ** 30 }), "object");
  assert.equal(
    planLayer(row, layer(2, 2 ** 21 + 1), { tileBytes: 2 ** 30, bindingBytes: 2 ** 30 }),
    "a row of 2097153 columns, over the 2097152 that select_row ranks in one workgroup",
  );
  assert.equal(typeof planLayer(params("magnitude", LAYER), layer(2, 2 ** 21 + 1), roomy), "object");
  // No elements (the contract's shapes are at least 1x1): the CPU backend answers, as it would.
  assert.equal(planLayer(params("zpruner", LAYER), layer(0, 4), roomy), "a layer without elements");
  const nm = params("magnitude", { kind: "nm", n: 2, m: 4 });
  assert.equal(typeof planLayer(nm, layer(1, 2 ** 21 + 4), roomy), "object");
});

Deno.test("planLayer() refuses 2^32 elements or more as too_large", () => {
  assert.throws(
    () => planLayer(params("magnitude", LAYER), layer(65536, 65536), roomy),
    (e: unknown) => e instanceof ZpruneError && e.code === "too_large",
  );
});

Deno.test("planTiles() keeps each tile within col_stats's 65535 workgroups of 256 rows", () => {
  // 2^25 rows of one column fit a 2^27-byte tile as f32, but col_stats dispatches ceil(rows/256) workgroups on y.
  const tiles = planTiles(2 ** 25, 1, 2 ** 27);
  for (const t of tiles) assert.ok(Math.ceil(t.rows / 256) <= 65535, `tile ${t.index}: ${t.rows} rows`);
  assert.equal(tiles.reduce((a, t) => a + t.rows, 0), 2 ** 25);
  tiles.forEach((t, i) => assert.equal(t.row0, i === 0 ? 0 : tiles[i - 1]!.row0 + tiles[i - 1]!.rows));
});

Deno.test("planLayer() counts the column partials of tiles that end inside a block of 256 rows", () => {
  // Z-Pruner's column sums stay within its error model up to 163,840 rows in whole blocks of 256 (640 partials).
  // Tiles of 255 rows end inside blocks, so the same columns take 643 partials and one rounding more.
  const z = params("zpruner", LAYER);
  const whole = planLayer(z, layer(163_840, 64), { tileBytes: 256 * 64 * 4, bindingBytes: 2 ** 27 });
  assert.equal(typeof whole, "object");
  const cut = planLayer(z, layer(163_840, 64), { tileBytes: 255 * 64 * 4, bindingBytes: 2 ** 27 });
  assert.match(cut as string, /column sums may be off by 41 roundings/);
});

Deno.test("planLayer() fits the row statistics, three f32 a row, in one binding", () => {
  // 100,000 rows x 3 x 4 bytes = 1.2 MB over a 1 MiB binding; the mask (12,500 bytes) and the one column's arrays fit.
  const mib = { tileBytes: 2 ** 20, bindingBytes: 2 ** 20 };
  assert.match(planLayer(params("ria", LAYER), layer(100_000, 1), mib) as string, /^its row statistics need 1200000/);
  assert.equal(typeof planLayer(params("ria", LAYER), layer(80_000, 1), mib), "object");
});

Deno.test("planLayer() checks the pooled buffer, whole 256-byte units, against a binding limit between them", () => {
  // The engine binds whole pool buffers: a 992-byte mask lives in 1024 bytes, over a 1000-byte binding; 768 fit.
  const odd = { tileBytes: 768, bindingBytes: 1000 };
  assert.match(planLayer(params("magnitude", LAYER), layer(62, 128), odd) as string, /^its mask need 992 bytes/);
  assert.equal(typeof planLayer(params("magnitude", LAYER), layer(48, 128), odd), "object");
});

Deno.test("planLayer()'s mask holds every element's bit in whole u32 words", () => {
  for (const [rows, cols] of [[1, 1], [3, 5], [7, 9], [32, 1], [33, 1], [5, 100]] as const) {
    const p = planLayer(params("magnitude", LAYER), layer(rows, cols), roomy) as LayerPlan;
    const bits = p.maskBytes * 8;
    assert.ok(p.maskBytes % 4 === 0 && bits >= rows * cols && bits - rows * cols < 32, `${rows}x${cols}: ${bits}`);
  }
});
