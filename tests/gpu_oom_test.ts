/**
 * The WebGPU engine when the device runs out of memory, with real `GPUOutOfMemoryError`s: a child process under an
 * address-space limit (a software adapter's device memory is host memory) fills the device, then prunes
 * (tests/_gpu_oom_child.ts). Runs on a software adapter (lavapipe in CI), skipped on others (see `software`).
 */
import assert from "node:assert/strict";
import { preferVulkan } from "../gpu/driver_lifetime.ts";

const DENO = new URL("../node_modules/.bin/deno", import.meta.url).pathname;
const CHILD = new URL("./_gpu_oom_child.ts", import.meta.url).pathname;
/** Room for the runtime's own reservations (32 GiB was too little for Deno to start here); the hog fills the rest. */
const ADDRESS_SPACE_KIB = 64 * 1024 * 1024;

preferVulkan();
const adapter = await navigator.gpu?.requestAdapter();
/**
 * Only a software adapter's device memory is bounded by `ulimit -v` (and filled in milliseconds, as nothing touches
 * it); on a GPU the child would take the whole of its memory, if its driver started under the limit at all.
 */
const software = adapter?.info.isFallbackAdapter === true;

Deno.test({
  name: "GpuEngine out of device memory: empties its pool and retries, then hands the layer to the exact path",
  ignore: !software,
  async fn() {
    // V8 single-threaded: a background thread V8 starts while the device fills the address space had no room for its
    // stack, and Deno died ("unable to create worker threads") in 2 of 8 runs here; 0 of 14 with the flag.
    const v8 = "--v8-flags=--expose-gc,--single-threaded";
    const out = await new Deno.Command("bash", {
      args: ["-c", `ulimit -v ${ADDRESS_SPACE_KIB} && exec "$0" run -A ${v8} "$1"`, DENO, CHILD],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.equal(stderr.trim(), "", "no warning and no trace");
    const r = JSON.parse(new TextDecoder().decode(out.stdout).trim());
    assert.equal(r.adapter, true);
    // 1. One attempt ran out of memory; with the pool emptied the second fitted and matched the CPU backend.
    assert.deepEqual(r.retried.after, { oom: r.retried.before.oom + 1, exact: r.retried.before.exact });
    assert.equal(r.retried.equal, true);
    // 2. Both attempts ran out; the layer came back for the exact path, unchanged, with the reason.
    assert.deepEqual(r.exact.after, { oom: r.exact.before.oom + 2, exact: r.exact.before.exact });
    assert.match(r.exact.handedBack.why, /^the GPU ran out of memory \(WebGPU out-of-memory error: .+\)$/);
    assert.equal(r.exact.handedBack.intact, true);
    // 3. The device was left usable: with the memory back, the same layer runs on the GPU and matches.
    assert.deepEqual(r.recovered.after, r.recovered.before);
    assert.equal(r.recovered.equal, true);
    // 4. A job that failed for its own reason after an allocation ran out left no invalid buffer in the pool.
    assert.match(r.poisoned.wrongShape, /^shape_mismatch: /);
    assert.equal(r.poisoned.afterWrong, "equal");
  },
});
