import assert from "node:assert/strict";
import { ZpruneError } from "../contract/errors.ts";
import { isDeadline, untilAborted, WorkQueue } from "./queue.ts";

Deno.test("WorkQueue runs at most `concurrency` at once and refuses past maxQueue with busy", async () => {
  const q = new WorkQueue({ concurrency: 2, maxQueue: 1 });
  let running = 0, peak = 0;
  const releases: Array<() => void> = [];
  const job = () =>
    q.run(async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise<void>((r) => releases.push(r));
      running--;
    });
  const a = job(), b = job(), c = job();
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(q.running, 2);
  assert.equal(q.depth, 1);
  await assert.rejects(
    job(),
    (e: unknown) => e instanceof ZpruneError && e.code === "busy" && e.headers["Retry-After"] === "1",
  );
  while (releases.length) {
    releases.shift()!();
    await new Promise((r) => setTimeout(r, 5));
  }
  await Promise.all([a, b, c]);
  assert.equal(peak, 2);
  assert.equal(q.running, 0);
});

Deno.test("WorkQueue drops a waiting job whose signal aborts, without running it", async () => {
  const q = new WorkQueue({ concurrency: 1, maxQueue: 4 });
  let release!: () => void;
  const first = q.run(() => new Promise<void>((r) => (release = r)));
  const ctl = new AbortController();
  let ran = false;
  const second = q.run(() => {
    ran = true;
    return Promise.resolve();
  }, ctl.signal);
  ctl.abort(new Error("client went away"));
  await assert.rejects(second, /client went away/);
  assert.equal(q.depth, 0);
  release();
  await first;
  assert.equal(ran, false);
});

Deno.test("WorkQueue holds back a request until its memory estimate fits, refusing one over the budget", async () => {
  const q = new WorkQueue({ concurrency: 4, maxQueue: 4, memoryBudget: 100 });
  const order: string[] = [];
  let releaseA!: () => void;
  const a = q.run(() => new Promise<void>((r) => (releaseA = r)).then(() => void order.push("a")), undefined, 70);
  const b = q.run(() => Promise.resolve(void order.push("b")), undefined, 50); // 70 + 50 > 100: waits
  const c = q.run(() => Promise.resolve(void order.push("c")), undefined, 10); // would fit, but b is first in line
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(q.running, 1);
  assert.equal(q.depth, 2);
  assert.equal(q.bytesInUse, 70);
  await assert.rejects(
    q.run(() => Promise.resolve(), undefined, 101),
    (e: unknown) => e instanceof ZpruneError && e.code === "too_large",
  );
  releaseA();
  await Promise.all([a, b, c]);
  assert.deepEqual(order, ["a", "b", "c"]);
  assert.equal(q.bytesInUse, 0);
});

Deno.test("WorkQueue keeps a request's slot and memory after it ends while work it kept is still running", async () => {
  const q = new WorkQueue({ concurrency: 1, maxQueue: 4, memoryBudget: 100 });
  let finishWork!: () => void;
  const work = new Promise<void>((r) => (finishWork = r));
  // The request gives up (an abort, say) while its work goes on: answered at once, but still counted.
  await assert.rejects(q.run((keep) => (keep(work), Promise.reject(new Error("deadline"))), undefined, 60), /deadline/);
  assert.equal(q.running, 1);
  assert.equal(q.bytesInUse, 60);
  let ran = false;
  const next = q.run(() => Promise.resolve(void (ran = true)), undefined, 60);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(ran, false, "the next request waits for the kept work");
  finishWork();
  await next;
  assert.equal(ran, true);
  assert.equal(q.running, 0);
  assert.equal(q.bytesInUse, 0);
});

Deno.test("untilAborted() answers with the work, or with the abort at once while the work is kept", async () => {
  const kept: Promise<unknown>[] = [];
  const keep = (w: Promise<unknown>) => void kept.push(w);
  assert.equal(await untilAborted(Promise.resolve(7), new AbortController().signal, keep), 7);
  await assert.rejects(untilAborted(Promise.reject(new Error("failed")), new AbortController().signal, keep), /failed/);
  assert.equal(kept.length, 0, "work that settled is not kept");

  let finish!: (v: number) => void;
  const work = new Promise<number>((r) => (finish = r));
  const ctl = new AbortController();
  const answer = untilAborted(work, ctl.signal, keep);
  ctl.abort(new DOMException("deadline", "TimeoutError"));
  await assert.rejects(answer, (e: DOMException) => e.name === "TimeoutError");
  assert.deepEqual(kept, [work], "the abort answers before the work ends, and hands the work to keep");
  finish(1); // settling later changes nothing

  const late = untilAborted(new Promise<never>(() => {}), AbortSignal.abort("gone"), keep);
  await assert.rejects(late, (e) => e === "gone");
  assert.equal(kept.length, 2, "a signal aborted already keeps the work too");
});

Deno.test("WorkQueue.alone(): true only for a request that computed with no other computing at any time", async () => {
  const q = new WorkQueue({ concurrency: 2, maxQueue: 4 });
  const gate = () => {
    let open!: () => void;
    return { wait: new Promise<void>((r) => (open = r)), open: () => open() };
  };
  const probes: Record<string, () => boolean> = {};
  const job = (name: string, g: { wait: Promise<void> }) =>
    q.run(async () => {
      probes[name] = q.alone();
      await g.wait;
    });
  const ga = gate(), gb = gate(), gc = gate();
  const a = job("a", ga);
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(probes.a!(), true, "a alone so far");
  const b = job("b", gb); // starts beside a
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(probes.a!(), false, "b started while a computed");
  assert.equal(probes.b!(), false, "a was computing when b started");
  ga.open();
  gb.open();
  await Promise.all([a, b]);
  const c = job("c", gc); // alone from start to end
  await new Promise((r) => setTimeout(r, 5));
  gc.open();
  await c;
  assert.equal(probes.c!(), true);
});

Deno.test("WorkQueue.idle(): true only where nothing computed since the probe, work left behind included", async () => {
  const q = new WorkQueue({ concurrency: 2, maxQueue: 4 });
  const quiet = q.idle();
  assert.equal(quiet(), true, "nothing has computed");
  // A request computes and ends while the probe is out: it shared the host.
  await q.run(() => Promise.resolve());
  assert.equal(quiet(), false, "a request started since");
  assert.equal(q.idle()(), true, "a probe taken after it, with nothing running");
  // A request that gave up leaves its work running: the host is not idle until that work settles.
  let finish!: () => void;
  const work = new Promise<void>((r) => (finish = r));
  await assert.rejects(q.run((keep) => (keep(work), Promise.reject(new Error("deadline")))), /deadline/);
  const beside = q.idle();
  assert.equal(beside(), false, "work left behind was computing when the probe was taken");
  finish();
  await work;
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(q.running, 0);
  assert.equal(beside(), false, "it computed for part of the probe's time");
  assert.equal(q.idle()(), true);
});

/** A job for `q` that holds its slot until `release` is called; `started` tells whether it has begun. */
function held(q: WorkQueue, cost: number, signal?: AbortSignal) {
  let release!: () => void, started = false;
  const gate = new Promise<void>((r) => (release = r));
  const done = q.run(() => ((started = true), gate), signal, cost);
  return { done, release: () => release(), started: () => started };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

Deno.test("WorkQueue admits a cost that fills the memory budget exactly, alone or beside another", async () => {
  const q = new WorkQueue({ concurrency: 4, maxQueue: 4, memoryBudget: 100 });
  const a = held(q, 70);
  const b = held(q, 30); // 70 + 30 = 100: fits, so it starts at once
  await tick();
  assert.ok(a.started() && b.started());
  assert.equal(q.running, 2);
  assert.equal(q.bytesInUse, 100);
  a.release();
  b.release();
  await Promise.all([a.done, b.done]);
  // A request whose estimate equals the whole budget is not too large.
  assert.equal(await q.run(() => Promise.resolve("ran"), undefined, 100), "ran");
  assert.equal(q.bytesInUse, 0);
});

Deno.test("WorkQueue with no memoryBudget limits by slots only; a concurrency below 1 still runs one", async () => {
  const unbounded = new WorkQueue({ concurrency: 1, maxQueue: 0 });
  assert.equal(unbounded.memoryBudget, Infinity);
  assert.equal(await unbounded.run(() => Promise.resolve(1), undefined, 1e15), 1);
  const zero = new WorkQueue({ concurrency: 0, maxQueue: 0 });
  assert.equal(zero.concurrency, 1);
  assert.equal(await zero.run(() => Promise.resolve(2)), 2);
});

Deno.test("WorkQueue: a waiter at the head that aborts lets the ones behind it start when they fit", async () => {
  const q = new WorkQueue({ concurrency: 4, maxQueue: 4, memoryBudget: 100 });
  const a = held(q, 70);
  const ctl = new AbortController();
  const b = held(q, 50, ctl.signal); // 70 + 50 > 100: waits at the head
  const c = held(q, 10); // fits beside a, but waits behind b (first come first served)
  await tick();
  assert.ok(!b.started() && !c.started());
  ctl.abort(new Error("b left"));
  await assert.rejects(b.done, /b left/);
  await tick();
  assert.ok(c.started(), "c starts once b, which blocked it, is gone, while a still runs");
  assert.equal(q.bytesInUse, 80);
  a.release();
  c.release();
  await Promise.all([a.done, c.done]);
});

Deno.test("WorkQueue: a large request ending lets every waiter that now fits start, not just the first", async () => {
  const q = new WorkQueue({ concurrency: 3, maxQueue: 4, memoryBudget: 100 });
  const a = held(q, 100);
  const b = held(q, 30), c = held(q, 30);
  await tick();
  assert.equal(q.depth, 2);
  a.release();
  await a.done;
  await tick();
  assert.ok(b.started() && c.started(), "both waiters start when a's memory is free");
  assert.equal(q.running, 2);
  b.release();
  c.release();
  await Promise.all([b.done, c.done]);
});

Deno.test("WorkQueue: a request whose signal has already aborted is refused without running", async () => {
  const q = new WorkQueue({ concurrency: 1, maxQueue: 1 });
  let ran = false;
  await assert.rejects(q.run(() => Promise.resolve(void (ran = true)), AbortSignal.abort(new Error("gone"))), /gone/);
  assert.equal(ran, false);
  assert.equal(q.running, 0);
});

Deno.test("WorkQueue.alone(): a request that computed alone stays so when another starts after it ended", async () => {
  const q = new WorkQueue({ concurrency: 2, maxQueue: 4 });
  let probe!: () => boolean;
  await q.run(() => Promise.resolve(void (probe = q.alone())));
  await q.run(() => Promise.resolve()); // starts alone, after the first has ended
  assert.equal(probe(), true);
});

Deno.test("untilAborted() stops listening once the work settles: a later abort keeps nothing", async () => {
  const kept: Promise<unknown>[] = [];
  const ctl = new AbortController();
  assert.equal(await untilAborted(Promise.resolve(5), ctl.signal, (w) => void kept.push(w)), 5);
  await tick(); // the listener goes in the work's settling chain, a few microtasks after the answer
  ctl.abort(new Error("late"));
  assert.equal(kept.length, 0);
});

Deno.test("isDeadline() is true for AbortSignal.timeout's reason only, not for other aborts", async () => {
  const timeout = AbortSignal.timeout(1);
  await new Promise((r) => timeout.addEventListener("abort", r, { once: true }));
  assert.equal(isDeadline(timeout.reason), true);
  assert.equal(isDeadline(new DOMException("client left", "AbortError")), false);
  assert.equal(isDeadline(new Error("TimeoutError")), false);
});
