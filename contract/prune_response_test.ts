import assert from "node:assert/strict";
import { type PruneResponse, PruneResponseSchema, type Timings } from "./api.ts";
import { encodePruneResponse } from "./prune_response.ts";
import { Packr } from "msgpackr";
import { concatBytes, decodeMsgpack } from "./wire.ts";

/** The oracle: msgpackr packing the whole response itself, with the options contract/wire.ts uses. */
const oracle = new Packr({ useRecords: false, variableMapSize: true, moreTypes: false });
const expected = (value: unknown) => new Uint8Array(oracle.pack(value));

/** A response head with tensors below and above the 1 KiB that `msgpackPieces` passes by reference. */
function head(): Omit<PruneResponse, "timings"> {
  const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255);
  const stats = {
    pruned: 3,
    total: 8,
    sparsity: 0.375,
    rowSparsity: { min: 0, max: 0.5, mean: 0.375 },
    nonFinite: 0 as const,
  };
  return {
    backend: "webgpu",
    device: "NVIDIA H200",
    layers: [
      { name: "small", shape: [2, 4], mask: bytes(1, 1), stats },
      {
        name: "large",
        shape: [64, 512],
        mask: bytes(4096, 2),
        weight: { dtype: "f16", shape: [64, 512], data: bytes(65536, 3) },
        score: { dtype: "f32", shape: [64, 512], data: bytes(131072, 4) },
        stats: { ...stats, threshold: 0.25, alpha: 0.6 },
        exactPath: "float32 sums out of range",
      },
    ],
  };
}

Deno.test("encodePruneResponse() writes msgpackr's bytes for the whole response, timings last", () => {
  const h = head();
  let given = -1;
  const { pieces, byteLength, timings } = encodePruneResponse(h, (encodeMs) => {
    given = encodeMs;
    return { decodeMs: 1.5, computeMs: 1234.5678, encodeMs, totalMs: 1e6 / 3 };
  });
  const bytes = concatBytes(pieces);
  assert.equal(byteLength, bytes.byteLength);
  // The large tensors are pieces of their own, the very arrays of the head: nothing copied them.
  assert.ok(pieces.includes(h.layers[1]!.score!.data), "the score by reference");
  assert.ok(given >= 0, "finish gets the time spent encoding");
  assert.equal(timings.encodeMs, given);
  assert.deepEqual(bytes, expected({ ...h, timings }));
  const raw = decodeMsgpack(bytes) as Record<string, unknown>;
  assert.deepEqual(Object.keys(raw), ["backend", "device", "layers", "timings"]);
  const decoded = PruneResponseSchema.parse(raw);
  assert.equal(decoded.layers[1]!.exactPath, "float32 sums out of range");
});

Deno.test("encodePruneResponse() ends with the timings as they pack, however long", () => {
  // Integers pack in 1 to 5 bytes, floats in 9: the body ends exactly where the timings map does.
  for (const t of [0, 7, 70000, 0.1]) {
    const timings: Timings = { decodeMs: t, computeMs: t, encodeMs: t, totalMs: t };
    const bytes = concatBytes(encodePruneResponse(head(), () => timings).pieces);
    assert.deepEqual(bytes, expected({ ...head(), timings }), String(t));
  }
});
