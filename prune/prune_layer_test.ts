import assert from "node:assert/strict";
import { createCpuBackend } from "./cpu_backend.ts";
import { patternK } from "./prune_layer.ts";
import { ZpruneError } from "../contract/errors.ts";

const invalid = (e: unknown) => e instanceof ZpruneError && e.code === "invalid_request";

Deno.test("patternK(): floor(sparsity x count) per layer or row, 0 for N:M; more than the count refused", () => {
  assert.equal(patternK({ kind: "layer", sparsity: 0.5 }, 3, 5), 7);
  assert.equal(patternK({ kind: "row", sparsity: 0.5 }, 3, 5), 2);
  assert.equal(patternK({ kind: "layer", sparsity: 1 }, 3, 5), 15);
  assert.equal(patternK({ kind: "row", sparsity: 1.5 }, 3, 1), 1); // floor(1.5) of one weight: all of it
  assert.equal(patternK({ kind: "nm", n: 2, m: 4 }, 3, 8), 0);
  for (const sparsity of [2, -0.1, NaN]) {
    for (const kind of ["layer", "row"] as const) {
      assert.throws(() => patternK({ kind, sparsity }, 3, 5), invalid, `${kind} ${sparsity}`);
    }
  }
});

Deno.test("the CPU backend refuses a sparsity past 1 passed to it directly, not selecting forever", async () => {
  // The route never passes one (the contract's schema stops it); a direct caller gets an error, not a hang.
  const cpu = createCpuBackend({ threads: 0 });
  const layer = { name: "x", rows: 2, cols: 2, dtype: "f32" as const, weight: new Uint8Array(16), actNormSq: null };
  const params = { method: "magnitude" as const, exponent: 1, returnWeight: false, returnScore: false };
  await assert.rejects(cpu.prune({ ...params, pattern: { kind: "layer", sparsity: 2 } }, layer), invalid);
  await cpu.close();
});
