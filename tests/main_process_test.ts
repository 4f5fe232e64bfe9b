/**
 * main.ts as a process of its own: the SIGTERM drain (uploads in progress finish, new requests get 503, a second
 * signal exits 1, an answer still being written counts), its one JSON log line per request, a flood of idle
 * connections, a startup failure, and the Docker image's CMD and HEALTHCHECK run outside Docker.
 */
import assert from "node:assert/strict";
import type { PruneResponse } from "../contract/api.ts";
import { decodeMsgpack, encodeMsgpack } from "../contract/wire.ts";
import { assertGoldenExact, f32Layer, gauge, goldenCase, popcount, postPrune, within, writeAll } from "./_server.ts";

const ROOT = new URL("../", import.meta.url);
const DENO = new URL("node_modules/.bin/deno", ROOT).pathname;

/** A server process: its output lines as they come, and their waiters. */
interface Proc {
  child: Deno.ChildProcess;
  /** stdout's lines: the request log. */
  lines: string[];
  /** Resolves with the first line of stdout or stderr matching `re`; rejects after `ms` or when both have ended. */
  waitLine(re: RegExp, ms: number): Promise<RegExpExecArray>;
  /** stderr so far: the startup line, drain messages, errors. */
  stderr(): string;
  /** The exit status, as soon as the process has exited: its last output may still be on its way to `lines`. */
  status: Promise<Deno.CommandStatus>;
  /**
   * The exit status once the process has exited and both its outputs have been read to their end: everything it wrote
   * is then in `lines` and `stderr()`. (The exit and the reads are separate events; `status` may come first.)
   */
  exited: Promise<Deno.CommandStatus>;
}

function spawn(cmd: string[], env: Record<string, string>): Proc {
  const [bin, ...args] = cmd;
  const exe = bin!.startsWith("./") ? new URL(bin!, ROOT).pathname : bin!;
  const child = new Deno.Command(exe, {
    args,
    cwd: ROOT.pathname,
    env: { ZPRUNE_TOKEN: "", ZPRUNE_LOG: "1", ZPRUNE_CORS_ORIGINS: "", DENO_NO_UPDATE_CHECK: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const errLines: string[] = [];
  const waiters = new Set<{ re: RegExp; resolve: (m: RegExpExecArray) => void; reject: (e: Error) => void }>();
  let open = 2;
  let errText = "";
  const check = () => {
    for (const w of waiters) {
      for (const l of [...errLines, ...lines]) {
        const m = w.re.exec(l);
        if (m) {
          waiters.delete(w);
          w.resolve(m);
          break;
        }
      }
      if (open === 0 && waiters.has(w)) {
        waiters.delete(w);
        w.reject(new Error(`output ended without ${w.re}; stderr: ${errText.slice(-2000)}`));
      }
    }
  };
  const collect = async (stream: ReadableStream<Uint8Array>, into: string[], onText = (_: string) => {}) => {
    let buf = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      onText(chunk);
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        into.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
      check();
    }
    if (buf) into.push(buf);
    open--;
    check();
  };
  const outputs = Promise.all([collect(child.stdout, lines), collect(child.stderr, errLines, (t) => errText += t)]);
  return {
    child,
    lines,
    stderr: () => errText,
    status: child.status,
    exited: Promise.all([child.status, outputs]).then(([status]) => status),
    waitLine(re, ms) {
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => {
          waiters.delete(w);
          reject(
            new Error(
              `no line matching ${re} within ${ms} ms; output: ${[...errLines, ...lines].join("\n").slice(-2000)}`,
            ),
          );
        }, ms);
        const w = {
          re,
          resolve: (m: RegExpExecArray) => (clearTimeout(t), resolve(m)),
          reject: (e: Error) => (clearTimeout(t), reject(e)),
        };
        waiters.add(w);
        check();
      });
    },
  };
}

/** Closes a test's raw connection, if any, and kills its server if it is still running. */
async function stop(proc: Proc, conn?: Deno.Conn): Promise<void> {
  conn?.close();
  try {
    proc.child.kill("SIGKILL");
  } catch { /* already exited */ }
  await proc.status;
}

const LISTENING = /^zprune listening on http:\/\/127\.0\.0\.1:(\d+) backend=cpu /;
const SERVER_ENV = { PORT: "0", HOST: "127.0.0.1", ZPRUNE_BACKEND: "cpu" };

Deno.test("main.ts: SIGTERM drains the request computing, exits 0; one short JSON log line per request", async () => {
  const proc = spawn([DENO, "run", "-A", "main.ts"], SERVER_ENV);
  let requests = 0;
  const req = (path: string, init?: RequestInit) => (requests++, fetch(`${url}${path}`, init));
  let url = "";
  try {
    const port = Number((await proc.waitLine(LISTENING, 30_000))[1]);
    url = `http://127.0.0.1:${port}`;
    const prune = (body: Uint8Array, id: string) =>
      req("/v1/prune", {
        method: "POST",
        headers: { "content-type": "application/msgpack", "x-request-id": id },
        body: body as Uint8Array<ArrayBuffer>,
      });

    // A 1 MiB request, a refused one and a health check: each gets exactly one log line, without tensor data.
    const oneMiB = encodeMsgpack({ sparsity: 0.5, layers: [f32Layer("log-layer", 512, 512, 7)] });
    assert.ok(oneMiB.length > 1024 * 1024);
    const ok = await prune(oneMiB, "log-1mib");
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    const bad = await prune(new Uint8Array([0xc1]), "log-bad");
    assert.equal(bad.status, 400);
    await bad.body?.cancel();
    assert.equal((await req("/healthz", { headers: { "x-request-id": "log-health" } })).status, 200);

    // A large request (4096 x 4096 f32, 64 MiB); SIGTERM while it computes. It computes for about 200 ms here: the
    // window for the signal, after /metrics shows it computing, must outlast a loaded machine's scheduling stalls.
    const rows = 4096, cols = 4096;
    const big = encodeMsgpack({ sparsity: 0.5, layers: [f32Layer("drain-layer", rows, cols, 11)] });
    const pending = prune(big, "drain-big");
    let computing = false;
    for (let i = 0; i < 1000 && !computing; i++) {
      const text = await (await req("/metrics")).text();
      computing = /^zprune_requests_in_flight 1$/m.test(text);
      if (!computing) await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(computing, "the large request was seen computing");
    proc.child.kill("SIGTERM");
    await proc.waitLine(/^zprune: SIGTERM, draining 1 request/, 10_000);

    // Requests arriving now are answered 503 until the drain ends (checked with an upload that holds it open, in
    // the tests below: this one's end is the computation's).

    // The request in flight is still answered, completely.
    const res = await within(pending, "the drained request", 60_000);
    assert.equal(res.status, 200);
    const body = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
    const l = body.layers[0]!;
    assert.equal(l.name, "drain-layer");
    assert.deepEqual(l.shape, [rows, cols]);
    assert.equal(l.stats.pruned, Math.floor(0.5 * rows * cols));
    assert.equal(popcount(l.mask, rows * cols), l.stats.pruned);

    const status = await within(proc.exited, "exit after SIGTERM", 10_000);
    assert.equal(status.code, 0, proc.stderr());

    // stdout: one JSON line per request and nothing else; the startup and draining lines went to stderr.
    const json = proc.lines.filter((x) => x.startsWith("{"));
    const other = proc.lines.filter((x) => !x.startsWith("{") && x.trim() !== "");
    assert.deepEqual(other, []);
    assert.match(proc.stderr(), /^zprune listening on /m);
    assert.match(proc.stderr(), /^zprune: SIGTERM, draining 1 request/m);
    assert.equal(json.length, requests, `${json.length} log lines for ${requests} requests`);
    const entries = json.map((x) => JSON.parse(x) as Record<string, unknown>);
    const byId = (id: string) => {
      const found = entries.filter((e) => e.id === id);
      assert.equal(found.length, 1, `one log line for ${id}`);
      return found[0]!;
    };
    const one = byId("log-1mib");
    const oneLine = json[entries.indexOf(one)]!;
    assert.ok(oneLine.length < 2048, `the log line of a 1 MiB request is ${oneLine.length} bytes`);
    assert.equal(one.status, 200);
    assert.equal(one.method, "POST");
    assert.equal(one.path, "/v1/prune");
    assert.equal(one.layers, 1);
    assert.equal(one.elements, 512 * 512);
    assert.equal(typeof one.ms, "number");
    const t = one.timings as Record<string, unknown>;
    for (const k of ["decodeMs", "computeMs", "encodeMs", "totalMs"]) assert.equal(typeof t[k], "number", k);
    for (const k of ["weight", "data", "mask", "actNormSq", "layersData"]) assert.ok(!(k in one), k);
    assert.deepEqual({ status: byId("log-bad").status, error: byId("log-bad").error }, {
      status: 400,
      error: "bad_msgpack",
    });
    assert.equal(byId("log-health").status, 200);
    const drained = byId("drain-big");
    assert.equal(drained.status, 200);
    assert.equal(drained.elements, rows * cols);
    for (const line of json) assert.ok(line.length < 2048, line.slice(0, 200));
  } finally {
    await stop(proc);
  }
});

/** One HTTP/1.1 answer read from a raw connection: status, headers and its body (by Content-Length). */
async function readAnswer(conn: Deno.Conn): Promise<{ status: number; headers: Headers; body: Uint8Array }> {
  const chunks: Uint8Array[] = [];
  let buf = new Uint8Array(0);
  const more = async () => {
    const chunk = new Uint8Array(256 * 1024);
    const n = await conn.read(chunk);
    if (n === null) throw new Error(`connection closed after ${buf.length} bytes of the answer`);
    chunks.push(chunk.subarray(0, n));
    buf = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
    let o = 0;
    for (const c of chunks) (buf.set(c, o), o += c.length);
  };
  const headEnd = () =>
    buf.findIndex((_, i) => buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10);
  let end;
  while ((end = headEnd()) < 0) await more();
  const [statusLine, ...lines] = new TextDecoder().decode(buf.subarray(0, end)).split("\r\n");
  const headers = new Headers();
  for (const l of lines) headers.append(l.slice(0, l.indexOf(":")).trim(), l.slice(l.indexOf(":") + 1).trim());
  const length = headers.get("content-length");
  assert.ok(length !== null, `Content-Length in ${statusLine}`);
  while (buf.length < end + 4 + Number(length)) await more();
  return { status: Number(statusLine!.split(" ")[1]), headers, body: buf.slice(end + 4, end + 4 + Number(length)) };
}

/**
 * A POST /v1/prune of `body` on a raw connection of which only the first `sent` bytes (head included) are sent,
 * once the server holds some of them: an upload in progress. The caller sends the rest, or not.
 */
async function startUpload(url: string, body: Uint8Array, sent: number, id: string) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(url).port) });
  const head = `POST /v1/prune HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/msgpack\r\n` +
    `X-Request-Id: ${id}\r\nContent-Length: ${body.length}\r\n\r\n`;
  const all = new Uint8Array([...new TextEncoder().encode(head), ...body]);
  await writeAll(conn, all.subarray(0, sent));
  let held = 0;
  for (let i = 0; i < 500 && held === 0; i++) {
    held = await gauge(url, "zprune_body_bytes_held");
    if (held === 0) await new Promise((r) => setTimeout(r, 10));
  }
  assert.ok(held > 0, "the server is reading the upload");
  return { conn, rest: all.subarray(sent) };
}

/**
 * SIGTERM while a 4 MiB body is still uploading: requests arriving during the drain are answered 503
 * `unavailable` with Retry-After, the upload then completes and is answered 200 in full, and the process exits 0.
 * (Deno 2.9's server.shutdown() alone made the rest of such a body unreadable, denoland/deno#36809: the upload was
 * answered 499 or 500, never 200.)
 */
async function uploadDuringDrain(cmd: string[]): Promise<void> {
  const proc = spawn(cmd, SERVER_ENV);
  let conn: Deno.Conn | undefined;
  try {
    const url = `http://127.0.0.1:${(await proc.waitLine(LISTENING, 30_000))[1]}`;
    const rows = 1024, cols = 1024;
    const body = encodeMsgpack({ sparsity: 0.5, layers: [f32Layer("upload-layer", rows, cols, 5)] });
    const upload = await startUpload(url, body, 1024 * 1024, "drain-upload");
    conn = upload.conn;
    proc.child.kill("SIGTERM");
    const draining = await proc.waitLine(/^zprune: SIGTERM, draining (\d+) request/, 10_000);

    // Requests during the drain: a health check (a load balancer takes the server out) and a prune.
    const health = await fetch(`${url}/healthz`, { headers: { "x-request-id": "drain-health" } });
    const prune = await postPrune(url, goldenCase("tiny-zpruner-layer-f32").request, { "x-request-id": "drain-prune" });
    for (const r of [health, prune]) {
      assert.equal(r.status, 503);
      assert.equal(r.headers.get("retry-after"), "1");
      assert.equal(r.headers.get("x-zprune-error"), "unavailable");
      assert.match(r.headers.get("content-type") ?? "", /^application\/json/);
      const e = (await r.json()) as { error: { code: string; message: string } };
      assert.deepEqual(Object.keys(e.error).sort(), ["code", "message"]);
      assert.equal(e.error.code, "unavailable");
      assert.match(e.error.message, /shutting down/);
    }
    // The last counts can still be scraped, the refusals above among them.
    const scrape = await fetch(`${url}/metrics`);
    assert.equal(scrape.status, 200);
    assert.match(await scrape.text(), /^zprune_requests_total\{route="\/healthz",status="503"\} 1$/m);
    // Seen on a raw connection: the refusal asks the client to close it.
    const raw = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(url).port) });
    try {
      await writeAll(raw, new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
      const a = await readAnswer(raw);
      assert.deepEqual([a.status, a.headers.get("connection")], [503, "close"]);
    } finally {
      raw.close();
    }

    // The upload goes on well after the signal, and is answered in full.
    await new Promise((r) => setTimeout(r, 500));
    for (let o = 0; o < upload.rest.length; o += 512 * 1024) {
      await writeAll(conn, upload.rest.subarray(o, o + 512 * 1024));
      await new Promise((r) => setTimeout(r, 50));
    }
    const answer = await within(readAnswer(conn), "the upload's answer", 30_000);
    assert.equal(answer.status, 200, new TextDecoder().decode(answer.body.subarray(0, 300)));
    assert.equal(answer.headers.get("connection"), "close");
    const l = (decodeMsgpack(answer.body) as PruneResponse).layers[0]!;
    assert.equal(l.name, "upload-layer");
    assert.equal(l.stats.pruned, Math.floor(0.5 * rows * cols));
    assert.equal(popcount(l.mask, rows * cols), l.stats.pruned);

    const status = await within(proc.exited, "exit after the drain", 10_000);
    assert.equal(status.code, 0, proc.stderr());
    assert.match(proc.stderr(), /^zprune: drained in \d+\.\d s; every request was answered; exit 0$/m);
    const entries = proc.lines.filter((x) => x.startsWith("{")).map((x) => JSON.parse(x) as Record<string, unknown>);
    const status503 = entries.filter((e) => String(e.id).startsWith("drain-") && e.status === 503).map((e) => e.id);
    assert.deepEqual(status503.sort(), ["drain-health", "drain-prune"], "one log line per refused request");
    assert.equal(entries.find((e) => e.id === "drain-upload")?.status, 200);
    assert.equal(draining[1], "1", "the upload counted in the draining line");
  } finally {
    await stop(proc, conn);
  }
}

Deno.test("main.ts: SIGTERM mid-upload: the upload gets 200, new ones 503 with Retry-After, exit 0", async () => {
  await uploadDuringDrain([DENO, "run", "-A", "main.ts"]);
});

Deno.test("bun main.ts: SIGTERM mid-upload: the upload gets 200, new ones 503 with Retry-After, exit 0", async () => {
  await uploadDuringDrain(["./node_modules/.bin/bun", "--no-env-file", "main.ts"]);
});

Deno.test("main.ts: a flood of idle connections that exhausts file descriptors does not end the server", async () => {
  // Deno's listener stops for good when accept() fails with EMFILE (and its rejection used to end the process).
  // A low descriptor limit makes the flood small: 256, of which the runtime takes a few dozen.
  const proc = spawn(["bash", "-c", 'ulimit -n 256 && exec "$0" run -A main.ts', DENO], SERVER_ENV);
  const conns: Deno.Conn[] = [];
  try {
    const port = Number((await proc.waitLine(LISTENING, 30_000))[1]);
    const partial = new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    for (let i = 0; i < 400 && !/listener .* failed/.test(proc.stderr()); i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port }).catch(() => null);
      if (!c) break; // refused: the listener is down
      conns.push(c);
      // Reset: accepted by the kernel while the listener failed, so never by the server. The flood did its work.
      if (!(await writeAll(c, partial).then(() => true, () => false))) break;
    }
    const deadline = Date.now() + 10_000;
    while (!/listener .* failed/.test(proc.stderr()) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.match(proc.stderr(), /zprune: the listener on 127\.0\.0\.1:\d+ failed \(.*Too many open files/);
    // A connection accepted before the failure is still served.
    await writeAll(conns[0]!, new TextEncoder().encode("1\r\nConnection: close\r\n\r\n"));
    assert.equal((await within(readAnswer(conns[0]!), "the first connection's answer", 10_000)).status, 200);
    for (const c of conns.splice(0)) c.close();
    while (!/listening on 127\.0\.0\.1:\d+ again/.test(proc.stderr()) && Date.now() < deadline + 10_000) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(res.status, 200, await res.text());
    assert.doesNotMatch(proc.stderr(), /Uncaught/);
    proc.child.kill("SIGTERM");
    assert.equal((await within(proc.exited, "exit after SIGTERM", 10_000)).code, 0, proc.stderr());
  } finally {
    for (const c of conns) c.close();
    await stop(proc);
  }
});

Deno.test("main.ts: a startup failure is one line naming its cause and exit 1, not a stack trace", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const cases: [Record<string, string>, RegExp][] = [
      [{ PORT: "abc" }, /^zprune: bad configuration: PORT must be an integer from 0 to 65535, got "abc"$/],
      [{ ZPRUNE_LOG: "false" }, /^zprune: bad configuration: ZPRUNE_LOG must be 0 or 1, got "false"$/],
      [{ PORT: String(busy.addr.port) }, new RegExp(`^zprune: cannot listen on 127\\.0\\.0\\.1:${busy.addr.port}: .+`)],
    ];
    for (const [env, want] of cases) {
      const out = await new Deno.Command(DENO, {
        args: ["run", "-A", "main.ts"],
        cwd: ROOT.pathname,
        env: { ...SERVER_ENV, DENO_NO_UPDATE_CHECK: "1", ...env },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(60_000),
      }).output();
      const err = new TextDecoder().decode(out.stderr).trim().split("\n");
      assert.equal(out.code, 1, JSON.stringify(env));
      assert.equal(err.length, 1, `one line: ${err.join("\n")}`);
      assert.match(err[0]!, want);
    }
  } finally {
    busy.close();
  }
});

Deno.test("main.ts: arguments are refused with one line and exit 2 (configuration is by environment)", async () => {
  for (const cmd of [[DENO, "run", "-A", "main.ts", "--help"], ["./node_modules/.bin/bun", "main.ts", "--port=1"]]) {
    const proc = spawn(cmd, SERVER_ENV);
    const status = await within(proc.exited, `${cmd.join(" ")} exits`, 60_000);
    assert.equal(status.code, 2, proc.stderr());
    assert.match(
      proc.stderr().trim(),
      /^zprune: main\.ts takes no arguments \(got --\S+\); it is configured by environment/,
    );
    assert.deepEqual(proc.lines, []);
  }
});

Deno.test("main.ts: SIGTERM as soon as the startup line is out drains and exits 0 (Deno and Bun)", async () => {
  // The startup line is the cue that supervisors and tests wait for; the handlers must be in place before it.
  for (const cmd of [[DENO, "run", "-A", "main.ts"], ["./node_modules/.bin/bun", "--no-env-file", "main.ts"]]) {
    for (let i = 0; i < 3; i++) {
      const proc = spawn(cmd, SERVER_ENV);
      try {
        await proc.waitLine(LISTENING, 30_000);
        proc.child.kill("SIGTERM");
        const status = await within(proc.exited, "exit after SIGTERM", 30_000);
        assert.equal(status.code, 0, `${cmd[0]} run ${i}: ${proc.stderr()}`);
        assert.match(proc.stderr(), /^zprune: SIGTERM, draining 0 request/m);
      } finally {
        await stop(proc);
      }
    }
  }
});

Deno.test("main.ts: the longest deadline allowed drains as a short one (no timer past 2^31 - 1 ms)", async () => {
  // ZPRUNE_DEADLINE_MS at its documented maximum: the drain's limit, the deadline plus a margin, was past the longest
  // timer, which then fired at once: a false "connections still open" and Node's TimeoutOverflowWarning.
  const proc = spawn([DENO, "run", "-A", "main.ts"], { ...SERVER_ENV, ZPRUNE_DEADLINE_MS: "2147483647" });
  let conn: Deno.Conn | undefined;
  try {
    const port = Number((await proc.waitLine(LISTENING, 30_000))[1]);
    // An idle keep-alive connection, as a client between requests holds one.
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert.equal((await within(readAnswer(conn), "the health answer", 10_000)).status, 200);
    proc.child.kill("SIGTERM");
    const status = await within(proc.exited, "exit after SIGTERM", 30_000);
    assert.equal(status.code, 0, proc.stderr());
    assert.match(proc.stderr(), /^zprune: SIGTERM, draining 0 request\(s\) for at most 2147483\.647 s;/m);
    assert.match(proc.stderr(), /^zprune: drained in \d+\.\d s; every request was answered; exit 0$/m);
    assert.doesNotMatch(proc.stderr(), /TimeoutOverflowWarning|connections still open/);
  } finally {
    await stop(proc, conn);
  }
});

Deno.test("main.ts: a second signal during a long drain exits at once with status 1 (Deno and Bun)", async () => {
  const runs = [
    [[DENO, "run", "-A", "main.ts"], "SIGTERM", "SIGINT"],
    [[DENO, "run", "-A", "main.ts"], "SIGINT", "SIGINT"],
    [["./node_modules/.bin/bun", "--no-env-file", "main.ts"], "SIGTERM", "SIGTERM"],
  ] as const;
  for (const [cmd, first, second] of runs) {
    const proc = spawn([...cmd], SERVER_ENV);
    let conn: Deno.Conn | undefined;
    try {
      const url = `http://127.0.0.1:${(await proc.waitLine(LISTENING, 30_000))[1]}`;
      // An upload that stalls: the drain would wait for it up to the default deadline (600 s) and a margin.
      const body = encodeMsgpack({ sparsity: 0.5, layers: [f32Layer("stalled", 512, 512, 3)] });
      conn = (await startUpload(url, body, 64 * 1024, "stalled")).conn;
      let exited = false;
      proc.status.then(() => (exited = true));
      // Twice within milliseconds, as a terminal's Ctrl-C arrives under `npm run serve` (from the terminal, and passed
      // on by npm and `deno task`): one signal, not an operator insisting.
      proc.child.kill(first);
      await new Promise((r) => setTimeout(r, 30));
      proc.child.kill(first);
      await proc.waitLine(new RegExp(`^zprune: ${first}, draining`), 10_000);
      // Past the 1 s within which a repeat counts as the first signal's copy.
      await new Promise((r) => setTimeout(r, 1200));
      assert.equal(exited, false, "still draining after the first signal and its echo");
      proc.child.kill(second);
      // The drain's limit is 605 s (the default deadline and its margin): an exit within 60 s can only be the second
      // signal's; the bound just turns a hang into a failure.
      const status = await within(
        proc.exited,
        `exit after a second signal, long before the 605 s drain limit (${cmd[0]}: ${first}, ${second})`,
        60_000,
      );
      assert.equal(status.code, 1, proc.stderr());
      await proc.waitLine(new RegExp(`^zprune: ${second} again, exiting at once with 1 request`), 1_000);
    } finally {
      await stop(proc, conn);
    }
  }
});

Deno.test("main.ts: an answer being written holds the drain until its limit: exit 1 (Deno, Bun)", async () => {
  // Deadline 3 s: the drain's limit is 8 s. The answer (the pruned weights and scores of 2048x2048 f32, 34 MB) is more
  // than the socket buffers hold, so while this client reads none of it the server is still writing it. (Bun once
  // counted a request until its handler returned: it exited 0 "every request was answered", the answer cut short.)
  for (const cmd of [[DENO, "run", "-A", "main.ts"], ["./node_modules/.bin/bun", "--no-env-file", "main.ts"]]) {
    await answerStillBeingWritten(cmd);
  }
});

async function answerStillBeingWritten(cmd: string[]): Promise<void> {
  const proc = spawn(cmd, { ...SERVER_ENV, ZPRUNE_DEADLINE_MS: "3000" });
  let conn: Deno.Conn | undefined;
  try {
    const port = Number((await proc.waitLine(LISTENING, 30_000))[1]);
    const body = encodeMsgpack({
      method: "magnitude",
      sparsity: 0.5,
      return: ["mask", "weight", "score"],
      layers: [{ ...f32Layer("big", 2048, 2048, 5), actNormSq: undefined }],
    });
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const head = `POST /v1/prune HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n` +
      `Content-Length: ${body.byteLength}\r\n\r\n`;
    await writeAll(conn, new TextEncoder().encode(head));
    await writeAll(conn, body);
    // Answered (logged, or the test stops at once on anything but 200) and never read.
    const answered = await proc.waitLine(/"path":"\/v1\/prune","status":(\d+)/, 30_000);
    assert.equal(answered[1], "200", proc.lines.join("\n").slice(-1000));
    const t0 = Date.now();
    proc.child.kill("SIGTERM");
    await proc.waitLine(/^zprune: SIGTERM, draining 1 request\(s\) for at most 8 s/, 5_000);
    const status = await within(proc.exited, "exit after SIGTERM", 30_000);
    const ms = Date.now() - t0;
    assert.equal(status.code, 1, proc.stderr());
    // Not before the limit; and at it, not when the stalled answer is dropped (60 s): the log line says which ended
    // the drain, so no upper bound on a noisy machine's clock is needed.
    assert.ok(ms >= 7_500, `exited ${ms} ms after SIGTERM; the limit is 8 s`);
    await proc.waitLine(/^zprune: drain limit of 8 s reached, 1 request\(s\) unfinished; exit 1$/, 1_000);
  } finally {
    await stop(proc, conn);
  }
}

/** The Dockerfile with continuation lines joined, one instruction per entry. */
function dockerInstructions(): string[] {
  const text = Deno.readTextFileSync(new URL("Dockerfile", ROOT));
  const out: string[] = [];
  let cur = "";
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (!cur && (line.trim().startsWith("#") || !line.trim())) continue;
    if (line.endsWith("\\")) cur += line.slice(0, -1) + " ";
    else {
      out.push((cur + line).trim());
      cur = "";
    }
  }
  return out;
}

Deno.test("the image's CMD serves outside Docker; its HEALTHCHECK passes against it, fails without it", async () => {
  const ins = dockerInstructions();
  const cmdLine = ins.filter((i) => /^CMD\s/i.test(i));
  assert.equal(cmdLine.length, 1, "one CMD");
  const cmd = JSON.parse(cmdLine[0]!.replace(/^CMD\s+/i, "")) as string[];
  const hcLine = ins.filter((i) => /^HEALTHCHECK\s/i.test(i));
  assert.equal(hcLine.length, 1, "one HEALTHCHECK");
  const hc = JSON.parse(hcLine[0]!.replace(/^HEALTHCHECK\s+(--\S+\s+)*CMD\s+/i, "")) as string[];
  assert.ok(Array.isArray(cmd) && Array.isArray(hc), "exec form");

  const health = async (port: number) => {
    const [bin, ...args] = hc;
    const exe = bin!.startsWith("./") ? new URL(bin!, ROOT).pathname : bin!;
    const out = await new Deno.Command(exe, {
      args,
      cwd: ROOT.pathname,
      env: { PORT: String(port), DENO_NO_UPDATE_CHECK: "1" },
      stdout: "null",
      stderr: "piped",
    }).output();
    return out.code;
  };

  const proc = spawn(cmd, SERVER_ENV);
  try {
    const port = Number((await proc.waitLine(LISTENING, 30_000))[1]);
    const h = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.deepEqual(await h.json(), { status: "ok", backend: "cpu" });
    await assertGoldenExact(`http://127.0.0.1:${port}`, "tiny-zpruner-layer-f32");
    assert.equal(await health(port), 0, "HEALTHCHECK against the running server");
    // And against a port where nothing listens, it fails.
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const free = (l.addr as Deno.NetAddr).port;
    l.close();
    assert.notEqual(await health(free), 0, "HEALTHCHECK with no server");
    proc.child.kill("SIGTERM");
    const status = await within(proc.exited, "exit after SIGTERM", 10_000);
    assert.equal(status.code, 0, proc.stderr());
  } finally {
    await stop(proc);
  }
});
