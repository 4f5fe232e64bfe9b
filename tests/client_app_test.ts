/**
 * The client against the real app (routes/app.ts on the CPU backend, served over HTTP in-process): every golden
 * request of tests/fixtures/golden must come back with the expected mask, and auth and contract errors must
 * surface as ZpruneError with the server's code.
 */
import assert from "node:assert/strict";
import { createApp } from "../routes/app.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { decodeMsgpack, ZpruneClient, ZpruneError } from "../client/mod.ts";
import type { PruneRequestInput } from "../contract/api.ts";

const GOLDEN = new URL("./fixtures/golden/", import.meta.url).pathname;

async function withApp(token: string, fn: (url: string) => Promise<void>): Promise<void> {
  const backend = createCpuBackend({ threads: 1 });
  const app = createApp({ backend, config: { token } });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
  try {
    await fn(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
    await backend.close();
  }
}

const bit = (b: Uint8Array, i: number) => (b[i >> 3]! >> (i & 7)) & 1;

Deno.test("pruneLayers() gets the golden masks from the real app", async () => {
  const names = [...Deno.readDirSync(GOLDEN)].map((e) => e.name).filter((n) => n.endsWith(".request.msgpack"));
  assert.ok(names.length >= 10);
  await withApp("tok", async (url) => {
    const client = new ZpruneClient({ url, token: "tok" });
    for (const file of names.sort()) {
      const req = decodeMsgpack(await Deno.readFile(GOLDEN + file)) as PruneRequestInput;
      const want = decodeMsgpack(await Deno.readFile(GOLDEN + file.replace(".request.", ".expected."))) as {
        shape: [number, number];
        mask: Uint8Array;
        ambiguous: Uint8Array;
        pruned: number;
      };
      const res = await client.pruneLayers(req);
      const got = res.layers[0]!;
      assert.deepEqual(got.shape, want.shape, file);
      assert.equal(got.stats.pruned, want.pruned, file);
      let ones = 0;
      for (let i = 0; i < want.shape[0] * want.shape[1]; i++) {
        ones += bit(got.mask, i);
        if (!bit(want.ambiguous, i)) assert.equal(bit(got.mask, i), bit(want.mask, i), `${file}: element ${i}`);
      }
      assert.equal(ones, want.pruned, file);
    }
  });
});

Deno.test("pruneLayers() surfaces the real app's auth and validation errors as ZpruneError", async () => {
  await withApp("tok", async (url) => {
    const req: PruneRequestInput = {
      method: "magnitude",
      sparsity: 0.5,
      layers: [{ name: "w", weight: { dtype: "f32", shape: [2, 2], data: new Uint8Array(15) } }],
    };
    await assert.rejects(new ZpruneClient({ url, token: "wrong" }).pruneLayers(req), (e: unknown) => {
      assert.ok(e instanceof ZpruneError);
      assert.deepEqual([e.code, e.status], ["unauthorized", 401]);
      return true;
    });
    await assert.rejects(new ZpruneClient({ url, token: "tok" }).pruneLayers(req), (e: unknown) => {
      assert.ok(e instanceof ZpruneError);
      assert.deepEqual([e.code, e.status], ["shape_mismatch", 422]);
      assert.match(e.message, /layers\[0\]\.weight/);
      // The id the server logged the request under (a fresh UUID: the client sends none).
      assert.match(e.headers["X-Request-Id"] ?? "", /^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$/);
      return true;
    });
  });
});

Deno.test("pruneLayers() takes every answer of the real app: its count is the pattern's (random layers)", async () => {
  // The client refuses a mask that does not prune what the pattern does (prunedCounts): the real server must never be
  // refused, whatever the shape and sparsity, the float-rounding corners of floor(sparsity * rows * cols) included.
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const patterns = ["layer", "row", "1:2", "2:4", "3:8", "1:4"];
  const corners = [0, 0.1, 0.29, 0.3, 0.5, 0.7, 0.9, 0.99, 1 - 2 ** -40];
  await withApp("", async (url) => {
    const client = new ZpruneClient({ url });
    for (let i = 0; i < 240; i++) {
      const rows = 1 + Math.floor(rand() * 24), cols = 8 * (1 + Math.floor(rand() * 8));
      const pattern = patterns[i % patterns.length]!;
      const sparsity = i % 3 === 0 ? corners[(i / 3) % corners.length]! : rand();
      const w = Float32Array.from({ length: rows * cols }, () => rand() - 0.5);
      const req: PruneRequestInput = {
        method: "magnitude",
        pattern,
        sparsity,
        layers: [{ name: `l${i}`, weight: { dtype: "f32", shape: [rows, cols], data: new Uint8Array(w.buffer) } }],
      };
      const res = await client.pruneLayers(req);
      const got = res.layers[0]!.stats.pruned;
      // An independent count of what API.md's Selection prunes, with the product taken first (the golden files').
      const want = pattern === "layer"
        ? Math.floor(sparsity * (rows * cols))
        : pattern === "row"
        ? rows * Math.floor(sparsity * cols)
        : rows * (cols / Number(pattern.split(":")[1])) * Number(pattern.split(":")[0]);
      assert.equal(got, want, `${pattern} ${sparsity} ${rows}x${cols}`);
    }
  });
});
