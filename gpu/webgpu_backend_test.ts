/**
 * The WebGPU backend's service behaviour: adapter policy, recovery from a lost device and from a hung layer,
 * cancellation and shutdown. Masks themselves are checked in tests/gpu_parity_test.ts.
 */
import assert from "node:assert/strict";
import { ZpruneError } from "../contract/errors.ts";
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { createWebGpuBackend, RECOVER_INTERVAL_MS, type WebGpuBackend } from "./webgpu_backend.ts";
import { GpuEngine } from "./engine.ts";
import { pruneLayer } from "../prune/prune_layer.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { within, withPrune } from "../tests/_server.ts";
import { createApp } from "../routes/app.ts";
import { MAGNITUDE_HALF } from "../tests/_params.ts";
import { AT_ONCE_MS, eventually, isUnavailable, withBackend } from "../tests/_webgpu.ts";

/** Whether any adapter (software included) exists here; tests are skipped only when none does. */
const probe = await GpuEngine.create({ allowFallback: true });
const hasAdapter = probe !== null;
const isFallback = probe?.isFallback ?? false;
probe?.destroy();
const ignore = !hasAdapter;

const PARAMS = MAGNITUDE_HALF;
/** A rows x cols f32 layer whose weight i is i + 1, so the pruned ones are the first half in row-major order. */
function ramp(rows: number, cols: number): LayerJob {
  const v = new Float32Array(rows * cols).map((_, i) => i + 1);
  return { name: `ramp-${rows}x${cols}`, rows, cols, dtype: "f32", weight: new Uint8Array(v.buffer), actNormSq: null };
}

/** True when the mask prunes exactly the first floor(n/2) entries. */
function firstHalfPruned(mask: Uint8Array, n: number): boolean {
  for (let i = 0; i < n; i++) if (((mask[i >>> 3]! >> (i & 7)) & 1) !== (i < Math.floor(n / 2) ? 1 : 0)) return false;
  return true;
}

Deno.test("docs/GPU.md lists exactly the options WebGpuBackendOptions has", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/GPU.md", import.meta.url));
  const paragraph = /^Options: [\s\S]*?(?=\n\n)/m.exec(doc)?.[0] ?? "";
  const named = [...paragraph.matchAll(/`([a-z]\w*)(?:\(\w*\))?`/g)].map((m) => m[1]!).filter((w) => w !== "true");
  const source = await Deno.readTextFile(new URL("./webgpu_backend.ts", import.meta.url));
  const body = /export interface WebGpuBackendOptions \{([\s\S]*?)\n\}/.exec(source)![1]!;
  const fields = [...body.matchAll(/^ {2}(\w+)\??:/gm)].map((m) => m[1]!);
  assert.deepEqual([...new Set(named)].sort(), fields.sort());
});

Deno.test({
  name: "createWebGpuBackend() refuses a fallback adapter unless allowed",
  ignore: !isFallback,
  async fn() {
    assert.equal(await createWebGpuBackend({ allowFallback: false }), null);
  },
});

Deno.test("createWebGpuBackend() reports a device lost while starting as a failed start, not no adapter", async () => {
  const workerUrl = new URL("./testdata/lost_at_start_worker.ts", import.meta.url);
  await assert.rejects(
    createWebGpuBackend({ allowFallback: true, workerUrl }),
    (e) => isUnavailable(e) && /failed to start: lost in warm-up/.test((e as Error).message),
  );
});

Deno.test("webgpu: a device lost right after a restart answers the queue unavailable, never holds it", async () => {
  // Every worker of this stand-in says ready and then, at once, that its device is lost: the second message arrives
  // while the restart's promise chain is still settling (kept until the worker is adopted), or just after its first
  // layer was posted; either way before it answered one, a failed start.
  const workerUrl = new URL("./testdata/lost_after_ready_worker.ts", import.meta.url);
  await withBackend({ workerUrl }, async (b) => {
    b.simulateDeviceLoss(); // the first worker too, if its own loss did not retire it already
    await new Promise((r) => setTimeout(r, 50));
    // A bound against a queue held for good, not a speed check: each call may take a restart of its own, and `deno
    // test` type-checks every worker it starts (1.5 to 2.3 s each on a loaded 2-core machine, so 6 s for the third).
    let timer: ReturnType<typeof setTimeout> | undefined;
    const pending = new Promise((r) => timer = setTimeout(() => r("pending"), AT_ONCE_MS));
    const calls = [0, 1, 2].map((i) => b.prune(PARAMS, ramp(4, 4 + i)).then(() => "answered", (e) => e));
    const answers = await Promise.all(calls.map((c) => Promise.race([c, pending])));
    clearTimeout(timer);
    for (const a of answers) assert.ok(a === "answered" || isUnavailable(a), `after a restart: ${answers.map(String)}`);
  });
});

Deno.test("webgpu: unavailable names a failed restart until a worker starts again", async () => {
  // The first worker starts for good; once its device is lost, restarts fail (the stand-in's device is lost in
  // warm-up), and the backend says why (the server's /healthz answers 503 with it).
  const stays = new URL("./testdata/lost_after_ready_worker.ts?stays", import.meta.url);
  const opts = { allowFallback: true, workerUrl: stays };
  const b = (await createWebGpuBackend(opts))!;
  try {
    assert.equal(b.unavailable, null);
    b.simulateDeviceLoss();
    // Until the loss is seen (a message from the worker): a layer sent before that goes to the lost worker instead.
    assert.ok(await eventually(() => b.restarts === 1), "the loss was seen");
    opts.workerUrl = new URL("./testdata/lost_at_start_worker.ts", import.meta.url);
    await assert.rejects(b.prune(PARAMS, ramp(4, 4)), isUnavailable);
    assert.match(b.unavailable ?? "", /cannot restart: WebGPU backend failed to start: lost in warm-up/);
    assert.equal(b.restarts, 1);
    // recover() restarts it with no layer queued (a health check's retry): the next check finds it well.
    opts.workerUrl = stays;
    b.recover();
    const deadline = Date.now() + 10_000;
    while (b.unavailable !== null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(b.unavailable, null);
    await b.prune(PARAMS, ramp(4, 4)); // answered by the worker recover() started
  } finally {
    await b.close();
  }
});

Deno.test("webgpu: a flood of recover() calls (a /healthz flood) starts at most one worker per interval", async () => {
  const stays = new URL("./testdata/lost_after_ready_worker.ts?stays", import.meta.url);
  const opts = { allowFallback: true, workerUrl: stays };
  const b = (await createWebGpuBackend(opts))!;
  const Original = globalThis.Worker;
  let starts = 0;
  globalThis.Worker = class extends Original {
    constructor(url: string | URL, options?: WorkerOptions) {
      super(url, options);
      starts++;
    }
  };
  try {
    b.simulateDeviceLoss();
    await new Promise((r) => setTimeout(r, 50));
    // lost_at_start_worker.ts as plain JavaScript: a TypeScript worker is type-checked at each start under `deno
    // test`, which would space the starts by itself.
    const lost = 'self.onmessage = () => self.postMessage({ type: "lost", message: "lost in warm-up" });';
    const blob = URL.createObjectURL(new Blob([lost], { type: "application/javascript" }));
    opts.workerUrl = new URL(blob);
    await assert.rejects(b.prune(PARAMS, ramp(4, 4)), isUnavailable);
    assert.ok(b.unavailable);
    starts = 0;
    // Every failed check calls recover(); a failed start of this stand-in takes a few ms, so without spacing the
    // flood would start a worker after every one (about 80 a second).
    const t0 = performance.now();
    while (performance.now() - t0 < 1.5 * RECOVER_INTERVAL_MS) {
      b.recover();
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.ok(starts >= 1 && starts <= 2, `${starts} workers started in ${1.5 * RECOVER_INTERVAL_MS} ms`);
    assert.ok(b.unavailable, "the stand-in still fails");
    URL.revokeObjectURL(blob);
  } finally {
    globalThis.Worker = Original;
    await b.close();
  }
});

Deno.test("RECOVER_INTERVAL_MS is docs/GPU.md's spacing of recover()'s starts", async () => {
  // The flood test above spaces its checks by the exported constant: this ties that constant to the documented rate.
  const doc = await Deno.readTextFile(new URL("../docs/GPU.md", import.meta.url));
  const m = /`recover\(\)`, which starts a worker in the background, at most\s+one a (second|minute)/.exec(doc);
  assert.ok(m, "docs/GPU.md states how often recover() may start a worker");
  assert.equal(RECOVER_INTERVAL_MS, m[1] === "second" ? 1_000 : 60_000);
});

/** Runs `fn` with `globalThis.Worker` recording each worker made (the backend's), and restores it however `fn` ends. */
async function withWorkersSeen(fn: (made: Worker[]) => Promise<void>): Promise<void> {
  const Original = globalThis.Worker;
  const made: Worker[] = [];
  globalThis.Worker = class extends Original {
    constructor(url: string | URL, options?: WorkerOptions) {
      super(url, options);
      made.push(this);
    }
  };
  try {
    await fn(made);
  } finally {
    globalThis.Worker = Original;
  }
}

Deno.test("webgpu: a worker that ends with no error event fails its layer at once and is replaced", async () => {
  // Deno's Worker has no exit event: before the lifeline, the layer waited for the watchdog, here ten minutes.
  const workerUrl = new URL("./testdata/exiting_worker.ts", import.meta.url);
  await withBackend({ workerUrl, jobTimeoutMs: () => 600_000 }, async (b) => {
    const exits = b.prune(PARAMS, { ...ramp(4, 4), name: "exit-here" }).then(() => "answered", (e) => e);
    const got = await within(exits, "the answer to a layer whose worker ended", AT_ONCE_MS);
    assert.ok(isUnavailable(got) && /WebGPU worker exited; the backend is restarting/.test(got.message), String(got));
    assert.equal(b.restarts, 1);
    assert.equal((await within(b.prune(PARAMS, ramp(4, 4)), "the next layer", AT_ONCE_MS)).stats.total, 16);
    assert.equal(b.restarts, 1, "answered by the fresh worker");
  });
});

Deno.test("webgpu: a fresh worker ended by its first layer fails that layer alone, not the ones behind", async () => {
  // After a restart, the first layer a fresh worker is handed ends it: the layer may be what broke it, so the other
  // calls queued behind it are answered by the next fresh worker, not 503 as a failed start.
  const workerUrl = new URL("./testdata/exiting_worker.ts", import.meta.url);
  await withBackend({ workerUrl, jobTimeoutMs: () => 600_000 }, async (b) => {
    const first = b.prune(PARAMS, { ...ramp(4, 4), name: "exit-first" }).then(() => "answered", (e) => e);
    assert.ok(isUnavailable(await within(first, "the layer that ended the first worker", AT_ONCE_MS)));
    // No worker now: these queue while a fresh one starts, the one that ends it first in line.
    const calls = [
      b.prune(PARAMS, { ...ramp(4, 4), name: "exit-again" }),
      b.prune(PARAMS, ramp(4, 4)),
      b.prune(PARAMS, ramp(2, 8)),
    ].map((c) => c.then((out) => out, (e) => e));
    const [again, ...rest] = await Promise.all(calls.map((c, i) => within(c, `call ${i}`, AT_ONCE_MS)));
    assert.ok(isUnavailable(again) && /the backend is restarting/.test(again.message), String(again));
    for (const out of rest) assert.equal(out.stats.total, 16, String(out));
    assert.equal(b.restarts, 2);
  });
});

Deno.test("createWebGpuBackend() fails at once when its worker ends while it starts, not after a timeout", async () => {
  const workerUrl = new URL("./testdata/exiting_worker.ts?at-start", import.meta.url);
  const started = createWebGpuBackend({ allowFallback: true, workerUrl }).then(() => "started", (e) => e);
  const got = await within(started, "the failed start", AT_ONCE_MS);
  assert.ok(got instanceof Error && /exited while it started/.test(got.message), String(got));
});

Deno.test({
  name: "webgpu: a worker ended mid-layer (self.close()) is noticed at once; a fresh device answers the next layers",
  ignore,
  async fn() {
    await withBackend({ jobTimeoutMs: () => 600_000 }, async (b) => {
      const inFlight = b.prune(PARAMS, ramp(300, 301)).then((out) => out, (e) => e);
      b.simulateWorkerExit();
      const first = await within(inFlight, "the layer in flight on the worker that ended", AT_ONCE_MS);
      // Answered before the worker ended (then with the right mask), or unavailable: never waiting for the watchdog.
      assert.ok(isUnavailable(first) || firstHalfPruned(first.mask, 300 * 301), String(first));
      for (let i = 0; i < 2; i++) {
        const out = await within(b.prune(PARAMS, ramp(20, 30)), "a layer after the worker ended", AT_ONCE_MS);
        assert.ok(firstHalfPruned(out.mask, 600));
      }
      assert.equal(b.restarts, 1);
    });
  },
});

Deno.test("webgpu: a loss as a layer is handed over fails that layer at most; the queue waits", async () => {
  // Deno delivers a worker's messages between the steps of a promise chain (the restart tests above see a loss come
  // in while a start settles), so the loss may come after prune() queued a layer and before it was posted. The
  // message is dispatched here at that point, on the worker the backend made: the layers queued behind are not
  // answered as if a start had failed; they wait for the fresh worker.
  const workerUrl = new URL("./testdata/lost_after_ready_worker.ts?stays", import.meta.url);
  await withWorkersSeen(async (made) => {
    await withBackend({ workerUrl }, async (b) => {
      const calls = [0, 1, 2].map((i) => b.prune(PARAMS, ramp(4, 4 + i)).then((o) => o.stats.total, (e) => e));
      made[0]!.dispatchEvent(new MessageEvent("message", { data: { type: "lost", message: "lost on the way" } }));
      const answers = await within(Promise.all(calls), "the answers", AT_ONCE_MS);
      assert.ok(answers[0] === 16 || isUnavailable(answers[0]), `the layer in flight: ${answers[0]}`);
      assert.deepEqual(answers.slice(1), [20, 24], `the queued layers: ${answers.slice(1).map(String)}`);
      assert.equal(b.restarts, 1);
      assert.equal(b.unavailable, null);
    });
  });
});

/** GET /healthz of a server on `backend`: its status and its error message, if any. */
async function health(backend: WebGpuBackend): Promise<{ status: number; message?: string }> {
  const res = await createApp({ backend, config: { log: false } }).request("/healthz");
  const body = await res.json();
  return { status: res.status, message: body.error?.message };
}

Deno.test("/healthz on the WebGPU backend is 503 at once when every device is gone, with no layer to try", async () => {
  // The first worker starts for good; once its device is lost, no start gets one (the stand-in's device is lost in
  // warm-up), as when the GPU is gone. Before, /healthz said 200 until a layer came and its restart failed.
  const stays = new URL("./testdata/lost_after_ready_worker.ts?stays", import.meta.url);
  const opts = { allowFallback: true, workerUrl: stays };
  const b = (await createWebGpuBackend(opts))!;
  try {
    assert.equal((await health(b)).status, 200);
    opts.workerUrl = new URL("./testdata/lost_at_start_worker.ts", import.meta.url);
    b.simulateDeviceLoss();
    assert.ok(await eventually(() => b.restarts === 1), "the loss was seen");
    const lost = await health(b);
    assert.equal(lost.status, 503);
    // That check began a start (no layer would), and says so; the start fails: later checks say why.
    assert.equal(
      lost.message,
      "the webgpu backend cannot compute: WebGPU device lost: lost on request; a fresh worker is starting",
    );
    assert.ok(await eventually(async () => /cannot restart/.test((await health(b)).message ?? "")));
    const gone = await health(b);
    assert.equal(gone.status, 503);
    assert.match(gone.message ?? "", /cannot restart: WebGPU backend failed to start: lost in warm-up/);
  } finally {
    await b.close();
  }
});

Deno.test({
  name: "/healthz on the WebGPU backend is 503 from a device's loss until its fresh worker is ready, then 200",
  ignore,
  async fn() {
    await withBackend({}, async (b) => {
      assert.equal((await health(b)).status, 200);
      b.simulateDeviceLoss();
      assert.ok(await eventually(() => b.restarts === 1), "the loss was seen");
      const lost = await health(b);
      assert.equal(lost.status, 503);
      assert.match(lost.message ?? "", /webgpu backend cannot compute: WebGPU device lost/);
      // No layer comes: the check started a fresh worker, which a later check finds ready.
      assert.ok(await eventually(async () => (await health(b)).status === 200), "200 again once restarted");
      assert.equal(b.restarts, 1);
      assert.ok(firstHalfPruned((await b.prune(PARAMS, ramp(9, 7))).mask, 63));
    });
  },
});

Deno.test("webgpu: after a restart, device names the adapter the new worker opened", async () => {
  // Each start of this stand-in names another device, as a restart may open another adapter (a software one where
  // the GPU is gone): answers and /v1/info must not go on naming the first.
  const workerUrl = new URL("./testdata/lost_after_ready_worker.ts?stays", import.meta.url);
  await withBackend({ workerUrl }, async (b) => {
    const first = b.device;
    await b.prune(PARAMS, ramp(4, 4));
    assert.equal(b.device, first, "the same worker, the same device");
    b.simulateDeviceLoss();
    // Until the loss is seen (a message from the worker): a layer sent before that goes to the lost worker instead.
    assert.ok(await eventually(() => b.restarts === 1), "the loss was seen");
    await b.prune(PARAMS, ramp(4, 4));
    assert.equal(b.restarts, 1);
    assert.match(b.device, /^stand-in /);
    assert.notEqual(b.device, first, "the restarted worker's device");
  });
});

Deno.test({
  name: "webgpu: reports kind and the adapter's description",
  ignore,
  async fn() {
    await withBackend({}, async (b) => {
      assert.equal(b.kind, "webgpu");
      assert.ok(b.device.length > 0);
      const out = await b.prune(PARAMS, ramp(9, 7));
      assert.ok(firstHalfPruned(out.mask, 63));
      assert.equal(out.stats.threshold, 31);
    });
  },
});

Deno.test({
  name: "webgpu: a lost device fails only the layer in flight, then a fresh device answers",
  ignore,
  async fn() {
    await withBackend({}, async (b) => {
      const inFlight = b.prune(PARAMS, ramp(300, 301)).then((out) => out, (e) => e);
      b.simulateDeviceLoss();
      const first = await inFlight;
      // Answered before the loss (then with the right mask), or unavailable: never a mask from a lost device.
      assert.ok(isUnavailable(first) || firstHalfPruned(first.mask, 300 * 301), String(first));
      // Whatever the timing, the next layers are answered by a new device.
      for (let i = 0; i < 3; i++) {
        const out = await b.prune(PARAMS, ramp(20, 30));
        assert.ok(firstHalfPruned(out.mask, 600));
      }
    });
  },
});

Deno.test({
  name: "webgpu: a layer that outlives the watchdog is answered unavailable and the next one succeeds",
  ignore,
  async fn() {
    // 1 ms is far too short for the 200x200 layer; every other layer gets a minute.
    await withBackend({ jobTimeoutMs: (n) => n === 200 * 200 ? 1 : 60_000 }, async (b) => {
      assert.equal(b.restarts, 0);
      await assert.rejects(b.prune(PARAMS, ramp(200, 200)), isUnavailable);
      assert.equal(b.restarts, 1, "the stuck worker was replaced");
      const out = await b.prune(PARAMS, ramp(11, 13));
      assert.ok(firstHalfPruned(out.mask, 143));
      assert.equal(b.restarts, 1);
    });
  },
});

Deno.test({
  name: "webgpu: an aborted queued call is dropped; the others are answered in order",
  ignore,
  async fn() {
    await withBackend({}, async (b) => {
      const ac = new AbortController();
      const a = b.prune(PARAMS, ramp(64, 64));
      const dropped = b.prune(PARAMS, ramp(65, 65), ac.signal);
      const c = b.prune(PARAMS, ramp(66, 66));
      ac.abort(new Error("client went away"));
      await assert.rejects(dropped, /client went away/);
      assert.ok(firstHalfPruned((await a).mask, 64 * 64));
      assert.ok(firstHalfPruned((await c).mask, 66 * 66));
    });
  },
});

Deno.test("webgpu: a call aborted in flight is answered with the abort once the GPU is through", async () => {
  // The worker holds the layer until told (gpu/testdata/held_worker.ts): the test decides when the GPU finishes.
  const workerUrl = new URL("./testdata/held_worker.ts", import.meta.url);
  await withBackend({ workerUrl }, async (b) => {
    const ac = new AbortController();
    let settled: string | null = null;
    const inFlight = b.prune(PARAMS, ramp(8, 8), ac.signal).then(
      () => settled = "resolved",
      (e) => settled = `rejected: ${(e as Error).message}`,
    );
    // Queued behind it (a rejection is kept, so that a failed assertion below does not also leave it unhandled).
    const next = b.prune(PARAMS, ramp(4, 4)).then((o) => o.stats.total, (e: Error) => e.message);
    await new Promise((r) => setTimeout(r, 50)); // the layer reaches the worker
    ac.abort(new Error("client went away"));
    await new Promise((r) => setTimeout(r, 50));
    // Still held by the GPU: the caller (whose work queue counts its memory) is not let go yet.
    assert.equal(settled, null);
    b.simulateDeviceLoss(); // the held worker answers the layer now
    await inFlight;
    assert.equal(settled, "rejected: client went away", "an answer that came after the abort is not delivered");
    b.simulateDeviceLoss();
    assert.equal(await next, 16, "the queue goes on");
    // Any reason is the rejection, a falsy one too (it is not mistaken for "no error").
    const ac2 = new AbortController();
    const zero = b.prune(PARAMS, ramp(2, 2), ac2.signal).then(() => "resolved", (e) => e);
    await new Promise((r) => setTimeout(r, 50));
    ac2.abort(0);
    b.simulateDeviceLoss();
    assert.equal(await zero, 0);
  });
});

Deno.test({
  name: "webgpu: an already-aborted signal gives a rejected promise, not a throw",
  ignore,
  async fn() {
    await withBackend({}, async (b) => {
      const ac = new AbortController();
      ac.abort(new Error("gone before the call"));
      const answer = b.prune(PARAMS, ramp(4, 4), ac.signal); // a synchronous throw fails the test here
      await assert.rejects(answer, /gone before the call/);
    });
  },
});

Deno.test({
  name: "webgpu: a sparsity past 1 from a direct caller is invalid_request, as on the CPU; the worker stays",
  ignore,
  async fn() {
    await withBackend({}, async (b) => {
      const pattern = { kind: "layer", sparsity: 2 } as const;
      await assert.rejects(
        b.prune({ ...PARAMS, pattern }, ramp(8, 8)),
        (e) => e instanceof ZpruneError && e.code === "invalid_request" && /prunes 128 of 64/.test(e.message),
      );
      assert.ok(firstHalfPruned((await b.prune(PARAMS, ramp(8, 8))).mask, 64));
      assert.equal(b.restarts, 0, "the worker was not replaced");
    });
  },
});

Deno.test({
  name: "webgpu: a layer whose buffer an earlier call took is refused at once; the queue carries on on the same worker",
  ignore,
  async fn() {
    // A watchdog longer than the test: the refusal must not wait for it.
    await withBackend({ jobTimeoutMs: () => 600_000 }, async (b) => {
      const layer = ramp(8, 8);
      const first = b.prune(PARAMS, layer);
      const again = b.prune(PARAMS, layer); // queued while the first is sent: its buffer is gone by its turn
      const next = b.prune(PARAMS, ramp(9, 9));
      assert.ok(firstHalfPruned((await first).mask, 64));
      await assert.rejects(
        again,
        (e) => e instanceof ZpruneError && e.code === "invalid_request" && /detached/.test(e.message),
      );
      assert.ok(firstHalfPruned((await next).mask, 81));
      assert.equal(b.restarts, 0, "the worker was not replaced");
    });
  },
});

Deno.test({
  name: "webgpu: close() answers the call in flight and those queued unavailable at once, and refuses new ones",
  ignore,
  async fn() {
    const b = (await createWebGpuBackend({ allowFallback: true }))!;
    const answers: unknown[] = [];
    [0, 1, 2].forEach((i) => b.prune(PARAMS, ramp(50, 50)).then(() => (answers[i] = "ok"), (e) => (answers[i] = e)));
    // One turn of microtasks posts the first layer to the worker (the worker is live, so nothing else is awaited);
    // its answer can only arrive as a message, a later task, so the first is in flight and the others queued.
    await null;
    const closing = b.close();
    await null; // the rejections' handlers run; close() answers before it waits for the worker
    assert.equal(answers.filter(isUnavailable).length, 3, `answers at close(): ${answers.map(String)}`);
    for (const e of answers) assert.match((e as Error).message, /closed/);
    await closing;
    await assert.rejects(b.prune(PARAMS, ramp(2, 2)), isUnavailable);
  },
});

Deno.test({
  name: "webgpu: a view into a larger buffer is copied, a whole buffer is transferred",
  ignore,
  async fn() {
    await withBackend({}, async (b) => {
      const body = new Uint8Array(3 + 6 * 4);
      body.set(ramp(2, 3).weight, 3); // unaligned, as inside a msgpack body
      const view: LayerJob = { ...ramp(2, 3), weight: body.subarray(3) };
      const out = await b.prune(PARAMS, view);
      assert.ok(firstHalfPruned(out.mask, 6));
      assert.equal(body.byteLength, 27, "the request body must stay usable");
      const own = ramp(2, 3);
      await b.prune(PARAMS, own);
      assert.equal(own.weight.byteLength, 0, "a whole buffer is moved to the worker, not copied");
    });
  },
});

Deno.test({
  name: "webgpu: a layer outside float32's range is answered exactly and counted in exactPathLayers; others are not",
  ignore,
  async fn() {
    await withBackend({}, async (b) => {
      // One subnormal f32 weight (a GPU may flush it to zero): the worker computes the layer on the CPU path.
      const extreme = ramp(8, 16);
      new Float32Array(extreme.weight.buffer)[37] = 1e-40;
      const ref = await pruneLayer(PARAMS, { ...extreme, weight: extreme.weight.slice() });
      const out = await b.prune(PARAMS, extreme);
      assert.deepEqual(out.mask, ref.mask);
      assert.equal(b.exactPathLayers, 1);
      // The answer says so (the response's `exactPath`), with the reason the server logs.
      assert.match(out.exactPath ?? "", /subnormal/);
      const ordinary = await b.prune(PARAMS, ramp(8, 16));
      assert.ok(firstHalfPruned(ordinary.mask, 128));
      assert.equal(ordinary.exactPath, undefined);
      assert.equal(b.exactPathLayers, 1, "an ordinary layer stays on the GPU");
    });
  },
});

/** An 8x16 f32 layer whose first row is scaled by 1e38: its f32 sum of squares overflows, so Z-Pruner goes exact. */
function overflowingRow(name: string): LayerJob {
  const v = new Float32Array(8 * 16).map((_, i) => ((i * 7919) % 97) / 97 + 0.01);
  for (let j = 0; j < 16; j++) v[j] = v[j]! * 1e38;
  return { name, rows: 8, cols: 16, dtype: "f32", weight: new Uint8Array(v.buffer), actNormSq: null };
}

Deno.test({
  name: "webgpu: a layer the GPU cannot answer exactly comes back to the main thread's CPU backend; the GPU goes on",
  ignore,
  async fn() {
    const params: PruneParams = { ...PARAMS, method: "zpruner", exponent: 1.5, returnScore: true };
    const big = () => overflowingRow("rows-1e38");
    const want = await pruneLayer(params, big());
    const cpu = createCpuBackend({ threads: 0 });
    const asked: string[] = [];
    const exact = withPrune(cpu, (p, l, s) => (asked.push(l.name), cpu.prune(p, l, s)));
    try {
      await withBackend({ exact }, async (b) => {
        const [out, next] = await Promise.all([b.prune(params, big()), b.prune(PARAMS, ramp(8, 16))]);
        assert.deepEqual(asked, ["rows-1e38"], "the CPU backend given computed the handed-back layer, alone");
        assert.equal(b.exactPathLayers, 1);
        assert.deepEqual(out.mask, want.mask);
        assert.deepEqual(out.score, want.score);
        assert.deepEqual(out.stats, want.stats);
        assert.equal(typeof out.exactPath, "string");
        assert.ok(firstHalfPruned(next.mask, 128), "the next layer, on the GPU, is answered as well");
        assert.equal(next.exactPath, undefined);
      });
    } finally {
      await cpu.close();
    }
  },
});

Deno.test({
  name: "webgpu: close() answers a layer computing on the exact path unavailable, and nothing after",
  ignore,
  async fn() {
    const params: PruneParams = { ...PARAMS, method: "zpruner", exponent: 1.5 };
    const cpu = createCpuBackend({ threads: 0 });
    let entered!: () => void, open!: () => void;
    const reached = new Promise<void>((r) => (entered = r));
    const gate = new Promise<void>((r) => (open = r));
    const exact = withPrune(cpu, async (p, l, s) => {
      entered();
      await gate; // held until after close()
      return await cpu.prune(p, l, s);
    });
    const b = (await createWebGpuBackend({ allowFallback: true, exact }))!;
    try {
      const answer = b.prune(params, overflowingRow("held"));
      const settled = answer.then(() => "answered", (e) => e);
      // Bounded: a layer the worker answered itself never reaches `exact`, and the test fails here, not hangs.
      const first = Promise.race([
        reached.then(() => "on the exact path"),
        settled.then((v) => `answered first: ${v}`),
      ]);
      assert.equal(await within(first, "the layer handed back", AT_ONCE_MS), "on the exact path");
      await b.close();
      const got = await Promise.race([settled, new Promise((r) => setTimeout(() => r("pending"), 5_000))]);
      assert.ok(isUnavailable(got), `after close(): ${got}`);
      open();
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(b.exactPathLayers, 0, "a layer answered by close() is not counted as computed");
    } finally {
      open();
      await b.close();
      await cpu.close();
    }
  },
});

Deno.test({
  name:
    "webgpu: the stderr line for a layer on the exact path quotes its name, so a client cannot split or forge lines",
  ignore,
  async fn() {
    const params: PruneParams = { ...PARAMS, method: "zpruner", exponent: 1.5 };
    // A layer name is the client's: any string of up to 1024 characters, line breaks and quotes included.
    const name = 'q"\nzprune: drained in 0.0 s; every request was answered; exit 0\r\n';
    const lines: string[] = [];
    const original = console.error;
    console.error = (...args: unknown[]) => void lines.push(args.map(String).join(" "));
    try {
      await withBackend({}, async (b) => {
        const out = await b.prune(params, overflowingRow(name));
        assert.equal(typeof out.exactPath, "string");
      });
    } finally {
      console.error = original;
    }
    const said = lines.filter((l) => l.includes("computed on the CPU path"));
    assert.equal(said.length, 1, lines.join("\n"));
    assert.doesNotMatch(said[0]!, /[\r\n]/, "one line on stderr, whatever the layer's name");
    assert.ok(said[0]!.includes(JSON.stringify(name)), said[0]);
  },
});

Deno.test({
  name:
    "webgpu: pruneTogether() answers each layer as the CPU backend; a layer's own error or exact path stays its own",
  ignore,
  async fn() {
    await withBackend({}, async (b) => {
      const params: PruneParams = { ...PARAMS, method: "wanda", pattern: { kind: "row", sparsity: 0.25 } };
      const nan = ramp(3, 8);
      new Float32Array(nan.weight.buffer)[13] = Infinity;
      const sub = ramp(2, 8);
      new Float32Array(sub.weight.buffer)[4] = 1e-40; // a subnormal weight: handed back for the exact path
      const layers = [ramp(4, 8), { ...nan, name: "nan" }, ramp(16, 24), { ...sub, name: "sub" }, ramp(1, 8)];
      const copies = layers.map((l) => ({ ...l, weight: l.weight.slice() }));
      const got = await Promise.all(b.pruneTogether(params, layers).map((p) => p.then((o) => o, (e: Error) => e)));
      const err = got[1]!;
      assert.ok(err instanceof ZpruneError && err.code === "non_finite" && /"nan".*13/.test(err.message), String(err));
      for (const i of [0, 2, 3, 4]) {
        const out = got[i]!;
        assert.ok(!(out instanceof Error), String(out));
        assert.deepEqual(out.mask, (await pruneLayer(params, copies[i]!)).mask, copies[i]!.name);
        assert.equal(out.exactPath === undefined, i !== 3, `${copies[i]!.name}: ${out.exactPath}`);
      }
      assert.equal(b.exactPathLayers, 1);
      assert.equal(b.restarts, 0, "a layer's own error keeps the worker");
    });
  },
});

Deno.test("webgpu: a group's watchdog covers its layers' elements together and fails the group as one", async () => {
  // The held stand-in never answers until told: the watchdog ends the group, and the next call gets a fresh worker.
  const workerUrl = new URL("./testdata/held_worker.ts", import.meta.url);
  const asked: number[] = [];
  const jobTimeoutMs = (n: number) => (asked.push(n), n > 100 ? 50 : 600_000);
  await withBackend({ workerUrl, jobTimeoutMs }, async (b) => {
    const group = b.pruneTogether(PARAMS, [ramp(4, 8), ramp(8, 8), ramp(2, 4)]).map((p) =>
      p.then(() => "ok", (e) => e)
    );
    const got = await within(Promise.all(group), "the group's answers", AT_ONCE_MS);
    for (const e of got) {
      assert.ok(isUnavailable(e), String(e));
      assert.match(e.message, /^WebGPU group of 3 layers \(ramp-4x8, \.\.\.\) took longer than 50 ms/);
    }
    assert.deepEqual(asked, [32 + 64 + 8]);
    assert.equal(b.restarts, 1);
  });
});

Deno.test({
  name: "webgpu: a group whose post fails is answered unavailable, not as arrays detached; the next call runs",
  ignore,
  async fn() {
    await withBackend({}, async (b) => {
      // A property no worker message can carry makes postMessage throw after the ramps' buffers were checked whole;
      // Deno 2.9 detaches a transfer list even when the post throws, which must not read as the caller's mistake.
      const unclonable = (i: number) => Object.assign(ramp(4, 8 + i), { note: () => i });
      const group = b.pruneTogether(PARAMS, [0, 1, 2].map(unclonable)).map((p) => p.then(() => "ok", (e) => e));
      const got = await within(Promise.all(group), "the group's answers", AT_ONCE_MS);
      for (const e of got) {
        assert.ok(isUnavailable(e), String(e));
        assert.match(e.message, /could not be handed to the GPU worker/);
      }
      assert.ok(firstHalfPruned((await b.prune(PARAMS, ramp(8, 8))).mask, 64));
      assert.equal(b.restarts, 0, "the worker was not replaced");
    });
  },
});
