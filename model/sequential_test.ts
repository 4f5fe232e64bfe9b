import assert from "node:assert/strict";
import { ZpruneError } from "../contract/errors.ts";
import { batchBySize } from "./sequential.ts";

Deno.test("batchBySize() keeps layers in order, each request under the body limit, naming one that cannot fit", () => {
  const layer = (name: string, bytes: number) => ({
    name,
    weight: { dtype: "f16" as const, shape: [1, bytes / 2], data: new Uint8Array(bytes) },
    actNormSq: { data: new Uint8Array(0) },
  });
  const layers = [layer("a", 4000), layer("b", 4000), layer("c", 9000), layer("d", 500)];
  const limits = (maxBodyBytes: number) => ({ maxBodyBytes, memoryBudgetBytes: 1e12 });
  // Each layer costs its bytes, 3 per name character and 256; a request 256 more.
  const groups = batchBySize(layers, limits(10_000));
  assert.deepEqual(groups.map((g) => g.map((l) => l.name)), [["a", "b"], ["c"], ["d"]]);
  assert.deepEqual(batchBySize(layers, limits(100_000)).map((g) => g.length), [4]);
  assert.throws(
    () => batchBySize(layers, limits(9_000)),
    (e: unknown) => e instanceof ZpruneError && /^c: .* to send/.test(e.message),
  );
});

Deno.test("batchBySize() keeps each request within the server's memory budget, as the server reckons it", () => {
  // f32 layers of n weights: body n * 4 + 3 + 256 (+ 256 a request); the server's estimate adds the largest layer's
  // scratch, 12.125 n and its row and column vectors (48,000 bytes at 100 x 100 for zpruner: 112 bytes a row, 112 a
  // column and 4 x 64 of row-selection scratch a column), and 2 * n / 8 for the masks of all of them
  // (contract/working_memory.ts). Magnitude's vectors are 8 + 4 x 64 bytes a column only: 26,400.
  const layer = (name: string, n: number) => ({
    name,
    weight: { dtype: "f32" as const, shape: [n / 100, 100], data: new Uint8Array(4 * n) },
    actNormSq: { data: new Uint8Array(0) },
  });
  const layers = ["a", "b", "c", "d", "e"].map((name) => layer(name, 10_000));
  const reckoned = (k: number) => 256 + k * (40_000 + 3 + 256) + 121_250 + 48_000 + k * 2_500;
  assert.equal(reckoned(1), 212_265);
  const split = (memoryBudgetBytes: number) =>
    batchBySize(layers, { maxBodyBytes: 1e12, memoryBudgetBytes }).map((g) => g.map((l) => l.name).join(""));
  assert.deepEqual(split(reckoned(5)), ["abcde"]);
  assert.deepEqual(split(reckoned(5) - 1), ["abcd", "e"]);
  assert.deepEqual(split(reckoned(2)), ["ab", "cd", "e"]);
  assert.deepEqual(split(reckoned(1)), ["a", "b", "c", "d", "e"]);
  assert.throws(
    () => split(reckoned(1) - 1),
    (e: unknown) =>
      e instanceof ZpruneError && e.code === "too_large" && /^a: about 212265 bytes of working/.test(e.message),
  );
  // The method given is the one reckoned with (absent: zpruner's, the costliest).
  const magnitude = (memoryBudgetBytes: number) =>
    batchBySize(layers, { maxBodyBytes: 1e12, memoryBudgetBytes }, "magnitude");
  assert.deepEqual(magnitude(reckoned(1) - 48_000 + 26_400).map((g) => g.length), [1, 1, 1, 1, 1]);
  assert.throws(() => magnitude(reckoned(1) - 48_000 + 26_400 - 1), /: a: about 190665 bytes of working/);
});
