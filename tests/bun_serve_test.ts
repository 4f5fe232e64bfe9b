/**
 * The same app under Bun (CPU backend; Bun has no WebGPU): start `bun main.ts` as a real process and check
 * golden answers, including one large enough to use the worker pool.
 */
import assert from "node:assert/strict";
import type { PruneResponse } from "../contract/api.ts";
import { decodeMsgpack } from "../contract/wire.ts";
import { goldenCase, goldenProblems, postPrune } from "./_server.ts";

const root = new URL("../", import.meta.url);
const bun = new URL("node_modules/.bin/bun", root).pathname;
Deno.test({
  name: "bun main.ts serves golden answers exactly (CPU backend)",
  async fn() {
    const child = new Deno.Command(bun, {
      args: ["main.ts"],
      cwd: root.pathname,
      env: { ZPRUNE_BACKEND: "cpu", PORT: "0", HOST: "127.0.0.1", ZPRUNE_LOG: "0" },
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    try {
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      const deadline = Date.now() + 30_000;
      let m: RegExpExecArray | null = null;
      while (!(m = /listening on (http:\/\/\S+) backend=(\w+).*runtime=(\w+)/.exec(text)) && Date.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
      assert.ok(m, `startup line: ${text}`);
      assert.equal(m[2], "cpu");
      assert.equal(m[3], "bun");
      const url = m[1]!;
      reader.releaseLock();
      child.stdout.cancel().catch(() => {});
      for (const name of ["zpruner-layer-f32-512x1536", "zpruner-2of4-f16", "wanda-row-bf16"]) {
        const g = goldenCase(name);
        const res = await postPrune(url, g.request);
        assert.equal(res.status, 200, name);
        const body = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
        assert.deepEqual(goldenProblems(body.layers[0]!.mask, g.expected), [], name);
      }
      const bad = await postPrune(url, new Uint8Array([0x81]));
      assert.equal(bad.status, 400);
      assert.equal((await bad.json()).error.code, "bad_msgpack");
    } finally {
      child.kill("SIGTERM");
      await child.status;
    }
  },
});
