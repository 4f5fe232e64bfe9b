import assert from "node:assert/strict";
import { RequestClock } from "./deadline.ts";

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

Deno.test("RequestClock: a deadline is 504 when own work took half of it or more, else 503 with Retry-After", () => {
  for (
    const [waited, worked, code] of [[0, 1000, "deadline_exceeded"], [500, 500, "deadline_exceeded"], [
      501,
      499,
      "unavailable",
    ], [990, 10, "unavailable"]] as const
  ) {
    const { c, at } = clock();
    at(waited);
    c.phase(true);
    at(waited + worked);
    const e = c.deadlineError(1000, 3);
    assert.equal(e.code, code, `${waited} ms waiting, ${worked} ms working`);
    assert.equal(e.status, code === "unavailable" ? 503 : 504);
    assert.equal(e.headers["Retry-After"], code === "unavailable" ? "1" : undefined);
    assert.match(e.message, new RegExp(`${worked} ms of this request's own work`));
    assert.match(e.message, new RegExp(`${waited} ms of waiting`));
  }
});
