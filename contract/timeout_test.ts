import assert from "node:assert/strict";
import { isDeadline } from "../prune/queue.ts";
import { startTimeout } from "./timeout.ts";

Deno.test("startTimeout: aborts with a TimeoutError once its time passed; clear() ends the timer", async () => {
  const passing = startTimeout(20, "the deadline of 20 ms passed");
  const reason = await new Promise((resolve) =>
    passing.signal.addEventListener("abort", () => resolve(passing.signal.reason))
  );
  // What the server's error handler takes for a deadline, and what the client's callers catch by name.
  assert.ok(isDeadline(reason), String(reason));
  assert.equal((reason as DOMException).message, "the deadline of 20 ms passed");
  const cleared = startTimeout(20, "cleared");
  cleared.clear();
  // Infinity is no limit, not a timer that fires at once (setTimeout's reading of it).
  const never = startTimeout(Infinity, "never");
  await new Promise((r) => setTimeout(r, 60));
  // Also the test sanitizer's check: a timer still pending at the test's end fails it.
  assert.equal(cleared.signal.aborted, false);
  assert.equal(never.signal.aborted, false);
  never.clear();
});
