/**
 * The WebGPU host code's behaviour that a mutation audit (2026-12) found unchecked: gpu/engine.ts's out-of-memory
 * retry and its error scopes over every submit, the pool after a failed job, timestamp queries, the adapter's name in
 * answers and /v1/info, resident weights that need the exact path; gpu/webgpu_backend.ts's options reaching the
 * worker, shared buffers, a worker's `fail` answers, what `unavailable` says between a loss and a restart, a restart
 * that finds no adapter, the default watchdog; gpu/worker.ts's kernel warm-up at start. A second audit of the
 * backend's host side added: closeWaitMs and its default, the start-up limit, workers ended when retired or started
 * during close(), watchdogs cleared, the exact path's own refusal, an abort against a failure, activations taken
 * alone, shared memory, a worker's end or loss in the window before the backend takes it over, and an answer that
 * comes after its worker's end was seen. Each test names the behaviour (from docs/GPU.md or the CPU backend's
 * answer), not the code, so that a change that breaks it fails here.
 *
 * Device errors cannot be provoked on purpose, so some tests inject them through a device's error scopes, as
 * gpu/engine_test.ts does; stand-in workers (small JavaScript modules from blob URLs, so that `deno test` does not
 * type-check each start) play the worker's side of the protocol where the real one cannot be steered. Skipped only
 * where no WebGPU adapter exists at all (a software one such as lavapipe counts).
 */
import assert from "node:assert/strict";
import { ZpruneError } from "../contract/errors.ts";
import { encode } from "../contract/dtype_codec.ts";
import type { Backend, LayerJob, PruneParams } from "../prune/backend.ts";
import { pruneLayer } from "../prune/prune_layer.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { createApp } from "../routes/app.ts";
import { within, withPrune } from "../tests/_server.ts";
import { MAGNITUDE_HALF } from "../tests/_params.ts";
import { copyLayer as copy, seededLayer as layerOf } from "../tests/_layers.ts";
import { ExactPathNeeded, GpuEngine } from "./engine.ts";
import { createWebGpuBackend, type WebGpuBackend } from "./webgpu_backend.ts";
import { AT_ONCE_MS, eventually, injectScopes, isUnavailable, withBackend } from "../tests/_webgpu.ts";

const engine = await GpuEngine.create({ allowFallback: true });
// Release the device before the runtime tears the module down, rather than leave it to the exit path.
globalThis.addEventListener("unload", () => engine?.destroy());
const ignore = !engine;
/** Whether the adapter offers timestamp queries (asked of the adapter here, not of the engine's device). */
const adapterTimestamps = engine !== null &&
  ((await navigator.gpu.requestAdapter())?.features.has("timestamp-query") ?? false);

const ZPRUNER: PruneParams = {
  method: "zpruner",
  pattern: { kind: "layer", sparsity: 0.5 },
  exponent: 1.5,
  returnWeight: true,
  returnScore: false,
};

/** Records `device.createBuffer`'s buffers by label, and which of them were destroyed. */
function watchBuffers(device: GPUDevice): {
  made: Map<string, GPUBuffer[]>;
  destroyed: Set<GPUBuffer>;
  restore: () => void;
} {
  const made = new Map<string, GPUBuffer[]>(), destroyed = new Set<GPUBuffer>();
  const d = device as unknown as { createBuffer(desc: GPUBufferDescriptor): GPUBuffer };
  const create = d.createBuffer.bind(d);
  d.createBuffer = (desc) => {
    const b = create(desc);
    const list = made.get(desc.label ?? "") ?? [];
    made.set(desc.label ?? "", [...list, b]);
    const destroy = b.destroy.bind(b);
    b.destroy = () => (destroyed.add(b), destroy());
    return b;
  };
  return { made, destroyed, restore: () => delete (d as Partial<typeof d>).createBuffer };
}

const OOM = { message: "injected out of memory" } as GPUError;

Deno.test({
  name: "GpuEngine.prune(): out of memory with nothing pooled goes to the exact path after one attempt",
  ignore,
  async fn() {
    // A fresh engine: its pool is empty, and the failed attempt's own buffers are destroyed (after an error they may
    // be invalid), so emptying the pool cannot help: docs/GPU.md sends the layer to the exact path at once, even
    // though here only that one attempt runs out.
    const own = (await GpuEngine.create({ allowFallback: true }))!;
    let left = 1;
    const scopes = injectScopes(own.device, (f) => f === "out-of-memory" && left-- > 0 ? OOM : null);
    try {
      const layer = layerOf("oom-fresh", 24, 40);
      const { output } = await own.prune(ZPRUNER, copy(layer));
      assert.equal(own.outOfMemory, 1, "one attempt only");
      assert.equal(own.exactFallbacks, 1);
      assert.match(output.exactPath ?? "", /^the GPU ran out of memory \(WebGPU out-of-memory error: injected/);
      const want = await pruneLayer(ZPRUNER, copy(layer));
      assert.deepEqual(output.mask, want.mask);
      assert.deepEqual(output.weight, want.weight);
      assert.deepEqual(scopes.open, [], "no error scope left open");
    } finally {
      scopes.restore();
      own.destroy();
    }
  },
});

Deno.test({
  name: "GpuEngine.prune(): out of memory with idle buffers pooled empties the pool and tries once more",
  ignore,
  async fn() {
    const own = (await GpuEngine.create({ allowFallback: true }))!;
    try {
      // An earlier layer of another shape leaves its buffers idle in the pool (they could be what filled the device).
      await own.prune(ZPRUNER, layerOf("earlier", 64, 128, 2));
      const layer = layerOf("oom-pooled", 24, 40);
      const want = await pruneLayer(ZPRUNER, copy(layer));
      // 1. Every attempt runs out: two attempts (the second after emptying the pool), then the exact path.
      let scopes = injectScopes(own.device, (f) => f === "out-of-memory" ? OOM : null);
      try {
        const { output } = await own.prune(ZPRUNER, copy(layer));
        assert.equal(own.outOfMemory, 2, "a second attempt once the pool was emptied");
        assert.equal(own.exactFallbacks, 1);
        assert.equal(typeof output.exactPath, "string");
        assert.deepEqual(output.mask, want.mask);
      } finally {
        scopes.restore();
      }
      // 2. Only the first attempt runs out: the retry answers on the GPU, as the CPU backend does, and it ran after
      // the idle buffers were freed (the earlier layer's pooled mask buffer is destroyed, not kept).
      const bufs = watchBuffers(own.device);
      let left = 0;
      scopes = injectScopes(own.device, (f) => f === "out-of-memory" && left-- > 0 ? OOM : null);
      try {
        await own.prune(ZPRUNER, layerOf("earlier", 64, 128, 2)); // the pool was emptied above: made anew, pooled
        const earlierMask = bufs.made.get("mask")![0]!;
        left = 1;
        const { output } = await own.prune(ZPRUNER, copy(layer));
        assert.equal(own.outOfMemory, 3);
        assert.equal(own.exactFallbacks, 1, "the retry answered on the GPU");
        assert.equal(output.exactPath, undefined);
        assert.deepEqual(output.mask, want.mask);
        assert.deepEqual(output.weight, want.weight);
        assert.ok(bufs.destroyed.has(earlierMask), "the idle buffers were freed before the retry");
      } finally {
        scopes.restore();
        bufs.restore();
      }
    } finally {
      own.destroy();
    }
  },
});

Deno.test({
  name: "GpuEngine.prune(): an error after a stage's own submit (wall-clock profile) is unavailable, never an answer",
  ignore,
  async fn() {
    // With profile "wall" every stage is submitted alone: the job's scopes must be open again after each submit, so
    // that an error in a later stage is caught. The driver's failure is injected into the second internal scope.
    const own = (await GpuEngine.create({ allowFallback: true }))!;
    let internal = 0;
    const scopes = injectScopes(
      own.device,
      (f) => f === "internal" && ++internal === 2 ? { message: "injected after a submit" } as GPUError : null,
    );
    try {
      await assert.rejects(own.prune(ZPRUNER, layerOf("wall", 24, 40), { profile: "wall" }), (e: unknown) => {
        assert.ok(isUnavailable(e), String(e));
        assert.match((e as Error).message, /^WebGPU internal error: injected after a submit/);
        return true;
      });
      assert.deepEqual(scopes.open, [], "no error scope left open");
    } finally {
      scopes.restore();
      own.destroy();
    }
  },
});

Deno.test({
  name: "GpuEngine.prune(): a job whose scopes caught an error puts none of its buffers back in the pool",
  ignore,
  async fn() {
    // After an error its buffers may be invalid: destroyed, so the next job of the same shape allocates its own.
    const own = (await GpuEngine.create({ allowFallback: true }))!;
    const layer = layerOf("poisoned", 24, 40);
    let fail = true;
    const scopes = injectScopes(
      own.device,
      (f) => f === "internal" && fail ? { message: "injected driver failure" } as GPUError : null,
    );
    const bufs = watchBuffers(own.device);
    try {
      await assert.rejects(own.prune(ZPRUNER, copy(layer)), isUnavailable);
      fail = false;
      const failedMask = bufs.made.get("mask")!;
      assert.equal(failedMask.length, 1);
      assert.ok(bufs.destroyed.has(failedMask[0]!), "the failed job's mask buffer was destroyed");
      const { output } = await own.prune(ZPRUNER, copy(layer));
      assert.equal(bufs.made.get("mask")!.length, 2, "the next job made a mask buffer of its own");
      assert.deepEqual(output.mask, (await pruneLayer(ZPRUNER, copy(layer))).mask);
      // A job that answered does return its buffers: the one after reuses them (the check above is not vacuous).
      await own.prune(ZPRUNER, copy(layer));
      assert.equal(bufs.made.get("mask")!.length, 2, "a successful job's mask buffer is pooled");
    } finally {
      bufs.restore();
      scopes.restore();
      own.destroy();
    }
  },
});

Deno.test({
  name: "GpuEngine.prune(): resident weights of a layer that needs the exact path throw ExactPathNeeded",
  ignore,
  async fn() {
    // Resident weights are on the GPU only (the benchmark's tool): the CPU path cannot read them, so the caller is
    // told why instead of getting an answer computed from the layer's own bytes (here zeros).
    const v = new Float32Array(8 * 16).map((_, i) => ((i * 7919) % 97) / 97 + 0.01);
    for (let j = 0; j < 16; j++) v[j] = v[j]! * 1e38; // f32 sums of squares overflow: Z-Pruner goes exact
    const layer: LayerJob = {
      name: "resident-exact",
      rows: 8,
      cols: 16,
      dtype: "f32",
      weight: encode(v, "f32"),
      actNormSq: null,
    };
    const resident = engine!.upload(layer);
    try {
      const zeros = { ...layer, weight: new Uint8Array(layer.weight.length) };
      const before = engine!.exactFallbacks;
      await assert.rejects(
        engine!.prune({ ...ZPRUNER, returnWeight: false }, zeros, { resident }),
        (e: unknown) => e instanceof ExactPathNeeded && /sum/.test(e.why),
      );
      assert.equal(engine!.exactFallbacks, before, "nothing was computed on the CPU here");
    } finally {
      resident.destroy();
    }
  },
});

/**
 * Wraps `engine`'s device so that each command encoder records its timed passes' labels and its query resolves, and
 * the read-back of the timestamps gives `fake(passes)` (nanoseconds, two per timed pass) instead of the GPU's.
 */
function watchTimestamps(
  device: GPUDevice,
  fake?: (passes: number) => BigUint64Array,
): { timed: string[]; resolved: number[][]; restore: () => void } {
  const d = device as unknown as {
    createCommandEncoder(desc?: GPUCommandEncoderDescriptor): GPUCommandEncoder;
    createBuffer(desc: GPUBufferDescriptor): GPUBuffer;
  };
  const createEncoder = d.createCommandEncoder.bind(d), createBuffer = d.createBuffer.bind(d);
  const timed: string[] = [], resolved: number[][] = [];
  d.createCommandEncoder = (desc) => {
    const enc = createEncoder(desc);
    const begin = enc.beginComputePass.bind(enc), resolve = enc.resolveQuerySet.bind(enc);
    enc.beginComputePass = (pass) => {
      if (pass?.timestampWrites) timed.push(pass.label ?? "");
      return begin(pass);
    };
    enc.resolveQuerySet = (set, first, count, dest, offset) => {
      resolved.push([first, count]);
      resolve(set, first, count, dest, offset);
    };
    return enc;
  };
  d.createBuffer = (desc) => {
    const b = createBuffer(desc);
    if (fake && desc.label === "staging:timestamps") b.getMappedRange = () => fake(timed.length).buffer as ArrayBuffer;
    return b;
  };
  return {
    timed,
    resolved,
    restore: () => {
      delete (d as Partial<typeof d>).createCommandEncoder;
      delete (d as Partial<typeof d>).createBuffer;
    },
  };
}

Deno.test({
  name: "GpuEngine.prune(): a profile times the stages by timestamp queries where the adapter has them",
  ignore: !adapterTimestamps,
  async fn() {
    // docs/GPU.md: GPU milliseconds per stage by timestamp queries where the adapter has them.
    assert.ok(engine!.device.features.has("timestamp-query"), "the device was opened with timestamp queries");
    // Resolving a query no pass wrote hung the read-back on an NVIDIA GPU (lavapipe gives 0): the resolve must cover
    // two queries per timed pass, no more. Magnitude without weights runs decode, score and select.
    const seen = watchTimestamps(engine!.device);
    try {
      const { stages } = await engine!.prune(MAGNITUDE_HALF, layerOf("timed", 24, 40), { profile: true });
      assert.equal(stages!.source, "timestamp");
      assert.deepEqual(Object.keys(stages!.ms), ["decode", "score", "select"]);
      assert.deepEqual(seen.timed, ["decode", "score", "select"]);
      assert.deepEqual(seen.resolved, [[0, 6]]);
    } finally {
      seen.restore();
    }
  },
});

Deno.test({
  name: "GpuEngine.prune(): per-dispatch times sum each kernel's passes, and the span runs first start to last end",
  ignore: !adapterTimestamps,
  async fn() {
    // The GPU's timestamps are replaced by known ones: pass i starts at 1 ms + 10 us * i and lasts (i + 1) us. The
    // expected times follow from those and the passes' labels alone (select_hist and select_pick run three times).
    const start = (i: number) => 1_000_000n + 10_000n * BigInt(i), length = (i: number) => 1_000n * BigInt(i + 1);
    const seen = watchTimestamps(engine!.device, (passes) => {
      const t = new BigUint64Array(passes * 2);
      for (let i = 0; i < passes; i++) [t[2 * i], t[2 * i + 1]] = [start(i), start(i) + length(i)];
      return t;
    });
    try {
      const { stages } = await engine!.prune(ZPRUNER, layerOf("per-dispatch", 24, 40), { profile: "per-dispatch" });
      assert.equal(stages!.source, "timestamp-per-dispatch");
      const want: Record<string, number> = {};
      seen.timed.forEach((label, i) => want[label] = (want[label] ?? 0) + (i + 1) / 1000);
      assert.equal(seen.timed.filter((l) => l === "select.select_hist").length, 3);
      assert.deepEqual(Object.keys(stages!.ms), Object.keys(want));
      for (const [k, ms] of Object.entries(want)) assert.ok(Math.abs(stages!.ms[k]! - ms) < 1e-9, `${k}`);
      const last = seen.timed.length - 1;
      assert.ok(Math.abs(stages!.spanMs! - Number(start(last) + length(last) - start(0)) / 1e6) < 1e-9);
      assert.deepEqual(seen.resolved, [[0, 2 * seen.timed.length]]);
    } finally {
      seen.restore();
    }
  },
});

/** The adapter's own description, from a request of this test's (not the engine's). */
async function adapterDescription(): Promise<string> {
  const info = (await navigator.gpu.requestAdapter())!.info;
  return info.description || [info.vendor, info.architecture].filter(Boolean).join(" ");
}

Deno.test({
  name: "webgpu: options reach the worker, shared buffers are shared, and the adapter is named everywhere",
  ignore,
  async fn() {
    const description = await adapterDescription();
    assert.ok(description.length > 0);
    // One backend for three checks (a worker start costs seconds here).
    await withBackend({ maxTileBytes: 1024 }, async (b) => {
      // The engine's description, the backend's device and /v1/info's name the adapter the driver describes.
      assert.equal(engine!.description, description);
      assert.equal(b.device, description);
      const info = await (await createApp({ backend: b, config: { log: false } }).request("/v1/info")).json();
      assert.equal(info.backend, "webgpu");
      assert.equal(info.device, description);
      // maxTileBytes reaches the worker's engine: a row of 300 f16 columns (1200 bytes as f32) is wider than one
      // 1024-byte tile, so it is answered on the exact path, as the CPU backend answers it.
      const w = Float32Array.from({ length: 600 }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7)));
      const wide: LayerJob = {
        name: "wide",
        rows: 2,
        cols: 300,
        dtype: "f16",
        weight: encode(w, "f16"),
        actNormSq: null,
      };
      const params = { ...MAGNITUDE_HALF, pattern: { kind: "row", sparsity: 0.5 } as const, returnWeight: true };
      const said: string[] = [], original = console.error;
      console.error = (...args: unknown[]) => void said.push(args.join(" "));
      let out;
      try {
        out = await b.prune(params, copy(wide));
      } finally {
        console.error = original;
      }
      assert.match(out.exactPath ?? "(answered on the GPU)", /1024-byte tiles/);
      assert.equal(said.filter((l) => l.includes('"wide" computed on the CPU path')).length, 1, said.join("\n"));
      const want = await pruneLayer(params, copy(wide));
      assert.deepEqual(out.mask, want.mask);
      assert.deepEqual(out.weight, want.weight);
      // A layer on a SharedArrayBuffer is shared with the worker, not transferred (which would fail) nor detached.
      const small = { ...layerOf("shared", 4, 8), actNormSq: null };
      const wantShared = await pruneLayer(MAGNITUDE_HALF, copy(small));
      const shared = new Uint8Array(new SharedArrayBuffer(small.weight.byteLength));
      shared.set(small.weight);
      const got = await b.prune(MAGNITUDE_HALF, { ...small, weight: shared });
      assert.deepEqual(got.mask, wantShared.mask);
      assert.deepEqual(shared, small.weight, "the shared weights stay usable");
    });
  },
});

/**
 * A stand-in worker in plain JavaScript (a blob URL, not type-checked at each start): it answers `init` with
 * `initReply` (JSON), a layer named "fail:CODE" (or "fail:CODE#any suffix") with a `fail` of that code, a group with a
 * layer named "held" not until `lose-device` comes (then it hands that one back for the exact path), others with an
 * empty mask; `lose-device` (with nothing held) with `lost`, and `close` with `closed`. Its lifeline is held for its
 * life, as gpu/worker.ts holds it. `first`, JavaScript run before those with `msg` (the message), `lifeline` and
 * `answer(l)` in scope, may handle a message itself and `return`.
 */
function standIn(
  initReply: Record<string, unknown> = { type: "ready", device: "stand-in", fallback: true },
  first = "",
): URL {
  const code = `
    let lifeline = null, held = null;
    const answer = ({ id, layer: { name, rows, cols } }) => {
      if (name.startsWith("fail:")) {
        return { type: "fail", id, code: name.slice(5).split("#")[0], message: "stand-in " + name };
      }
      const n = rows * cols;
      const stats = { pruned: 0, total: n, sparsity: 0, rowSparsity: { min: 0, max: 0, mean: 0 }, nonFinite: 0 };
      return { type: "done", id, output: { mask: new Uint8Array(Math.ceil(n / 8)), stats } };
    };
    self.onmessage = (e) => {
      const msg = e.data;
      ${first}
      if (msg.type === "init") {
        lifeline = msg.lifeline;
        self.postMessage(${JSON.stringify(initReply)});
      } else if (msg.type === "prune") {
        if (msg.layers.some((l) => l.layer.name === "held")) return void (held = msg);
        self.postMessage({ type: "answers", answers: msg.layers.map(answer) });
      } else if (msg.type === "lose-device" && held) {
        const answers = held.layers.map((l) =>
          l.layer.name === "held" ? { type: "exact", id: l.id, why: "held for the test", layer: l.layer } : answer(l)
        );
        self.postMessage({ type: "answers", answers });
        held = null;
      } else if (msg.type === "lose-device") self.postMessage({ type: "lost", message: "lost on request" });
      else if (msg.type === "close") self.postMessage({ type: "closed" });
    };`;
  return new URL(URL.createObjectURL(new Blob([code], { type: "application/javascript" })));
}

const tiny = (name: string): LayerJob => ({ ...layerOf(name, 2, 4), name });

Deno.test("webgpu: a worker's unavailable answer replaces the worker; another error code keeps it", async () => {
  // An `unavailable` failure leaves the device suspect (docs/GPU.md): the next layer goes to a fresh worker. A
  // request's own error (invalid_request) says nothing against the device.
  await withBackend({ workerUrl: standIn() }, async (b) => {
    await assert.rejects(
      b.prune(MAGNITUDE_HALF, tiny("fail:invalid_request")),
      (e) => e instanceof ZpruneError && e.code === "invalid_request",
    );
    assert.equal(b.restarts, 0, "a request's error keeps the worker");
    await assert.rejects(b.prune(MAGNITUDE_HALF, tiny("fail:unavailable")), isUnavailable);
    assert.equal(b.restarts, 1, "the worker was replaced");
    assert.match(b.unavailable ?? "", /^stand-in fail:unavailable; a fresh worker starts with the next layer$/);
    assert.equal((await within(b.prune(MAGNITUDE_HALF, tiny("next")), "the next layer")).stats.total, 8);
    assert.equal(b.unavailable, null);
  });
});

Deno.test("webgpu: unavailable names a loss, not a failed start, for a first or an answering worker", async () => {
  // The first worker, and a replacement once it has answered a layer, are proven: a loss while idle is a device
  // lost (the next layer starts a fresh worker), not "cannot restart", which would tell /healthz the GPU is gone.
  await withBackend({ workerUrl: standIn() }, async (b) => {
    assert.equal(b.unavailable, null);
    b.simulateDeviceLoss();
    assert.ok(await eventually(() => b.restarts === 1), "the loss was seen");
    assert.equal(b.unavailable, "WebGPU device lost: lost on request; a fresh worker starts with the next layer");
    // recover() (a health check's) begins a start: until it is ready, unavailable says a worker is starting.
    b.recover();
    assert.equal(b.unavailable, "WebGPU device lost: lost on request; a fresh worker is starting");
    assert.ok(await eventually(() => b.unavailable === null), "the fresh worker started");
    // The fresh worker answers a layer, and is then lost while idle: again a loss, not a failed start.
    assert.equal((await b.prune(MAGNITUDE_HALF, tiny("first on the fresh worker"))).stats.total, 8);
    b.simulateDeviceLoss();
    assert.ok(await eventually(() => b.restarts === 2), "the second loss was seen");
    assert.equal(b.unavailable, "WebGPU device lost: lost on request; a fresh worker starts with the next layer");
    assert.equal((await within(b.prune(MAGNITUDE_HALF, tiny("after")), "a layer after the loss")).stats.total, 8);
  });
});

Deno.test("webgpu: a restart that finds no adapter answers the queue unavailable, never holds it", async () => {
  const opts = { allowFallback: true, workerUrl: standIn() };
  const b = (await createWebGpuBackend(opts))!;
  try {
    b.simulateDeviceLoss();
    assert.ok(await eventually(() => b.restarts === 1), "the loss was seen");
    opts.workerUrl = standIn({ type: "none" }); // the adapter is gone: the fresh worker finds none
    const answer = b.prune(MAGNITUDE_HALF, tiny("no adapter")).then(() => "answered", (e) => e);
    const got = await within(answer, "the answer to a layer queued when no adapter is left", AT_ONCE_MS);
    assert.ok(isUnavailable(got) && /no WebGPU adapter is available any more/.test(got.message), String(got));
    assert.match(b.unavailable ?? "", /no WebGPU adapter is available any more/);
    // The adapter is back: a worker starts (recover(), as /healthz calls it) and answers a layer; a later loss is
    // then named as such, not as the restart that failed before.
    opts.workerUrl = standIn();
    b.recover();
    assert.ok(await eventually(() => b.unavailable === null), "a worker started again");
    assert.equal((await b.prune(MAGNITUDE_HALF, tiny("back"))).stats.total, 8);
    b.simulateDeviceLoss();
    assert.ok(await eventually(() => b.restarts === 2), "the second loss was seen");
    assert.equal(b.unavailable, "WebGPU device lost: lost on request; a fresh worker starts with the next layer");
  } finally {
    await b.close();
  }
});

Deno.test("webgpu: the default watchdog gives a layer 60 s plus 1 s per 4M elements", async () => {
  // docs/GPU.md: `jobTimeoutMs(elements)` defaults to 60 s + 1 s per 4M elements. The backend arms it as it posts a
  // layer, synchronously within prune() when a worker is idle: the delays set then are recorded.
  await withBackend({ workerUrl: standIn() }, async (b) => {
    const rows = 1000, cols = 4000; // 4M elements: 61 s
    const layer: LayerJob = {
      name: "4M",
      rows,
      cols,
      dtype: "f16",
      weight: new Uint8Array(rows * cols * 2),
      actNormSq: null,
    };
    const original = globalThis.setTimeout;
    const delays: number[] = [];
    globalThis.setTimeout =
      ((fn: () => void, ms?: number) => (delays.push(ms ?? 0), original(fn, ms))) as typeof setTimeout;
    let answer: Promise<unknown>;
    try {
      answer = b.prune(MAGNITUDE_HALF, layer);
    } finally {
      globalThis.setTimeout = original;
    }
    await answer;
    assert.ok(delays.includes(61_000), `timers set as the layer was posted: ${delays}`);
  });
});

Deno.test({
  name: "createWebGpuBackend(): kernels that fail to build at start-up fail the start, not the first layer",
  ignore,
  async fn() {
    // The real worker, with its device's first error scope popped reporting an error (the driver failing a pipeline,
    // which cannot be provoked on purpose): start-up compiles every kernel under scopes (docs/GPU.md), so the start
    // fails `unavailable` (and `auto` serves on the CPU) instead of a backend that fails every layer.
    const worker = new URL("./worker.ts", import.meta.url).href;
    const code = `
      import ${JSON.stringify(worker)};
      const pop = GPUDevice.prototype.popErrorScope;
      let first = true;
      GPUDevice.prototype.popErrorScope = async function () {
        const caught = await pop.call(this);
        if (!first) return caught;
        first = false;
        return { message: "injected pipeline failure" };
      };`;
    const workerUrl = URL.createObjectURL(new Blob([code], { type: "application/javascript" }));
    try {
      const started = createWebGpuBackend({ allowFallback: true, workerUrl }).then(async (b) => {
        await b?.close();
        return b ? "started" : "no adapter";
      }, (e) => e);
      const got = await within(started, "the start", AT_ONCE_MS);
      assert.ok(isUnavailable(got), String(got));
      assert.match((got as Error).message, /failed to start: WebGPU kernel compilation failed: injected pipeline/);
    } finally {
      URL.revokeObjectURL(workerUrl);
    }
  },
});

Deno.test("webgpu: a call aborted while its layer is on the GPU is not computed on the exact path after", async () => {
  // The worker hands the layer back for the exact path only once its caller has gone: the abort answers it, and the
  // CPU spends nothing on an answer no one will read.
  const asked: string[] = [];
  const cpu = createCpuBackend({ threads: 0 });
  const exact = withPrune(cpu, (p, l, sig) => (asked.push(l.name), cpu.prune(p, l, sig)));
  try {
    await withBackend({ workerUrl: standIn(), exact }, async (b) => {
      const ac = new AbortController();
      const answer = b.prune(MAGNITUDE_HALF, tiny("held"), ac.signal).then(() => "answered", (e) => e);
      await new Promise((r) => setTimeout(r, 50)); // the layer reaches the stand-in, which holds it
      ac.abort(new Error("client went away"));
      b.simulateDeviceLoss(); // the stand-in hands the layer back now
      const got = await within(answer, "the aborted call");
      assert.equal((got as Error).message, "client went away");
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(asked, [], "the exact path was not asked");
      assert.equal(b.exactPathLayers, 0);
      // The stand-in still answers: the backend goes on.
      assert.equal((await b.prune(MAGNITUDE_HALF, tiny("next"))).stats.total, 8);
    });
  } finally {
    await cpu.close();
  }
});

Deno.test("webgpu: a loss that comes between a worker's ready and the backend taking it over is acted on", async () => {
  // Deno may deliver a worker's message between the steps of the promise chain that starts it (docs/GPU.md): such a
  // message must be kept and acted on once the backend takes the worker over. The window is met for sure here: a
  // Worker subclass delivers the loss as soon as the start installs its handler for that window (its second one).
  const lost = new MessageEvent("message", { data: { type: "lost", message: "lost in between" } });
  const Original = globalThis.Worker;
  globalThis.Worker = class extends Original {
    #sets = 0;
    override get onmessage() {
      return super.onmessage;
    }
    override set onmessage(handler: ((this: Worker, e: MessageEvent) => unknown) | null) {
      super.onmessage = handler;
      if (++this.#sets === 2) handler?.call(this, lost);
    }
  };
  let b: WebGpuBackend | null;
  try {
    b = await createWebGpuBackend({ allowFallback: true, workerUrl: standIn() });
  } finally {
    globalThis.Worker = Original;
  }
  try {
    assert.equal(b!.restarts, 1, "the worker was retired");
    assert.match(b!.unavailable ?? "", /^WebGPU device lost: lost in between; a fresh worker/);
    assert.equal((await within(b!.prune(MAGNITUDE_HALF, tiny("after")), "a layer after the loss")).stats.total, 8);
  } finally {
    await b!.close();
  }
});

/** Follows the timers set while a test runs: their delays by id, until restore() puts the globals back. */
function followTimers() {
  const original = { set: globalThis.setTimeout, clear: globalThis.clearTimeout };
  const pending = new Map<unknown, number>();
  globalThis.setTimeout = ((fn: () => void, ms?: number) => {
    const id = original.set(() => (pending.delete(id), fn()), ms);
    pending.set(id, ms ?? 0);
    return id;
  }) as typeof setTimeout;
  globalThis.clearTimeout = ((id?: number) => (pending.delete(id), original.clear(id))) as typeof clearTimeout;
  const restore = () => {
    globalThis.setTimeout = original.set;
    globalThis.clearTimeout = original.clear;
  };
  return { original, pending, restore };
}

Deno.test("webgpu: a backend leaves no timer pending once it has started, nor once it is closed", async () => {
  // A pending timer keeps a process alive: the start-up's minute-long limit, or the watchdog of a layer that close()
  // answered, would hold a server or CLI that is done for up to a minute. Timers are followed while the test runs.
  const { original, pending, restore } = followTimers();
  try {
    const b = (await createWebGpuBackend({ allowFallback: true, workerUrl: standIn() }))!;
    let held: Promise<unknown> = Promise.resolve();
    try {
      assert.deepEqual([...pending.values()], [], "timers pending once started (their delays)");
      // A layer in flight (the stand-in holds it) when close() comes: its watchdog must go with it.
      held = b.prune(MAGNITUDE_HALF, tiny("held")).then(() => "answered", (e) => e);
      await new Promise((r) => original.set(r, 50));
    } finally {
      await b.close();
    }
    assert.ok(isUnavailable(await held), "close() answered the layer in flight");
    assert.deepEqual([...pending.values()], [], "timers pending once closed (their delays)");
  } finally {
    restore();
  }
});

Deno.test("webgpu: a layer whose arrays an earlier call took is invalid_request; the queue goes on", async () => {
  // docs/GPU.md: such a layer is answered `invalid_request` when its turn comes. Bounded: a layer that could not be
  // posted and were left unanswered would hold its caller, and every layer behind it, for good.
  await withBackend({ workerUrl: standIn() }, async (b) => {
    const layer = tiny("taken");
    const calls = [
      b.prune(MAGNITUDE_HALF, layer),
      b.prune(MAGNITUDE_HALF, layer),
      b.prune(MAGNITUDE_HALF, tiny("next")),
    ]
      .map((c) => c.then((out) => out.stats.total, (e) => e));
    const [first, again, next] = await within(Promise.all(calls), "the three answers", 20_000);
    assert.equal(first, 8);
    assert.ok(again instanceof ZpruneError && again.code === "invalid_request", String(again));
    assert.match(again.message, /detached/);
    assert.equal(next, 8);
  });
});

Deno.test("webgpu: a group's unavailable layer replaces the worker once the whole group is answered", async () => {
  await withBackend({ workerUrl: standIn() }, async (b) => {
    const names = ["a", "fail:unavailable", "b", "fail:invalid_request"];
    const got = await Promise.all(
      b.pruneTogether(MAGNITUDE_HALF, names.map(tiny)).map((p) => p.then((o) => o.stats.total, (e) => e)),
    );
    assert.equal(got[0], 8);
    assert.ok(isUnavailable(got[1]) && /stand-in fail:unavailable/.test(got[1].message), String(got[1]));
    assert.equal(got[2], 8, "answered with the group, before the worker was replaced");
    assert.ok(got[3] instanceof ZpruneError && got[3].code === "invalid_request", String(got[3]));
    assert.equal(b.restarts, 1, "one replacement for the group");
    assert.equal((await within(b.prune(MAGNITUDE_HALF, tiny("next")), "the next layer")).stats.total, 8);
  });
});

Deno.test("webgpu: a group's layer whose arrays a call took is invalid_request; the rest answers", async () => {
  // A watchdog longer than the test: a refused layer left among those in flight would hold the queue until it fired.
  await withBackend({ workerUrl: standIn(), jobTimeoutMs: () => 600_000 }, async (b) => {
    const taken = tiny("taken");
    await b.prune(MAGNITUDE_HALF, taken); // takes (detaches) its arrays
    const group = [tiny("before"), taken, tiny("after")];
    const got = await Promise.all(
      b.pruneTogether(MAGNITUDE_HALF, group).map((p) => p.then((o) => o.stats.total, (e) => e)),
    );
    assert.equal(got[0], 8);
    assert.ok(got[1] instanceof ZpruneError && got[1].code === "invalid_request", String(got[1]));
    assert.match(got[1].message, /layer taken: its arrays were detached/);
    assert.equal(got[2], 8);
    assert.equal(b.restarts, 0);
    // Nothing of the group is left in flight: the next call is posted and answered.
    assert.equal((await within(b.prune(MAGNITUDE_HALF, tiny("next")), "the call after the group")).stats.total, 8);
  });
});

/**
 * Runs `fn` with `globalThis.Worker` recording every worker made (the backend's), those terminated, and the messages
 * posted to each; restored however `fn` ends.
 */
async function withWorkersWatched(
  fn: (seen: { made: Worker[]; ended: Set<Worker>; sent: Map<Worker, unknown[]> }) => Promise<void>,
): Promise<void> {
  const Original = globalThis.Worker;
  const made: Worker[] = [], ended = new Set<Worker>(), sent = new Map<Worker, unknown[]>();
  globalThis.Worker = class extends Original {
    constructor(url: string | URL, options?: WorkerOptions) {
      super(url, options);
      made.push(this);
      sent.set(this, []);
    }
    override postMessage(message: unknown, transfer?: Transferable[] | StructuredSerializeOptions): void {
      sent.get(this)?.push(message);
      super.postMessage(message, transfer as StructuredSerializeOptions);
    }
    override terminate(): void {
      ended.add(this);
      super.terminate();
    }
  };
  try {
    await fn({ made, ended, sent });
  } finally {
    globalThis.Worker = Original;
  }
}

/**
 * Runs `fn` with the `node:worker_threads` ports that get a "close" listener recorded (the backend's lifelines, whose
 * close event says that a worker's thread ended), in order; `onListen(port, nth)` is called after a port's nth such
 * listener is added. Deno's node MessagePort adds its "close" listeners through EventTarget, so that is where they are
 * seen. Restored however `fn` ends.
 */
async function withLifelinesWatched<T>(
  onListen: (port: EventTarget, nth: number) => void,
  fn: (ports: EventTarget[]) => Promise<T>,
): Promise<T> {
  const add = EventTarget.prototype.addEventListener;
  const ports: EventTarget[] = [], counts = new Map<EventTarget, number>();
  EventTarget.prototype.addEventListener = function (
    this: EventTarget,
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ) {
    add.call(this, type, listener, options);
    if (type !== "close" || this.constructor.name !== "MessagePort") return;
    if (!counts.has(this)) ports.push(this);
    const nth = (counts.get(this) ?? 0) + 1;
    counts.set(this, nth);
    onListen(this, nth);
  };
  try {
    return await fn(ports);
  } finally {
    EventTarget.prototype.addEventListener = add;
  }
}

Deno.test("webgpu: every option the engine takes reaches the worker as given, maxBindingBytes included", async () => {
  // The stand-in names its device after the engine options its `init` carried.
  const echo = standIn(
    undefined,
    `if (msg.type === "init") {
      lifeline = msg.lifeline;
      return void self.postMessage({ type: "ready", device: JSON.stringify(msg.opts), fallback: true });
    }`,
  );
  const b =
    (await createWebGpuBackend({ allowFallback: true, workerUrl: echo, maxTileBytes: 4096, maxBindingBytes: 65_536 }))!;
  try {
    assert.deepEqual(JSON.parse(b.device), { allowFallback: true, maxTileBytes: 4096, maxBindingBytes: 65_536 });
  } finally {
    await b.close();
  }
});

Deno.test("createWebGpuBackend(): a worker's start is bounded by docs/GPU.md's start-up limit", async () => {
  // docs/GPU.md: the start fails `unavailable` when the device or kernels fail to start (or take more than N s to).
  // The limit is a timer armed as the worker is asked to start: the delays set meanwhile are recorded.
  const doc = await Deno.readTextFile(new URL("../docs/GPU.md", import.meta.url));
  const m = /fail to start \(or take more than (\d+) s to\)/.exec(doc);
  assert.ok(m, "docs/GPU.md states the start-up limit");
  const original = globalThis.setTimeout;
  const delays: number[] = [];
  globalThis.setTimeout =
    ((fn: () => void, ms?: number) => (delays.push(ms ?? 0), original(fn, ms))) as typeof setTimeout;
  let b: WebGpuBackend | null = null;
  try {
    b = await createWebGpuBackend({ allowFallback: true, workerUrl: standIn() });
  } finally {
    globalThis.setTimeout = original;
    await b?.close();
  }
  assert.ok(delays.includes(Number(m[1]) * 1000), `timers set while starting: ${delays}`);
});

Deno.test("webgpu: close() waits closeWaitMs (default: docs/GPU.md's) for the confirmation alone", async () => {
  // The stand-in confirms that it destroyed its device twice the documented default after it is asked, and says
  // something else at once (as the late answer of a layer close() already answered would be): with the default,
  // close() gives up before the confirmation; with a wait longer than that, it sees it; no other message counts.
  const doc = await Deno.readTextFile(new URL("../docs/GPU.md", import.meta.url));
  const m = /`closeWaitMs` \([^)]*?default (\d+) s\)/.exec(doc);
  assert.ok(m, "docs/GPU.md states closeWaitMs's default");
  const defaultMs = Number(m[1]) * 1000;
  const slow = standIn(
    undefined,
    `if (msg.type === "close") {
      self.postMessage({ type: "answers", answers: [] });
      return void setTimeout(() => self.postMessage({ type: "closed" }), ${2 * defaultMs});
    }`,
  );
  const byDefault = (await createWebGpuBackend({ allowFallback: true, workerUrl: slow }))!;
  const patient = (await createWebGpuBackend({ allowFallback: true, workerUrl: slow, closeWaitMs: 10 * defaultMs }))!;
  await Promise.all([byDefault.close(), patient.close()]);
  assert.equal(byDefault.deviceReleased, false, "the default wait ended before the confirmation");
  assert.equal(patient.deviceReleased, true, "a longer closeWaitMs saw it");
});

Deno.test("webgpu: a retired worker is ended at once, one starting as close() runs before it returns", async () => {
  // A retired worker holds a device (and a thread) until it is ended; a worker a health check started as the backend
  // closes must not outlive close(), which a server's exit waits for.
  await withWorkersWatched(async ({ made, ended }) => {
    const b = (await createWebGpuBackend({ allowFallback: true, workerUrl: standIn() }))!;
    try {
      b.simulateDeviceLoss();
      assert.ok(await eventually(() => b.restarts === 1), "the loss was seen");
      assert.ok(ended.has(made[0]!), "the lost worker was ended as it was retired");
      b.recover(); // a start in progress as close() comes
      assert.equal(made.length, 2);
    } finally {
      await b.close();
    }
    assert.ok(ended.has(made[1]!), "the worker starting during close() was ended by the time close() returned");
  });
});

Deno.test("webgpu: a layer's watchdog is cleared once the layer is answered, and once its worker fails", async () => {
  // A watchdog left pending would keep a process that is done alive until it fired, and one left from an answered
  // layer would then fail whatever is in flight. Its delay (jobTimeoutMs) tells it from other timers.
  const WATCHDOG_MS = 600_000;
  const exits = standIn(
    undefined,
    `if (msg.type === "prune" && msg.layers.some((l) => l.layer.name === "exit")) return self.close();`,
  );
  const { pending, restore } = followTimers();
  const watchdogs = () => [...pending.values()].filter((ms) => ms === WATCHDOG_MS).length;
  try {
    await withBackend({ workerUrl: exits, jobTimeoutMs: () => WATCHDOG_MS }, async (b) => {
      assert.equal((await b.prune(MAGNITUDE_HALF, tiny("answered"))).stats.total, 8);
      assert.equal(watchdogs(), 0, "watchdogs pending after an answer");
      const failed = await within(b.prune(MAGNITUDE_HALF, tiny("exit")).then(() => "answered", (e) => e), "exit");
      assert.ok(isUnavailable(failed) && /WebGPU worker exited/.test(failed.message), String(failed));
      assert.equal(watchdogs(), 0, "watchdogs pending after the worker failed");
    });
  } finally {
    restore();
  }
});

Deno.test("webgpu: a layer whose exact path refuses it is answered with that refusal; the worker stays", async () => {
  // docs/GPU.md: a layer the exact path computes is answered as the CPU backend answers it, and the CPU backend
  // refuses a non-finite one as 422 `non_finite`: that, not 503, and never left unanswered. The stand-in hands the
  // held layer back for the exact path when asked.
  const refusal = new ZpruneError("non_finite", "layer held: weight[3] is not finite");
  const exact: Backend = {
    kind: "cpu",
    device: "refuses",
    restarts: 0,
    exactPathLayers: 0,
    prune: () => Promise.reject(refusal),
    close: async () => {},
  };
  await withBackend({ workerUrl: standIn(), exact }, async (b) => {
    const answer = b.prune(MAGNITUDE_HALF, tiny("held")).then(() => "answered", (e) => e);
    b.simulateDeviceLoss(); // after the layer, in the worker's order: it hands the layer back now
    assert.equal(await within(answer, "the refused layer"), refusal);
    assert.equal(b.exactPathLayers, 0, "nothing was computed on the exact path");
    assert.equal(b.restarts, 0, "a layer's own refusal keeps the worker");
    assert.equal((await within(b.prune(MAGNITUDE_HALF, tiny("next")), "the next layer")).stats.total, 8);
  });
});

Deno.test("webgpu: a call aborted in flight whose worker then fails is answered with the abort, not 503", async () => {
  // docs/GPU.md: a call in flight whose signal fires is answered with the abort once the GPU is through with it,
  // whatever the layer's outcome: the server then reports a client that left, not a GPU failure.
  await withWorkersWatched(async ({ made }) => {
    await withBackend({ workerUrl: standIn() }, async (b) => {
      const ac = new AbortController(), reason = new Error("client went away");
      const answer = b.prune(MAGNITUDE_HALF, tiny("held"), ac.signal).then(() => "answered", (e) => e);
      ac.abort(reason);
      // The worker was idle, so the layer was posted within prune(); its device's loss is delivered now.
      made[0]!.dispatchEvent(new MessageEvent("message", { data: { type: "lost", message: "lost mid-layer" } }));
      assert.equal(await answer, reason);
      assert.equal(b.restarts, 1, "the loss itself was acted on");
    });
  });
});

Deno.test("webgpu: an already-aborted call is rejected without starting a worker while none is ready", async () => {
  // There is nothing to compute for it: after a loss it must neither wait for a fresh worker nor start one.
  await withWorkersWatched(async ({ made }) => {
    await withBackend({ workerUrl: standIn() }, async (b) => {
      b.simulateDeviceLoss();
      assert.ok(await eventually(() => b.restarts === 1), "the loss was seen");
      const before = b.unavailable;
      assert.match(before ?? "", /a fresh worker starts with the next layer$/);
      const reason = new Error("gone before the call");
      const got = await b.prune(MAGNITUDE_HALF, tiny("late"), AbortSignal.abort(reason)).then(
        () => "answered",
        (e) => e,
      );
      assert.equal(got, reason);
      assert.equal(made.length, 1, "no worker was started for it");
      assert.equal(b.unavailable, before);
    });
  });
});

Deno.test("webgpu: a layer whose activations alone a call took is invalid_request; the queue goes on", async () => {
  // Layers fed the same inputs (q, k and v) may share one actNormSq array: the first call takes it, and the next
  // layer is the caller's mistake (422, as for a taken weight), not a failed post answered 503.
  await withBackend({ workerUrl: standIn() }, async (b) => {
    const q = tiny("q");
    const k = { ...tiny("k"), actNormSq: q.actNormSq };
    assert.equal((await b.prune(MAGNITUDE_HALF, q)).stats.total, 8);
    assert.equal(k.actNormSq!.byteLength, 0, "the precondition: the first call took the shared activations");
    const got = await b.prune(MAGNITUDE_HALF, k).then(() => "answered", (e) => e);
    assert.ok(got instanceof ZpruneError && got.code === "invalid_request", String(got));
    assert.match(got.message, /layer k: its arrays were detached/);
    assert.equal((await within(b.prune(MAGNITUDE_HALF, tiny("next")), "the next layer")).stats.total, 8);
    assert.equal(b.restarts, 0);
  });
});

Deno.test("webgpu: a layer on SharedArrayBuffers reaches the worker shared; a whole ArrayBuffer is moved", async () => {
  // docs/GPU.md: a SharedArrayBuffer is shared (not copied). The stand-in counts, in its answer's `pruned`, the
  // layer's arrays that came to it on shared memory.
  const counts = standIn(
    undefined,
    `if (msg.type === "prune") {
      const shared = (a) => Number(a !== null && a.buffer instanceof SharedArrayBuffer);
      const answers = msg.layers.map((l) => {
        const a = answer(l);
        a.output.stats.pruned = shared(l.layer.weight) + shared(l.layer.actNormSq);
        return a;
      });
      return void self.postMessage({ type: "answers", answers });
    }`,
  );
  await withBackend({ workerUrl: counts }, async (b) => {
    const own = tiny("own");
    const onShared = <T extends Uint8Array | Float32Array>(a: T): T => {
      const s = new (a.constructor as new (b: SharedArrayBuffer) => T)(new SharedArrayBuffer(a.byteLength));
      s.set(a);
      return s;
    };
    const shared = {
      ...tiny("shared"),
      weight: onShared(own.weight),
      actNormSq: onShared(own.actNormSq as Float32Array),
    };
    assert.equal((await b.prune(MAGNITUDE_HALF, shared)).stats.pruned, 2, "both arrays shared");
    assert.equal(shared.weight.byteLength, 8 * 4, "still the caller's");
    assert.equal((await b.prune(MAGNITUDE_HALF, own)).stats.pruned, 0);
    assert.equal(own.weight.byteLength, 0, "a whole ArrayBuffer is transferred");
  });
});

Deno.test("webgpu: a worker that ends between its ready and the backend taking it over is replaced", async () => {
  // As a loss in that window (above): its lifeline's close event may come then too, when a worker says ready and
  // ends (`self.close()`), and must be acted on. Met for sure here: the start's second "close" listener (the one for
  // that window) is told at once that the worker ended.
  const b = await withLifelinesWatched(
    (port, nth) => void (nth === 2 && port.dispatchEvent(new Event("close"))),
    () => createWebGpuBackend({ allowFallback: true, workerUrl: standIn() }),
  );
  try {
    assert.ok(await eventually(() => b!.restarts === 1), "the worker was retired");
    assert.match(b!.unavailable ?? "", /^WebGPU worker exited; a fresh worker/);
    assert.equal((await within(b!.prune(MAGNITUDE_HALF, tiny("after")), "a layer after the exit")).stats.total, 8);
  } finally {
    await b?.close();
  }
});

Deno.test("webgpu: an answer a worker posted before it ended is delivered, though its end is seen first", async () => {
  // The lifeline's close event and the worker's last messages come by different ways, so the end may be seen before
  // an answer posted before it: the backend fails the worker a turn later, so the answer is delivered, not 503. The
  // order is forced: the layer is held by the stand-in, the lifeline reports the end, and the answer then arrives.
  await withWorkersWatched(async ({ made, sent }) => {
    await withLifelinesWatched(() => {}, async (lifelines) => {
      await withBackend({ workerUrl: standIn() }, async (b) => {
        const answer = b.prune(MAGNITUDE_HALF, tiny("held")).then((o) => o.stats.total, (e) => e);
        const post = sent.get(made[0]!)!.find((m) => (m as { type: string }).type === "prune") as {
          layers: { id: number }[];
        };
        lifelines.at(-1)!.dispatchEvent(new Event("close"));
        const stats = { pruned: 0, total: 8, sparsity: 0, rowSparsity: { min: 0, max: 0, mean: 0 }, nonFinite: 0 };
        const done = { type: "done", id: post.layers[0]!.id, output: { mask: new Uint8Array(1), stats } };
        made[0]!.dispatchEvent(new MessageEvent("message", { data: { type: "answers", answers: [done] } }));
        assert.equal(await answer, 8);
        assert.ok(await eventually(() => b.restarts === 1), "the ended worker was then retired");
      });
    });
  });
});

Deno.test("webgpu: a group with two unavailable layers is said to have failed for the first in order", async () => {
  // runLayers fails a request with its group's first error in order; `unavailable` (which /healthz answers with)
  // names that same failure as why the worker was replaced.
  await withBackend({ workerUrl: standIn() }, async (b) => {
    const names = ["ok", "fail:unavailable#first", "fail:unavailable#second"];
    const got = await Promise.all(
      b.pruneTogether(MAGNITUDE_HALF, names.map(tiny)).map((p) => p.then((o) => o, (e) => e)),
    );
    assert.ok(isUnavailable(got[1]) && isUnavailable(got[2]), String(got));
    assert.equal(b.restarts, 1);
    assert.equal(b.unavailable, `${got[1].message}; a fresh worker starts with the next layer`);
  });
});

Deno.test("webgpu: a replacement lost before it gets a layer answers the queue 503, starts no other", async () => {
  // docs/GPU.md: a replacement that fails after it said ready but before it is handed a layer is a failed start:
  // every queued call is answered `unavailable` (the next call starts another worker), not posted to a device that is
  // likely gone. The loss is delivered for sure in that window, as above, to the replacement (the second worker).
  const lost = new MessageEvent("message", { data: { type: "lost", message: "lost in between" } });
  const Original = globalThis.Worker;
  let made = 0;
  globalThis.Worker = class extends Original {
    #sets = 0;
    readonly #nth = ++made;
    override get onmessage() {
      return super.onmessage;
    }
    override set onmessage(handler: ((this: Worker, e: MessageEvent) => unknown) | null) {
      super.onmessage = handler;
      if (this.#nth === 2 && ++this.#sets === 2) handler?.call(this, lost);
    }
  };
  try {
    await withBackend({ workerUrl: standIn() }, async (b) => {
      b.simulateDeviceLoss();
      assert.ok(await eventually(() => b.restarts === 1), "the first worker's loss was seen");
      const calls = [tiny("a"), tiny("b")].map((l) => b.prune(MAGNITUDE_HALF, l).then((o) => o.stats.total, (e) => e));
      const got = await within(Promise.all(calls), "the queued calls");
      for (const e of got) {
        assert.ok(isUnavailable(e), String(e));
        assert.match(e.message, /failed before it was handed a layer: WebGPU device lost: lost in between/);
      }
      assert.equal(made, 2, "no third worker was started for them");
      assert.match(b.unavailable ?? "", /cannot restart/);
      assert.equal((await within(b.prune(MAGNITUDE_HALF, tiny("later")), "a later call")).stats.total, 8);
      assert.equal(made, 3, "the later call started one");
    });
  } finally {
    globalThis.Worker = Original;
  }
});
