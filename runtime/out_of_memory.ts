/**
 * Whether an error is the runtime's failure to allocate memory (an ArrayBuffer, typed array or SharedArrayBuffer it
 * could not have just now), which the server answers 503 `unavailable` rather than as a bug. Neither runtime gives
 * such errors a type of their own: each is a RangeError known by its message, V8's (Deno) or JavaScriptCore's (Bun).
 */

/** The messages of a failed allocation: V8's, then JavaScriptCore's. */
const ALLOCATION_FAILED = ["Array buffer allocation failed", "Out of memory"];

/** True for a RangeError the runtime throws when it cannot allocate memory (also one rebuilt from a worker's). */
export function isAllocationFailure(err: unknown): boolean {
  return err instanceof RangeError && ALLOCATION_FAILED.some((m) => err.message.includes(m));
}
