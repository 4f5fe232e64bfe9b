import assert from "node:assert/strict";
import { loopTurns } from "./loop_turns.ts";

/** Holds the thread for `ms` without yielding, as an inline layer does. */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) { /* spin */ }
}

Deno.test("loopTurns() asks for a turn only once the thread has been held for its time", async () => {
  const turns = loopTurns(20);
  try {
    assert.equal(turns.next(), undefined, "not held long enough yet");
    busy(25);
    let otherRan = false;
    setTimeout(() => (otherRan = true), 0); // another request's turn, due while this one holds the thread
    const pause = turns.next();
    assert.ok(pause instanceof Promise, "held past 20 ms: a turn is due");
    await pause;
    assert.ok(otherRan, "the waiting timer ran during the pause");
    // The turn was taken: the count starts again.
    assert.equal(turns.next(), undefined);
  } finally {
    turns.stop();
  }
});

Deno.test("loopTurns() asks for no turn when the loop has turned by itself", async () => {
  const turns = loopTurns(20);
  try {
    busy(25);
    await new Promise((resolve) => setTimeout(resolve, 0)); // as an answer from a worker lets the loop run
    assert.equal(turns.next(), undefined, "the loop just ran: no pause");
    busy(25);
    assert.ok(turns.next() instanceof Promise, "held again past 20 ms since that turn");
  } finally {
    turns.stop();
  }
});
