import assert from "node:assert/strict";
import type { Backend, LayerJob, LayerOutput } from "./backend.ts";
import { GROUP_MAX_LAYERS, GROUP_SLACK_BYTES, layerGroups, runLayers } from "./run_layers.ts";
import { layerScratchBytes } from "../contract/working_memory.ts";
import { rng } from "../tests/_random.ts";
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

/** Layers of the given shapes (f16), named by index. */
function shaped(shapes: [number, number][]): LayerJob[] {
  return shapes.map(([rows, cols], i) => ({
    name: String(i),
    rows,
    cols,
    dtype: "f16",
    weight: new Uint8Array(0), // only the shape counts here
    actNormSq: null,
  }));
}

Deno.test("layerGroups(): consecutive groups within the largest layer's scratch and the slack, greedy", () => {
  const rand = rng(5);
  for (let trial = 0; trial < 300; trial++) {
    const count = Math.floor(rand() * 600);
    const big = rand() < 0.3; // some requests hold a layer far past the slack
    const ls = shaped(Array.from({ length: count }, () => {
      const rows = 1 + Math.floor(rand() * (big && rand() < 0.1 ? 512 : 64));
      return [rows, 1 + Math.floor(rand() * 256)];
    }));
    const bytes = ls.map((l) => layerScratchBytes(l, PARAMS.method));
    const budget = Math.max(0, ...bytes) + GROUP_SLACK_BYTES;
    const sum = (a: number, b: number) => bytes.slice(a, b).reduce((s, x) => s + x, 0);
    const groups = layerGroups(ls, PARAMS);
    // Every layer once, in order.
    assert.deepEqual(groups.flatMap(([a, b]) => Array.from({ length: b - a }, (_, i) => a + i)), ls.map((_, i) => i));
    for (const [g, [a, b]] of groups.entries()) {
      assert.ok(b > a && b - a <= GROUP_MAX_LAYERS, `group ${a}..${b}`);
      assert.ok(sum(a, b) <= budget, `group ${a}..${b}: ${sum(a, b)} > ${budget}`);
      // Cut only where the next layer would not fit (greedy): fewer waits for the same memory.
      if (g < groups.length - 1) assert.ok(b - a === GROUP_MAX_LAYERS || sum(a, b + 1) > budget, `cut at ${b}`);
    }
  }
  assert.deepEqual(layerGroups([], PARAMS), []);
});

/** A grouping backend: records each call's layers (by name) and answers with `fn`, a promise per layer. */
function grouping(fn: (layer: LayerJob) => Promise<LayerOutput>, calls: string[][]): Backend {
  const b = backend(fn);
  b.prune = (_p, l) => (calls.push([l.name]), fn(l));
  b.pruneTogether = (_p, ls) => (calls.push(ls.map((l) => l.name)), ls.map(fn));
  return b;
}

Deno.test("runLayers(): on a grouping backend, layers go as layerGroups() cuts them, answers in order", async () => {
  // 128x256 f16 by magnitude: 32768 * 10 + 4096 mask + 256 * (8 + 4 * 64) vector bytes = 399,360 bytes each; with the
  // 1 MiB slack, three fit (1,198,080 <= 1,447,936) and four do not.
  const ls = shaped(Array(7).fill([128, 256]));
  const calls: string[][] = [];
  // Later layers answer sooner: order must come from the loop, not from timing.
  const b = grouping(async (l) => {
    await new Promise((r) => setTimeout(r, 10 - Number(l.name)));
    return output(l);
  }, calls);
  const outs = await runLayers(b, PARAMS, ls, new AbortController().signal, () => {}, 50);
  assert.deepEqual(outs.map((o) => o.mask[0]), [0, 1, 2, 3, 4, 5, 6]);
  assert.deepEqual(calls, [["0", "1", "2"], ["3", "4", "5"], ["6"]]);
});

Deno.test("runLayers(): a group's first failure in order fails the call once its layers settled", async () => {
  const settledNames: string[] = [];
  const calls: string[][] = [];
  const b = grouping(async (l) => {
    await new Promise((r) => setTimeout(r, 20 - 5 * Number(l.name))); // the last settles first, the first last
    settledNames.push(l.name);
    if (l.name === "1" || l.name === "2") throw new Error(`layer ${l.name} failed`);
    return output(l);
  }, calls);
  await assert.rejects(runLayers(b, PARAMS, layers(4), new AbortController().signal, () => {}, 50), /layer 1 failed/);
  assert.deepEqual(settledNames.sort(), ["0", "1", "2", "3"]);
  assert.equal(calls.length, 1, "no layer after the group");
});

Deno.test("runLayers(): an abort during a group keeps the whole group's work, and starts no more", async () => {
  const ctl = new AbortController();
  let finish!: () => void;
  const held = new Promise<void>((r) => (finish = r));
  const calls: string[][] = [];
  const ls = shaped(Array(4).fill([128, 256])); // groups of three, as above
  const b = grouping(async (l) => {
    if (l.name === "0") setTimeout(() => ctl.abort(new Error("client gone")), 0);
    await held;
    return output(l);
  }, calls);
  const kept: Promise<unknown>[] = [];
  await assert.rejects(runLayers(b, PARAMS, ls, ctl.signal, (w) => kept.push(w), 50), /client gone/);
  assert.deepEqual(calls, [["0", "1", "2"]]);
  assert.equal(kept.length, 1);
  let done = false;
  kept[0]!.then(() => (done = true));
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(done, false, "the group is still computing: its memory is still held");
  finish();
  const all = (await kept[0]) as PromiseSettledResult<LayerOutput>[];
  assert.deepEqual(all.map((a) => a.status === "fulfilled" && a.value.mask[0]), [0, 1, 2]);
});

/** docs/GPU.md's cap on a group's layers ("... plus 1 MiB (`GROUP_SLACK_BYTES`), and at most N layers"). */
async function documentedGroupMax(): Promise<number> {
  const doc = await Deno.readTextFile(new URL("../docs/GPU.md", import.meta.url));
  const m = /\(`GROUP_SLACK_BYTES`\),\s+and\s+at\s+most\s+(\d+)\s+layers/.exec(doc);
  assert.ok(m, "docs/GPU.md states how many layers a group holds at most");
  return Number(m[1]);
}

Deno.test("layerGroups(): tiny layers are cut at the most layers per group docs/GPU.md states", async () => {
  // 1x1 layers: their scratch together is far below the slack, so only the layer cap cuts. Kills a cap off by one
  // (a group of N + 1) and a cap other than the documented one; the random test above never fills a group to it.
  const most = await documentedGroupMax();
  const ls = shaped(Array(2 * most + 3).fill([1, 1]));
  assert.ok(ls.reduce((s, l) => s + layerScratchBytes(l, PARAMS.method), 0) < GROUP_SLACK_BYTES, "only the cap cuts");
  assert.deepEqual(layerGroups(ls, PARAMS), [[0, most], [most, 2 * most], [2 * most, 2 * most + 3]]);
});

Deno.test("layerGroups(): a group whose scratch adds up to exactly the budget stays one group", () => {
  // docs/GPU.md: a group takes layers while their scratch adds up to *at most* the largest layer's plus the slack.
  // Shapes found offline whose magnitude scratch is whole bytes: 8 x 15x496 f32 + 1 x 31x128 f16 = exactly 1 MiB, so
  // with the largest layer first the first ten layers fill the budget to the byte; the last must start a new group.
  const sized = (rows: number, cols: number, dtype: "f32" | "f16"): LayerJob => ({
    ...shaped([[rows, cols]])[0]!,
    dtype,
  });
  const ls = [sized(64, 512, "f32"), ...Array.from({ length: 8 }, () => sized(15, 496, "f32"))];
  ls.push(sized(31, 128, "f16"), sized(31, 128, "f16"));
  const bytes = ls.map((l) => layerScratchBytes(l, PARAMS.method));
  const budget = Math.max(...bytes) + GROUP_SLACK_BYTES;
  assert.equal(
    bytes.slice(0, 10).reduce((s, x) => s + x, 0),
    budget,
    "the precondition: the first ten fill it exactly",
  );
  assert.deepEqual(layerGroups(ls, PARAMS), [[0, 10], [10, 11]]);
});

Deno.test("runLayers(): a group is given the request's signal, as a single layer is", async () => {
  // A backend stops a group's work early (a worker drops queued layers) only if the group carries the signal.
  const ctl = new AbortController();
  const seen: (AbortSignal | undefined)[] = [];
  const b = grouping((l) => Promise.resolve(output(l)), []);
  b.prune = (_p, l, signal) => (seen.push(signal), Promise.resolve(output(l)));
  b.pruneTogether = (_p, ls, signal) => (seen.push(signal), ls.map((l) => Promise.resolve(output(l))));
  // Groups of three, three and one (see above): two calls of pruneTogether and one of prune.
  await runLayers(b, PARAMS, shaped(Array(7).fill([128, 256])), ctl.signal, () => {}, 50);
  assert.deepEqual(seen, [ctl.signal, ctl.signal, ctl.signal]);
});
