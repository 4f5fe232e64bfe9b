/**
 * `--resume DIR`'s files: what a run keeps is what the next run finds, and anything else (another run's progress,
 * a gap, a mask that is not its stats') is refused rather than applied. The CLI end to end is in
 * tests/e2e_prune_test.ts.
 */
import assert from "node:assert/strict";
import { checkNotHeld, checkpointDigest, type RunIdentity, RunProgress, tokensDigest } from "./_resume.ts";
import { loadCheckpoint, type PrunedBlock } from "../model/mod.ts";
import { decodeMsgpack, encodeMsgpack } from "../contract/wire.ts";

const IDENTITY: RunIdentity = {
  model: "/models/m",
  checkpoint: "12".repeat(32),
  blocks: 4,
  method: "zpruner",
  pattern: "layer",
  sparsity: 0.5,
  exponent: 1.5,
  seqlen: 64,
  calibration: { source: "calib.u16 at starts.i64", windows: 4, sha256: "ab".repeat(32) },
};

/** Block `l` of two 3 x `cols` layers whose masks prune `pruned` weights each, chosen by `seed`. */
function block(l: number, pruned = 7, seed = l, cols = 5): PrunedBlock {
  const total = 3 * cols;
  const layers = ["q", "k"].map((name, i) => {
    const mask = new Uint8Array(Math.ceil(total / 8));
    // Steps of 7, prime to 15 and 30, visit `pruned` distinct weights.
    for (let k = 0; k < pruned; k++) {
      const at = (seed + i + 7 * k) % total;
      mask[at >> 3]! |= 1 << (at & 7);
    }
    const stats = {
      pruned,
      total,
      sparsity: pruned / total,
      rowSparsity: { min: 0, max: 1, mean: pruned / total },
      nonFinite: 0 as const,
    };
    return { name: `model.layers.${l}.${name}.weight`, shape: [3, cols] as [number, number], mask, stats };
  });
  const server = { decodeMs: 1, computeMs: 2, encodeMs: 3, totalMs: 6 };
  return {
    block: l,
    layers,
    record: { block: l, collectMs: 10, requestMs: 20, server, applyMs: 1 },
    backend: "cpu",
    device: "test",
  };
}

/** Runs `use` on `dir` opened for `identity`, then closes it. */
async function withProgress<T>(dir: string, identity: RunIdentity, use: (p: RunProgress) => T | Promise<T>) {
  using progress = await RunProgress.open(dir, identity);
  return await use(progress);
}

/** Opens `dir` for `identity` and returns the error message it is refused with. */
async function refusal(dir: string, identity = IDENTITY): Promise<string> {
  const e = await RunProgress.open(dir, identity).then((p) => p.close(), (e: unknown) => e);
  assert.ok(e instanceof Error, "expected a refusal");
  return e.message;
}

/** Marks `dir`'s run file as `finish()` does before it removes anything: a finished run stopped part-way. */
async function markFinished(dir: string): Promise<void> {
  const run = JSON.parse(await Deno.readTextFile(`${dir}/zprune-run.json`));
  await Deno.writeTextFile(`${dir}/zprune-run.json`, JSON.stringify({ ...run, finished: true }));
}

Deno.test("RunProgress keeps blocks and the dense perplexity for the next run, removes them when done", async () => {
  const root = await Deno.makeTempDir();
  const dir = `${root}/progress`;
  try {
    const first = await RunProgress.open(dir, IDENTITY);
    assert.deepEqual([first.done, first.dense], [[], undefined]);
    const dense = { ppl: 12.5, windows: 2, ms: 100, sha256: "cd".repeat(32) };
    await first.keepDense(dense);
    await first.keepBlock(block(0));
    await first.keepBlock(block(1));

    first.close();
    const second = await RunProgress.open(dir, structuredClone(IDENTITY));
    assert.deepEqual(second.dense, dense);
    assert.deepEqual(second.done, [block(0), block(1)]);
    await second.keepBlock(block(2));
    await Deno.writeFile(`${dir}/.zprune-block-0003.msgpack.zprune-partial`, new Uint8Array(3)); // killed mid-write
    await Deno.writeTextFile(`${dir}/notes.txt`, "mine");
    second.close();
    using third = await RunProgress.open(dir, IDENTITY);
    assert.equal(third.done.length, 3);
    await third.finish();
    // The user's own file stays, and with it the directory the first run made.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["notes.txt"]);
    await Deno.remove(`${dir}/notes.txt`);
    await (await RunProgress.open(dir, IDENTITY)).finish();
    assert.deepEqual([...Deno.readDirSync(root)].map((e) => e.name), ["progress"], "not made by that run: kept");
    await Deno.remove(dir);
    await (await RunProgress.open(dir, IDENTITY)).finish();
    assert.deepEqual([...Deno.readDirSync(root)], [], "made by the run: removed");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("RunProgress refuses another run's progress, naming what differs", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A run that kept nothing (it failed early) guards nothing: another starts over in its place, even with another
    // window length (which a kept dense evaluation would be refused for, below).
    (await RunProgress.open(dir, { ...IDENTITY, method: "wanda" })).close();
    (await RunProgress.open(dir, { ...IDENTITY, seqlen: 128 })).close();
    const dense = { ppl: 12.5, windows: 2, ms: 100, sha256: "cd".repeat(32) };
    await withProgress(dir, IDENTITY, (p) => p.keepDense(dense));
    // A dense evaluation kept is progress (hours, on a large model), guarded by what it depends on: the model and the
    // window length. Other pruning settings start over in its place, with it.
    assert.match(await refusal(dir, { ...IDENTITY, seqlen: 128 }), /--seqlen was 64, this run's is 128;/);
    assert.match(await refusal(dir, { ...IDENTITY, checkpoint: "34".repeat(32) }), /weights\) was 121212121212/);
    for (const other of [{ ...IDENTITY, method: "wanda" }, { ...IDENTITY, sparsity: 0.6 }, IDENTITY]) {
      assert.deepEqual(await withProgress(dir, other, (p) => p.dense), dense);
    }
    await withProgress(dir, IDENTITY, (p) => p.keepBlock(block(0)));
    const cases: [Partial<RunIdentity>, RegExp][] = [
      [{ method: "wanda" }, /--method was zpruner, this run's is wanda;/],
      [{ sparsity: 0.6 }, /--sparsity was 0\.5, this run's is 0\.6;/],
      [{ exponent: undefined }, /--exponent was 1\.5, this run's is none;/],
      [{ layerRule: "le-kth" }, /--layer-rule was exact, this run's is le-kth;/],
      [{ seqlen: 128 }, /--seqlen was 64, this run's is 128;/],
      [{ model: "/models/other" }, /--model was \/models\/m, this run's is \/models\/other;/],
      [
        { checkpoint: "34".repeat(32) },
        /--model's checkpoint \(SHA-256 of its config and weights\) was 121212121212\.\.\., this run's is 3434/,
      ],
      [{ calibration: { ...IDENTITY.calibration, sha256: "ef".repeat(32) } }, /the calibration was 4 windows from/],
    ];
    for (const [change, want] of cases) {
      const message = await refusal(dir, { ...IDENTITY, ...change });
      assert.match(message, /^it holds the progress of another run: /);
      assert.match(message, want);
      assert.match(message, /give the same flags to continue it, or remove .* to start over$/);
    }
    assert.equal(await withProgress(dir, IDENTITY, (p) => p.done.length), 1, "the progress is left as it was");
    // The same ids from files spelled another way ("./c.txt" for "c.txt"): the same run.
    const respelled = { ...IDENTITY, calibration: { ...IDENTITY.calibration, source: "./calib.u16 at ./starts.i64" } };
    assert.equal(await withProgress(dir, respelled, (p) => p.done.length), 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RunProgress: layer rule exact is the run of no rule, the block digest zprune wrote before", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // IDENTITY's blocks as zprune at 19a3c5b (before --layer-rule) named their run: a run kept then continues now.
    const before = "168afb0198bdd4e78a0620080b8de1712bdcb0a6e8a349a3bd464a0b4068d4a5";
    const exact = { ...IDENTITY, layerRule: "exact" as const };
    for (const [kept, next] of [[IDENTITY, exact], [exact, IDENTITY]] as const) {
      await withProgress(dir, kept, (p) => p.keepBlock(block(0)));
      const file = decodeMsgpack(await Deno.readFile(`${dir}/zprune-block-0000.msgpack`)) as { run: string };
      assert.equal(file.run, before);
      assert.equal(await withProgress(dir, next, (p) => p.done.length), 1);
      await Deno.remove(dir, { recursive: true });
    }
    await withProgress(dir, { ...IDENTITY, layerRule: "le-kth" }, (p) => p.keepBlock(block(0, 8)));
    const file = decodeMsgpack(await Deno.readFile(`${dir}/zprune-block-0000.msgpack`)) as { run: string };
    assert.notEqual(file.run, before);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("RunProgress refuses blocks of another run, and masks that do not prune what the pattern does", async () => {
  const root = await Deno.makeTempDir();
  try {
    const [mine, theirs] = [`${root}/mine`, `${root}/theirs`];
    await withProgress(mine, IDENTITY, (p) => p.keepBlock(block(0)));
    await withProgress(theirs, { ...IDENTITY, sparsity: 0.6 }, (p) => p.keepBlock(block(0)));
    // A block copied from another run's DIR, whatever its masks: refused.
    await Deno.copyFile(`${theirs}/zprune-block-0000.msgpack`, `${mine}/zprune-block-0001.msgpack`);
    assert.match(await refusal(mine), /its zprune-block-0001\.msgpack is not block 1/);
    await Deno.copyFile(`${theirs}/zprune-block-0000.msgpack`, `${mine}/zprune-block-0000.msgpack`);
    assert.match(
      await refusal(mine),
      /^its zprune-block-0000\.msgpack was kept by another run \(other settings than zprune-run\.json's\); remove it/,
    );
    // Nor can the run file be edited to fit them: the blocks are refused as the run's are no longer theirs.
    const run = JSON.parse(await Deno.readTextFile(`${theirs}/zprune-run.json`));
    run.identity.sparsity = 0.5;
    await Deno.writeTextFile(`${theirs}/zprune-run.json`, JSON.stringify(run));
    assert.match(await refusal(theirs), /zprune-block-0000\.msgpack was kept by another run/);

    // A mask of the run's own, pruning 6 of 15 weights where layer 0.5 prunes floor(7.5) = 7.
    await Deno.remove(mine, { recursive: true });
    await withProgress(mine, IDENTITY, (p) => p.keepBlock(block(0, 6)));
    assert.match(await refusal(mine), /prunes 6 weights of model\.layers\.0\.q\.weight, not the 7 of layer at 0\.5;/);
    // API.md's floor(sparsity * rows * cols) read left to right: 0.7 * 3 * 10 is 20.999..., 0.7 * 30 is 21. Either.
    for (const pruned of [21, 20]) {
      const identity = { ...IDENTITY, sparsity: 0.7 };
      await Deno.remove(mine, { recursive: true });
      await withProgress(mine, identity, (p) => p.keepBlock(block(0, pruned, 0, 10)));
      assert.equal(await withProgress(mine, identity, (p) => p.done.length), 1, `${pruned}`);
    }
    // Layer rule le-kth: at least k + 1 (7 + 1 of 15 here), more where scores tie; all 15 at most.
    const leKth = { ...IDENTITY, layerRule: "le-kth" as const };
    for (const pruned of [8, 15, 7]) {
      await Deno.remove(mine, { recursive: true });
      await withProgress(mine, leKth, (p) => p.keepBlock(block(0, pruned)));
      if (pruned > 7) assert.equal(await withProgress(mine, leKth, (p) => p.done.length), 1, `${pruned}`);
      else assert.match(await refusal(mine, leKth), /prunes 7 weights of model\.layers\.0\.q\.weight, under the 8 of/);
    }
    // Row 0.4: floor(0.4 * 5) = 2 a row, 6 a layer; 2:5 would be 3 * 1 * 2 = 6 as well.
    for (const pattern of ["row", "2:5"]) {
      const identity = { ...IDENTITY, pattern, sparsity: pattern === "row" ? 0.4 : undefined };
      await Deno.remove(mine, { recursive: true });
      await withProgress(mine, identity, (p) => p.keepBlock(block(0, 6)));
      assert.equal(await withProgress(mine, identity, (p) => p.done.length), 1, pattern);
      assert.match(await refusal(mine, { ...identity, ...{ sparsity: 0.6, pattern: "row" } }), /--sparsity|--pattern/);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("RunProgress: a run stopped while removing its files after success leaves no progress behind", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await withProgress(dir, IDENTITY, async (p) => {
      for (let l = 0; l < 4; l++) await p.keepBlock(block(l));
    });
    // finish() marks the run done before it removes anything: here, as if stopped with blocks 0, 1 and 3 left.
    await markFinished(dir);
    await Deno.remove(`${dir}/zprune-block-0002.msgpack`);
    using again = await RunProgress.open(dir, { ...IDENTITY, sparsity: 0.6 });
    assert.deepEqual([again.done, again.dense], [[], undefined], "a fresh run, whatever its flags");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["zprune-run.holder", "zprune-run.json"]);
    // On a full disk (here: a directory where the mark's temporary file goes) the files go all the same.
    await again.keepBlock(block(0));
    await Deno.mkdir(`${dir}/.zprune-run.json.zprune-partial`);
    await again.finish();
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RunProgress refuses block files it cannot trust: a gap, a bad mask, no run file, a torn file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const progress = await RunProgress.open(dir, IDENTITY);
    await progress.keepBlock(block(0));
    await progress.keepBlock(block(2));
    progress.close(); // still writable: the files it writes are checked by other opens
    assert.match(await refusal(dir), /holds zprune-block-0002\.msgpack but no zprune-block-0001\.msgpack/);
    await Deno.remove(`${dir}/zprune-block-0002.msgpack`);

    // A mask that does not count its stats' pruned weights: bits flipped on disk, or another layer's.
    const bad = block(1);
    bad.layers[1]!.mask[0]! ^= 1;
    await progress.keepBlock(bad);
    assert.match(
      await refusal(dir),
      /its zprune-block-0001\.msgpack holds a mask for model\.layers\.1\.k\.weight that is not its stats' 7 of 15/,
    );
    const torn = (await Deno.readFile(`${dir}/zprune-block-0000.msgpack`)).subarray(0, 40);
    await Deno.writeFile(`${dir}/zprune-block-0001.msgpack`, torn);
    assert.match(await refusal(dir), /its zprune-block-0001\.msgpack cannot be read \(.*\); remove it/);
    await Deno.remove(`${dir}/zprune-block-0001.msgpack`);
    await progress.keepBlock(block(4));
    assert.match(await refusal(dir), /but no zprune-block-0001/);
    await Deno.remove(`${dir}/zprune-block-0004.msgpack`);

    await Deno.remove(`${dir}/zprune-run.json`);
    assert.match(await refusal(dir), /holds zprune-block-0000\.msgpack but no zprune-run\.json/);
    await Deno.writeTextFile(`${dir}/zprune-run.json`, "{not json");
    assert.match(await refusal(dir), /its zprune-run\.json is not JSON/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RunProgress locks DIR: a second run is refused while one has it, not after it ends or dies", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const first = await RunProgress.open(dir, IDENTITY);
    await first.keepBlock(block(0));
    assert.match(
      await refusal(dir),
      new RegExp(`^another run has it open \\(pid ${Deno.pid} on .*, since .*\\); one run`),
    );
    // The CLI's check before it reads the model, which leaves DIR as it was.
    await assert.rejects(checkNotHeld(dir), new RegExp(`^Error: another run has it open \\(pid ${Deno.pid} `));
    // The lock is on DIR, not on the note naming its holder: removing the note unlocks nothing.
    await Deno.remove(`${dir}/zprune-run.holder`);
    assert.match(await refusal(dir), /^another run has it open \(it has not said who it is yet\)/);
    first.close();
    await checkNotHeld(dir);
    await checkNotHeld(`${dir}/not-made`);
    await withProgress(dir, IDENTITY, (p) => assert.equal(p.done.length, 1));

    // A run killed outright (no cleanup of its own) leaves the lock to the system, which drops it with the process.
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { RunProgress } from ${JSON.stringify(new URL("./_resume.ts", import.meta.url).href)};
        const p = await RunProgress.open(${JSON.stringify(dir)}, ${JSON.stringify(IDENTITY)});
        console.log("open", p.done.length);
        setInterval(() => {}, 1000); // held until killed`,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      assert.equal((await reader.read()).value?.trim(), "open 1");
      assert.match(await refusal(dir), new RegExp(`^another run has it open \\(pid ${child.pid} on `));
    } finally {
      child.kill("SIGKILL");
      await child.status;
      await reader.cancel();
    }
    using after = await RunProgress.open(dir, IDENTITY);
    assert.equal(after.done.length, 1, "the killed run's DIR is open to the next");
    await after.finish();
    assert.deepEqual([...Deno.readDirSync(dir)], [], "finish() removes the holder's note too");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RunProgress removes the DIR its first run made, whichever later run finishes it", async () => {
  const root = await Deno.makeTempDir();
  const dir = `${root}/progress`;
  try {
    // A run that kept nothing, then the run that finishes: the second found DIR there, the first made it.
    (await RunProgress.open(dir, IDENTITY)).close();
    await (await RunProgress.open(dir, IDENTITY)).finish();
    assert.deepEqual([...Deno.readDirSync(root)], [], "after a run that kept nothing");
    // A finished run stopped while removing its files (marked finished, block 0 left), then a fresh run.
    await withProgress(dir, IDENTITY, (p) => p.keepBlock(block(0)));
    await markFinished(dir);
    await (await RunProgress.open(dir, IDENTITY)).finish();
    assert.deepEqual([...Deno.readDirSync(root)], [], "after a finished run's leftovers");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("RunProgress refuses edited files: a block's format, mask or record, the run file's format", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A block past the model's last (blocks 0 to 3).
    await withProgress(dir, IDENTITY, async (p) => {
      for (let l = 0; l <= 4; l++) await p.keepBlock(block(l));
    });
    assert.match(await refusal(dir), /^it holds zprune-block-0004\.msgpack, past the model's 4 blocks$/);
    await Deno.remove(`${dir}/zprune-block-0004.msgpack`);
    assert.equal(await withProgress(dir, IDENTITY, (p) => p.done.length), 4);

    // Block 0's file rewritten with one field changed (the run's digest left as it was).
    const path = `${dir}/zprune-block-0000.msgpack`;
    const original = await Deno.readFile(path);
    const edits: [string, (b: Record<string, unknown>) => void, RegExp][] = [
      ["no format", (b) => delete b.format, /its zprune-block-0000\.msgpack is not block 0 of a zprune-resume\/2 run/],
      ["a longer mask", (b) => {
        const layer = (b.layers as { mask: Uint8Array }[])[0]!;
        layer.mask = Uint8Array.from([...layer.mask, 0]); // the same bits set: only its length says
      }, /holds a mask for model\.layers\.0\.q\.weight that is not its stats'/],
      ["another block's record", (b) => (b.record as { block: number }).block = 1, /holds no record of its timings/],
    ];
    for (const [what, edit, want] of edits) {
      const b = decodeMsgpack(original) as Record<string, unknown>;
      edit(b);
      await Deno.writeFile(path, encodeMsgpack(b));
      assert.match(await refusal(dir), want, what);
    }
    await Deno.writeFile(path, original);
    assert.equal(await withProgress(dir, IDENTITY, (p) => p.done.length), 4);

    // A run file of the first format, whose blocks did not name their run.
    const run = JSON.parse(await Deno.readTextFile(`${dir}/zprune-run.json`));
    await Deno.writeTextFile(`${dir}/zprune-run.json`, JSON.stringify({ ...run, format: "zprune-resume/1" }));
    assert.match(
      await refusal(dir),
      /its zprune-run\.json is not a zprune-resume\/2 file .*; remove .* to start over$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RunProgress: a holder's note is shown without what could drive a terminal", async () => {
  const dir = await Deno.makeTempDir();
  try {
    using _held = await RunProgress.open(dir, IDENTITY);
    await Deno.writeTextFile(`${dir}/zprune-run.holder`, "pid 1\x1b[2J\u202eevil\n");
    const message = await refusal(dir);
    assert.match(message, /^another run has it open \(pid 1\?\[2J\?evil\); /);
    assert.ok(!message.includes("\x1b") && !message.includes("\u202e"), JSON.stringify(message));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Runs `use` with `Deno[name]` replaced by `stub`, then puts it back. */
async function stubbing<K extends "remove" | "rename", T>(
  name: K,
  stub: (real: (typeof Deno)[K]) => (typeof Deno)[K],
  use: () => Promise<T>,
): Promise<T> {
  const real = Deno[name];
  (Deno as Record<K, (typeof Deno)[K]>)[name] = stub(real);
  try {
    return await use();
  } finally {
    (Deno as Record<K, (typeof Deno)[K]>)[name] = real;
  }
}

Deno.test("RunProgress.finish() stopped part-way leaves no progress, or blocks 0 to j if it cannot mark", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const failOn = (file: string) => (real: typeof Deno.remove): typeof Deno.remove => (path, options) =>
      String(path).endsWith(file) ? Promise.reject(new Error(`stopped at ${file}`)) : real(path, options);
    const keepFour = () =>
      withProgress(dir, IDENTITY, async (p) => {
        for (let l = 0; l < 4; l++) await p.keepBlock(block(l));
      });
    // Marked finished before anything goes: what is left is no progress, whatever the next run's flags.
    await keepFour();
    await stubbing("remove", failOn("zprune-block-0002.msgpack"), async () => {
      using p = await RunProgress.open(dir, IDENTITY);
      await assert.rejects(p.finish(), /stopped at zprune-block-0002/);
    });
    assert.deepEqual(await withProgress(dir, { ...IDENTITY, sparsity: 0.6 }, (p) => p.done), []);

    // Where the mark cannot be written (a full disk; here a directory at its temporary name), the last blocks go
    // first: a stop leaves blocks 0 to j, which the same command continues.
    await keepFour();
    await Deno.mkdir(`${dir}/.zprune-run.json.zprune-partial`);
    await stubbing("remove", failOn("zprune-block-0002.msgpack"), async () => {
      using p = await RunProgress.open(dir, IDENTITY);
      await assert.rejects(p.finish(), /stopped at zprune-block-0002/);
    });
    assert.equal(await withProgress(dir, IDENTITY, (p) => p.done.length), 3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RunProgress: a failed write leaves the old file whole; a failed open removes the DIR it made", async () => {
  const root = await Deno.makeTempDir();
  const dir = `${root}/progress`;
  try {
    const dense = { ppl: 12.5, windows: 2, ms: 100, sha256: "cd".repeat(32) };
    await withProgress(dir, IDENTITY, async (p) => {
      await p.keepDense(dense);
      await p.keepBlock(block(0));
    });
    // The disk fails as the new run file is synced: the one on disk is still the last whole one.
    const sync = Deno.FsFile.prototype.syncData;
    Deno.FsFile.prototype.syncData = () => Promise.reject(new Error("disk failed"));
    try {
      await withProgress(dir, IDENTITY, async (p) => {
        await assert.rejects(
          p.keepDense({ ...dense, ppl: 99 }),
          /zprune-run\.json: could not be written \(disk failed\)/,
        );
      });
    } finally {
      Deno.FsFile.prototype.syncData = sync;
    }
    assert.deepEqual(await withProgress(dir, IDENTITY, (p) => [p.dense, p.done.length]), [dense, 1]);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "zprune-block-0000.msgpack",
      "zprune-run.holder",
      "zprune-run.json",
    ]);
    await Deno.remove(dir, { recursive: true });

    // A new DIR whose run file cannot be put in place: the open fails, and the DIR it made is gone.
    await stubbing("rename", () => () => Promise.reject(new Error("no rename")), async () => {
      await assert.rejects(RunProgress.open(dir, IDENTITY), /could not be written \(no rename\)/);
    });
    assert.deepEqual([...Deno.readDirSync(root)], []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("tokensDigest() is SHA-256 of the ids as 32-bit integers, whatever array holds them", async () => {
  const ids = [1, 2, 65535, 0];
  const digest = tokensDigest(Uint16Array.from(ids));
  assert.equal(digest, tokensDigest(Int32Array.from(ids)));
  // An independent SHA-256 of the same bytes: Web Crypto's.
  const bytes = new Uint8Array(Uint32Array.from(ids).buffer);
  const web = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  assert.equal(digest, [...web].map((b) => b.toString(16).padStart(2, "0")).join(""));
  assert.notEqual(digest, tokensDigest(Uint16Array.from([1, 2, 65535, 1])));
});

Deno.test("checkpointDigest() changes with any weight or config value, not with the config's key order", async () => {
  const ckpt = await loadCheckpoint(new URL("../models/zp-llama-9m", import.meta.url).pathname);
  const digest = checkpointDigest(ckpt);
  assert.match(digest, /^[0-9a-f]{64}$/);
  const reordered = Object.fromEntries(Object.entries(ckpt.config).reverse());
  assert.equal(checkpointDigest({ ...ckpt, config: reordered }), digest);
  assert.notEqual(checkpointDigest({ ...ckpt, config: { ...ckpt.config, rope_theta: 20000 } }), digest);
  // One bit of one weight, the last one stored: the model fine-tuned a little.
  const last = [...ckpt.tensors.values()].at(-1)!;
  last.data[last.data.length - 1]! ^= 1;
  assert.notEqual(checkpointDigest(ckpt), digest);
  last.data[last.data.length - 1]! ^= 1;
  assert.equal(checkpointDigest(ckpt), digest);
});
