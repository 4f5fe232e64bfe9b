import assert from "node:assert/strict";
import { isAllocationFailure } from "./out_of_memory.ts";

const child = new URL("./testdata/allocation_child.ts", import.meta.url).pathname;
const bun = new URL("../node_modules/.bin/bun", import.meta.url).pathname;
const expected = { buffer: true, shared: true, typed: true, otherRange: false };

/** What the child script prints under `cmd`: each real allocation failure and another RangeError, recognised or not. */
async function recognised(cmd: string, args: string[]): Promise<unknown> {
  const out = await new Deno.Command(cmd, { args: [...args, child], stdout: "piped", stderr: "inherit" }).output();
  assert.equal(out.code, 0);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("isAllocationFailure() knows Deno's failed allocations, and no other RangeError", async () => {
  assert.deepEqual(await recognised(Deno.execPath(), ["run", "--no-lock"]), expected);
  // Nor an error of another type with the same words.
  assert.equal(isAllocationFailure(new Error("Array buffer allocation failed")), false);
});

Deno.test("isAllocationFailure() knows Bun's failed allocations, and no other RangeError", async () => {
  assert.deepEqual(await recognised(bun, ["--no-env-file"]), expected);
});
