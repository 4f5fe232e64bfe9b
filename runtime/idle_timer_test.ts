import assert from "node:assert/strict";
import { IdleTimer } from "./idle_timer.ts";
import { ManualTimers } from "../tests/_manual_timers.ts";

Deno.test("IdleTimer fires once, `ms` after the last touch, and not after stop()", () => {
  const clock = new ManualTimers();
  let fired = 0;
  const t = new IdleTimer(500, () => fired++, clock);
  t.touch();
  for (let i = 0; i < 4; i++) {
    clock.advance(150);
    t.touch(); // each touch restarts the countdown: 600 ms in all, more than 500 without a touch
  }
  clock.advance(499);
  assert.equal(fired, 0);
  clock.advance(1);
  assert.equal(fired, 1);
  clock.advance(5000);
  assert.equal(fired, 1, "once, not again");
  t.touch();
  t.stop();
  assert.equal(clock.pending, 0);
  clock.advance(5000);
  assert.equal(fired, 1);
});

Deno.test("IdleTimer on the host's timers fires", async () => {
  // Unref'd, the idle timer alone would let the test's event loop end first: a plain timer keeps it going meanwhile.
  const keep = setTimeout(() => {}, 30_000);
  await new Promise<void>((resolve) => new IdleTimer(10, resolve).touch());
  clearTimeout(keep);
});

Deno.test("IdleTimer does not keep a process alive", async () => {
  // A child touches a 60 s timer and ends its script: it must exit at once, not a minute later.
  const url = new URL("./idle_timer.ts", import.meta.url).href;
  const start = performance.now();
  const res = await new Deno.Command(Deno.execPath(), {
    args: ["eval", `import { IdleTimer } from ${JSON.stringify(url)}; new IdleTimer(60_000, () => {}).touch();`],
    signal: AbortSignal.timeout(30_000),
  }).output();
  assert.equal(res.code, 0);
  assert.ok(performance.now() - start < 20_000, "the child waited for the timer");
});

Deno.test("collectGarbage() frees dropped objects under the serve task's --expose-gc, not without", async () => {
  const url = new URL("./idle_timer.ts", import.meta.url).href;
  const script = `import { collectGarbage } from ${JSON.stringify(url)};
let collected = false;
const registry = new FinalizationRegistry(() => (collected = true));
(() => registry.register({ dropped: true }, 0))(); // small: nothing else would make V8 collect it
if (Deno.args[0] === "collect") collectGarbage();
await new Promise((r) => setTimeout(r, 50));
console.log(collected);`;
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.writeTextFile(file, script);
  const run = async (flags: string[], ...args: string[]) => {
    const res = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...flags, file, ...args],
      stdout: "piped",
      signal: AbortSignal.timeout(30_000),
    }).output();
    assert.equal(res.code, 0);
    return new TextDecoder().decode(res.stdout).trim();
  };
  assert.equal(await run(["--v8-flags=--expose-gc"], "collect"), "true");
  assert.equal(await run(["--v8-flags=--expose-gc"]), "false", "collected without being asked: the test shows nothing");
  assert.equal(await run([], "collect"), "false");
  await Deno.remove(file);
  const tasks = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url))).tasks;
  assert.match(tasks.serve, /--v8-flags=--expose-gc /);
});

Deno.test("IdleTimer on the host's timers: a touch replaces the countdown, and stop() cancels it", async () => {
  // No bound on how late a timer fires is assumed: the test waits for the one firing it expects, then for a 100 ms
  // timer set after every countdown it cancelled was due (each was set 1 ms ahead): a cancelled one that still fired
  // would have been run by then.
  const keep = setTimeout(() => {}, 30_000);
  try {
    let fired = 0;
    let first!: () => void;
    const once = new Promise<void>((r) => (first = r));
    const t = new IdleTimer(1, () => (fired++, first()));
    t.touch();
    t.touch(); // replaces the first countdown
    await once;
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(fired, 1, "the replaced countdown fired as well");
    const stopped = new IdleTimer(1, () => fired++);
    stopped.touch();
    stopped.stop();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(fired, 1, "a stopped countdown fired");
  } finally {
    clearTimeout(keep);
  }
});

Deno.test("collectGarbage() frees dropped objects under Bun, in full before it returns", async () => {
  const url = new URL("./idle_timer.ts", import.meta.url).href;
  // It also counts the engine's objects just before and just after the call: a full collection is done by then, not
  // merely asked for (Bun.gc(false) would leave most of 300 000 dropped objects counted).
  const script = `import { heapStats } from "bun:jsc";
import { collectGarbage } from ${JSON.stringify(url)};
let many = Array.from({ length: 300_000 }, (_, i) => ({ i })); // first: making them may collect what came before
let collected = false;
const registry = new FinalizationRegistry(() => (collected = true));
(() => registry.register({ dropped: true }, 0))(); // small: nothing else would make the engine collect it
const before = heapStats().objectCount;
many = null;
if (process.argv[2] === "collect") collectGarbage();
const freedAtOnce = before - heapStats().objectCount > 150_000;
await new Promise((r) => setTimeout(r, 50));
console.log(JSON.stringify({ collected, freedAtOnce }));`;
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, script);
    const run = async (...args: string[]) => {
      const res = await new Deno.Command(new URL("../node_modules/.bin/bun", import.meta.url).pathname, {
        args: ["--no-env-file", file, ...args],
        stdout: "piped",
        signal: AbortSignal.timeout(30_000),
      }).output();
      assert.equal(res.code, 0);
      return new TextDecoder().decode(res.stdout).trim();
    };
    assert.deepEqual(JSON.parse(await run("collect")), { collected: true, freedAtOnce: true });
    const unasked = JSON.parse(await run());
    assert.deepEqual(unasked, { collected: false, freedAtOnce: false }, "collected unasked: the test shows nothing");
  } finally {
    await Deno.remove(file);
  }
});
