/**
 * `deno task prune`'s main(): flags are refused before any work starts, with the flag named; every resource it
 * starts is closed whatever fails; a bad --server fails fast with its URL and the cause. The happy path (the
 * reference run end to end) is tests/e2e_prune_test.ts.
 */
import assert from "node:assert/strict";
import { relative } from "node:path";
import { main } from "./prune.ts";
import { checkOutputs, parsePruneArgs } from "./_prune_args.ts";
import { startServer, withPrune } from "../tests/_server.ts";
import { ZpruneError } from "../contract/errors.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { RunProgress } from "./_resume.ts";
import { packedTensors } from "../tests/_safetensors_bytes.ts";

/** The bundled model, which the runs here prune by default. */
const MODEL_DIR = new URL("../models/zp-llama-9m", import.meta.url).pathname;
// A model directory that does not exist: a run refused for its flags must say so before it reads the model.
const NO_MODEL = ["--model", "/nonexistent/zprune-model"];

/** Asserts that main(args) rejects with a message matching every pattern in `want`. */
async function refuses(args: string[], ...want: RegExp[]): Promise<void> {
  const err = await main(args).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof Error, `${args.join(" ")}: expected a rejection, got ${String(err)}`);
  for (const re of want) assert.match(err.message, re, args.join(" "));
}

Deno.test("main() refuses non-integer or out-of-range numeric flags by name, before reading the model", async () => {
  const text = ["--calib-text", "calib.txt"];
  const cases: [string[], RegExp][] = [
    [["--seqlen", "0"], /--seqlen/],
    [["--seqlen", "1"], /--seqlen/], // one token predicts nothing: the perplexity would be exp(0/0)
    [["--seqlen", "2.5"], /--seqlen/],
    [["--seqlen", "1e3x"], /--seqlen/],
    [["--eval-windows", "1.5"], /--eval-windows/],
    [["--eval-windows", "0"], /--eval-windows/],
    [["--eval-windows", "some"], /--eval-windows must be an integer of at least 1, or all/],
    [[...text, "--nsamples", "2.5"], /--nsamples/],
    [[...text, "--nsamples=-1"], /--nsamples/],
    [[...text, "--nsamples", "0"], /--nsamples/],
    [[...text, "--seed", "-1"], /--seed/],
    [[...text, "--seed", "0.5"], /--seed/],
    [[...text, "--seed", String(2 ** 32)], /--seed/], // the generator keeps 32 bits: 2^32 would repeat seed 0
    [["--workers", "0"], /--workers/],
    [["--workers", "1.5"], /--workers/],
    [["--workers", "65"], /--workers must be an integer from 1 to 64/],
    [["--workers", "1e1"], /--workers/], // Number() would read 10; the server's environment refuses it too
    [[...text, "--seed", "0x10"], /--seed/],
    [["--sparsity", "1"], /--sparsity/],
    [["--sparsity", "-0.1"], /--sparsity/],
    [["--sparsity", "NaN"], /--sparsity/],
    [["--sparsity", "0x0"], /--sparsity expects a decimal number/], // Number() reads hexadecimal
    [["--exponent", "0b1"], /--exponent expects a decimal number/],
    [["--exponent", "-1"], /--exponent/],
    [["--pattern", "4:2"], /--pattern/],
    [["--pattern", "blocks"], /--pattern/],
    [["--method", "sparsegpt"], /--method/],
    // An empty value names no file, directory or setting.
    [["--out", ""], /--out needs a value/],
    [["--report", " "], /--report needs a value/],
    [["--calib-text", ""], /--calib-text needs a value/],
    [["--sparsity", ""], /--sparsity needs a value/],
  ];
  for (const [args, flag] of cases) await refuses([...NO_MODEL, ...args], flag);
  await refuses(["--model", ""], /--model needs a value/);
  // --help prints the help whatever else is given, an empty value included.
  assert.equal(await main(["--help", "--out", ""]), undefined);
  assert.equal(await main(["--bogus", "--help"]), undefined); // an unknown flag too
});

Deno.test("main() refuses flags that would be ignored or that conflict, naming both", async () => {
  const cases: [string[], RegExp[]][] = [
    // The default calibration is a fixed set of windows: --nsamples and --seed would change nothing.
    [["--nsamples", "8"], [/--nsamples/, /--calib-text/]],
    [["--seed", "3"], [/--seed/, /--calib-text/]],
    [["--calib-ids", "a.u16", "--calib-starts", "s.i64", "--nsamples", "8"], [/--nsamples/, /--calib-ids/]],
    [["--calib-ids", "a.u16", "--calib-starts", "s.i64", "--calib-text", "c.txt"], [/--calib-text/, /--calib-ids/]],
    [["--calib-text", "c.txt", "--calib-starts", "s.i64"], [/--calib-text/, /--calib-starts/]],
    [["--calib-text", "c.txt", "--calib-jsonl", "c.jsonl"], [/--calib-text/, /--calib-jsonl/]],
    [["--calib-ids", "a.u16"], [/--calib-ids/, /--calib-starts/]],
    [["--eval-ids", "t.u16", "--eval-text", "t.txt"], [/--eval-ids/, /--eval-text/]],
    [["--pattern", "2:4", "--sparsity", "0.7"], [/--sparsity/, /--pattern/]],
    [["--token", "secret"], [/--token/, /--server/]],
    [["--method", "magnitude", "--exponent", "2"], [/--exponent/, /--method magnitude/]],
  ];
  for (const [args, want] of cases) await refuses([...NO_MODEL, ...args], ...want);
});

Deno.test("main() refuses unwritable --out and --report paths before reading the model, creating nothing", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/file`;
    await Deno.writeTextFile(file, "x");
    const model = `${dir}/model`;
    await Deno.mkdir(model);
    await Deno.symlink(model, `${dir}/link`);
    await Deno.symlink(`${dir}/nowhere`, `${dir}/dangling`);
    await Deno.symlink(file, `${dir}/flink`);
    const cases: [string[], RegExp[]][] = [
      [["--out", file], [/--out/, /not a directory/]],
      [["--out", `${file}/pruned`], [/--out/, /not a directory/i]], // under a regular file: mkdir fails
      [["--out", `${dir}/dangling`], [/--out/, /broken symbolic link/]],
      [["--model", model, "--out", `${dir}/./model`], [/--out/, /model's own directory/]],
      [["--model", model, "--out", `${dir}/link`], [/--out/, /model's own directory/]],
      [["--report", dir], [/--report/, /is a directory/]],
      [["--report", `${dir}/missing/r.json`], [/--report/, /does not exist/]],
      [["--report", `${file}/r.json`], [/--report/, /not a directory/]],
      // Where --out makes its directory, or above it: the checkpoint would be written, then the report fail.
      [["--out", `${dir}/x`, "--report", `${dir}/x`], [/--report .*x: it is the directory --out writes/]],
      [["--out", `${dir}/r/sub`, "--report", `${dir}/r`], [/--report .*r: --out .*sub would be made a directory/]],
      [["--out", `${dir}/link/sub`, "--report", `${dir}/model/sub`], [/--report .*: it is the directory --out/]],
      // Over a data file the run reads, by any path.
      [["--eval-text", file, "--report", file], [/--report .*file: it is the file --eval-text reads/]],
      [["--calib-text", file, "--report", `${dir}/./file`], [/--report .*: it is the file --calib-text reads/]],
      [["--calib-starts", `${dir}/s.i64`, "--calib-ids", `${dir}/flink`, "--report", file], [/--calib-ids reads/]],
    ];
    for (const [args, want] of cases) await refuses([...NO_MODEL, ...args], ...want);
    // Past the output checks, the missing model is named by its flag as well as by the file the loader wanted.
    await refuses(NO_MODEL, /^--model \/nonexistent\/zprune-model: .*\/nonexistent\/zprune-model\/config\.json/);
    // Paths that can be written pass the check (the run then fails on the missing model) and are not created; an
    // existing report is not truncated, and /dev/null will do.
    await refuses([...NO_MODEL, "--out", `${dir}/new/pruned`, "--report", `${dir}/r.json`], /zprune-model/);
    await refuses([...NO_MODEL, "--out", model, "--report", file], /zprune-model/);
    await refuses([...NO_MODEL, "--out", `${dir}/link`, "--report", "/dev/null"], /zprune-model/);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "dangling",
      "file",
      "flink",
      "link",
      "model",
    ]);
    assert.deepEqual([...Deno.readDirSync(model)], []);
    assert.equal(await Deno.readTextFile(file), "x");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main() refuses a --resume it cannot make or keep apart, before reading the model, making none", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/file`, "x");
    await refuses([...NO_MODEL, "--resume", `${dir}/file`], /^--resume .*\/file: it exists and is not a directory$/);
    // The run makes the directory, not its parents: a mistyped parent is refused.
    await refuses([...NO_MODEL, "--resume", `${dir}/no/progress`], /^--resume .*: .*\/no is not a directory$/);
    // The run removes its files from it once it succeeds: it is no other flag's path.
    await refuses([...NO_MODEL, "--out", `${dir}/o`, "--resume", `${dir}/o`], /^--resume .*\/o: it is --out's /);
    await refuses([...NO_MODEL, "--report", `${dir}/r`, "--resume", `${dir}/r`], /^--resume .*\/r: it is --report's /);
    await refuses(["--model", dir, "--resume", `${dir}/.`], /^--resume .*: it is --model's /);
    // A report under one of the names DIR keeps the progress in would be written over it when a run stops, or be
    // removed with it when the run ends; by any path, DIR not made yet included. Another name in DIR will do.
    await Deno.symlink(dir, `${dir}/dlink`);
    for (
      const name of [
        "zprune-run.json",
        "zprune-run.holder",
        "zprune-block-0003.msgpack",
        ".zprune-run.json.zprune-partial",
      ]
    ) {
      const places: [string, string][] = [[dir, `${dir}/dlink/${name}`], [`${dir}/p`, `${dir}/p/./${name}`]];
      for (const [resume, report] of places) {
        const flags = ["--resume", resume, "--report", report];
        await refuses([...NO_MODEL, ...flags], /^--report .*: it is a file --resume .* keeps the run's progress in$/);
      }
    }
    await checkOutputs(parsePruneArgs([...NO_MODEL, "--resume", dir, "--report", `${dir}/zprune-report.json`])!);
    await Deno.remove(`${dir}/dlink`);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["file"]);
    // A new directory, or one that exists: accepted, and the check leaves nothing in either.
    await checkOutputs(parsePruneArgs([...NO_MODEL, "--resume", `${dir}/new`])!);
    await checkOutputs(parsePruneArgs([...NO_MODEL, "--resume", dir])!);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["file"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkOutputs(): a report beside --out, a DIR another run holds, an --out of a model not there", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // "r" is not inside "r2": only a path under --out's directory is.
    await checkOutputs(parsePruneArgs([...NO_MODEL, "--out", `${dir}/r2`, "--report", `${dir}/r`])!);
    // A --resume DIR held by a run still going is refused before the model is read (its weights hashed: minutes).
    const identity = { model: "m", checkpoint: "c", blocks: 1, method: "magnitude", pattern: "layer", seqlen: 8 };
    using _held = await RunProgress.open(`${dir}/progress`, {
      ...identity,
      calibration: { source: "s", windows: 1, sha256: "0" },
    });
    await refuses([...NO_MODEL, "--resume", `${dir}/progress`], /^--resume .*\/progress: another run has it open/);
    // With no model to compare with, an --out holding a config is not judged: the missing model is what is named.
    await Deno.mkdir(`${dir}/out`);
    await Deno.writeTextFile(`${dir}/out/config.json`, "{}");
    const err = await main([...NO_MODEL, "--out", `${dir}/out`]).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof Error && /zprune-model/.test(err.message) && !/^--out/.test(err.message), String(err));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main() refuses an --out holding weights the run would not overwrite, before reading the model", async () => {
  const out = await Deno.makeTempDir();
  const bundled = ["--model", new URL("../models/zp-llama-9m", import.meta.url).pathname];
  try {
    // An earlier single-file run, or another format: a loader could take either for the pruned (sharded) model. A
    // tokenizer or chat template this model has not: a loader would take it for the pruned model's.
    const others = ["tokenizer.model", "special_tokens_map.json", "chat_template.json"];
    for (const stale of ["model.safetensors", "pytorch_model.bin", "pytorch_model.bin.index.json", ...others]) {
      await Deno.writeFile(`${out}/${stale}`, new Uint8Array(8));
      await refuses(
        [...bundled, "--out", out],
        /--out/,
        new RegExp(stale.replaceAll(".", "\\.")),
      );
      await Deno.remove(`${out}/${stale}`);
    }
    // A named chat template this model has not: the tokenizer would list it as one of the pruned model's.
    await Deno.mkdir(`${out}/additional_chat_templates`);
    await Deno.writeTextFile(`${out}/additional_chat_templates/tool_use.jinja`, "T");
    await refuses([...bundled, "--out", out], /--out .*: it holds additional_chat_templates\/tool_use\.jinja, which/);
    await Deno.remove(`${out}/additional_chat_templates`, { recursive: true });
    // A folder where the checkpoint writes a file, and a file where it writes the templates' folder (of a model that
    // has one): either would fail the write at its end, after the whole run.
    await Deno.mkdir(`${out}/tokenizer.json`);
    await refuses(
      [...bundled, "--out", out],
      /--out .*: it holds a folder tokenizer\.json, where the pruned checkpoint/,
    );
    await Deno.remove(`${out}/tokenizer.json`);
    const templated = await Deno.makeTempDir();
    try {
      for (const e of Deno.readDirSync(bundled[1]!)) {
        await Deno.symlink(`${bundled[1]}/${e.name}`, `${templated}/${e.name}`);
      }
      await Deno.mkdir(`${templated}/additional_chat_templates`);
      await Deno.writeTextFile(`${templated}/additional_chat_templates/rag.jinja`, "{{ documents }}");
      await Deno.writeTextFile(`${out}/additional_chat_templates`, "a file");
      await refuses(["--model", templated, "--out", out], /--out .*: it holds a file additional_chat_templates, /);
      await Deno.remove(`${out}/additional_chat_templates`);
    } finally {
      await Deno.remove(templated, { recursive: true });
    }
    // A folder named as a file the run does not write (the source's reference.json) is left to the user.
    await Deno.mkdir(`${out}/reference.json`);
    // The files the run writes itself (a rerun into the same directory), and others, pass the check.
    const own = ["model-00001-of-00003.safetensors", "model.safetensors.index.json", "tokenizer.json", "config.json"];
    for (const name of [...own, "notes.txt", "report.json"]) await Deno.writeFile(`${out}/${name}`, new Uint8Array(8));
    await checkOutputs(parsePruneArgs([...bundled, "--out", out, "--report", `${out}/report.json`])!);
    // A report over a file of the checkpoint, or of the model, would replace it (the report is written last).
    await refuses(
      [...bundled, "--out", out, "--report", `${out}/config.json`],
      /--report .*: it is the pruned checkpoint's config\.json/,
    );
    await refuses(
      [...bundled, "--report", `${bundled[1]}/tokenizer.json`],
      /--report .*: it is the model's own tokenizer\.json/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("`deno task prune` refuses --out, --report under /proc or /sys with advice, exits 2", async () => {
  // Under the task's own permissions (read from deno.json), Deno refuses these paths with "run again with the
  // --allow-all flag"; the CLI says to choose another path instead. Tests run with -A, so this needs a child.
  const task: string = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url))).tasks.prune;
  const [, ...taskArgs] = task.split(" ");
  /** The CLI run as `deno task prune` runs it (`denoArgs`: its permissions), with `args`: exit status and stderr. */
  const run = async (args: string[], denoArgs = taskArgs) => {
    const res = await new Deno.Command(Deno.execPath(), {
      args: [...denoArgs, ...NO_MODEL, ...args],
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    return { code: res.code, err: new TextDecoder().decode(res.stderr) };
  };
  for (const [flag, path] of [["--out", "/proc/zprune-out"], ["--report", "/sys/zprune.json"]] as const) {
    const { code, err } = await run([flag, path]);
    assert.equal(code, 2, err); // a refused flag, as `deno task reproduce` and the server exit for theirs
    assert.match(err, new RegExp(`${flag} ${path}: .*system paths.*choose another path`));
    assert.doesNotMatch(err, /allow-all/);
  }
  // A run that fails once the flags passed exits 1: here the model directory is not there.
  const failed = await run(["--skip-dense"]);
  assert.equal(failed.code, 1, failed.err);
  assert.match(failed.err, /^prune: --model \/nonexistent\/zprune-model: /m);
  // Elsewhere, Deno's refusal is the right advice: the CLI run without --allow-write.
  const unwritable = await run(["--report", "/tmp/zprune-report.json"], taskArgs.filter((a) => a !== "--allow-write"));
  assert.match(unwritable.err, /--report \/tmp\/zprune-report.json: .*--allow-write/);
});

/**
 * Runs main(args) in a fresh Deno process that must exit by itself: anything main() leaves open (a server, a
 * worker, a timer) keeps that process alive until `timeoutMs` kills it. Returns what main() did and the exit.
 */
async function mainInChild(
  args: string[],
  timeoutMs = 60_000,
  during?: (child: Deno.ChildProcess) => Promise<void>,
  asCli = false,
): Promise<{ code: number; out: string }> {
  const script = `import { main } from ${JSON.stringify(new URL("./prune.ts", import.meta.url).href)};
main(${JSON.stringify(args)}).then(() => console.log("resolved"), (e) => console.log("rejected: " + e.message));`;
  const child = new Deno.Command(Deno.execPath(), {
    // As the command line runs it (its exit status is the test's), or main() alone.
    args: asCli ? ["run", "-A", new URL("./prune.ts", import.meta.url).pathname, ...args] : ["eval", script],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).spawn();
  const [res] = await Promise.all([child.output(), during?.(child)]);
  const out = new TextDecoder().decode(res.stdout) + new TextDecoder().decode(res.stderr);
  return { code: res.code, out };
}

Deno.test("main() closes all it started when the forward pool cannot be created, so the process exits", async () => {
  // 17000 windows of 256 tokens cached by one worker need 17000 * 256 * 256 * 4 bytes (4.46 GB) of arena, past
  // WebAssembly's 4 GiB, while the model itself fits: the failure comes from creating the pool.
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/starts.i64`, new Uint8Array(17000 * 8));
    const { code, out } = await mainInChild(["--calib-starts", `${dir}/starts.i64`, "--workers", "1", "--skip-dense"]);
    assert.match(out, /rejected: .*4 GiB/);
    // The cache is what does not fit: fewer windows would, up to what 4 GiB holds beside the model (256 floats each).
    const fits = Number(/fewer or shorter calibration windows would fit \(at most (\d+) tokens\)/.exec(out)?.[1]);
    assert.ok(fits > 4_100_000 && fits < 2 ** 32 / (4 * 256), `${fits} tokens:\n${out}`);
    assert.equal(code, 0, `the process did not exit by itself:\n${out}`);

    // A failure once the pool runs: a --server whose prune answers an error for the first block. (The case above
    // fails with the in-process server already running, which it closes; this one closes the pool.)
    const cpu = createCpuBackend({ threads: 1 });
    const refusing = withPrune(cpu, () => Promise.reject(new ZpruneError("invalid_request", "refused for the test")));
    const server = await startServer({ backend: refusing });
    try {
      await Deno.writeFile(`${dir}/one.i64`, new Uint8Array(8));
      const late = await mainInChild([
        ...["--server", server.url, "--calib-starts", `${dir}/one.i64`, "--seqlen", "16"],
        ...["--workers", "1", "--skip-dense"],
      ]);
      assert.match(late.out, /rejected: block 0 .*refused for the test/);
      assert.equal(late.code, 0, `the process did not exit by itself:\n${late.out}`);
    } finally {
      await server.close();
      await cpu.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main() --resume: SIGINT while pruning says which blocks are kept; the rest are not", async () => {
  const cpu = createCpuBackend({ threads: 1 });
  let arrived!: () => void, release!: () => void;
  const atBlock2 = new Promise<void>((r) => arrived = r), released = new Promise<void>((r) => release = r);
  // Block 2's request is held until the test ends: the signal comes while the run waits on it.
  const backend = withPrune(cpu, async (p, l, s) => {
    if (!l.name.startsWith("model.layers.2.")) return cpu.prune(p, l, s);
    arrived();
    await released;
    throw new ZpruneError("unavailable", "released by the test");
  });
  const server = await startServer({ backend });
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/starts.i64`, new Uint8Array(new BigInt64Array([0n, 5000n]).buffer));
    const { code, out } = await mainInChild(
      [
        ...["--server", server.url, "--calib-starts", `${dir}/starts.i64`, "--seqlen", "32", "--workers", "1"],
        ...["--eval-windows", "1", "--resume", `${dir}/progress`, "--report", `${dir}/report.json`],
      ],
      60_000,
      async (child) => {
        if (await Promise.race([atBlock2.then(() => true), child.status.then(() => false)])) child.kill("SIGINT");
      },
    );
    assert.match(
      out,
      /prune: SIGINT while pruning; blocks 0 to 1 are pruned and kept \(of 6\) in --resume .*\/progress: the same /,
    );
    assert.equal(code, 130, out);
    // The report keeps what was measured (the dense perplexity) and says where the run stopped, as after a failure.
    const report = JSON.parse(await Deno.readTextFile(`${dir}/report.json`));
    assert.deepEqual([report.error, report.resume.blocks], ["SIGINT while pruning", 2]);
    assert.ok(report.densePpl > 1, `dense perplexity ${report.densePpl}`);
    const kept = [...Deno.readDirSync(`${dir}/progress`)].map((e) => e.name).filter((n) => !n.startsWith("."));
    assert.deepEqual(kept.sort(), [
      "zprune-block-0000.msgpack",
      "zprune-block-0001.msgpack",
      "zprune-run.holder",
      "zprune-run.json",
    ]);
  } finally {
    release();
    await server.close();
    await cpu.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Waits until `path` exists (polled every 10 ms); false where `child` ended first. */
async function appears(path: string, child: Deno.ChildProcess): Promise<boolean> {
  let ended = false;
  child.status.then(() => ended = true);
  while (!ended) {
    if (await Deno.stat(path).then(() => true, () => false)) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

Deno.test("main(): SIGINT while evaluating the dense model reports, says what --resume keeps, exits 130", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // 50 windows of 256 tokens: seconds of evaluation, begun just after the run file is written (RunProgress.open).
    const { code, out } = await mainInChild(
      ["--eval-windows", "50", "--workers", "1", "--resume", `${dir}/progress`, "--report", `${dir}/report.json`],
      60_000,
      async (child) => {
        if (!await appears(`${dir}/progress/zprune-run.json`, child)) return;
        await new Promise((r) => setTimeout(r, 300));
        child.kill("SIGINT");
      },
    );
    assert.equal(code, 130, out);
    assert.match(
      out,
      /prune: SIGINT while evaluating the dense model; no block is pruned and kept \(of 6\) in --resume /,
    );
    const report = JSON.parse(await Deno.readTextFile(`${dir}/report.json`));
    assert.deepEqual([report.error, report.resume.blocks, report.densePpl], [
      "SIGINT while evaluating the dense model",
      0,
      undefined,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main(): SIGTERM while --out is written removes its files, keeps both perplexities, exits 143", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // The bundled model with a 256 MiB file beside it, which --out copies first (a few tenths of a second).
    const model = `${dir}/model`;
    await Deno.mkdir(model);
    for (const e of Deno.readDirSync(MODEL_DIR)) await Deno.symlink(`${MODEL_DIR}/${e.name}`, `${model}/${e.name}`);
    using extra = await Deno.open(`${model}/extra.dat`, { create: true, write: true });
    await extra.write(new Uint8Array(256 << 20).fill(7));
    const { code, out } = await mainInChild(
      [
        ...["--model", model, "--eval-windows", "1", "--seqlen", "64", "--workers", "1"],
        ...["--out", `${dir}/out`, "--report", `${dir}/report.json`],
      ],
      60_000,
      async (child) => {
        if (await appears(`${dir}/out/.extra.dat.zprune-partial`, child)) child.kill("SIGTERM");
      },
      true,
    );
    assert.equal(code, 143, out);
    assert.match(out, /^prune: SIGTERM while --out .*\/out was written; its temporary files were removed$/m);
    // The run made --out: it goes, with every temporary file in it.
    assert.equal(await Deno.stat(`${dir}/out`).then(() => "there", () => "gone"), "gone");
    const report = JSON.parse(await Deno.readTextFile(`${dir}/report.json`));
    assert.match(report.error, /^SIGTERM while --out /);
    assert.ok(report.densePpl > 1 && report.prunedPpl > report.densePpl, JSON.stringify(report));
    assert.equal(report.evalWindows, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main() closes the in-process server and the pool when a block is refused: the process exits", async () => {
  // Both running at once: a checkpoint whose first norm holds a NaN passes every check made before the run (they read
  // the pruned layers alone), then the in-process server refuses block 0 as non_finite once the pool computes.
  const dir = await Deno.makeTempDir();
  try {
    // The weight of input feature 2.
    await bundledWithNaN(dir, "model.layers.0.input_layernorm.weight", 2);
    await Deno.writeFile(`${dir}/one.i64`, new Uint8Array(8));
    const { code, out } = await mainInChild([
      ...["--model", dir, "--calib-starts", `${dir}/one.i64`, "--seqlen", "16", "--workers", "2", "--skip-dense"],
    ]);
    // The norm's NaN is in feature 2 of q_proj's inputs: the first non-finite value the server meets.
    assert.match(
      out,
      /rejected: block 0, model\.layers\.0\.self_attn\.q_proj\.weight: layers\[0\]\.actNormSq\[2\] is NaN or infinite/,
    );
    assert.equal(code, 0, `the process did not exit by itself:\n${out}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main() names, before any prune request, layers a server would refuse and data it cannot use", async () => {
  // (cli/prune.ts runs these checks before the dense evaluation; what a test sees is that no report, which a failure
  // while pruning writes, and no prune request came.)
  const dir = await Deno.makeTempDir();
  const backend = createCpuBackend({ threads: 1 });
  const posts: number[] = [];
  const log = (e: Record<string, unknown>) => void (e.path === "/v1/prune" && posts.push(e.status as number));
  const small = await startServer({ backend, config: { maxBodyBytes: 300_000 }, log });
  const narrow = await startServer({ backend, config: { maxLayerElements: 100_000 }, log });
  try {
    const report = `${dir}/report.json`;
    await Deno.writeFile(`${dir}/empty.i64`, new Uint8Array(0));
    const far = new Uint8Array(8);
    new DataView(far.buffer).setBigInt64(0, 1_000_000_000n, true);
    await Deno.writeFile(`${dir}/far.i64`, far);
    await Deno.writeTextFile(`${dir}/short.txt`, "Call me Ishmael.");
    const ids = new Uint16Array(300).fill(5);
    ids[123] = 9000; // the bundled model's vocabulary has 8192 ids
    await Deno.writeFile(`${dir}/ids.u16`, new Uint8Array(ids.buffer));
    // A .u32 file is read as uint32: 70000 is one id, past the vocabulary (as uint16 it would be two ids within it).
    const wide = new Uint32Array(300).fill(5);
    wide[123] = 70000;
    await Deno.writeFile(`${dir}/ids.u32`, new Uint8Array(wide.buffer));
    const at120 = new Uint8Array(8);
    new DataView(at120.buffer).setBigInt64(0, 120n, true);
    await Deno.writeFile(`${dir}/at120.i64`, at120);
    const cases: [string[], RegExp[]][] = [
      [["--pattern", "3:7"], [/in-process server/, /q_proj\.weight: its 256 columns are not a multiple of M = 7/]],
      [["--server", small.url], [/--server http/, /mlp\.gate_proj\.weight: about \d+ bytes to send.* 300000/]],
      [["--server", narrow.url], [/mlp\.gate_proj\.weight: 768 x 256 weights, over the server's largest layer/]],
      [["--calib-starts", `${dir}/empty.i64`], [/--calib-starts .*empty\.i64: it holds no window starts/]],
      [["--calib-starts", `${dir}/far.i64`], [
        /--calib-starts .*far\.i64 \(with --calib-ids .*\): window 0 \(of 1\): its start 10+ \+ \d+ tokens runs past/,
      ]],
      [["--calib-text", `${dir}/short.txt`], [/--calib-text .*short\.txt: \d+ tokens are fewer than one window/]],
      [["--eval-ids", `${dir}/ids.u16`, "--seqlen", "16"], [/--eval-ids .*ids\.u16: token id 9000 \(token 123\)/]],
      [["--eval-ids", `${dir}/ids.u32`, "--seqlen", "16"], [/--eval-ids .*ids\.u32: token id 70000 \(token 123\)/]],
      [
        ["--calib-starts", `${dir}/at120.i64`, "--calib-ids", `${dir}/ids.u32`, "--seqlen", "16"],
        [/--calib-ids .*ids\.u32: token id 70000 \(token 3\)/],
      ],
      // Past the windows evaluated, an id is never read: the run goes on, to stop on the pattern.
      [["--eval-ids", `${dir}/ids.u16`, "--seqlen", "16", "--eval-windows", "7", "--pattern", "3:7"], [/M = 7/]],
    ];
    for (const [args, want] of cases) {
      await refuses([...args, "--report", report], ...want);
      // A failure while pruning writes the report, with the dense perplexity measured before it: none came.
      assert.ok(!(await Deno.stat(report).then(() => true, () => false)), `${args.join(" ")}: a report was written`);
    }
    assert.deepEqual(posts, [], "no prune request was sent");
  } finally {
    await small.close();
    await narrow.close();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main() names a NaN weight before any prune request, not the NaN activations it would cause", async () => {
  const dir = await Deno.makeTempDir();
  const backend = createCpuBackend({ threads: 1 });
  const posts: number[] = [];
  const server = await startServer({ backend, log: (e) => void (e.path === "/v1/prune" && posts.push(1)) });
  try {
    // Block 1's q_proj weight at row 1, column 2.
    const name = "model.layers.1.self_attn.q_proj.weight";
    const cols = await bundledWithNaN(dir, name, (cols) => cols + 2);
    await refuses(
      ["--model", dir, "--server", server.url, "--skip-dense"],
      new RegExp(`${name.replaceAll(".", "\\.")}: weight\\[${cols + 2}\\] \\(row 1, column 2\\) is NaN or infinite`),
    );
    assert.deepEqual(posts, [], "no prune request was sent");
  } finally {
    await server.close();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Fills `dir` with the bundled model: links to its files, but for the shard holding tensor `name`, written with the
 * element `at` (or `at(columns)`) of that tensor a quiet NaN in its dtype. Returns the tensor's columns.
 */
async function bundledWithNaN(dir: string, name: string, at: number | ((cols: number) => number)): Promise<number> {
  const bundled = new URL("../models/zp-llama-9m", import.meta.url).pathname;
  const index = JSON.parse(await Deno.readTextFile(`${bundled}/model.safetensors.index.json`));
  const shard: string = index.weight_map[name];
  for (const e of Deno.readDirSync(bundled)) {
    if (e.name !== shard) await Deno.symlink(`${bundled}/${e.name}`, `${dir}/${e.name}`);
  }
  const bytes = await Deno.readFile(`${bundled}/${shard}`);
  const view = new DataView(bytes.buffer);
  const headerBytes = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerBytes)));
  const { dtype, shape, data_offsets: [from] } = header[name];
  assert.ok(["F32", "F16", "BF16"].includes(dtype), dtype);
  const cols: number = shape.at(-1), i = typeof at === "number" ? at : at(cols);
  if (dtype === "F32") view.setUint32(8 + headerBytes + from + 4 * i, 0x7fc00000, true);
  else view.setUint16(8 + headerBytes + from + 2 * i, dtype === "BF16" ? 0x7fc0 : 0x7e00, true);
  await Deno.writeFile(`${dir}/${shard}`, bytes);
  return cols;
}

Deno.test("main() refuses the bundled token ids for a model with another tokenizer unless data are given", async () => {
  const bundled = new URL("../models/zp-llama-9m", import.meta.url).pathname;
  const dir = await Deno.makeTempDir();
  try {
    // The bundled model's files, linked, with another tokenizer.json (one merge fewer).
    const other = `${dir}/other`, copy = `${dir}/copy`;
    for (const d of [other, copy]) {
      await Deno.mkdir(d);
      for (const e of Deno.readDirSync(bundled)) await Deno.symlink(`${bundled}/${e.name}`, `${d}/${e.name}`);
    }
    const tok = JSON.parse(await Deno.readTextFile(`${bundled}/tokenizer.json`));
    tok.model.merges.pop();
    await Deno.remove(`${other}/tokenizer.json`);
    await Deno.writeTextFile(`${other}/tokenizer.json`, JSON.stringify(tok));
    await Deno.writeTextFile(`${dir}/short.txt`, "Call me Ishmael.");
    await refuses(["--model", other], /--model .*other: the default calibration and evaluation data/, /--calib-text/);
    // The default files named, by any path, are still the default data.
    const evalIds = relative(Deno.cwd(), new URL("../data/corpus/test_ids.u16", import.meta.url).pathname);
    await refuses(
      ["--model", other, "--calib-text", `${dir}/short.txt`, "--eval-ids", evalIds],
      /default evaluation data/,
    );
    await refuses(
      ["--model", other, "--calib-text", `${dir}/short.txt`],
      /default evaluation data/,
      /--eval-text FILE/,
    );
    // Data of its own pass the check: the run stops later, on the short calibration text.
    await refuses(
      ["--model", other, "--calib-text", `${dir}/short.txt`, "--eval-text", `${dir}/short.txt`],
      /--calib-text .*fewer than one window/,
    );
    // The same tokenizer (a copy of the bundled model, as --out writes one; or its file written again, other
    // formatting and key order) takes the default data: the run stops later, on an --eval-windows past the test set.
    await refuses(["--model", copy, "--eval-windows", "100000"], /--eval-windows 100000: .* holds \d+ windows/);
    const rewritten = Object.fromEntries(
      Object.entries(JSON.parse(await Deno.readTextFile(`${bundled}/tokenizer.json`))).reverse(),
    );
    await Deno.remove(`${copy}/tokenizer.json`);
    await Deno.writeTextFile(`${copy}/tokenizer.json`, JSON.stringify(rewritten, null, 1));
    await refuses(["--model", copy, "--eval-windows", "100000"], /--eval-windows 100000: .* holds \d+ windows/);
    // No tokenizer.json: nothing to compare; no config.json either: a mistyped --model, the loader's error.
    await Deno.remove(`${copy}/tokenizer.json`);
    await refuses(["--model", copy], /has no tokenizer\.json to compare/);
    await refuses(["--model", `${dir}/typo`], /typo\/config\.json/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main() refuses a model whose arena cannot fit before reading its weights, naming the limit", async () => {
  // The bundled model's files, linked, its config.json claiming positions enough for 33000-token windows, which need
  // a 33000² attention matrix alone (4.36 GB). (The bundled one refuses them for its 1024 positions first.)
  const bundled = new URL("../models/zp-llama-9m", import.meta.url).pathname;
  const dir = await Deno.makeTempDir();
  try {
    for (const e of Deno.readDirSync(bundled)) {
      if (e.name !== "config.json") await Deno.symlink(`${bundled}/${e.name}`, `${dir}/${e.name}`);
    }
    const config = JSON.parse(await Deno.readTextFile(`${bundled}/config.json`));
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...config, max_position_embeddings: 65536 }));
    await refuses(["--model", dir, "--seqlen", "33000", "--skip-dense"], /4 GiB/, /windows of 33000 tokens/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main() refuses windows past the model's max_position_embeddings, naming both", async () => {
  // The bundled model was trained on 1024 positions (its config.json); 1024 itself passes this check and fails on
  // the default calibration's window starts instead (another test).
  await refuses(["--seqlen", "1025", "--skip-dense"], /1025 tokens .*max_position_embeddings of 1024/, /--seqlen/);
  // Far past it, the run state would not fit the 4 GiB arena either: the window length is still what is named.
  await refuses(
    ["--seqlen", "100000", "--skip-dense"],
    /^--model .*: windows of 100000 tokens .*max_position_embeddings/,
  );
});

Deno.test("main() fails fast on an unreachable --server, with URL and cause, before reading the model", async () => {
  // Nothing listens on a port just released by a listener of our own.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const url = `http://127.0.0.1:${(probe.addr as Deno.NetAddr).port}`;
  probe.close();
  await refuses([...NO_MODEL, "--server", url], new RegExp(url.replaceAll(".", "\\.")), /refused/i);
});

Deno.test("main() fails fast when --server refuses its token (or none), saying whose it was", async () => {
  const backend = createCpuBackend({ threads: 1 });
  const server = await startServer({ backend, config: { token: "right" } });
  const saved = Deno.env.get("ZPRUNE_TOKEN");
  const url = new RegExp(
    `^zprune server ${server.url} \\(--server\\) failed GET /v1/info: unauthorized \\(HTTP 401\\): `,
  );
  try {
    Deno.env.delete("ZPRUNE_TOKEN");
    const flags = [...NO_MODEL, "--server", server.url];
    await refuses(flags, url, /: no Authorization header: .* \(none was sent: give --token or \$ZPRUNE_TOKEN\)$/);
    await refuses([...flags, "--token", "wrong"], url, /not this server's: .* \(the token sent is --token's\)$/);
    // A stale token in the environment is named as the one sent; --token wins over it, and an empty one is none.
    Deno.env.set("ZPRUNE_TOKEN", "stale");
    await refuses(flags, url, /not this server's: .* \(the token sent is \$ZPRUNE_TOKEN's\)$/);
    await refuses([...flags, "--token", "right"], /^--model \/nonexistent\/zprune-model: /);
    for (const empty of ["", "  \n"]) {
      Deno.env.set("ZPRUNE_TOKEN", empty);
      await refuses(flags, url, /: no Authorization header: .* \(none was sent/);
    }
  } finally {
    if (saved === undefined) Deno.env.delete("ZPRUNE_TOKEN");
    else Deno.env.set("ZPRUNE_TOKEN", saved);
    await server.close();
    await backend.close();
  }
});

Deno.test("main() names the flag and file of data it cannot read, and the line of a bad conversation", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const bundled = new URL("../models/zp-llama-9m", import.meta.url).pathname;
    const model = ["--model", bundled, "--skip-dense", "--eval-windows", "1", "--seqlen", "16"];
    await refuses([...model, "--calib-text", `${dir}/none.txt`], /^--calib-text .*none\.txt: /, /No such file/);
    await refuses([...model, "--eval-ids", `${dir}/none.u16`], /^--eval-ids .*none\.u16: /);
    // The bundled window starts fit windows of 256 tokens: far longer ones run past the ids, and the message says why
    // rather than blame --calib-starts, which was not given.
    const long = model.filter((a) => a !== "--seqlen" && a !== "16");
    await refuses(
      [...long, "--seqlen", "1024"],
      /^the default calibration \(windows drawn for --seqlen 256; for --seqlen 1024, give --calib-text\): window \d+ /,
      /\(of 64\): its start \d+ \+ 1024 tokens runs past/,
    );
    // More windows than the test set holds: refused, not evaluated whole under the asked-for count.
    await Deno.writeFile(`${dir}/four.u16`, new Uint8Array(4 * 16 * 2 + 6));
    await refuses(
      [
        ...model.filter((a) => a !== "--eval-windows" && a !== "1"),
        "--eval-windows",
        "5",
        "--eval-ids",
        `${dir}/four.u16`,
      ],
      /^--eval-windows 5: .*four\.u16 holds 4 windows of 16 tokens/,
    );
    await Deno.writeTextFile(
      `${dir}/chat.jsonl`,
      '{"messages": [{"role": "user", "content": "hi"}]}\n\n{"turns": []}\n',
    );
    await refuses([...model, "--calib-jsonl", `${dir}/chat.jsonl`], /^--calib-jsonl .*chat\.jsonl: line 3: expected/);
    // Text that is not UTF-8 (Latin-1's "café") is refused, naming the flag; a byte order mark is not a character.
    await Deno.writeFile(`${dir}/latin1.txt`, new Uint8Array([0x63, 0x61, 0x66, 0xe9, 0x0a]));
    await refuses([...model, "--eval-text", `${dir}/latin1.txt`], /^--eval-text .*latin1\.txt: .* is not UTF-8 text/);
    await Deno.writeFile(
      `${dir}/bom.jsonl`,
      new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode('{"turns": []}')]),
    );
    // Past the BOM, the first line is read as JSON: refused for what it holds, not as "Unexpected token".
    await refuses([...model, "--calib-jsonl", `${dir}/bom.jsonl`], /^--calib-jsonl .*bom\.jsonl: line 1: expected/);
    // A broken tokenizer.json is the model's fault: named as such, not blamed on the text being tokenized.
    const broken = `${dir}/model`;
    await Deno.mkdir(broken);
    for await (const e of Deno.readDir(bundled)) await Deno.symlink(`${bundled}/${e.name}`, `${broken}/${e.name}`);
    await Deno.remove(`${broken}/tokenizer.json`);
    await Deno.writeTextFile(`${broken}/tokenizer.json`, "{oops");
    await Deno.writeTextFile(`${dir}/eval.txt`, "some text\n");
    const texts = ["--calib-text", `${dir}/eval.txt`, "--eval-text", `${dir}/eval.txt`];
    await refuses(["--model", broken, "--skip-dense", ...texts, "--seqlen", "16"], /^\/.*\/model\/tokenizer\.json: /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A one-block LLaMA checkpoint in `dir`, every weight 0, with a vocabulary of `vocab` ids (8 wide, tied, f32). */
async function tinyLlama(dir: string, vocab: number): Promise<void> {
  const d = 8,
    hidden = 16,
    shapes: Record<string, number[]> = {
      "model.embed_tokens.weight": [vocab, d],
      "model.norm.weight": [d],
      "model.layers.0.input_layernorm.weight": [d],
      "model.layers.0.post_attention_layernorm.weight": [d],
      "model.layers.0.self_attn.q_proj.weight": [d, d],
      "model.layers.0.self_attn.k_proj.weight": [d, d],
      "model.layers.0.self_attn.v_proj.weight": [d, d],
      "model.layers.0.self_attn.o_proj.weight": [d, d],
      "model.layers.0.mlp.gate_proj.weight": [hidden, d],
      "model.layers.0.mlp.up_proj.weight": [hidden, d],
      "model.layers.0.mlp.down_proj.weight": [d, hidden],
    };
  // The data stay 0: uniform logits, so the perplexity of any ids is the vocabulary size (the test below uses it).
  const tensors = Object.fromEntries(
    Object.entries(shapes).map(([name, shape]) => [name, { dtype: "F32" as const, shape }]),
  );
  await Deno.writeFile(`${dir}/model.safetensors`, packedTensors(tensors));
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({
      model_type: "llama",
      hidden_size: d,
      intermediate_size: hidden,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      vocab_size: vocab,
      tie_word_embeddings: true,
      max_position_embeddings: 64,
    }),
  );
}

Deno.test("main(): for a vocabulary past 65,536 ids, an ids file must be named *.u16 or *.u32", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await tinyLlama(dir, 70_000);
    const ids = new Uint32Array(64).fill(69_999);
    await Deno.writeFile(`${dir}/ids.bin`, new Uint8Array(ids.buffer));
    await Deno.writeFile(`${dir}/ids.u32`, new Uint8Array(ids.buffer));
    await Deno.writeFile(`${dir}/at0.i64`, new Uint8Array(8));
    const base = ["--model", dir, "--seqlen", "16", "--skip-dense"];
    const named = /: the model's 70000 token ids do not all fit uint16: name the file \*\.u32 if it holds uint32 ids/;
    const starts = ["--calib-starts", `${dir}/at0.i64`];
    await refuses(
      [...base, ...starts, "--calib-ids", `${dir}/ids.bin`, "--eval-ids", `${dir}/ids.u32`],
      /^--calib-ids /,
      named,
    );
    await refuses(
      [...base, ...starts, "--calib-ids", `${dir}/ids.u32`, "--eval-ids", `${dir}/ids.bin`],
      /^--eval-ids /,
      named,
    );
    // Named .u32, the ids are read whole and the run ends. All-zero weights give uniform logits: a perplexity of
    // exactly the vocabulary's size.
    const report = `${dir}/report.json`;
    await main([
      ...base,
      ...starts,
      "--calib-ids",
      `${dir}/ids.u32`,
      "--eval-ids",
      `${dir}/ids.u32`,
      "--report",
      report,
    ]);
    const { prunedPpl } = JSON.parse(await Deno.readTextFile(report));
    assert.ok(Math.abs(prunedPpl - 70_000) < 1e-6 * 70_000, `${prunedPpl}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
