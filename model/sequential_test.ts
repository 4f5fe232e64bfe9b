import assert from "node:assert/strict";
import { ZpruneError } from "../contract/errors.ts";
import { batchBySize } from "./sequential.ts";

Deno.test("batchBySize() keeps layers in order, each request under the limit, naming a layer that cannot fit", () => {
  const layer = (name: string, bytes: number) => ({
    name,
    weight: { data: new Uint8Array(bytes) },
    actNormSq: { data: new Uint8Array(0) },
  });
  const layers = [layer("a", 4000), layer("b", 4000), layer("c", 9000), layer("d", 500)];
  // Each layer costs its bytes, 3 per name character and 256; a request 256 more.
  const groups = batchBySize(layers, 10_000);
  assert.deepEqual(groups.map((g) => g.map((l) => l.name)), [["a", "b"], ["c"], ["d"]]);
  assert.deepEqual(batchBySize(layers, 100_000).map((g) => g.length), [4]);
  assert.throws(() => batchBySize(layers, 9_000), (e: unknown) => e instanceof ZpruneError && /^c: /.test(e.message));
});
