/**
 * drainable() on its own, with answers read through their Response bodies as a runtime would: the in-flight count
 * across several requests, a handler that throws, and the write-stall timer's re-arming and single release. The same
 * seam over real sockets is tested in runtime/host_test.ts.
 */
import assert from "node:assert/strict";
import { drainable } from "./drain.ts";

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
  assert.deepEqual([steady.inFlight(), steady.answerBytes()], [0, 0]);
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
  assert.match(stalled, /took no part of it for 200 ms/);
  assert.equal(read, 70_000);
  await partial.cancel().catch(() => {});
  await tick(50);
  assert.deepEqual([stuck.inFlight(), stuck.answerBytes()], [0, 0]);
});
