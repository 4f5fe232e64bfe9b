/**
 * scripts/bounded.sh, the time limit on each part of scripts/test.sh, run through bash as test.sh runs it: a
 * command's own status passes through; past the limit the command and the processes it started are stopped and the
 * part says so; a TERM (test.sh's exit trap) or a Ctrl-C reaching the caller stops them too.
 */
import assert from "node:assert/strict";
import { within } from "../tests/_server.ts";
import { eventually } from "../tests/_webgpu.ts";

const BOUNDED = new URL("./bounded.sh", import.meta.url).pathname;

/**
 * Runs `script` in bash after sourcing bounded.sh, in a scratch folder (`$D`): with `setsid`, as the leader of a
 * process group of its own, and `during(bash's pid)` while it runs. Output goes to a file, not a pipe, so that a
 * process it wrongly leaves running cannot hold the test. `stopped`: whether the sleep it started (`$D/pid`), if any,
 * ended within 10 s of bash's exit (it is killed afterwards either way).
 */
async function bash(
  script: string,
  opts: { setsid?: boolean; during?: (pid: number, dir: string) => Promise<void> } = {},
) {
  const dir = await Deno.makeTempDir();
  const args = ["bash", "-c", `export D="${dir}"\nexec > "$D/out" 2>&1\n. "${BOUNDED}"\n${script}`];
  const child = new Deno.Command(opts.setsid ? "setsid" : "bash", {
    args: opts.setsid ? args : args.slice(1),
    stdout: "null",
    stderr: "null",
  }).spawn();
  const sleep = async () => Number(await Deno.readTextFile(`${dir}/pid`).catch(() => "")) || undefined;
  try {
    await opts.during?.(child.pid, dir);
    await within(child.status, "bash", 60_000);
    const text = await Deno.readTextFile(`${dir}/out`);
    const pid = await sleep();
    return { text, stopped: pid === undefined ? undefined : await endsSoon(pid) };
  } finally {
    const pid = await sleep();
    if (pid !== undefined && !ended(pid)) Deno.kill(pid, "SIGKILL"); // left by a failure: not for 600 s
    await Deno.remove(dir, { recursive: true });
  }
}

/** Whether process `pid` has ended: gone, or a zombie nobody reaped (this container's init does not). */
function ended(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return true;
    throw e;
  }
}

/** Whether `pid` ends within 10 s (a bound against a slow host, not a speed check). */
const endsSoon = (pid: number) => eventually(() => ended(pid), 10_000);

/** A command that starts a long sleep (standing for a server a test started), writes its pid to `$D/pid`, waits. */
const SLEEPER = `bash -c 'sleep 600 & echo $! > "$D/pid"; wait'`;

/** Waits (in bash) until the sleeper has started. */
const STARTED = `until [ -s "$D/pid" ]; do sleep 0.02; done`;

Deno.test("bounded: a command within its limit keeps its own output and exit status", async () => {
  const r = await bash(`bounded 1 "the part" bash -c 'echo hi; echo oops >&2; exit 3'; echo "status $?"`);
  assert.equal(r.text, "hi\noops\nstatus 3\n");
  const ok = await bash(`bounded 1 "the part" true; echo "status $?"`);
  assert.equal(ok.text, "status 0\n");
});

Deno.test("bounded: past its limit the command and what it started are stopped: 124 and a line naming it", async () => {
  // 3 s: time enough for the sleeper to start and write its pid on a loaded host.
  const r = await bash(`bounded 0.05 "the part" ${SLEEPER} | cat; echo "status \${PIPESTATUS[0]}"`);
  assert.match(r.text, /^the part: still running after 0\.05 min, stopped \(a hung test/m);
  assert.match(r.text, /^status 124$/m);
  assert.equal(r.stopped, true, "the sleep the command started was stopped too");
});

Deno.test("bounded: a TERM to its subshell (test.sh's exit trap) stops the command and what it started", async () => {
  const r = await bash(`bounded 5 "the part" ${SLEEPER} & b=$!\n${STARTED}\nkill "$b"; wait "$b"; echo "status $?"`);
  assert.match(r.text, /^status 143$/m, `the command ended by the TERM passed on: ${JSON.stringify(r.text)}`);
  assert.doesNotMatch(r.text, /still running/, "not reported as a time-out");
  assert.equal(r.stopped, true, "the sleep the command started was stopped too");
});

Deno.test("bounded: a Ctrl-C to the caller's group reaches the command, which leads a group of its own", async () => {
  // As in test.sh, the caller traps INT. Without a trap, bash ends itself by the SIGINT once the pipeline is done if
  // `cat` died of it, before the line below: which, depends on the order it collects the two (4 of 40 runs here).
  const script = `trap 'echo Ctrl-C' INT\nbounded 5 "the part" ${SLEEPER} | cat\necho "after: \${PIPESTATUS[0]}"`;
  const r = await bash(script, {
    setsid: true, // a group of its own to send the Ctrl-C to, as a terminal sends it to its foreground group
    async during(pid, dir) {
      const started = () => Deno.readTextFile(`${dir}/pid`).then((t) => /^\d+\n$/.test(t), () => false);
      assert.ok(await eventually(started, 10_000), "the sleeper started");
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      assert.equal(Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]), pid, "bash leads its own group");
      Deno.kill(-pid, "SIGINT");
    },
  });
  assert.equal(r.text, "Ctrl-C\nafter: 143\n", "the command ended by the TERM bounded passed on");
  assert.equal(r.stopped, true, "the Ctrl-C stopped what the command started");
});

Deno.test("bounded: the caller's own INT and TERM traps are back once it returns", async () => {
  const r = await bash(`trap 'echo mine' INT\nbounded 1 "the part" true\ntrap -p INT TERM`);
  assert.equal(r.text, "trap -- 'echo mine' SIGINT\n");
});
