/**
 * The same app under Bun (CPU backend; Bun has no WebGPU): start `bun --no-env-file main.ts` as a real process and
 * check golden answers, including one large enough to use the worker pool, the body limit, and Bun's idle timeout.
 */
import assert from "node:assert/strict";
import type { PruneResponse } from "../contract/api.ts";
import { decodeMsgpack } from "../contract/wire.ts";
import { goldenCase, goldenProblems, postPrune, within, writeAll } from "./_server.ts";

const root = new URL("../", import.meta.url);
const bun = new URL("node_modules/.bin/bun", root).pathname;
Deno.test({
  name: "bun main.ts serves golden answers exactly (CPU backend)",
  async fn() {
    const child = new Deno.Command(bun, {
      args: ["--no-env-file", "main.ts"],
      cwd: root.pathname,
      env: { ZPRUNE_BACKEND: "cpu", PORT: "0", HOST: "127.0.0.1", ZPRUNE_LOG: "0", ZPRUNE_MAX_BODY_BYTES: "4000000" },
      stdout: "inherit",
      stderr: "piped",
    }).spawn();
    try {
      const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
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
      child.stderr.cancel().catch(() => {});
      for (const name of ["zpruner-layer-f32-512x1536", "zpruner-2of4-f16", "wanda-row-bf16"]) {
        const g = goldenCase(name);
        const res = await postPrune(url, g.request);
        assert.equal(res.status, 200, name);
        const body = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
        assert.deepEqual(goldenProblems(body.layers[0]!.mask, g.expected), [], name);
      }
      // HTTP/1.0 without a Host header (load balancers' health checks): Bun gives such a request its bare path as
      // its URL, which the router once read as another path, answering every route 404.
      for (
        const [req, status] of [["GET /healthz HTTP/1.0\r\n\r\n", "200"], [
          "GET /nope HTTP/1.0\r\n\r\n",
          "404",
        ]] as const
      ) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(url).port) });
        try {
          await conn.write(new TextEncoder().encode(req));
          const text = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
          assert.match(text, new RegExp(`^HTTP/1\\.[01] ${status} `), `${req.trim()}: ${text}`);
          if (status === "200") assert.match(text, /\{"status":"ok","backend":"cpu"\}$/);
        } finally {
          try {
            conn.close();
          } catch { /* closed by the server after an HTTP/1.0 answer */ }
        }
      }
      const bad = await postPrune(url, new Uint8Array([0x81]));
      assert.equal(bad.status, 400);
      assert.equal((await bad.json()).error.code, "bad_msgpack");
      // Over ZPRUNE_MAX_BODY_BYTES: the contract's 413, from the app, whether the length is announced or streamed
      // (Bun's own limit once answered a bare 413 or failed the stream, which the app counted as a 500).
      const big = new Uint8Array(5_000_000);
      const streamed = () =>
        new ReadableStream<Uint8Array>({
          start(c) {
            for (let o = 0; o < big.length; o += 1 << 20) c.enqueue(big.subarray(o, o + (1 << 20)));
            c.close();
          },
        });
      for (const body of [big, streamed()]) {
        const res = await fetch(`${url}/v1/prune`, {
          method: "POST",
          headers: { "content-type": "application/msgpack" },
          body,
        });
        assert.equal(res.status, 413);
        assert.equal(res.headers.get("x-zprune-error"), "too_large");
        assert.equal((await res.json()).error.code, "too_large");
      }
      // What Bun answers itself (README, "Known limitations"): a malformed chunk, both Content-Length and
      // Transfer-Encoding, headers past 16 KiB; and a client that shuts its sending side mid-body gets no answer.
      const port = Number(new URL(url).port);
      const head = "POST /v1/prune HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n";
      for (
        const [label, bytes, status, halfClose] of [
          ["malformed chunk", `${head}Transfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n`, "400", false],
          [
            "Content-Length and Transfer-Encoding",
            `${head}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
            "400",
            false,
          ],
          [
            "headers past 16 KiB",
            `GET /nope HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(17_000)}\r\n\r\n`,
            "431",
            false,
          ],
          ["half-closed mid-body", `${head}Content-Length: 1000\r\n\r\n${"\x90".repeat(100)}`, null, true],
        ] as const
      ) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        try {
          await writeAll(conn, new TextEncoder().encode(bytes));
          if (halfClose) await conn.closeWrite();
          const text = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
          if (status === null) {
            assert.equal(text, "", `${label}: no answer`);
            continue;
          }
          assert.match(text, new RegExp(`^HTTP/1\\.1 ${status} `), `${label}: ${text}`);
          const [headers = "", body = ""] = text.split("\r\n\r\n");
          assert.doesNotMatch(headers, /x-zprune-error/i, label);
          assert.equal(body, "", `${label}: a bare answer`);
        } finally {
          try {
            conn.close();
          } catch { /* closed by the server */ }
        }
      }
      // The malformed chunk and the half-closed upload reach the app, as 499, counted once their handlers end (after
      // Bun has closed their connections); the other two never do.
      const counted499 = /^zprune_requests_total\{route="\/v1\/prune",status="499"\} 2$/m;
      let metrics = "", waiting = true;
      try {
        await within(
          (async () => {
            while (waiting && !counted499.test(metrics = await (await fetch(`${url}/metrics`)).text())) {
              await new Promise((r) => setTimeout(r, 50));
            }
          })(),
          "two 499s in /metrics",
        );
      } finally {
        waiting = false;
      }
      assert.match(metrics, /^zprune_requests_total\{route="\/v1\/prune",status="413"\} 2$/m);
      assert.doesNotMatch(metrics, /status="500"/);
      assert.match(metrics, /^zprune_requests_total\{route="\/v1\/prune",status="400"\} 1$/m);
      assert.match(metrics, /^zprune_requests_total\{route="unmatched",status="404"\} 1$/m);
      assert.doesNotMatch(metrics, /status="431"/);
    } finally {
      child.kill("SIGTERM");
      await child.status;
    }
  },
});

Deno.test({
  name: "Bun: a request computing past the idle timeout keeps its connection; an idle one is closed after it",
  async fn() {
    const child = new Deno.Command(bun, {
      args: ["--no-env-file", "tests/_bun_idle_child.ts"],
      cwd: root.pathname,
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    let conn: Deno.Conn | undefined;
    try {
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const port = Number((await reader.read()).value?.trim());
      assert.ok(port > 0, "the child's port");
      reader.releaseLock();
      child.stdout.cancel().catch(() => {});
      conn = await Deno.connect({ hostname: "127.0.0.1", port });
      // The handler takes 5 s, well past the 1 s idle timeout: Bun cut such a connection after 2-4 s (and a real
      // server's after 255-510 s), as it counts a handler's computing as idle time.
      await conn.write(new TextEncoder().encode("GET /?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n"));
      const buf = new Uint8Array(4096);
      let text = "";
      while (!text.endsWith("done")) {
        const n = await conn.read(buf);
        assert.ok(n !== null, `the connection closed before the answer: ${JSON.stringify(text)}`);
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
      assert.match(text, /^HTTP\/1\.1 200 /);
      // The answer is out: the connection is idle and the server's timeout applies again.
      const t0 = Date.now();
      const closed = await Promise.race([
        conn.read(buf).then((n) => n === null).catch(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 10_000)),
      ]);
      assert.ok(closed, "an idle keep-alive connection is closed by the server's idle timeout");
      assert.ok(Date.now() - t0 < 10_000);
    } finally {
      conn?.close();
      child.kill("SIGKILL");
      await child.status;
    }
  },
});
