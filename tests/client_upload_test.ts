/**
 * What the TypeScript client's upload costs in memory, and that the body it streams is the request's msgpack whole,
 * with its length declared (a server answers 413 from Content-Length before reading a body over its limit).
 */
import assert from "node:assert/strict";
import { encodeRequest, tensor, ZpruneClient, ZpruneError } from "../client/mod.ts";
import type { PruneRequestInput } from "../contract/api.ts";
import { childJson } from "./_server.ts";

/** Serves `handler` on an ephemeral port for the duration of `fn`. */
async function withServer(handler: (req: Request) => Promise<Response>, fn: (url: string) => Promise<void>) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  try {
    await fn(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
  }
}

const refused = (message: string) => Response.json({ error: { code: "invalid_request", message } }, { status: 422 });

Deno.test("pruneLayers() sends the request's msgpack whole, with its length, and again on a retry", async () => {
  // Tensors below and above 1 KiB (msgpack pieces of their own) and of several MiB, at odd offsets, in two layers.
  const backing = new Uint8Array(7 * 2 ** 20 + 64).map((_, i) => Math.imul(i, 2654435761) >>> 24);
  const request: PruneRequestInput = {
    method: "wanda",
    sparsity: 0.25,
    return: ["mask", "score"],
    layers: [
      {
        name: "big",
        weight: { dtype: "f16", shape: [1024, 3 * 1024 + 1], data: backing.subarray(3, 3 + 2 * 1024 * 3073) },
        actNormSq: tensor("f32", [3073], new Float32Array(3073).fill(2)),
      },
      { name: "small", weight: { dtype: "bf16", shape: [2, 3], data: backing.subarray(1, 13) } },
    ],
  };
  const want = encodeRequest(request);
  const got: { length: string | null; body: Uint8Array }[] = [];
  await withServer(async (req) => {
    got.push({ length: req.headers.get("content-length"), body: new Uint8Array(await req.arrayBuffer()) });
    // The first attempt is told to come back: the retry must send the same bytes again.
    return got.length === 1
      ? Response.json({ error: { code: "busy", message: "later" } }, { status: 429, headers: { "retry-after": "0" } })
      : refused("enough");
  }, async (url) => {
    const client = new ZpruneClient({ url, retries: 1, sleep: () => Promise.resolve() });
    await assert.rejects(client.pruneLayers(request), (e) => e instanceof ZpruneError && e.code === "invalid_request");
  });
  assert.equal(got.length, 2);
  for (const { length, body } of got) {
    assert.equal(length, String(want.byteLength));
    assert.ok(body.byteLength === want.byteLength && body.every((b, i) => b === want[i]), "the body as encoded");
  }
});

Deno.test({
  name: "pruneLayers() holds under three copies of a large layer's weights while it uploads (four before)",
  ignore: Deno.build.os !== "linux", // the child reads its peak memory from /proc
  async fn() {
    // Before 2026-11-30 the body was one array of the whole msgpack, which Deno's fetch copies again (three more copies
    // at the peak): 4.0 copies of a 128 MiB layer here. As a Blob of parts, about 2: the Blob's copy, and the parts
    // fetch has read from it and sent but the garbage collector has not yet freed (about 1.5 for 512 MiB).
    await withServer(async (req) => {
      let n = 0;
      for await (const chunk of req.body!) n += chunk.byteLength;
      return refused(`read ${n} bytes`);
    }, async (url) => {
      const { copies } = await childJson<{ copies: number }>(new URL("./_client_upload_child.ts", import.meta.url), [
        url,
        "128",
      ]);
      assert.ok(copies < 3, `the upload held ${copies.toFixed(2)} copies of the weights at its peak`);
    });
  },
});
