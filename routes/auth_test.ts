import assert from "node:assert/strict";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { createApp } from "./app.ts";

/** The status of GET /v1/info on an app whose token is `s3cret-token`, sent with `authorization` (if any). */
async function statusWith(authorization?: string): Promise<number> {
  const backend = createCpuBackend({ threads: 0 });
  try {
    const app = createApp({ backend, config: { token: "s3cret-token", log: false } });
    const res = await app.request("/v1/info", { headers: authorization === undefined ? {} : { authorization } });
    await res.body?.cancel();
    return res.status;
  } finally {
    await backend.close();
  }
}

Deno.test("bearerAuth refuses a token that only starts with the configured one, or is a prefix of it", async () => {
  // The comparison walks the expected token's bytes only: without its length term, a longer token that starts with
  // the right one would pass. A prefix wraps around (b[i % b.length]) and must fail too.
  assert.equal(await statusWith("Bearer s3cret-token-and-more"), 401);
  assert.equal(await statusWith("Bearer s3cret"), 401);
  assert.equal(await statusWith("Bearer s3cret-token"), 200);
});

Deno.test("bearerAuth takes the scheme name in any case (RFC 9110 section 11.1)", async () => {
  assert.equal(await statusWith("bearer s3cret-token"), 200);
  assert.equal(await statusWith("BEARER s3cret-token"), 200);
  // The token itself stays case-sensitive.
  assert.equal(await statusWith("bearer S3CRET-TOKEN"), 401);
});
