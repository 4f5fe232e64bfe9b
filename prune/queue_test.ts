import assert from "node:assert/strict";
import { ZpruneError } from "../contract/errors.ts";
import { WorkQueue } from "./queue.ts";

Deno.test("WorkQueue runs at most `concurrency` at once and refuses past maxQueue with busy", async () => {
  const q = new WorkQueue(2, 1);
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
  const q = new WorkQueue(1, 4);
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
