import assert from "node:assert/strict";
import type { LayerJob, LayerOutput } from "../prune/backend.ts";
import { layerStats } from "../prune/mask_stats.ts";
import { layerTransfer, outputTransfer } from "./protocol.ts";

/** A job over the given arrays; the shape does not matter to what is transferred. */
function job(weight: Uint8Array, actNormSq: LayerJob["actNormSq"]): LayerJob {
  return { name: "q", rows: 1, cols: weight.byteLength, dtype: "f16", weight, actNormSq };
}

Deno.test("outputTransfer() lists the buffers of the mask, the weights and the scores, each once", () => {
  const mask = new Uint8Array(2), weight = new Uint8Array(30), score = new Float32Array(15);
  const out: LayerOutput = { mask, weight, score, stats: layerStats(mask, 3, 5) };
  const list = outputTransfer(out);
  assert.equal(list.length, 3);
  for (const a of [mask, weight, score]) assert.ok(list.includes(a.buffer as ArrayBuffer));
  // The list must be one postMessage accepts (no buffer twice), and transferring empties the sender's arrays.
  structuredClone(out, { transfer: list });
  assert.equal(mask.byteLength + weight.byteLength + score.byteLength, 0);
  // Two arrays over one whole buffer: listed once, as a transfer list with a duplicate throws DataCloneError.
  const shared = new ArrayBuffer(8);
  const twice: LayerOutput = { mask: new Uint8Array(shared), weight: new Uint8Array(shared), stats: out.stats };
  const once = outputTransfer(twice);
  assert.deepEqual(once, [shared]);
  structuredClone(twice, { transfer: once });
});

Deno.test("layerTransfer() moves a job's own arrays but never a buffer other views share", () => {
  const weight = new Uint8Array(12), act = new Float32Array(6);
  assert.deepEqual(layerTransfer(job(weight, act)), [weight.buffer, act.buffer]);
  assert.deepEqual(layerTransfer(job(weight, null)), [weight.buffer]);
  // A request body holds many layers' weights: a view into it (at an offset, or shorter than its buffer) must not
  // be transferred, which would detach every other layer's bytes.
  const body = new ArrayBuffer(64);
  assert.deepEqual(layerTransfer(job(new Uint8Array(body, 8, 16), null)), []);
  assert.deepEqual(layerTransfer(job(new Uint8Array(body, 0, 16), null)), []);
  assert.deepEqual(layerTransfer(job(new Uint8Array(16), new Float32Array(body, 16, 4))).length, 1);
  // A SharedArrayBuffer is shared by design; listing it would make postMessage throw.
  const sab = new Uint8Array(new SharedArrayBuffer(16));
  const list = layerTransfer(job(sab, null));
  assert.deepEqual(list, []);
  structuredClone(job(sab, null), { transfer: list });
});
