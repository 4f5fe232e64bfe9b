/**
 * RunStop under real signals: each case runs in a child process that builds one and signals itself (`Deno.kill`), so
 * that the exits and stderr lines are those of a stopped run.
 */
import assert from "node:assert/strict";

const MODULE = new URL("./_run_stop.ts", import.meta.url).href;

/** Runs `body` after `stop` is made (its report prints "report: <why>"); the child's status and output. */
async function child(body: string, reportMs = 0): Promise<{ code: number; signal: string | null; out: string }> {
  const script = `import { RunStop, StoppedBy } from ${JSON.stringify(MODULE)};
const stop = new RunStop("/tmp/progress", async (why) => {
  console.log("report: " + why.message);
  await new Promise((r) => setTimeout(r, ${reportMs}));
});
${body}
await new Promise((r) => setTimeout(r, 20_000));
console.log("still running");`;
  const res = await new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const out = new TextDecoder().decode(res.stdout) + new TextDecoder().decode(res.stderr);
  return { code: res.code, signal: res.signal, out };
}

Deno.test("RunStop: a signal reports, says where the run was and what --resume keeps, exits 130 or 143", async () => {
  const dense = await child(`stop.blocks = 6; stop.kept = 0; stop.phase = "evaluating the dense model";
Deno.kill(Deno.pid, "SIGINT");`);
  assert.deepEqual([dense.code, dense.signal], [130, null], dense.out);
  assert.match(dense.out, /^report: SIGINT while evaluating the dense model\n/);
  assert.ok(
    dense.out.endsWith(
      "\nprune: SIGINT while evaluating the dense model; no block is pruned and kept (of 6) in --resume " +
        "/tmp/progress: the same command continues from there\n",
    ),
    dense.out,
  );

  const kept = await child(`stop.blocks = 6; stop.kept = 3; stop.pruned = 3; stop.phase = "pruning";
Deno.kill(Deno.pid, "SIGTERM");`);
  assert.equal(kept.code, 143, kept.out);
  assert.match(kept.out, /prune: SIGTERM while pruning; blocks 0 to 2 are pruned and kept \(of 6\) in --resume /);

  // Without --resume (no `kept`): what was pruned is lost, and the line says how to keep it.
  const lost = await child(`stop.blocks = 6; stop.pruned = 2; stop.phase = "pruning"; Deno.kill(Deno.pid, "SIGTERM");`);
  assert.equal(lost.code, 143, lost.out);
  assert.match(
    lost.out,
    /prune: SIGTERM while pruning; 2 of 6 blocks were pruned; with --resume DIR a run keeps them\n$/,
  );

  // Before the model is loaded there is nothing to say but where.
  const loading = await child(`Deno.kill(Deno.pid, "SIGINT");`);
  assert.equal(loading.code, 130, loading.out);
  assert.match(loading.out, /^report: SIGINT while loading\nprune: SIGINT while loading\n$/);
});

Deno.test("RunStop: a signal aborts a stoppable write, which throws StoppedBy; once finishing, it waits", async () => {
  const write = await child(`try {
  await stop.stoppable("--out /tmp/o was written", (signal) => new Promise((_, reject) => {
    signal.addEventListener("abort", () => reject(signal.reason));
    Deno.kill(Deno.pid, "SIGINT");
  }));
} catch (e) {
  console.log(e instanceof StoppedBy, e.exitCode, e.message, "late=" + stop.late);
  Deno.exit(0);
}`);
  assert.deepEqual([write.code, write.signal], [0, null], write.out);
  assert.equal(
    write.out,
    "true 130 SIGINT while --out /tmp/o was written; its temporary files were removed late=SIGINT\n",
  );

  // Outputs being put in place are whole: the signal is kept for the end of the run, nothing is reported.
  const finishing = await child(`stop.finishing();
Deno.kill(Deno.pid, "SIGTERM");
await new Promise((r) => setTimeout(r, 500));
console.log("late=" + stop.late);
Deno.exit(0);`);
  assert.deepEqual([finishing.code, finishing.out], [0, "late=SIGTERM\n"]);
});

Deno.test("RunStop: a second signal exits at once; a parent's copy of the first does not", async () => {
  // The report takes 2 s: a second, other signal ends the run before it, with the second's status and no line.
  const again = await child(
    `Deno.kill(Deno.pid, "SIGINT");
await new Promise((r) => setTimeout(r, 200));
Deno.kill(Deno.pid, "SIGTERM");`,
    2000,
  );
  assert.deepEqual([again.code, again.out], [143, "report: SIGINT while loading\n"]);

  // `deno task` and `npm run` pass a terminal's Ctrl-C on to their child, which then gets it twice at once.
  // (The copy 50 ms later: two at once may reach the process as one.)
  const echo = await child(
    `Deno.kill(Deno.pid, "SIGINT");
await new Promise((r) => setTimeout(r, 50));
Deno.kill(Deno.pid, "SIGINT");`,
    500,
  );
  assert.deepEqual([echo.code, echo.out], [130, "report: SIGINT while loading\nprune: SIGINT while loading\n"]);
});

Deno.test("RunStop: once disposed, a signal has its default action again", async () => {
  const res = await child(`stop[Symbol.dispose](); Deno.kill(Deno.pid, "SIGTERM");`);
  assert.deepEqual([res.signal, res.out], ["SIGTERM", ""]);
});
