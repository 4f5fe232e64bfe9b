import assert from "node:assert/strict";
import { Presence, RequestClock } from "./deadline.ts";

/** A clock whose time is set by hand. */
function clock() {
  let t = 0;
  const c = new RequestClock(0, () => t);
  return { c, at: (ms: number) => (t = ms) };
}

Deno.test("RequestClock: arriving, waiting and working add up per phase", () => {
  const { c, at } = clock();
  at(100); // the body arrived
  c.phase("working");
  at(150); // prepared
  c.phase("waiting");
  at(400); // admitted
  c.phase("working");
  at(1000);
  c.phase("waiting");
  assert.deepEqual([c.arrivingMs, c.waitingMs, c.workingMs], [100, 250, 650]);
});

Deno.test("RequestClock: 504 when its own time (alone) took half the deadline or more; else 503", () => {
  // [ms arriving, arrived with no other request at the server, ms waiting, ms working, computed alone, code]
  const cases = [
    [0, true, 0, 1000, true, "deadline_exceeded"],
    [0, true, 500, 500, true, "deadline_exceeded"],
    [0, true, 501, 499, true, "unavailable"],
    [0, true, 990, 10, true, "unavailable"],
    [0, true, 0, 1000, false, "unavailable"], // computed alongside other requests: its time was not all its own
    [1000, true, 0, 0, true, "deadline_exceeded"], // a body this slow to come to an idle server comes as slowly again
    [300, true, 500, 200, true, "deadline_exceeded"], // arrival and work add up
    [300, false, 500, 200, true, "unavailable"], // other requests were at the server while its body came
    [300, true, 500, 200, false, "unavailable"], // 300 of its own: under half
    [501, true, 499, 0, false, "deadline_exceeded"],
  ] as const;
  for (const [arriving, arrivedAlone, waited, worked, alone, code] of cases) {
    const { c, at } = clock();
    c.arrivingAlone = () => arrivedAlone;
    at(arriving);
    c.phase("working");
    c.arrivingAlone = () => !arrivedAlone; // read when the body has come, not later
    at(arriving + worked / 2);
    c.phase("waiting");
    at(arriving + worked / 2 + waited);
    c.phase("working");
    c.alone = () => alone;
    at(arriving + worked + waited);
    const e = c.deadlineError(1000, 3);
    const what = `${arriving} ms arriving (alone ${arrivedAlone}), ${waited} ms waiting, ${worked} ms working, ` +
      `alone ${alone}`;
    assert.equal(e.code, code, what);
    assert.equal(e.status, code === "unavailable" ? 503 : 504);
    assert.match(e.message, new RegExp(`${worked} ms of this request's own work \\(decoding, checking, 3 layer`), what);
    assert.match(e.message, new RegExp(`${waited} ms of waiting`), what);
    assert.match(e.message, new RegExp(`${arriving} ms for its body to arrive`), what);
    assert.equal(/alongside other requests/.test(e.message), !alone, what);
    assert.equal(/while other requests were at the server/.test(e.message), !arrivedAlone, what);
  }
});

Deno.test("RequestClock: a deadline met while the body still arrives reads the presence then", () => {
  for (const arrivedAlone of [true, false]) {
    const { c, at } = clock();
    c.arrivingAlone = () => arrivedAlone;
    at(1000);
    const e = c.deadlineError(1000, 0);
    assert.equal(e.code, arrivedAlone ? "deadline_exceeded" : "unavailable");
    assert.match(e.message, /1000 ms for its body to arrive/);
  }
});

Deno.test("Presence: alone only with no other request there on arrival and none arriving since", () => {
  const p = new Presence();
  const a = p.enter();
  assert.equal(a.alone(), true);
  const b = p.enter(); // came while a was there
  assert.deepEqual([a.alone(), b.alone()], [false, false]);
  a.leave();
  a.leave(); // twice counts once
  b.leave();
  const c = p.enter(); // the server is empty again
  assert.equal(c.alone(), true);
  c.leave();
  const d = p.enter();
  assert.equal(d.alone(), true, "one that left before does not count");
  d.leave();
});
