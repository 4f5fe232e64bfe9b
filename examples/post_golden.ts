/**
 * Posts a golden request to a running zprune server and prints what came back.
 *
 *   ./node_modules/.bin/deno run -A examples/post_golden.ts [URL] [FIXTURE]
 *   (defaults: $ZPRUNE_URL, else http://127.0.0.1:8787, and tests/fixtures/golden/zpruner-layer-f16.request.msgpack;
 *   sends $ZPRUNE_TOKEN where set)
 */
import type { PruneResponse } from "../contract/api.ts";
import { decodeMsgpack } from "../contract/wire.ts";

const url = Deno.args[0] ?? Deno.env.get("ZPRUNE_URL") ?? "http://127.0.0.1:8787";
const fixture = Deno.args[1] ??
  new URL("../tests/fixtures/golden/zpruner-layer-f16.request.msgpack", import.meta.url).pathname;
const token = Deno.env.get("ZPRUNE_TOKEN");

const res = await fetch(`${url}/v1/prune`, {
  method: "POST",
  headers: { "content-type": "application/msgpack", ...(token ? { authorization: `Bearer ${token}` } : {}) },
  body: await Deno.readFile(fixture),
});
if (!res.ok) {
  console.error(res.status, await res.text());
  Deno.exit(1);
}
const body = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
console.log(`backend ${body.backend} on ${body.device}, ${body.timings.totalMs.toFixed(1)} ms`);
for (const layer of body.layers) {
  const { pruned, total, sparsity, threshold, alpha } = layer.stats;
  console.log(
    `${layer.name} [${layer.shape.join("x")}]: pruned ${pruned}/${total} (${(100 * sparsity).toFixed(1)}%)` +
      (threshold !== undefined ? `, threshold ${threshold.toPrecision(5)}` : "") +
      (alpha !== undefined ? `, alpha ${alpha.toFixed(4)}` : ""),
  );
}
