/**
 * drainable() on its own, with answers read through their Response bodies as a runtime would: the in-flight count
 * across several requests, a handler that throws, and the write-stall timer's re-arming and single release. The same
 * seam over real sockets is tested in runtime/host_test.ts.
 */
import assert from "node:assert/strict";
import { drainable, drainedLine, drainServer, type DrainTarget } from "./drain.ts";
import { onManualClock, settle } from "../tests/_manual_timers.ts";

const refuse = () => new Response("draining", { status: 503 });
const OPTS = { untilWritten: true, writeStallMs: 60_000 };
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

Deno.test("drainable(): a drain waits for the last of several requests in flight, not the first", async () => {
  const gates: (() => void)[] = [];
  const d = drainable(async () => {
    await new Promise<void>((r) => gates.push(r));
    return new Response("ok");
  }, OPTS);
  const answers = [d.fetch(new Request("http://x/a")), d.fetch(new Request("http://x/b"))];
  await tick();
  assert.equal(d.inFlight(), 2);
  let drained: boolean | undefined;
  d.drain(refuse, 60_000).then((v) => drained = v);
  gates[0]!();
  await answers[0];
  await tick();
  assert.deepEqual([d.inFlight(), drained], [1, undefined], "one still in flight: the drain waits");
  gates[1]!();
  await answers[1];
  await tick();
  assert.deepEqual([d.inFlight(), drained], [0, true]);
});

Deno.test("drainable(): a handler that throws is no longer in flight, and the drain does not wait for it", async () => {
  const d = drainable(() => Promise.reject(new Error("handler bug")), OPTS);
  await assert.rejects(async () => await d.fetch(new Request("http://x/")), /handler bug/);
  assert.equal(d.inFlight(), 0);
  assert.equal(await d.drain(refuse, 60_000), true);
});

Deno.test("drainable(): each piece taken re-arms the write-stall timer; a stall lets the answer go once", async () => {
  // Sixteen slices of 64 KiB, taken 100 ms apart: 1.6 s in all, past a 1 s stall limit that no single gap comes near.
  const size = 16 * 64 * 1024;
  const steady = drainable(
    () => new Response(new Uint8Array(size).fill(7), { headers: { "content-length": String(size) } }),
    { untilWritten: true, writeStallMs: 1_000 },
  );
  const reader = (await steady.fetch(new Request("http://x/"))).body!.getReader();
  let got = 0;
  for (let r; !(r = await reader.read()).done;) {
    got += r.value.byteLength;
    await tick(100);
  }
  assert.equal(got, size);
  assert.deepEqual([steady.inFlight(), steady.answerBytes(), steady.answersDropped()], [0, 0, 0]);
  // A handler's body that stops short of its declared length: the stall ends it, and its bytes are let go once,
  // however the ended stream is then read or cancelled.
  const declared = 100_000;
  const stuck = drainable(() => {
    const body = new ReadableStream<Uint8Array>({ start: (c) => c.enqueue(new Uint8Array(70_000)) });
    return new Response(body, { headers: { "content-length": String(declared) } });
  }, { untilWritten: true, writeStallMs: 200 });
  const res = await stuck.fetch(new Request("http://x/"));
  assert.equal(stuck.answerBytes(), declared);
  const partial = res.body!.getReader();
  let read = 0;
  const stalled = await (async () => {
    try {
      for (let r; !(r = await partial.read()).done;) read += r.value.byteLength;
      return "ended";
    } catch (e) {
      return (e as Error).message;
    }
  })();
  assert.equal(stalled, "zprune: the dropped answer to request (no id) is cut short here");
  assert.equal(read, 70_000);
  await partial.cancel().catch(() => {});
  await tick(50);
  assert.deepEqual([stuck.inFlight(), stuck.answerBytes()], [0, 0]);
  assert.equal(stuck.answersDropped(), 1, "one answer dropped, counted once though its stream was cancelled after");
});

/** Bytes 0, 1, ..., 250, 0, 1, ...: a body whose every slice is told apart from its neighbours. */
const pattern = (n: number) => Uint8Array.from({ length: n }, (_, i) => i % 251);

/** A handler's body that gives `first` bytes, then `then` on the next pull ("hang" or "fail"), noting its cancel. */
function sourceBody(first: number, then: "hang" | "fail") {
  const seen = { cancelled: false as boolean, reason: undefined as unknown };
  let pulls = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      if (pulls++ === 0) return c.enqueue(pattern(first));
      if (then === "fail") return c.error(new Error("the model file went away"));
      return new Promise<void>(() => {}); // never ready
    },
    cancel(reason) {
      seen.cancelled = true;
      seen.reason = reason;
    },
  });
  return { body, seen };
}

Deno.test("drainable(): without untilWritten (Bun) a large answer is handed back as is", async () => {
  const size = 1 << 20;
  const res = new Response(pattern(size), { headers: { "content-length": String(size) } });
  const d = drainable(() => res, { untilWritten: false, writeStallMs: 60_000 });
  // The very Response: Bun's own count (host.ts) follows its writing, so this one neither wraps nor counts it.
  assert.equal(await d.fetch(new Request("http://x/")), res);
  assert.deepEqual([d.inFlight(), d.answerBytes()], [0, 0]);
});

Deno.test("drainable(): a large declared length with no body (a HEAD answer) is handed back, not tracked", async () => {
  const res = new Response(null, { status: 200, headers: { "content-length": "10000000" } });
  const d = drainable(() => res, OPTS);
  assert.equal(await d.fetch(new Request("http://x/", { method: "HEAD" })), res);
  assert.deepEqual([d.inFlight(), d.answerBytes()], [0, 0]);
});

Deno.test("drainable(): a tracked answer goes out in pieces of at most 64 KiB, intact", async () => {
  // 200 000 bytes in one chunk (a Uint8Array body): at most 64 KiB a piece means 4 pieces, 3 whole slices and the rest.
  const size = 200_000;
  const d = drainable(
    () =>
      new Response(pattern(size), {
        status: 206,
        statusText: "Partial Content",
        headers: { "content-length": String(size), "x-request-id": "r1" },
      }),
    OPTS,
  );
  const res = await d.fetch(new Request("http://x/"));
  assert.deepEqual([res.status, res.statusText, res.headers.get("x-request-id")], [206, "Partial Content", "r1"]);
  assert.deepEqual([d.inFlight(), d.answerBytes()], [1, size]);
  const reader = res.body!.getReader();
  const pieces: Uint8Array[] = [];
  for (let r; !(r = await reader.read()).done;) {
    pieces.push(r.value);
    await settle();
    // Until the last piece has been taken, the answer is not written: still counted.
    if (pieces.reduce((n, p) => n + p.byteLength, 0) < size) assert.equal(d.inFlight(), 1, `after ${pieces.length}`);
  }
  assert.deepEqual(pieces.map((p) => p.byteLength), [65536, 65536, 65536, size - 3 * 65536]);
  const all = new Uint8Array(size);
  let at = 0;
  for (const p of pieces) (all.set(p, at), at += p.byteLength);
  assert.deepEqual(all, pattern(size));
  await settle();
  assert.deepEqual([d.inFlight(), d.answerBytes()], [0, 0]);
});

Deno.test("drainable(): a body failing mid-answer passes its error on, lets the answer go", async () => {
  const { body } = sourceBody(70_000, "fail");
  const d = drainable(() => new Response(body, { headers: { "content-length": "100000" } }), OPTS);
  const reader = (await d.fetch(new Request("http://x/"))).body!.getReader();
  let read = 0;
  await assert.rejects(async () => {
    for (let r; !(r = await reader.read()).done;) read += r.value.byteLength;
  }, /the model file went away/);
  assert.equal(read, 70_000);
  await settle();
  assert.deepEqual([d.inFlight(), d.answerBytes(), d.answersDropped()], [0, 0, 0], "a failing body is no drop");
});

Deno.test("drainable(): a client that leaves cancels the handler's body and the answer is let go", async () => {
  const { body, seen } = sourceBody(70_000, "hang");
  const d = drainable(() => new Response(body, { headers: { "content-length": "100000" } }), OPTS);
  const res = await d.fetch(new Request("http://x/"));
  const reader = res.body!.getReader();
  assert.equal((await reader.read()).value?.byteLength, 65536);
  await reader.cancel("client gone");
  await settle();
  assert.deepEqual([d.inFlight(), d.answerBytes(), d.answersDropped()], [0, 0, 0], "a client that left is no drop");
  // Passed on, so that the handler stops producing an answer nobody will read.
  assert.deepEqual(seen, { cancelled: true, reason: "client gone" });
});

Deno.test("drainable(): an unread answer is dropped after writeStallMs, said at once, its body cancelled", async () => {
  const said: string[] = [];
  const savedError = console.error;
  console.error = (...parts: unknown[]) => void said.push(parts.join(" "));
  try {
    await onManualClock(async (clock) => {
      const { body, seen } = sourceBody(70_000, "hang");
      const d = drainable(
        () => new Response(body, { headers: { "content-length": "100000", "x-request-id": "q7" } }),
        { untilWritten: true, writeStallMs: 500 },
      );
      const res = await d.fetch(new Request("http://x/"));
      await settle();
      clock.advance(499);
      await settle();
      assert.deepEqual([d.inFlight(), d.answerBytes(), d.answersDropped()], [1, 100_000, 0], "not yet stalled");
      assert.deepEqual(said, []);
      clock.advance(1);
      await settle();
      assert.deepEqual([d.inFlight(), d.answerBytes(), d.answersDropped()], [0, 0, 1], "stalled: let go");
      // Named on stderr when it happens: the runtime, which never read the body, would never log its error.
      assert.deepEqual(said, ["zprune: dropped the answer to request q7: its client took no part of it for 500 ms"]);
      assert.equal(seen.cancelled, true, "the handler's body is cancelled with it");
      assert.equal(clock.pending, 0, "no timer left behind");
      // The runtime, reading it now, gets the error that ends the connection: one line naming the request.
      const err = await res.body!.getReader().read().then(() => null, (e: Error) => e);
      assert.ok(err instanceof Error, "the body ends in an error, not as a complete answer");
      assert.equal(err.message, "zprune: the dropped answer to request q7 is cut short here");
      assert.equal(err.stack, err.message, "logged without a stack: nothing failed here");
    });
  } finally {
    console.error = savedError;
  }
});

Deno.test("drainable(): each piece asked for restarts the stall countdown", async () => {
  await onManualClock(async (clock) => {
    const size = 4 * 65536;
    const d = drainable(() => new Response(pattern(size), { headers: { "content-length": String(size) } }), {
      untilWritten: true,
      writeStallMs: 500,
    });
    const reader = (await d.fetch(new Request("http://x/"))).body!.getReader();
    await settle();
    // 400 ms after each piece: 1.2 s in all, past the limit, but never 500 ms without a piece asked for.
    for (let i = 0; i < 3; i++) {
      clock.advance(400);
      assert.equal((await reader.read()).value?.byteLength, 65536);
      await settle();
      assert.equal(d.inFlight(), 1, `piece ${i + 1}`);
    }
    // Then a stop: 500 ms after the last piece was asked for, it is let go (and not a moment before).
    clock.advance(499);
    await settle();
    assert.equal(d.inFlight(), 1);
    clock.advance(1);
    await settle();
    assert.deepEqual([d.inFlight(), d.answerBytes()], [0, 0]);
    await reader.cancel().catch(() => {});
  });
});

Deno.test("drainable(): an answer read to its end leaves no stall timer behind", async () => {
  await onManualClock(async (clock) => {
    const size = 100_000;
    const d = drainable(() => new Response(pattern(size), { headers: { "content-length": String(size) } }), OPTS);
    const reader = (await d.fetch(new Request("http://x/"))).body!.getReader();
    while (!(await reader.read()).done);
    await settle();
    assert.deepEqual([d.inFlight(), d.answerBytes(), clock.pending, d.answersDropped()], [0, 0, 0, 0]);
  });
});

Deno.test("drainable(): drain: false at its limit, true when the last ends first; no timer left", async () => {
  await onManualClock(async (clock) => {
    let release!: () => void;
    const d = drainable(async () => {
      await new Promise<void>((r) => (release = r));
      return new Response("ok");
    }, OPTS);
    // Nothing in flight: true, without setting a timer.
    const idle = drainable(() => new Response("ok"), OPTS);
    assert.equal(await idle.drain(refuse, 1_000), true);
    assert.equal(clock.pending, 0);

    const answer = d.fetch(new Request("http://x/"));
    await settle();
    let first: boolean | undefined;
    d.drain(refuse, 1_000).then((v) => (first = v));
    clock.advance(999);
    await settle();
    assert.equal(first, undefined, "before its limit");
    clock.advance(1);
    await settle();
    assert.equal(first, false, "at its limit, one still in flight");
    // New requests are refused meanwhile, and not counted.
    assert.equal((await d.fetch(new Request("http://x/new"))).status, 503);
    assert.equal(d.inFlight(), 1);

    let second: boolean | undefined;
    d.drain(refuse, 1_000).then((v) => (second = v));
    release();
    await answer;
    await settle();
    assert.equal(second, true);
    assert.equal(clock.pending, 0, "the drain's timer is cleared once it is answered");
  });
});

Deno.test("drainedLine(): the drain's last line names the answers dropped unread, and only when there are some", () => {
  assert.equal(drainedLine(0.04, null, 0), "zprune: drained in 0.0 s; every request was answered; exit 0");
  assert.equal(
    drainedLine(63.04, 4.56, 0),
    "zprune: connections still open 4.6 s after the last answer, 63.0 s after the signal; " +
      "every request was answered; exit 0",
  );
  assert.equal(
    drainedLine(61.26, null, 2),
    "zprune: drained in 61.3 s; every request was answered, 2 of the answers dropped unread " +
      "(no part of each taken for 60 s); exit 0",
  );
});

/**
 * A server for drainServer(): its clock reads `clock.ms`; drain() settles as `drained` says, counting `dropDuring`
 * answers dropped and moving the clock `drainMs` on; shutdown() resolves only where `closes`.
 */
function fakeServer(
  clock: { ms: number },
  o: { drained: boolean; drainMs: number; dropDuring: number; closes: boolean },
) {
  const calls: string[] = [];
  let dropped = 2; // dropped before the signal: not the drain's
  const server: DrainTarget = {
    inFlight: 4,
    get answersDropped() {
      return dropped;
    },
    drain(refuse, limitMs) {
      calls.push(`drain ${limitMs} ${refuse === REFUSE}`);
      clock.ms += o.drainMs;
      dropped += o.dropDuring;
      return Promise.resolve(o.drained);
    },
    shutdown() {
      calls.push("shutdown");
      return o.closes ? Promise.resolve() : new Promise(() => {});
    },
  };
  return { server, calls };
}
const REFUSE = () => new Response("draining", { status: 503 });

Deno.test("drainServer(): says the signal, drains, closes; the last line counts its dropped answers", async () => {
  const clock = { ms: 1_000 };
  const { server, calls } = fakeServer(clock, { drained: true, drainMs: 2_460, dropDuring: 1, closes: true });
  const lines: string[] = [];
  const code = await drainServer(server, REFUSE, "SIGTERM", 65_000, (l) => lines.push(l), () => clock.ms);
  assert.equal(code, 0);
  assert.deepEqual(calls, ["drain 65000 true", "shutdown"]);
  assert.deepEqual(lines, [
    "zprune: SIGTERM, draining 4 request(s) for at most 65 s; a second signal exits at once",
    drainedLine(2.46, null, 1),
  ]);
});

Deno.test("drainServer(): a drain past its limit says what is unfinished, closes nothing, and answers 1", async () => {
  const clock = { ms: 0 };
  const { server, calls } = fakeServer(clock, { drained: false, drainMs: 65_000, dropDuring: 0, closes: true });
  const lines: string[] = [];
  assert.equal(await drainServer(server, REFUSE, "SIGINT", 65_000, (l) => lines.push(l), () => clock.ms), 1);
  assert.deepEqual(calls, ["drain 65000 true"]);
  assert.equal(lines[1], "zprune: drain limit of 65 s reached, 4 request(s) unfinished; exit 1");
  assert.equal(lines.length, 2);
});

Deno.test("drainServer(): connections that do not close get what is left of the limit, at least 1 s", async () => {
  // [time the drain took, the connections' wait]: 2 s of a 10 s limit leave 8 s; 9.5 s leave the 1 s floor.
  for (const [drainMs, waitMs] of [[2_000, 8_000], [9_500, 1_000]] as const) {
    await onManualClock(async (timers) => {
      const clock = { ms: 0 };
      const { server } = fakeServer(clock, { drained: true, drainMs, dropDuring: 0, closes: false });
      const lines: string[] = [];
      let code: number | undefined;
      drainServer(server, REFUSE, "SIGTERM", 10_000, (l) => lines.push(l), () => clock.ms).then((c) => code = c);
      await settle();
      timers.advance(waitMs - 1);
      await settle();
      assert.equal(code, undefined, `${drainMs}: still waiting 1 ms before its ${waitMs} ms`);
      clock.ms += waitMs;
      timers.advance(1);
      await settle();
      assert.equal(code, 0);
      assert.equal(lines.at(-1), drainedLine((drainMs + waitMs) / 1000, waitMs / 1000, 0));
      assert.equal(timers.pending, 0);
    });
  }
});
