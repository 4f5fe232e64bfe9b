/**
 * `--resume DIR`: the masks of every block the run prunes, kept in DIR as it goes, so that a run stopped by a failure,
 * a signal or a lost machine continues after its last pruned block when run again with the same model, calibration
 * and settings. DIR holds `zprune-run.json` (what the masks depend on, and the dense evaluation) and one
 * `zprune-block-NNNN.msgpack` per pruned block (its layers as the server answered them, masks included). Each file is
 * written whole under a temporary name and then renamed: a file there is complete. A run that succeeds removes them.
 * While a run has DIR open it holds an exclusive lock on DIR itself (an flock, which the system drops when the process
 * ends however it ends), and says who it is in `zprune-run.holder`: a second run on the same DIR is refused, naming
 * the first, rather than writing over its blocks.
 */
import { parsePattern, prunedCounts, PruneResponseSchema } from "../contract/api.ts";
import { countBits } from "../contract/mask_bits.ts";
import { decodeMsgpack, encodeMsgpack } from "../contract/wire.ts";
import { createHash } from "node:crypto";
import {
  type BlockRecord,
  canonicalJson,
  type Checkpoint,
  type LayerRule,
  type PrunedBlock,
  type TokenArray,
} from "../model/mod.ts";

/** What a run's masks depend on: a stopped run continues only with all of it unchanged. */
export interface RunIdentity {
  /** The model directory, its symbolic links resolved. */
  model: string;
  /** SHA-256 of its config and dense weights (`checkpointDigest`): the same model, not another written over it. */
  checkpoint: string;
  blocks: number;
  method: string;
  pattern: string;
  sparsity?: number;
  /** The activation exponent the server uses (--exponent or the method's default); absent for magnitude. */
  exponent?: number;
  /** --layer-rule; "exact" (the server's masks as they came) is the same run as the field absent. */
  layerRule?: LayerRule;
  seqlen: number;
  /** The calibration windows' token ids, whatever flags chose them. */
  calibration: { source: string; windows: number; sha256: string };
}

/** A dense evaluation kept with the run: used again when the next run evaluates the same ids. */
export interface KeptDense {
  ppl: number;
  windows: number;
  ms: number;
  /** SHA-256 of the evaluated token ids. */
  sha256: string;
}

/** `zprune-run.json`. */
interface RunFile {
  format: typeof FORMAT;
  identity: RunIdentity;
  /** Whether the first run made DIR: then the run that finishes removes it, if nothing else is in it. */
  madeDir: boolean;
  dense?: KeptDense;
  /** Set by a run that succeeded before it removes its files: whatever it leaves is no progress. */
  finished?: true;
}

/** `zprune-block-NNNN.msgpack`: a pruned block, and the run it belongs to. */
interface BlockFile extends PrunedBlock {
  format: typeof FORMAT;
  /** `runDigest` of the run that kept it: a block copied from another run's DIR is refused. */
  run: string;
}

// 2: blocks name their run (1 did not, and is refused as another format).
const FORMAT = "zprune-resume/2";
const RUN_FILE = "zprune-run.json";
const HOLDER_FILE = "zprune-run.holder";
const blockFile = (l: number) => `zprune-block-${String(l).padStart(4, "0")}.msgpack`;
const BLOCK_FILE = /^zprune-block-(\d{4,})\.msgpack$/;
const TEMP_FILE = /^\.zprune-(run\.json|run\.holder|block-\d{4,}\.msgpack)\.zprune-partial$/;

/** Whether a run's DIR holds (or may write) a file of this name: another writer there would replace or lose it. */
export function isResumeFile(name: string): boolean {
  return name === RUN_FILE || name === HOLDER_FILE || BLOCK_FILE.test(name) || TEMP_FILE.test(name);
}

/** SHA-256, in hex, of token ids (as 32-bit integers: the same ids give the same digest from any array type). */
export function tokensDigest(ids: TokenArray): string {
  return createHash("sha256").update(new Uint8Array(Uint32Array.from(ids).buffer)).digest("hex");
}

/**
 * SHA-256, in hex, of a checkpoint's config (keys sorted) and every tensor (name, dtype, shape and bytes, by name): a
 * fine-tuned model of the same shapes at the same path differs. node:crypto's incremental hash reads the tensors in
 * place (about 0.75 GB/s on this project's 2-core VMs, where crypto.subtle took 8 s for 1 GiB, copying it).
 */
export function checkpointDigest(ckpt: Checkpoint): string {
  const hash = createHash("sha256").update(canonicalJson(ckpt.config));
  for (const name of [...ckpt.tensors.keys()].sort()) {
    const t = ckpt.tensors.get(name)!;
    hash.update(JSON.stringify([name, t.dtype, t.shape])).update(t.data);
  }
  return hash.digest("hex");
}

/**
 * `identity` with a layer rule of "exact" left out: the same run as one without the field, as runs kept before
 * --layer-rule existed are (their digests stay what they were).
 */
function normalIdentity(identity: RunIdentity): RunIdentity {
  const { layerRule, ...rest } = identity;
  return layerRule === undefined || layerRule === "exact" ? rest : identity;
}

/** SHA-256, in hex, of what a run's masks depend on (the calibration by its ids, not its files' spelling). */
function runDigest(identity: RunIdentity): string {
  const { source: _, ...calibration } = identity.calibration;
  // Through JSON first: an absent field and one set to undefined (as the run file keeps them) are the same.
  const plain = JSON.parse(JSON.stringify({ ...normalIdentity(identity), calibration }));
  return createHash("sha256").update(canonicalJson(plain)).digest("hex");
}

/** The identity fields a dense evaluation depends on: with these unchanged, it stands for any pruning settings. */
const DENSE_KEYS: readonly (keyof RunIdentity)[] = ["model", "checkpoint", "blocks", "seqlen"];

/** The flag that sets each identity field, for a message saying which one differs. */
const FLAG_OF: Record<keyof RunIdentity, string> = {
  model: "--model",
  checkpoint: "--model's checkpoint (SHA-256 of its config and weights)",
  blocks: "--model's number of decoder blocks",
  method: "--method",
  pattern: "--pattern",
  sparsity: "--sparsity",
  exponent: "--exponent",
  layerRule: "--layer-rule",
  seqlen: "--seqlen",
  calibration: "the calibration",
};

/** A field's value as a message shows it. */
function shown(key: keyof RunIdentity, v: unknown): string {
  if (v === undefined) return key === "layerRule" ? "exact" : "none";
  if (key === "calibration") {
    const c = v as RunIdentity["calibration"];
    return `${c.windows} windows from ${c.source} (ids ${c.sha256.slice(0, 12)}...)`;
  }
  if (key === "checkpoint") return `${String(v).slice(0, 12)}...`;
  return typeof v === "string" ? v : JSON.stringify(v);
}

/**
 * A run's kept progress in `--resume DIR`: what it pruned already, and the means to keep what it prunes next. It holds
 * DIR's lock until `close()` (or `finish()`).
 */
export class RunProgress implements Disposable {
  /** Blocks 0, 1, ... pruned by earlier runs, in order. */
  readonly done: PrunedBlock[];
  /** The dense evaluation an earlier run kept, if any. */
  dense: KeptDense | undefined;
  readonly #dir: string;
  readonly #run: RunFile;
  readonly #digest: string;
  /** DIR opened and locked; undefined where its filesystem has no locks. */
  readonly #lock: Deno.FsFile | undefined;

  private constructor(dir: string, run: RunFile, done: PrunedBlock[], lock: Deno.FsFile | undefined) {
    this.#dir = dir;
    this.#run = run;
    this.#digest = runDigest(run.identity);
    this.done = done;
    this.dense = run.dense;
    this.#lock = lock;
  }

  /**
   * Opens `dir` for a run of `identity`: the blocks an earlier run of the same identity pruned (none for a new run),
   * `dir` made when absent. Refuses a DIR another run has open, another run's progress (naming what differs) and files
   * that are not whole.
   */
  static async open(dir: string, identity: RunIdentity): Promise<RunProgress> {
    let madeDir = false;
    try {
      await Deno.mkdir(dir);
      madeDir = true;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    let lock: Deno.FsFile | undefined;
    try {
      lock = await lockDir(dir);
      // Only for a refusal's message: a run that cannot write it writes its progress or says why it cannot.
      if (lock) await writeWhole(dir, HOLDER_FILE, new TextEncoder().encode(holderNote() + "\n")).catch(() => {});
      return await RunProgress.#read(dir, identity, madeDir, lock);
    } catch (e) {
      // Made and held by this run, it holds nothing of another's; removed before another can take it.
      if (madeDir && lock) await Deno.remove(dir, { recursive: true }).catch(() => {});
      lock?.close();
      throw e;
    }
  }

  static async #read(
    dir: string,
    identity: RunIdentity,
    madeDir: boolean,
    lock: Deno.FsFile | undefined,
  ): Promise<RunProgress> {
    let kept = await readRunFile(dir);
    let blocks = await blockNumbers(dir);
    if (kept?.finished) {
      // A run that succeeded and was stopped while removing its files: what is left is no progress.
      await removeBlocks(dir);
      madeDir ||= kept.madeDir;
      [kept, blocks] = [undefined, []];
    }
    if (kept === undefined && blocks.length > 0) {
      throw new Error(`it holds ${blockFile(blocks[0]!)} but no ${RUN_FILE}: not a run's progress to continue`);
    }
    // Without a block, only a kept dense evaluation is progress (hours, on a large model), and only what it depends on
    // is guarded: a rerun with other pruning settings starts over in the same directory, reusing it.
    const guarded = blocks.length > 0 ? Object.keys(FLAG_OF) as (keyof RunIdentity)[] : kept?.dense ? DENSE_KEYS : [];
    for (const key of guarded) {
      // The calibration by its ids alone: its source names files as they were spelled ("./c.txt", "c.txt").
      const compared = (i: RunIdentity) =>
        key === "calibration" ? [i.calibration?.windows, i.calibration?.sha256] : normalIdentity(i)[key];
      if (JSON.stringify(compared(kept!.identity)) !== JSON.stringify(compared(identity))) {
        throw new Error(
          `it holds the progress of another run: ${FLAG_OF[key]} was ${shown(key, kept!.identity[key])}, ` +
            `this run's is ${shown(key, identity[key])}; give the same flags to continue it, or remove ${dir} ` +
            "to start over",
        );
      }
    }
    if (kept === undefined || blocks.length === 0) {
      const run: RunFile = {
        format: FORMAT,
        identity,
        madeDir: madeDir || (kept?.madeDir ?? false),
        dense: kept?.dense,
      };
      await writeWhole(dir, RUN_FILE, new TextEncoder().encode(JSON.stringify(run, null, 2) + "\n"));
      return new RunProgress(dir, run, [], lock);
    }
    const done: PrunedBlock[] = [];
    for (const [i, l] of blocks.entries()) {
      if (l !== i) throw new Error(`it holds ${blockFile(l)} but no ${blockFile(i)}: blocks are pruned in order`);
      if (l >= identity.blocks) throw new Error(`it holds ${blockFile(l)}, past the model's ${identity.blocks} blocks`);
      done.push(await readBlock(dir, l, kept.identity));
    }
    return new RunProgress(dir, kept, done, lock);
  }

  /** Keeps the dense evaluation with the run. */
  async keepDense(dense: KeptDense): Promise<void> {
    this.dense = dense;
    this.#run.dense = dense;
    await writeWhole(this.#dir, RUN_FILE, new TextEncoder().encode(JSON.stringify(this.#run, null, 2) + "\n"));
  }

  /** Keeps a pruned block: written whole before this returns. */
  async keepBlock(block: PrunedBlock): Promise<void> {
    const file: BlockFile = { format: FORMAT, run: this.#digest, ...block };
    await writeWhole(this.#dir, blockFile(block.block), encodeMsgpack(file));
  }

  /** Removes the run's files, and the directory where the first run made it and nothing else is in it; unlocks. */
  async finish(): Promise<void> {
    using _ = this;
    // Marked first: a run stopped while the files go leaves no progress that a rerun would continue or refuse. On a
    // full disk the mark cannot be written, and the files go anyway: the last blocks first, so that what a stop
    // leaves is blocks 0 to j, which the same command continues.
    this.#run.finished = true;
    await writeWhole(this.#dir, RUN_FILE, new TextEncoder().encode(JSON.stringify(this.#run, null, 2) + "\n"))
      .catch(() => {});
    await removeBlocks(this.#dir);
    for (const name of [HOLDER_FILE, RUN_FILE]) {
      await Deno.remove(`${this.#dir}/${name}`).catch((e) => {
        if (!(e instanceof Deno.errors.NotFound)) throw e; // the holder's note, say, removed by hand
      });
    }
    if (this.#run.madeDir) await Deno.remove(this.#dir).catch(() => {}); // refused unless empty
  }

  /** Unlocks DIR, its files kept for the next run. */
  close(): void {
    try {
      this.#lock?.close();
    } catch (e) {
      if (!(e instanceof Deno.errors.BadResource)) throw e; // closed already
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Removes the temporary files a run killed while writing leaves in `dir`, then its block files, the last first. */
async function removeBlocks(dir: string): Promise<void> {
  const temps: string[] = [];
  for await (const e of Deno.readDir(dir)) if (TEMP_FILE.test(e.name)) temps.push(e.name);
  for (const name of temps) await Deno.remove(`${dir}/${name}`);
  for (const l of (await blockNumbers(dir)).reverse()) await Deno.remove(`${dir}/${blockFile(l)}`);
}

/** Who holds a DIR: this process. */
function holderNote(): string {
  return `pid ${Deno.pid} on ${Deno.hostname()}, since ${new Date().toISOString()}`;
}

/**
 * Takes the exclusive lock on `dir` (an flock on the directory itself, which the system drops when the process ends, a
 * crash included), or refuses, naming the run that holds it. On a filesystem without locks, says so on stderr and goes
 * on unlocked (undefined), as a run without the lock would.
 */
async function lockDir(dir: string): Promise<Deno.FsFile | undefined> {
  const file = await Deno.open(dir, { read: true });
  let locked: boolean;
  try {
    locked = await file.tryLock(true);
  } catch (e) {
    file.close();
    console.error(
      `prune: --resume ${dir} cannot be locked (${e instanceof Error ? e.message : e}); make sure no other run uses it`,
    );
    return undefined;
  }
  if (locked) return file;
  file.close();
  throw await heldError(dir);
}

/** The refusal of a `dir` another run holds, naming that run as its note says. */
async function heldError(dir: string): Promise<Error> {
  // Printed as it says, less what could drive a terminal: it is a file anyone with DIR may write.
  const note = (await Deno.readTextFile(`${dir}/${HOLDER_FILE}`).catch(() => "")).trim()
    .replace(/[\p{Cc}\p{Cf}]/gu, "?").slice(0, 200);
  return new Error(
    `another run has it open (${note || "it has not said who it is yet"}); one run at a time per --resume DIR: ` +
      "wait for that one to end, or give this run another DIR",
  );
}

/**
 * Refuses, before a run reads its model, a `dir` that another run has open; leaves it unlocked. A `dir` that does not
 * exist, or cannot be locked, passes (RunProgress.open says more).
 */
export async function checkNotHeld(dir: string): Promise<void> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(dir, { read: true });
  } catch {
    return;
  }
  try {
    if (await file.tryLock(true).catch(() => true)) return;
  } finally {
    file.close();
  }
  throw await heldError(dir);
}

/** `name` written into `dir` whole: under a temporary name first, then renamed over any earlier one. */
async function writeWhole(dir: string, name: string, bytes: Uint8Array): Promise<void> {
  const temp = `${dir}/.${name}.zprune-partial`;
  try {
    // On disk before the rename: after a power loss, a file under its own name is not an empty or torn one.
    using file = await Deno.open(temp, { write: true, create: true, truncate: true });
    for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
    await file.syncData();
    await Deno.rename(temp, `${dir}/${name}`);
  } catch (e) {
    await Deno.remove(temp).catch(() => {});
    throw new Error(`${dir}/${name}: could not be written (${e instanceof Error ? e.message : e})`, { cause: e });
  }
}

/** The run file in `dir`, or undefined where there is none. */
async function readRunFile(dir: string): Promise<RunFile | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(`${dir}/${RUN_FILE}`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  let run: RunFile;
  try {
    run = JSON.parse(text);
  } catch (e) {
    throw new Error(`its ${RUN_FILE} is not JSON (${e instanceof Error ? e.message : e})`, { cause: e });
  }
  if (run?.format !== FORMAT || typeof run.identity !== "object" || run.identity === null) {
    // zprune-resume/1 (blocks that do not name their run) included: remove DIR to start over.
    throw new Error(
      `its ${RUN_FILE} is not a ${FORMAT} file (another program's, or an earlier zprune's); remove ${dir} to ` +
        "start over",
    );
  }
  return run;
}

/** The block numbers of the block files in `dir`, ascending. */
async function blockNumbers(dir: string): Promise<number[]> {
  const numbers: number[] = [];
  for await (const e of Deno.readDir(dir)) {
    const m = BLOCK_FILE.exec(e.name);
    if (m && e.isFile) numbers.push(Number(m[1]));
  }
  return numbers.sort((a, b) => a - b);
}

/**
 * Block `l`'s file, checked as the client checks an answer (the contract's schema for its layers, each mask as long as
 * its layer and counting the pruned weights its stats say), and as belonging to the run of `identity`: kept by that
 * run, each mask pruning as many weights as its pattern and sparsity do (under layer rule le-kth, at least one more).
 */
async function readBlock(dir: string, l: number, identity: RunIdentity): Promise<PrunedBlock> {
  const name = blockFile(l);
  const fail = (why: string): never => {
    throw new Error(`its ${name} ${why}; remove it (and the blocks after it) to prune them again`);
  };
  let raw: Record<string, unknown>;
  try {
    raw = decodeMsgpack(await Deno.readFile(`${dir}/${name}`)) as Record<string, unknown>;
  } catch (e) {
    return fail(`cannot be read (${e instanceof Error ? e.message : e})`);
  }
  if (raw?.format !== FORMAT || raw.block !== l) fail(`is not block ${l} of a ${FORMAT} run`);
  if (raw.run !== runDigest(identity)) fail(`was kept by another run (other settings than ${RUN_FILE}'s)`);
  const parsed = PruneResponseSchema.shape.layers.safeParse(raw.layers);
  if (!parsed.success) fail(`holds layers the contract does not allow (${parsed.error.issues[0]?.message})`);
  const layers = parsed.data!;
  const pattern = parsePattern(identity.pattern, identity.sparsity);
  for (const layer of layers) {
    const [rows, cols] = layer.shape, n = rows * cols;
    if (layer.mask.byteLength !== Math.ceil(n / 8) || countBits(layer.mask, 0, n) !== layer.stats.pruned) {
      fail(`holds a mask for ${layer.name} that is not its stats' ${layer.stats.pruned} of ${n} weights`);
    }
    const counts = prunedCounts(pattern, rows, cols);
    const at = identity.sparsity === undefined ? "" : ` at ${identity.sparsity}`;
    if (identity.layerRule === "le-kth") {
      const least = Math.min(...counts) + 1; // k < n: sparsity < 1
      if (layer.stats.pruned < least) {
        fail(`prunes ${layer.stats.pruned} weights of ${layer.name}, under the ${least} of le-kth layer${at}`);
      }
    } else if (!counts.includes(layer.stats.pruned)) {
      fail(`prunes ${layer.stats.pruned} weights of ${layer.name}, not the ${counts[0]} of ${identity.pattern}${at}`);
    }
  }
  const record = raw.record as BlockRecord;
  if (typeof record !== "object" || record === null || record.block !== l) fail("holds no record of its timings");
  return { block: l, layers, record, backend: String(raw.backend), device: String(raw.device) };
}
