/** What the stand-in workers answer for a `prune` message: an empty mask (nothing pruned) for every layer. */
import type { FromWorker, ToWorker } from "../protocol.ts";

/** An `answers` message giving each layer of `msg` an empty mask and the stats that go with it. */
export function emptyAnswers(msg: Extract<ToWorker, { type: "prune" }>): FromWorker {
  const answers = msg.layers.map(({ id, layer: { rows, cols } }) => {
    const n = rows * cols;
    const stats = { pruned: 0, total: n, sparsity: 0, rowSparsity: { min: 0, max: 0, mean: 0 }, nonFinite: 0 as const };
    return { type: "done" as const, id, output: { mask: new Uint8Array(Math.ceil(n / 8)), stats } };
  });
  return { type: "answers", answers };
}
