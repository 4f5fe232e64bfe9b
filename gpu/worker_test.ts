/**
 * gpu/worker.ts's side of the protocol (protocol.ts), message by message: what it answers to each message kind, the
 * errors it reports, what its answers transfer, the order it runs jobs in, and what `close` releases. The real worker
 * runs in a Worker of its own, behind a few lines of plain JavaScript (a blob URL, so that `deno test` does not
 * type-check each start) that report, in the order they happen, each message the worker posts with whether the arrays
 * of its answers are now detached (transferred, not copied), each `pruneGroup()` the worker begins and ends, each
 * device destroyed, and the worker's `self.close()`; it can also hold a group in flight until the worker has handled a
 * `lose-device`, or make the engine's `pruneGroup()` throw. Skipped only where no WebGPU adapter exists at all.
 */
import assert from "node:assert/strict";
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { pruneLayer } from "../prune/prune_layer.ts";
import { MAGNITUDE_HALF } from "../tests/_params.ts";
import { copyLayer as copy, seededLayer as layerOf } from "../tests/_layers.ts";
import { type EngineOptions, GpuEngine } from "./engine.ts";
import type { Answer, FromWorker, ToWorker } from "./protocol.ts";

const probe = await GpuEngine.create({ allowFallback: true });
const ignore = probe === null;
const isFallback = probe?.isFallback ?? false;
const description = probe?.description ?? "";
probe?.destroy();

/** What the wrapper reports besides the worker's own messages. */
type Report =
  | { report: "posted"; of: FromWorker["type"]; detached: Record<string, boolean>[] }
  | { report: "group begins" | "group ends" | "device destroyed" | "self.close" };
type Seen = FromWorker | Report;

const ENGINE = new URL("./engine.ts", import.meta.url).href;
const WORKER = new URL("./worker.ts", import.meta.url).href;
/** gpu/worker.ts behind the reporting wrapper described above. */
const WRAPPED = URL.createObjectURL(
  new Blob([
    `
    // Static imports: the worker's handler is set before any message can arrive (one sent before it was would be lost).
    import { GpuEngine } from ${JSON.stringify(ENGINE)};
    import ${JSON.stringify(WORKER)};
    const post = self.postMessage.bind(self);
    const report = (r) => post({ report: r });
    // An answer's arrays, by name, that a transfer would detach: a done answer's outputs, an exact one's layer.
    const arrays = (a) => a.type === "done" ? { mask: a.output.mask, weight: a.output.weight, score: a.output.score }
      : a.type === "exact" ? { weight: a.layer.weight, actNormSq: a.layer.actNormSq } : {};
    self.postMessage = (msg, transfer) => {
      post(msg, transfer);
      const detached = (msg.answers ?? []).map((a) => Object.fromEntries(
        Object.entries(arrays(a)).filter(([, v]) => v).map(([k, v]) => [k, v.buffer.detached]),
      ));
      post({ report: "posted", of: msg.type, detached });
    };
    const close = self.close.bind(self);
    self.close = () => (report("self.close"), close());
    const destroy = GPUDevice.prototype.destroy;
    GPUDevice.prototype.destroy = function () {
      report("device destroyed");
      return destroy.call(this);
    };
    // A group with a layer named "held" waits, once begun, until the worker has handled a lose-device message.
    let release;
    const released = new Promise((resolve) => release = resolve);
    const group = GpuEngine.prototype.pruneGroup;
    GpuEngine.prototype.pruneGroup = async function (params, layers) {
      report("group begins");
      try {
        if (layers.some((l) => l.name === "held")) await released;
        // A layer named "throw:CODE": the call throws an error that carries that code.
        const thrown = layers.find((l) => l.name.startsWith("throw:"));
        if (thrown) throw Object.assign(new Error("injected " + thrown.name), { code: thrown.name.slice(6) });
        return await group.call(this, params, layers);
      } finally {
        report("group ends");
      }
    };
    // Listening after the worker's own handler (set as it was imported): called once that handler has run.
    self.addEventListener("message", (e) => e.data.type === "lose-device" && release());
    `,
  ], { type: "application/javascript" }),
);

/** The wrapped worker: `send` posts to it; `until` gives what it said, in order, up to a message that `ends`. */
class WrappedWorker {
  readonly #worker = new Worker(WRAPPED, { type: "module", name: "zprune-webgpu-under-test" });
  readonly #channel = new MessageChannel();
  readonly #seen: Seen[] = [];
  #wake: (() => void) | null = null;

  constructor() {
    this.#worker.onmessage = (e: MessageEvent<Seen>) => {
      this.#seen.push(e.data);
      this.#wake?.();
    };
  }

  send(msg: ToWorker, transfer: Transferable[] = []): void {
    this.#worker.postMessage(msg, transfer);
  }

  /** Posts `init` with these options and the lifeline's worker end. */
  init(opts: EngineOptions): void {
    this.send({ type: "init", opts, lifeline: this.#channel.port2 }, [this.#channel.port2]);
  }

  /** Everything seen from here up to and including the first message for which `ends` holds. */
  async until(ends: (s: Seen) => boolean): Promise<Seen[]> {
    const out: Seen[] = [];
    for (;;) {
      while (this.#seen.length === 0) await new Promise<void>((resolve) => this.#wake = resolve);
      const s = this.#seen.shift()!;
      out.push(s);
      if (ends(s)) return out;
    }
  }

  /** Stops the worker (if it has not ended itself) and closes this side of the lifeline. */
  end(): void {
    this.#worker.terminate();
    this.#channel.port1.close();
  }
}

/** Runs `fn` with a wrapped worker, ended afterwards however `fn` ends. */
async function withWorker(fn: (w: WrappedWorker) => Promise<void>): Promise<void> {
  const w = new WrappedWorker();
  try {
    await fn(w);
  } finally {
    w.end();
  }
}

const isMessage = (type: FromWorker["type"]) => (s: Seen) => !("report" in s) && s.type === type;
const isReport = (report: Report["report"]) => (s: Seen) => "report" in s && s.report === report;
/** The worker's own messages among what was seen. */
const messages = (seen: Seen[]): FromWorker[] => seen.filter((s): s is FromWorker => !("report" in s));

/** Posts `layers` (ids 1, 2, ...) as one `prune` message, their arrays transferred as the backend does. */
function sendPrune(w: WrappedWorker, params: PruneParams, layers: LayerJob[]): void {
  const posted = layers.map((l, i) => ({ id: i + 1, layer: copy(l) }));
  const transfer = posted.flatMap(({ layer }) => [layer.weight.buffer, layer.actNormSq?.buffer ?? []].flat());
  w.send({ type: "prune", params, layers: posted }, transfer as ArrayBuffer[]);
}

/** The answers of an `answers` message. */
function answersOf(seen: Seen[]): Answer[] {
  const a = messages(seen).find((m) => m.type === "answers");
  assert.ok(a && a.type === "answers", JSON.stringify(seen));
  return a.answers;
}

/** What the worker said and did, by message type or report, in order. */
const kinds = (seen: Seen[]): string[] => seen.map((s) => "report" in s ? s.report : s.type);

Deno.test({
  name: "worker: ready names the adapter; a group is one answers message, its outputs transferred; close frees all",
  ignore,
  async fn() {
    await withWorker(async (w) => {
      w.init({ allowFallback: true });
      const started = await w.until(isReport("posted"));
      assert.deepEqual(messages(started), [{ type: "ready", device: description, fallback: isFallback }]);
      const params = { ...MAGNITUDE_HALF, returnWeight: true, returnScore: true };
      const layers = [layerOf("a", 8, 16, 1), layerOf("b", 4, 8, 2)];
      sendPrune(w, params, layers);
      const seen = await w.until(isReport("posted"));
      assert.deepEqual(kinds(seen), ["group begins", "group ends", "answers", "posted"]);
      const answers = answersOf(seen);
      assert.deepEqual(answers.map((a) => [a.type, a.id]), [["done", 1], ["done", 2]]);
      for (const [i, a] of answers.entries()) {
        assert.ok(a.type === "done");
        const want = await pruneLayer(params, copy(layers[i]!));
        assert.deepEqual(a.output.mask, want.mask);
        assert.deepEqual(a.output.weight, want.weight);
      }
      // Each output's buffer was transferred (detached in the worker), not copied.
      const posted = seen.at(-1) as Extract<Report, { report: "posted" }>;
      assert.deepEqual(posted.detached, Array(2).fill({ mask: true, weight: true, score: true }));
      // close: the device is released before the worker says closed, then the worker ends its thread.
      w.send({ type: "close" });
      assert.deepEqual(kinds(await w.until(isReport("self.close"))), [
        "device destroyed",
        "closed",
        "posted",
        "self.close",
      ]);
    });
  },
});

Deno.test({
  name: "worker: jobs run one at a time in arrival order, and close waits for those before it",
  ignore,
  async fn() {
    await withWorker(async (w) => {
      w.init({ allowFallback: true });
      await w.until(isReport("posted")); // ready
      // Three messages at once: the second group begins only once the first is answered; close comes last.
      const first = [layerOf("first", 64, 96, 3)], second = [layerOf("second", 2, 8, 4)];
      sendPrune(w, MAGNITUDE_HALF, first);
      sendPrune(w, MAGNITUDE_HALF, second);
      w.send({ type: "close" });
      const seen = await w.until(isReport("self.close"));
      assert.deepEqual(kinds(seen), [
        "group begins",
        "group ends",
        "answers",
        "posted",
        "group begins",
        "group ends",
        "answers",
        "posted",
        "device destroyed",
        "closed",
        "posted",
        "self.close",
      ]);
      const answered = messages(seen).filter((m) => m.type === "answers");
      for (const [i, layers] of [first, second].entries()) {
        const [a] = (answered[i] as Extract<FromWorker, { type: "answers" }>).answers;
        assert.ok(a?.type === "done", JSON.stringify(a));
        assert.deepEqual(a.output.mask, (await pruneLayer(MAGNITUDE_HALF, copy(layers[0]!))).mask);
      }
    });
  },
});

Deno.test({
  name: "worker: a group sent while it has no engine fails each layer unavailable; no acceptable adapter is none",
  ignore,
  async fn() {
    await withWorker(async (w) => {
      // Every layer of a prune message is answered, even with no engine (none opened yet, or none to open):
      // unavailable, each with its id.
      const failsEach = async () => {
        sendPrune(w, MAGNITUDE_HALF, [layerOf("x", 2, 8, 5), layerOf("y", 2, 8, 6)]);
        const answers = answersOf(await w.until(isReport("posted")));
        assert.deepEqual(answers.map((a) => [a.type, a.id, a.type === "fail" && a.code]), [
          ["fail", 1, "unavailable"],
          ["fail", 2, "unavailable"],
        ]);
        for (const a of answers) assert.match((a as Extract<Answer, { type: "fail" }>).message, /not initialised/);
      };
      await failsEach();
      // A software adapter refused: no GPU here, which is not an error (none, never broken).
      w.init({ allowFallback: false });
      const [reply] = messages(await w.until(isReport("posted")));
      assert.deepEqual(reply, isFallback ? { type: "none" } : { type: "ready", device: description, fallback: false });
      if (isFallback) await failsEach();
    });
  },
});

/** The message a device's loss gives when it is destroyed: asked of a device of this test's own. */
async function destroyedMessage(): Promise<string> {
  const device = await (await navigator.gpu.requestAdapter())!.requestDevice();
  device.destroy();
  const info = await device.lost;
  return info.message || String(info.reason);
}

Deno.test({
  name: "worker: lose-device destroys the device at once, failing the group in flight, and lost gives the loss",
  ignore,
  async fn() {
    const lostMessage = await destroyedMessage();
    await withWorker(async (w) => {
      w.init({ allowFallback: true });
      await w.until(isReport("posted")); // ready
      // The group has begun when lose-device comes (the wrapper holds it there): not queued behind it, the loss hits
      // it, and its layers fail unavailable rather than compute on a device about to go.
      sendPrune(w, MAGNITUDE_HALF, [layerOf("held", 16, 32, 7)]);
      await w.until(isReport("group begins"));
      w.send({ type: "lose-device" });
      const seen = await w.until(isMessage("answers"));
      assert.equal(kinds(seen)[0], "device destroyed");
      const [answer] = answersOf(seen);
      assert.ok(answer?.type === "fail" && answer.code === "unavailable", JSON.stringify(answer));
      assert.match(answer.message, /^WebGPU device lost: /);
      // lost carries what the device said of its loss; it came first, as the loss is what failed the layer.
      assert.deepEqual(messages(seen).find((m) => m.type === "lost"), { type: "lost", message: lostMessage });
    });
  },
});

Deno.test({
  name: "worker: a layer for the exact path comes back whole, its arrays transferred; an error's code is kept",
  ignore,
  async fn() {
    await withWorker(async (w) => {
      // 1024-byte tiles: a row of 300 f32 columns (1200 bytes) needs the exact path, which the main thread computes.
      w.init({ allowFallback: true, maxTileBytes: 1024 });
      await w.until(isReport("posted"));
      const wide = layerOf("wide", 2, 300, 8), nan = layerOf("nan", 4, 8, 9);
      new Float32Array(nan.weight.buffer)[5] = NaN;
      sendPrune(w, { ...MAGNITUDE_HALF, method: "wanda" }, [layerOf("plain", 4, 8, 10), wide, nan]);
      const seen = await w.until(isReport("posted"));
      const [plain, exact, failed] = answersOf(seen);
      assert.deepEqual([plain?.type, plain?.id], ["done", 1]);
      assert.ok(exact?.type === "exact" && exact.id === 2, JSON.stringify(exact));
      assert.match(exact.why, /1024-byte tiles/);
      assert.deepEqual(exact.layer, wide, "the layer as it was sent");
      // A request's own error keeps its code (the backend keeps its worker for it).
      assert.ok(failed?.type === "fail" && failed.id === 3, JSON.stringify(failed));
      assert.equal(failed.code, "non_finite");
      const posted = seen.at(-1) as Extract<Report, { report: "posted" }>;
      assert.deepEqual(posted.detached, [{ mask: true }, { weight: true, actNormSq: true }, {}]);
    });
  },
});

Deno.test({
  name: "worker: a group whose engine call throws fails each layer with the error's code, if a contract one",
  ignore,
  async fn() {
    await withWorker(async (w) => {
      w.init({ allowFallback: true });
      await w.until(isReport("posted")); // ready
      for (const [code, want] of [["shape_mismatch", "shape_mismatch"], ["ENOTCONTRACT", "unavailable"]]) {
        sendPrune(w, MAGNITUDE_HALF, [layerOf(`throw:${code}`, 2, 8, 11), layerOf("beside", 2, 8, 12)]);
        const answers = answersOf(await w.until(isMessage("answers")));
        assert.deepEqual(
          answers,
          [1, 2].map((id) => ({ type: "fail", id, code: want, message: `injected throw:${code}` })),
        );
      }
    });
  },
});
