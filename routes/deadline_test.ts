import assert from "node:assert/strict";
import { isDeadline } from "../prune/queue.ts";
import { RequestClock, startDeadline } from "./deadline.ts";

/** A clock whose time is set by hand. */
function clock() {
  let t = 0;
  const c = new RequestClock(0, () => t);
  return { c, at: (ms: number) => (t = ms) };
}

Deno.test("RequestClock: waiting and working add up per phase", () => {
  const { c, at } = clock();
  at(100); // the body arrived
  c.phase(true);
  at(150); // prepared
  c.phase(false);
  at(400); // admitted
  c.phase(true);
  at(1000);
  c.phase(false);
  assert.deepEqual([c.waitingMs, c.workingMs], [350, 650]);
});

Deno.test("RequestClock: 504 when own work, done alone, took half the deadline or more; else 503, Retry-After", () => {
  const cases = [
    [0, 1000, true, "deadline_exceeded"],
    [500, 500, true, "deadline_exceeded"],
    [501, 499, true, "unavailable"],
    [990, 10, true, "unavailable"],
    [0, 1000, false, "unavailable"], // computed alongside other requests: its time was not all its own
  ] as const;
  for (const [waited, worked, alone, code] of cases) {
    const { c, at } = clock();
    at(waited);
    c.phase(true);
    c.alone = () => alone;
    at(waited + worked);
    const e = c.deadlineError(1000, 3);
    const what = `${waited} ms waiting, ${worked} ms working, alone ${alone}`;
    assert.equal(e.code, code, what);
    assert.equal(e.status, code === "unavailable" ? 503 : 504);
    assert.equal(e.headers["Retry-After"], code === "unavailable" ? "1" : undefined);
    assert.match(e.message, new RegExp(`${worked} ms of this request's own work \\(decoding, checking, 3 layer`), what);
    assert.match(e.message, new RegExp(`${waited} ms of waiting`), what);
    assert.equal(/alongside other requests/.test(e.message), !alone, what);
  }
});

Deno.test("startDeadline: aborts with a TimeoutError once its time passed; clear() ends the timer", async () => {
  const passing = startDeadline(20);
  const reason = await new Promise((resolve) =>
    passing.signal.addEventListener("abort", () => resolve(passing.signal.reason))
  );
  assert.ok(isDeadline(reason), String(reason));
  const cleared = startDeadline(20);
  cleared.clear();
  await new Promise((r) => setTimeout(r, 60));
  // Also the test sanitizer's check: a timer still pending at the test's end fails it.
  assert.equal(cleared.signal.aborted, false);
});
