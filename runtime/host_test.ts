/**
 * The runtime seam's drain, in process under Deno: requests in flight when it starts (an upload included) are
 * served to the end while new ones get the refusal, and the drain gives up after its limit. main.ts's signals and
 * exit codes are tested with a real process in tests/main_process_test.ts.
 */
import assert from "node:assert/strict";
import { writeAll } from "../tests/_server.ts";
import { listen } from "./host.ts";

const OPTS = { port: 0, host: "127.0.0.1" };
const refuse = () => new Response("draining", { status: 503, headers: { "Retry-After": "1" } });

/** Everything `conn` sends until it closes, as text. */
async function readAll(conn: Deno.Conn): Promise<string> {
  let text = "";
  const buf = new Uint8Array(64 * 1024);
  for (let n; (n = await conn.read(buf)) !== null;) text += new TextDecoder().decode(buf.subarray(0, n));
  return text;
}

Deno.test("listen: drain serves an upload in progress to the end, refuses new requests, then shutdown", async () => {
  let entered!: () => void;
  const reading = new Promise<void>((r) => (entered = r));
  const server = await listen(async (req) => {
    entered();
    return new Response(`read ${(await req.arrayBuffer()).byteLength}`);
  }, OPTS);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    const enc = new TextEncoder();
    await writeAll(conn, enc.encode("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"));
    await writeAll(conn, new Uint8Array(100_000));
    await reading;
    assert.equal(server.inFlight, 1);

    const drained = server.drain(refuse, 10_000);
    const refused = await fetch(`http://127.0.0.1:${server.port}/`);
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get("retry-after"), "1");
    assert.equal(await refused.text(), "draining");
    assert.equal(server.inFlight, 1, "a refused request is not counted");

    // Deno's shutdown() at this point would make the rest of the body unreadable (denoland/deno#36809).
    await new Promise((r) => setTimeout(r, 200));
    await writeAll(conn, new Uint8Array(100_000));
    assert.equal(await drained, true);
    assert.equal(server.inFlight, 0);
    const shut = server.shutdown();
    const answer = await readAll(conn);
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.match(answer, /\r\nconnection: close\r\n/i, "the answer asks the client not to reuse the connection");
    assert.match(answer, /read 200000$/);
    await shut;
  } finally {
    conn.close();
  }
});

Deno.test("listen: drain gives up at its limit while a request is stuck, and resolves at once when idle", async () => {
  let release!: () => void;
  const stuck = new Promise<void>((r) => (release = r));
  let entered!: () => void;
  const inHandler = new Promise<void>((r) => (entered = r));
  const server = await listen(async () => {
    entered();
    await stuck;
    return new Response("late");
  }, OPTS);
  const url = `http://127.0.0.1:${server.port}/`;
  const pending = fetch(url);
  try {
    await inHandler;
    const t0 = performance.now();
    assert.equal(await server.drain(refuse, 300), false);
    const waited = performance.now() - t0;
    assert.ok(waited >= 290, `gave up after ${waited} ms, before its limit`);
    assert.equal(server.inFlight, 1);
    // A limit past setTimeout's range (ZPRUNE_DEADLINE_MS of weeks) still waits rather than giving up at once.
    const long = server.drain(refuse, 2 ** 32);
    const soon = new Promise((r) => setTimeout(() => r("still waiting"), 200));
    assert.equal(await Promise.race([long, soon]), "still waiting");
    release();
    assert.equal(await long, true);
  } finally {
    release();
    assert.equal(await (await pending).text(), "late");
    await server.shutdown();
  }
  // A server with nothing in flight drains at once.
  const idle = await listen(() => new Response("ok"), OPTS);
  try {
    // It resolves before even a 0 ms timer fires: with nothing to wait for, it waits neither for its limit nor a tick.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const sentinel = new Promise((r) => (timer = setTimeout(() => r("still waiting"), 0)));
    try {
      assert.equal(await Promise.race([idle.drain(refuse, 60_000), sentinel]), true);
    } finally {
      clearTimeout(timer);
    }
    const res = await fetch(`http://127.0.0.1:${idle.port}/`);
    await res.body?.cancel();
    assert.equal(res.status, 503);
  } finally {
    await idle.shutdown();
  }
});

Deno.test("listen: a request counts until its answer is written or its client leaves, not until handled", async () => {
  const size = 32 << 20; // far more than the socket buffers hold
  let answered = 0;
  const server = await listen(() => {
    answered++;
    return new Response(new Uint8Array(size), { headers: { "content-length": String(size) } });
  }, OPTS);
  const ask = async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(conn, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    return conn;
  };
  const settle = async (want: number, what: string) => {
    for (let i = 0; i < 500 && server.inFlight !== want; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(server.inFlight, want, what);
  };
  const reader = await ask();
  const buf = new Uint8Array(64 * 1024);
  try {
    // Answered, but not read: still in flight, and a drain waits for it.
    for (let i = 0; i < 500 && answered === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(answered, 1);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(server.inFlight, 1, "an answer not yet written counts");
    assert.equal(server.answerBytes, size, "and so do its bytes");
    // Read to the end: no longer counted.
    let got = 0;
    while (got < size) got += (await reader.read(buf)) ?? Infinity;
    await settle(0, "an answer written to the last byte does not count");
    assert.equal(server.answerBytes, 0);
  } finally {
    reader.close();
  }
  // A client that leaves after part of its answer is not waited for.
  const leaver = await ask();
  await leaver.read(buf);
  leaver.close();
  await settle(0, "a client that left does not count");
  assert.equal(await server.drain(refuse, 1_000), true);
  await server.shutdown();
});

Deno.test("listen: a client that stops reading is dropped after writeStallMs, its answer let go", async () => {
  const size = 32 << 20;
  const server = await listen(
    () => new Response(new Uint8Array(size), { headers: { "content-length": String(size) } }),
    { ...OPTS, writeStallMs: 300 },
  );
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await writeAll(conn, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    for (let i = 0; i < 500 && server.answerBytes === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(server.answerBytes, size, "held while the client does not read");
    for (let i = 0; i < 500 && server.inFlight !== 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual([server.inFlight, server.answerBytes], [0, 0], "let go once it stalled");
    // The connection ends short of the answer (closed or reset): reading on gets fewer bytes than were promised.
    let got = 0;
    const buf = new Uint8Array(1 << 20);
    try {
      for (let n; (n = await conn.read(buf)) !== null;) got += n;
    } catch { /* reset */ }
    assert.ok(got < size, `${got} of ${size} bytes`);
  } finally {
    conn.close();
    await server.shutdown();
  }
});

Deno.test("listen: a small answer reaches a client that shut its sending side after its request", async () => {
  // Up to 64 KiB (WHOLE_ANSWER_BYTES: a 512x1024 layer's mask alone) the answer is handed over whole.
  for (const size of [1000, 64 * 1024]) {
    const body = new TextEncoder().encode("x".repeat(size));
    const server = await listen(() => new Response(body, { headers: { "content-length": String(size) } }), OPTS);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      await writeAll(conn, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
      await conn.closeWrite();
      const answer = await readAll(conn);
      assert.match(answer, /^HTTP\/1\.1 200 /);
      assert.ok(answer.endsWith("\r\n\r\n" + "x".repeat(size)), `${size}: ${answer.length} characters in all`);
    } finally {
      conn.close();
      await server.shutdown();
    }
  }
});
