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

/** Runs a child process to its end (60 s at most), asserts it exited 0, and gives the last line it printed, parsed. */
async function childJson(cmd: string, args: string[], env: Record<string, string> = {}): Promise<unknown> {
  const res = await new Deno.Command(cmd, {
    args,
    env,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  assert.equal(res.code, 0, `${cmd}: ${new TextDecoder().decode(res.stderr)}`);
  return JSON.parse(new TextDecoder().decode(res.stdout).trim().split("\n").at(-1)!);
}

/**
 * A child's script: onShutdownSignal on a clock the script sets (performance.now), so that "within 1 s" does not
 * depend on how fast signals arrive, fed signals it sends itself. (In process, the test runner's own SIGINT handler
 * would end the run.) It prints the calls made, then those made after the listeners were removed.
 */
const SIGNAL_CHILD = `
import { onShutdownSignal } from ${JSON.stringify(new URL("./host.ts", import.meta.url).href)};
const D = globalThis.Deno, P = globalThis.process;
let now = 10_000;
Object.defineProperty(performance, "now", { value: () => now, configurable: true, writable: true });
const calls = [];
const remove = onShutdownSignal((s) => calls.push("first " + s), (s) => calls.push("again " + s));
// A listener of the script's own, added after: called for every signal, echoes included, it says one has arrived.
let arrived = () => {};
const witness = () => arrived();
for (const s of ["SIGINT", "SIGTERM"]) D ? D.addSignalListener(s, witness) : P.on(s, witness);
const send = async (signal, at) => {
  now = at;
  const seen = new Promise((r) => (arrived = r));
  D ? D.kill(D.pid, signal) : P.kill(P.pid, signal);
  await seen;
};
await send("SIGINT", 10_000);
await send("SIGTERM", 10_500); // another signal, however soon: the operator's
await send("SIGINT", 10_999); // the first one's copy, 999 ms on
await send("SIGINT", 11_000); // 1 s on: a second Ctrl-C
await send("SIGINT", 11_001);
const before = [...calls];
remove();
await send("SIGINT", 20_000); // the witness keeps these from ending the process
await send("SIGTERM", 20_000);
console.log(JSON.stringify({ before, after: calls.slice(before.length) }));
for (const s of ["SIGINT", "SIGTERM"]) D ? D.removeSignalListener(s, witness) : P.off(s, witness);
`;

Deno.test("onShutdownSignal: first once; again for later signals, but a repeat within 1 s", async () => {
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, SIGNAL_CHILD);
    const bun = new URL("../node_modules/.bin/bun", import.meta.url).pathname;
    for (const cmd of [[Deno.execPath(), "run", "-A", "--no-check", file], [bun, "--no-env-file", file]]) {
      assert.deepEqual(await childJson(cmd[0]!, cmd.slice(1)), {
        before: ["first SIGINT", "again SIGTERM", "again SIGINT", "again SIGINT"],
        after: [],
      }, cmd[0]);
    }
  } finally {
    await Deno.remove(file);
  }
});

/**
 * A Bun child's script: the seam's Bun side, the way main.ts uses it. It prints what it found as one JSON line.
 */
const BUN_CHILD = `
import { args, getEnv, listen, runtimeName, streamsKeepLength } from ${
  JSON.stringify(new URL("./host.ts", import.meta.url).href)
};
const size = 200_000;
let release = () => {};
let entered = () => {};
const inHandler = new Promise((r) => (entered = r));
const server = await listen(async (req) => {
  const path = new URL(req.url).pathname;
  if (path === "/stuck") {
    entered();
    await new Promise((r) => (release = r));
    return new Response("late");
  }
  return new Response(new Uint8Array(size), { headers: { "content-length": String(size) } });
}, { port: 0, host: "127.0.0.1" });
const url = "http://127.0.0.1:" + server.port;
const big = await fetch(url + "/big");
const bigLength = big.headers.get("content-length");
const bigBytes = (await big.arrayBuffer()).byteLength;
const stuck = fetch(url + "/stuck");
await inHandler;
const inFlight = server.inFlight;
const refuse = () => new Response("draining", { status: 503 });
const gaveUp = await server.drain(refuse, 300);
const refused = await fetch(url + "/big");
const refusedStatus = refused.status;
await refused.text();
const drained = server.drain(refuse, 60_000);
release();
const late = await (await stuck).text();
const out = {
  runtimeName, streamsKeepLength, args, env: getEnv("ZPRUNE_SEAM_TEST"), unset: getEnv("ZPRUNE_SEAM_UNSET") ?? null,
  bigLength, bigBytes, inFlight, gaveUp, refusedStatus, late, drained: await drained, after: server.inFlight,
};
await server.shutdown();
console.log(JSON.stringify(out));
`;

Deno.test("the seam under Bun: name, arguments, environment, lengths kept, and a drain over Bun's server", async () => {
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, BUN_CHILD);
    const bun = new URL("../node_modules/.bin/bun", import.meta.url).pathname;
    const seam = { ZPRUNE_SEAM_TEST: "seen" };
    assert.deepEqual(await childJson(bun, ["--no-env-file", file, "x", "--y"], seam), {
      runtimeName: "bun",
      // Bun sends a stream in chunks, dropping its length: an answer must go out whole there to keep it.
      streamsKeepLength: false,
      args: ["x", "--y"], // the script's arguments, after its name
      env: "seen",
      unset: null,
      bigLength: "200000",
      bigBytes: 200_000,
      inFlight: 1,
      gaveUp: false, // still computing at the limit
      refusedStatus: 503,
      late: "late",
      drained: true,
      after: 0,
    });
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("the seam under Deno: its name, arguments and environment", async () => {
  const host = JSON.stringify(new URL("./host.ts", import.meta.url).href);
  const code = `import { args, getEnv, runtimeName, streamsKeepLength } from ${host};
console.log(JSON.stringify({ runtimeName, streamsKeepLength, args, env: getEnv("ZPRUNE_SEAM_TEST") }));`;
  assert.deepEqual(await childJson(Deno.execPath(), ["eval", code, "x", "--y"], { ZPRUNE_SEAM_TEST: "seen" }), {
    runtimeName: "deno",
    streamsKeepLength: true,
    args: ["x", "--y"],
    env: "seen",
  });
});
