/**
 * Posts a golden request to a running zprune server and prints what came back.
 *
 *   ./node_modules/.bin/deno run -A examples/post_golden.ts [URL] [FIXTURE]
 *   (defaults: $ZPRUNE_URL, else http://127.0.0.1:8787, and tests/fixtures/golden/zpruner-layer-f16.request.msgpack;
 *   sends $ZPRUNE_TOKEN where set)
 */
import { fileURLToPath } from "node:url";
import type { PruneResponse } from "../contract/api.ts";
import { decodeMsgpack } from "../contract/wire.ts";

// "http://host:8787/" is the same server: the route is appended after one slash.
const url = (Deno.args[0] || Deno.env.get("ZPRUNE_URL") || "http://127.0.0.1:8787").replace(/\/+$/, "");
// The URL itself, not its percent-encoded pathname: a checkout under a path with a space is read too.
const fixture: string | URL = Deno.args[1] ??
  new URL("../tests/fixtures/golden/zpruner-layer-f16.request.msgpack", import.meta.url);
const token = Deno.env.get("ZPRUNE_TOKEN");

const body = await Deno.readFile(fixture).catch((e: unknown) => {
  console.error(
    `cannot read the request ${fixture instanceof URL ? fileURLToPath(fixture) : fixture}: ${(e as Error).message}`,
  );
  Deno.exit(1);
});
const res = await fetch(`${url}/v1/prune`, {
  method: "POST",
  headers: { "content-type": "application/msgpack", ...(token ? { authorization: `Bearer ${token}` } : {}) },
  body,
}).catch((e: unknown) => {
  // No server there (or no route to it): one line naming the URL, not a stack trace.
  const cause = e instanceof Error && e.cause instanceof Error ? e.cause.message : String(e);
  console.error(`cannot reach a zprune server at ${url}: ${cause} (start one with npm run serve, or give its URL)`);
  Deno.exit(1);
});
if (!res.ok) {
  console.error(res.status, await res.text());
  Deno.exit(1);
}
const answer = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
console.log(`backend ${answer.backend} on ${answer.device}, ${answer.timings.totalMs.toFixed(1)} ms`);
for (const layer of answer.layers) {
  const { pruned, total, sparsity, threshold, alpha } = layer.stats;
  console.log(
    `${layer.name} [${layer.shape.join("x")}]: pruned ${pruned}/${total} (${(100 * sparsity).toFixed(1)}%)` +
      (threshold !== undefined ? `, threshold ${threshold.toPrecision(5)}` : "") +
      (alpha !== undefined ? `, alpha ${alpha.toFixed(4)}` : ""),
  );
}
