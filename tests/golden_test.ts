/** Every golden case of ../shared/golden (copied to tests/fixtures/golden) answered exactly through HTTP. */
import assert from "node:assert/strict";
import type { PruneResponse } from "../contract/api.ts";
import { decodeMsgpack } from "../contract/wire.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { goldenCases, goldenProblems, postPrune, startServer } from "./_server.ts";

for (const [label, options] of [["inline", { threads: 0 }], ["worker pool", { threads: 2, parallelMin: 0 }]] as const) {
  Deno.test(`golden cases answered exactly over HTTP by the CPU backend (${label})`, async () => {
    const backend = createCpuBackend(options);
    const server = await startServer({ backend });
    try {
      const cases = goldenCases();
      assert.ok(cases.length >= 12, "the golden fixtures are present");
      for (const g of cases) {
        const res = await postPrune(server.url, g.request);
        assert.equal(res.status, 200, g.name);
        assert.equal(res.headers.get("content-type"), "application/msgpack");
        const body = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
        assert.equal(body.backend, "cpu");
        assert.equal(body.layers.length, 1);
        const layer = body.layers[0]!;
        assert.equal(layer.name, g.expected.name);
        assert.deepEqual(layer.shape, g.expected.shape);
        assert.deepEqual(goldenProblems(layer.mask, g.expected), [], g.name);
        assert.equal(layer.stats.pruned, g.expected.pruned, g.name);
        assert.equal(layer.stats.total, g.expected.total);
        assert.equal(layer.stats.nonFinite, 0);
        if (g.expected.alpha !== undefined) {
          assert.ok(Math.abs(layer.stats.alpha! - g.expected.alpha) < 1e-9, `${g.name}: alpha`);
        }
        for (const k of ["decodeMs", "computeMs", "encodeMs", "totalMs"] as const) assert.ok(body.timings[k] >= 0);
      }
    } finally {
      await server.close();
      await backend.close();
    }
  });
}

Deno.test("docs/API.md's golden/ beside it holds the golden cases these tests run", () => {
  // API.md: "Examples of every request and the exact expected answers are in `golden/` beside this file."
  const api = Deno.readTextFileSync(new URL("../docs/API.md", import.meta.url));
  assert.match(api, /are in `golden\/` beside this file/);
  // docs/golden is a link to the fixtures, so the two cannot drift apart; a copy could.
  const real = (dir: string) => Deno.realPathSync(new URL(dir, import.meta.url));
  assert.equal(real("../docs/golden/"), real("./fixtures/golden/"));
  const names = [...Deno.readDirSync(new URL("./fixtures/golden/", import.meta.url))].map((e) => e.name);
  assert.equal(names.filter((n) => n.endsWith(".request.msgpack")).length, goldenCases().length);
});
