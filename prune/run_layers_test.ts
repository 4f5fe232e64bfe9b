import assert from "node:assert/strict";
import type { Backend, LayerJob, LayerOutput } from "./backend.ts";
import { runLayers } from "./run_layers.ts";
import { MAGNITUDE_HALF } from "../tests/_params.ts";

const PARAMS = MAGNITUDE_HALF;

/** Layers named 0..count-1 (their contents are the fake backend's business). */
function layers(count: number): LayerJob[] {
  return Array.from({ length: count }, (_, i) => ({
    name: String(i),
    rows: 1,
    cols: 1,
    dtype: "f32",
    weight: new Uint8Array(4),
    actNormSq: null,
  }));
}

/** A backend whose `prune` is `fn`; its answer's mask holds the layer's index, so order is visible. */
function backend(fn: (layer: LayerJob) => Promise<LayerOutput>): Backend {
  return {
    kind: "cpu",
    device: "test",
    restarts: 0,
    exactPathLayers: 0,
    prune: (_p, l) => fn(l),
    close: async () => {},
  };
}

const output = (l: LayerJob): LayerOutput => ({
  mask: new Uint8Array([Number(l.name)]),
  stats: { pruned: 0, total: 1, sparsity: 0, rowSparsity: { min: 0, max: 0, mean: 0 }, nonFinite: 0 },
});

Deno.test("runLayers(): one layer at a time, answers in the layers' order", async () => {
  let running = 0, most = 0;
  const b = backend(async (l) => {
    most = Math.max(most, ++running);
    // Later layers answer sooner: order must come from the loop, not from timing.
    await new Promise((r) => setTimeout(r, 10 - Number(l.name)));
    running--;
    return output(l);
  });
  const outs = await runLayers(b, PARAMS, layers(5), new AbortController().signal, () => {}, 50);
  assert.deepEqual(outs.map((o) => o.mask[0]), [0, 1, 2, 3, 4]);
  assert.equal(most, 1);
});

Deno.test("runLayers(): an abort rejects with its reason, keeps the layer in flight, starts no more", async () => {
  const ctl = new AbortController();
  let started = 0, finish!: () => void;
  const inFlight = new Promise<void>((r) => (finish = r));
  const b = backend(async (l) => {
    started++;
    if (l.name === "1") {
      // As a deadline or a departed client does: from a task of its own, while the layer computes.
      setTimeout(() => ctl.abort(new Error("client gone")), 0);
      await inFlight;
    }
    return output(l);
  });
  const kept: Promise<unknown>[] = [];
  await assert.rejects(runLayers(b, PARAMS, layers(4), ctl.signal, (w) => kept.push(w), 50), /client gone/);
  assert.equal(started, 2);
  assert.equal(kept.length, 1);
  finish();
  assert.equal(((await kept[0]) as LayerOutput).mask[0], 1);
});

Deno.test("runLayers(): layers computed without yielding still give timers a turn every yieldMs", async () => {
  // Each layer holds the thread 2 ms and settles as a resolved promise (microtasks only), as small inline layers do.
  const b = backend((l) => {
    const until = performance.now() + 2;
    while (performance.now() < until) { /* busy */ }
    return Promise.resolve(output(l));
  });
  let fired = false;
  setTimeout(() => (fired = true), 0);
  let firedAt = -1;
  const count = 40;
  const watch = backend(async (l) => {
    if (fired && firedAt < 0) firedAt = Number(l.name);
    return await b.prune(PARAMS, l);
  });
  await runLayers(watch, PARAMS, layers(count), new AbortController().signal, () => {}, 10);
  // A 0 ms timer armed before the run fires once the run has held the thread about yieldMs: after 5 layers of at
  // least 2 ms each (a loaded machine makes a layer take longer, so the turn comes sooner, never later), long before
  // the 80 ms the run takes. A run that ignored yieldMs for the route's 50 ms would let it fire after about 25.
  assert.ok(firedAt > 0 && firedAt <= 10, `the timer fired before layer ${firedAt}`);
});

Deno.test("runLayers(): a signal aborted before the first layer starts none and rejects with its reason", async () => {
  let started = 0;
  const b = backend((l) => (started++, Promise.resolve(output(l))));
  const kept: Promise<unknown>[] = [];
  await assert.rejects(
    runLayers(b, PARAMS, layers(3), AbortSignal.abort(new Error("deadline passed")), (w) => kept.push(w), 50),
    /deadline passed/,
  );
  assert.equal(started, 0);
  assert.equal(kept.length, 0);
});

Deno.test("runLayers(): the backend gets the request's signal with every layer, to stop work early", async () => {
  const ctl = new AbortController();
  const seen: (AbortSignal | undefined)[] = [];
  const b: Backend = { ...backend((l) => Promise.resolve(output(l))) };
  b.prune = (_p, l, signal) => (seen.push(signal), Promise.resolve(output(l)));
  await runLayers(b, PARAMS, layers(2), ctl.signal, () => {}, 50);
  assert.deepEqual(seen, [ctl.signal, ctl.signal]);
});
