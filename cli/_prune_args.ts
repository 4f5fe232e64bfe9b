/**
 * The flags of `deno task prune`, parsed and checked as a whole before any work starts: every number in range,
 * the pruning settings by the contract's own schema, and no flag that another makes ineffective. Errors name the
 * flag.
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { basename, dirname, resolve } from "node:path";
import { type Method, parsePattern, PruneRequestSchema } from "../contract/api.ts";
import { checkpointWeightFiles, filesIn, FOLDERS_KEPT, isWeightFile, SOURCE_ONLY_FILES } from "../model/safetensors.ts";
import { LAYER_RULES, type LayerRule } from "../model/layer_rule.ts";
import { checkNotHeld, isResumeFile } from "./_resume.ts";

const repo = (p: string) => fileURLToPath(new URL(`../${p}`, import.meta.url));

/** Defaults: the bundled model and corpus, the reference's calibration and the first 64 test windows. */
export const DEFAULTS = {
  model: repo("models/zp-llama-9m"),
  calibIds: repo("data/corpus/calib_ids.u16"),
  calibStarts: repo("data/corpus/calib_starts_seed0.i64"),
  evalIds: repo("data/corpus/test_ids.u16"),
  seqlen: 256,
  nsamples: 64,
  evalWindows: 64,
  method: "zpruner",
  pattern: "layer",
  sparsity: 0.5,
};

/** A flag refused before any work starts (parsePruneArgs, checkOutputs): the command line exits 2 for it. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** `--help`. */
export const HELP = `deno task prune [flags]

Prunes every decoder block's 7 linear layers of a LLaMA checkpoint, block by block, through POST /v1/prune,
and reports dense and pruned perplexity. Flags are checked before any work starts; a flag that another one
would make ineffective is an error. Exit status: 0 done, 1 failed, 2 a flag refused, 130 or 143 stopped
by a signal.

  --model DIR            checkpoint directory (default: models/zp-llama-9m); its weights plus the run state
                         must fit WebAssembly's 4 GiB memory: about 1B parameters in float32, 2B in bf16 or
                         f16 (kept as stored: bf16 always, f16 where float32 would not fit; the same results)
  --server URL           zprune server (default: an in-process server on the CPU backend); checked with
                         GET /v1/info before anything else
  --token TOKEN          bearer token for --server (default: $ZPRUNE_TOKEN); only with --server
  --method M             zpruner | wanda | ria | magnitude (default zpruner)
  --pattern P            layer | row | N:M with 0 < N < M (default layer)
  --sparsity S           0 <= S < 1, for layer and row only (default 0.5)
  --exponent E           activation exponent, 0 to 64, not for magnitude (default: the method's)
  --layer-rule R         for --pattern layer: exact (default: the server's masks, exactly floor(S x weights) of
                         the lowest scores, ties by position) or le-kth (every weight scored at most the
                         (k+1)-th lowest score, k + 1 weights or more where scores tie there, one at least even
                         at --sparsity 0, as the Wanda code base's layer-wide threshold and reference.json
                         prune; the scores come back with each mask)
  --seqlen L             tokens per window, at least 2 and at most the model's max_position_embeddings, for
                         calibration and evaluation (default 256)
calibration, one of (default: data/corpus/calib_ids.u16 at calib_starts_seed0.i64, 64 x 256, as reference.json;
the default ids, for calibration and evaluation, are the bundled tokenizer's: another model's needs data given):
  --calib-starts FILE.i64 [--calib-ids FILE.u16|FILE.u32]
                         windows at the given int64 starts of the token ids (default ids: calib_ids.u16); ids
                         files are uint16, or uint32 where named *.u32 (a vocabulary past 65,536 ids needs
                         the name to say: *.u16 or *.u32)
  --calib-text FILE [--nsamples N] [--seed S]
                         N (default 64) windows at random starts (seed S, 0 to 2^32-1, default 0) of the text
  --calib-jsonl FILE [--nsamples N] [--seed S]
                         the same over conversations, rendered with the chat template if the model has one
  (--nsamples and --seed only apply to --calib-text and --calib-jsonl)
evaluation, one of (default: data/corpus/test_ids.u16):
  --eval-ids FILE.u16|FILE.u32 | --eval-text FILE
  --eval-windows N|all   the first N >= 1 windows of seqlen tokens (default 64)
  --skip-dense           do not measure the dense model
(--calib-text and --eval-text split the file into documents at blank lines, two line breaks in a row with CRLF read
as one, each tokenized with the tokenizer's special tokens, such as a leading <s>, and concatenated: how
data/corpus's ids were made)
output:
  --out DIR              write the pruned checkpoint (same shards, dtype, config and tokenizer; the source's
                         reference.json and model card are left out, they describe the dense model, and so
                         are weights in other formats); refused if DIR holds weights the run would not overwrite
  --report FILE.json     dense and pruned perplexity, per-layer stats, timings (if pruning fails: the
                         dense perplexity and the error)
  --resume DIR           keep each pruned block's masks, and the dense perplexity, in DIR as the run goes; run
                         again with the same model, calibration and settings, it continues after the last block
                         kept (another run's progress in DIR, or a run still using DIR, is refused);
                         removed when the run succeeds
  --workers N            forward-pass workers, 1 to 64 (default: one per core, at most 8, and no more than
                         the available memory holds; each holds the model's float32 weights); never more
                         than the calibration or evaluation windows, which would leave some idle
`;

/** Where calibration windows come from. */
export type CalibrationSource =
  | { kind: "windows"; ids: string; starts: string }
  | { kind: "text" | "jsonl"; file: string; nsamples: number; seed: number };

/** A run of the CLI, fully checked. */
export interface PruneArgs {
  model: string;
  /** Absent: the in-process server. */
  server?: string;
  token?: string;
  method: Method;
  pattern: string;
  /** For "layer" and "row"; undefined for N:M. */
  sparsity?: number;
  exponent?: number;
  /** How the layer pattern's masks are applied: always "exact" for the other patterns. */
  layerRule: LayerRule;
  seqlen: number;
  calibration: CalibrationSource;
  evaluation: { kind: "ids" | "text"; file: string };
  /** Infinity for "all". */
  evalWindows: number;
  /** Whether --eval-windows was given: then a test set with fewer windows is refused, not evaluated whole. */
  evalWindowsGiven: boolean;
  skipDense: boolean;
  out?: string;
  report?: string;
  /** Where the run keeps its progress, and finds an earlier run's to continue. */
  resume?: string;
  workers?: number;
}

/** The most forward-pass workers --workers may ask for: each holds a copy of the activations it computes. */
const MAX_WORKERS = 64;

/** The integer `raw` of `--name`, or `fallback` when absent; a RangeError naming the flag unless min <= n <= max. */
function intFlag(name: string, raw: string | undefined, fallback: number, min: number, max?: number): number {
  if (raw === undefined) return fallback;
  // Decimal digits only, as for the server's environment (config.ts): Number() also takes "0x10" or "1e1".
  const n = /^\s*\d+\s*$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(n) || n < min || (max !== undefined && n > max)) {
    const range = max !== undefined ? `from ${min} to ${max}` : `of at least ${min}`;
    throw new RangeError(`--${name} must be an integer ${range}, got "${raw}"`);
  }
  return n;
}

/** The finite decimal number `raw` of `--name`, or undefined when absent. */
function numFlag(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  // Decimal notation only: Number() also reads "0x0", "0b1" and "Infinity".
  const n = /^\s*[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$/i.test(raw) ? Number(raw) : NaN;
  if (!Number.isFinite(n)) throw new RangeError(`--${name} expects a decimal number, got "${raw}"`);
  return n;
}

/**
 * A checked pattern as the reference and the report spell it: N:M without leading zeros ("02:04" is "2:4", the same
 * request to the server, but would find no reference perplexity under its own spelling).
 */
function canonicalPattern(pattern: string): string {
  const p = parsePattern(pattern, undefined);
  return p.kind === "nm" ? `${p.n}:${p.m}` : p.kind;
}

/**
 * Checks method, pattern, sparsity and exponent with the contract's request schema, the rules the server applies,
 * so that a bad value fails before minutes of forward passes and cannot drift from the server's. The schema needs
 * one layer; an empty one stands in.
 */
function checkSettings(s: { method: string; pattern: string; sparsity?: number; exponent?: number }): void {
  const probe = PruneRequestSchema.safeParse({
    method: s.method,
    pattern: s.pattern,
    sparsity: s.sparsity,
    options: s.exponent !== undefined ? { exponent: s.exponent } : undefined,
    layers: [{ name: "flags", weight: { dtype: "f32", shape: [0], data: new Uint8Array() } }],
  });
  const issue = probe.error?.issues[0];
  if (!issue) return;
  const field = String(issue.path[0]);
  const flag = field === "options" ? "exponent" : field;
  const value = (s as Record<string, unknown>)[flag];
  throw new RangeError(`--${flag} ${value}: ${issue.message}`);
}

/** The CLI's flags, each a string checked here (parseArgs only splits them). */
const OPTIONS = {
  model: { type: "string" },
  server: { type: "string" },
  token: { type: "string" },
  method: { type: "string" },
  pattern: { type: "string" },
  sparsity: { type: "string" },
  exponent: { type: "string" },
  "layer-rule": { type: "string" },
  "calib-ids": { type: "string" },
  "calib-starts": { type: "string" },
  "calib-text": { type: "string" },
  "calib-jsonl": { type: "string" },
  nsamples: { type: "string" },
  seqlen: { type: "string" },
  seed: { type: "string" },
  "eval-ids": { type: "string" },
  "eval-text": { type: "string" },
  "eval-windows": { type: "string" },
  "skip-dense": { type: "boolean" },
  out: { type: "string" },
  report: { type: "string" },
  resume: { type: "string" },
  workers: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** The flags as given, checked only for being there and not empty; unknown flags throw. */
function parseFlags(args: string[]) {
  // --help prints the help, whatever else is given: unknown flags included, which the strict parse refuses.
  if (parseArgs({ args, options: OPTIONS, strict: false }).values.help === true) return { help: true as const };
  const { values } = parseArgs({ args, options: OPTIONS, strict: true });
  // An empty value (`--out ""`, a shell variable that was not set) names nothing: refused now, rather than read as the
  // current directory by one check and as no path by the write after the whole run.
  for (const [flag, value] of Object.entries(values)) {
    if (typeof value === "string" && value.trim() === "") throw new TypeError(`--${flag} needs a value, got ""`);
  }
  return values;
}

type Flags = ReturnType<typeof parseFlags>;

/** Throws unless at most one of `flags` is given. */
function oneOf(v: Flags, ...flags: (keyof Flags)[]): void {
  const given = flags.filter((f) => v[f] !== undefined);
  if (given.length > 1) throw new TypeError(`--${given[0]} and --${given[1]} are alternatives: give one`);
}

/** Parses and checks the CLI's flags; undefined for `--help`. Throws TypeError/RangeError naming the flag. */
export function parsePruneArgs(args: string[]): PruneArgs | undefined {
  const v = parseFlags(args);
  if (v.help) return undefined;
  if (v.server !== undefined && !/^https?:\/\/./.test(v.server)) {
    throw new TypeError(`--server must be an http:// or https:// URL, got "${v.server}"`);
  }
  // The in-process server has no token: one given for it would be silently unused.
  if (v.token !== undefined && v.server === undefined) {
    throw new TypeError("--token is for --server; the in-process server needs none");
  }
  // One window predicts seqlen - 1 tokens: at least one prediction, or the perplexity is exp(0 / 0).
  const seqlen = intFlag("seqlen", v.seqlen, DEFAULTS.seqlen, 2);
  const pruning = pruningFlags(v);
  const calibration = calibrationFlags(v);
  const { evaluation, evalWindows, rawWindows } = evaluationFlags(v);
  return {
    model: v.model ?? DEFAULTS.model,
    server: v.server,
    token: v.token,
    ...pruning,
    seqlen,
    calibration,
    evaluation,
    evalWindows,
    evalWindowsGiven: rawWindows !== undefined,
    skipDense: v["skip-dense"] ?? false,
    out: v.out,
    report: v.report,
    resume: v.resume,
    workers: v.workers !== undefined ? intFlag("workers", v.workers, 1, 1, MAX_WORKERS) : undefined,
  };
}

/** --method, --pattern, --sparsity, --exponent and --layer-rule, checked together as the server would. */
function pruningFlags(v: Flags): Pick<PruneArgs, "method" | "pattern" | "sparsity" | "exponent" | "layerRule"> {
  const method = v.method ?? DEFAULTS.method;
  const pattern = v.pattern ?? DEFAULTS.pattern;
  const perLayer = pattern === "layer" || pattern === "row";
  // N:M fixes the sparsity at N/M: the server would ignore --sparsity.
  if (!perLayer && v.sparsity !== undefined) {
    throw new TypeError(`--sparsity applies to --pattern layer and row; --pattern ${pattern} prunes N of every M`);
  }
  const sparsity = perLayer ? numFlag("sparsity", v.sparsity) ?? DEFAULTS.sparsity : undefined;
  const exponent = numFlag("exponent", v.exponent);
  checkSettings({ method, pattern, sparsity, exponent });
  // Magnitude scores |W| alone: the server would ignore the activation exponent.
  if (method === "magnitude" && exponent !== undefined) {
    throw new TypeError("--exponent weights activations, which --method magnitude does not use");
  }
  const rule = v["layer-rule"]?.trim();
  if (rule !== undefined && !(LAYER_RULES as readonly string[]).includes(rule)) {
    throw new RangeError(`--layer-rule must be ${LAYER_RULES.join(" or ")}, got "${v["layer-rule"]}"`);
  }
  // Row and N:M masks are exact k per row or group, as the reference code's: the rule would change nothing.
  if (rule !== undefined && pattern !== "layer") {
    throw new TypeError(
      `--layer-rule applies to --pattern layer; --pattern ${pattern} prunes a count per row or group`,
    );
  }
  const layerRule = (rule ?? "exact") as LayerRule;
  return { method: method as Method, pattern: canonicalPattern(pattern), sparsity, exponent, layerRule };
}

/** The calibration source: windows drawn from --calib-text or --calib-jsonl, or fixed token-id windows. */
function calibrationFlags(v: Flags): CalibrationSource {
  oneOf(v, "calib-text", "calib-jsonl", "calib-ids");
  const sampledFile = v["calib-text"] ?? v["calib-jsonl"];
  if (sampledFile !== undefined) {
    const flag = v["calib-text"] !== undefined ? "calib-text" : "calib-jsonl";
    if (v["calib-starts"] !== undefined) {
      throw new TypeError(`--calib-starts applies to token ids (--calib-ids); --${flag} draws its windows at random`);
    }
    return {
      kind: flag === "calib-text" ? "text" : "jsonl",
      file: sampledFile,
      nsamples: intFlag("nsamples", v.nsamples, DEFAULTS.nsamples, 1),
      // seededRandom keeps 32 bits of the seed: larger ones would repeat smaller ones.
      seed: intFlag("seed", v.seed, 0, 0, 2 ** 32 - 1),
    };
  }
  // Fixed windows: --nsamples and --seed would change nothing.
  for (const f of ["nsamples", "seed"] as const) {
    if (v[f] !== undefined) {
      throw new TypeError(
        `--${f} applies to --calib-text and --calib-jsonl; ` +
          `${v["calib-ids"] !== undefined ? "--calib-ids" : "the default calibration"} takes its windows ` +
          "from --calib-starts",
      );
    }
  }
  if (v["calib-ids"] !== undefined && v["calib-starts"] === undefined) {
    throw new TypeError("--calib-ids needs --calib-starts (the int64 window starts)");
  }
  return {
    kind: "windows",
    ids: v["calib-ids"] ?? DEFAULTS.calibIds,
    starts: v["calib-starts"] ?? DEFAULTS.calibStarts,
  };
}

/** The evaluation data (--eval-text or --eval-ids) and --eval-windows: a count, or all (Infinity). */
function evaluationFlags(
  v: Flags,
): { evaluation: PruneArgs["evaluation"]; evalWindows: number; rawWindows: string | undefined } {
  oneOf(v, "eval-ids", "eval-text");
  const evaluation = v["eval-text"] !== undefined
    ? { kind: "text" as const, file: v["eval-text"] }
    : { kind: "ids" as const, file: v["eval-ids"] ?? DEFAULTS.evalIds };
  const rawWindows = v["eval-windows"]?.trim();
  if (rawWindows !== undefined && rawWindows !== "all" && !/^\d+$/.test(rawWindows)) {
    throw new RangeError(`--eval-windows must be an integer of at least 1, or all, got "${v["eval-windows"]}"`);
  }
  const evalWindows = rawWindows === "all" ? Infinity : intFlag("eval-windows", rawWindows, DEFAULTS.evalWindows, 1);
  return { evaluation, evalWindows, rawWindows };
}

/**
 * Checks the paths --out and --report will be written to before any work starts, so that a run of minutes never
 * ends on a path it cannot write: --out a directory, or one that can be created, other than the source model's;
 * --report a file that can be written. Each is probed by doing what the run will do, then undoing it: nothing is
 * left behind, and an existing report is not truncated.
 */
export async function checkOutputs(args: PruneArgs): Promise<void> {
  if (args.out !== undefined) await naming("out", args.out, () => checkOut(args.out!, args.model));
  if (args.resume !== undefined) await naming("resume", args.resume, () => checkResume(args.resume!, args));
  if (args.report !== undefined) {
    await naming(
      "report",
      args.report,
      () => checkReport(args.report!, args.model, args.out, args.resume, inputFiles(args)),
    );
  }
}

/**
 * --resume: a directory, or one that can be made, apart from the model, --out and --report (the run removes its
 * files from it when it succeeds, and writes none of them elsewhere).
 */
async function checkResume(raw: string, args: PruneArgs): Promise<void> {
  const place = await placeOf(raw);
  for (const [flag, path] of [["--model", args.model], ["--out", args.out], ["--report", args.report]] as const) {
    if (path !== undefined && await placeOf(path) === place) throw new Error(`it is ${flag}'s ${path}: give its own`);
  }
  const info = await statOrNull(place);
  if (info && !info.isDirectory) throw new Error("it exists and is not a directory");
  if (info) {
    await Deno.remove(await Deno.makeTempFile({ dir: place, prefix: ".zprune-probe-" }));
    // Refused now rather than once the model is read and hashed (about 1.4 s a GiB).
    await checkNotHeld(place);
    return;
  }
  // Made by the run itself (RunProgress), not its parents: a mistyped parent is better refused than created.
  if (!(await statOrNull(dirname(place)))?.isDirectory) throw new Error(`${dirname(place)} is not a directory`);
  await Deno.mkdir(place);
  await Deno.remove(place);
}

/** The data files the run reads, by flag: --report must not be written over one of them. */
function inputFiles(args: PruneArgs): [string, string][] {
  const c = args.calibration;
  const calib: [string, string][] = c.kind === "windows"
    ? [["--calib-ids", c.ids], ["--calib-starts", c.starts]]
    : [[`--calib-${c.kind}`, c.file]];
  return [...calib, [`--eval-${args.evaluation.kind}`, args.evaluation.file]];
}

/**
 * `path` with symbolic links resolved as far as it exists (the rest, to be created, appended): two paths the run will
 * write are the same place exactly when these are equal, whether or not they exist yet.
 */
async function placeOf(path: string): Promise<string> {
  const rest: string[] = [];
  for (let p = resolve(path);; p = dirname(p)) {
    const real = await realPathOrNull(p);
    if (real !== null) return resolve(real, ...rest.reverse());
    if (p === dirname(p)) return resolve(path);
    rest.push(basename(p));
  }
}

/**
 * Files a loader of a Hugging Face checkpoint reads beside the weights (config, tokenizer, chat template): one left in
 * --out from another model would be taken for the pruned model's.
 */
const LOADER_FILE =
  /^(config|generation_config|tokenizer|tokenizer_config|special_tokens_map|added_tokens|chat_template|vocab|merges)\.[a-z]+$/i;

/** The names of the regular files (or links to them) directly in `dir`; empty where it cannot be read. */
async function fileNames(dir: string): Promise<Set<string>> {
  // An unreadable model directory is the model loader's to report, naming what it could not read.
  return new Set(await filesIn(dir).catch(() => []));
}

/** Runs `check`; any error it throws is rethrown as a TypeError naming --flag and its value. */
async function naming(flag: string, raw: string, check: () => Promise<void>): Promise<void> {
  try {
    await check();
  } catch (e) {
    // Deno's own hint for its system paths ("run again with the --allow-all flag") would have the user widen the
    // CLI's permissions to write into /proc, /sys or /dev; the useful advice is another path, so that error is not
    // kept as the cause (the CLI prints causes). Elsewhere its hint is right (the CLI run without --allow-write).
    if (e instanceof Deno.errors.NotCapable && /^\/(proc|sys|dev)(\/|$)/.test(resolve(raw))) {
      throw new TypeError(
        `--${flag} ${raw}: Deno refuses to write to system paths such as /proc, /sys and /dev; ` +
          "choose another path",
      );
    }
    throw new TypeError(`--${flag} ${raw}: ${e instanceof Error ? e.message : e}`, { cause: e });
  }
}

/** --out: writeCheckpoint makes the directory (parents too) and writes files into it. */
async function checkOut(raw: string, model: string): Promise<void> {
  const out = resolve(raw);
  const info = await statOrNull(out);
  if (info) {
    if (!info.isDirectory) throw new Error("it exists and is not a directory");
    if (await realPathOrNull(out) === await realPathOrNull(model)) {
      throw new Error("it is the model's own directory (--model): its shards would be overwritten");
    }
    // Weights of an earlier run in another layout (or another format) would stay beside the pruned shards, and a
    // loader may take them first: transformers reads model.safetensors before an index. (A model whose index cannot
    // be read is the model loader's to report, naming the index, not --out's.)
    const writes = await checkpointWeightFiles(model).catch(() => undefined);
    const modelFiles = await fileNames(model);
    const stale: string[] = [];
    for await (const e of Deno.readDir(out)) {
      if (writes && isWeightFile(e.name) && !writes.includes(e.name)) stale.push(e.name);
      // A tokenizer or config file of another model (tokenizer.model beside this one's tokenizer.json, say).
      if (modelFiles.size > 0 && LOADER_FILE.test(e.name) && !modelFiles.has(e.name)) stale.push(e.name);
    }
    // Named chat templates of another model would be listed as this one's (the tokenizer reads the whole folder).
    for (const folder of modelFiles.size > 0 ? FOLDERS_KEPT : []) {
      const ours = await fileNames(`${model}/${folder}`);
      const theirs = await filesIn(`${out}/${folder}`).catch(() => []);
      stale.push(...theirs.filter((name) => !ours.has(name)).map((name) => `${folder}/${name}`));
    }
    if (stale.length > 0) {
      throw new Error(
        `it holds ${stale.sort().join(", ")}, which this run would not overwrite: a loader could take them for ` +
          "the pruned model's; remove them or choose another directory",
      );
    }
    // A folder where the checkpoint puts a file, or a file where it puts a folder, would fail the write at its very
    // end, after the whole run.
    const clashes: string[] = [];
    const kind = async (name: string) => (await statOrNull(`${out}/${name}`))?.isDirectory;
    for (const name of modelFiles) {
      if (!SOURCE_ONLY_FILES.has(name) && await kind(name) === true) clashes.push(`a folder ${name}`);
    }
    for (const folder of FOLDERS_KEPT) {
      if ((await fileNames(`${model}/${folder}`)).size > 0 && await kind(folder) === false) {
        clashes.push(`a file ${folder}`);
      }
    }
    if (clashes.length > 0) {
      throw new Error(
        `it holds ${clashes.join(", ")}, where the pruned checkpoint writes one of the other kind; remove ` +
          `${clashes.length > 1 ? "them" : "it"} or choose another directory`,
      );
    }
    await Deno.remove(await Deno.makeTempFile({ dir: out, prefix: ".zprune-probe-" }));
    return;
  }
  if (await Deno.lstat(out).then(() => true, () => false)) throw new Error("it is a broken symbolic link");
  const created: string[] = []; // deepest first
  for (let p = out; !(await statOrNull(p)) && p !== dirname(p); p = dirname(p)) created.push(p);
  await Deno.mkdir(out, { recursive: true });
  for (const p of created) await Deno.remove(p);
}

/**
 * --report: written whole at the end of the run, so not over a file of the model or of the pruned checkpoint, nor
 * where --out makes its directory (the checkpoint is written first: the report would then fail, the run's figures
 * lost), nor over a data file the run reads.
 */
async function checkReport(
  raw: string,
  model: string,
  out: string | undefined,
  resume: string | undefined,
  inputs: [string, string][],
): Promise<void> {
  const path = resolve(raw);
  const place = await placeOf(path);
  if (out !== undefined) {
    const outPlace = await placeOf(out);
    if (outPlace === place) throw new Error("it is the directory --out writes the pruned checkpoint into");
    if (outPlace.startsWith(`${place}/`)) throw new Error(`--out ${out} would be made a directory under it`);
  }
  for (const [flag, file] of inputs) {
    if (await placeOf(file) === place) throw new Error(`it is the file ${flag} reads`);
  }
  const where = await realPathOrNull(dirname(path));
  const name = basename(path);
  // The checkpoint holds the model's files under the same names (writeCheckpoint), and is written before the report.
  if (where !== null && (await fileNames(model)).has(name)) {
    if (where === await realPathOrNull(model)) throw new Error(`it is the model's own ${name} (--model)`);
    if (out !== undefined && where === await realPathOrNull(out)) {
      throw new Error(`it is the pruned checkpoint's ${name}, which --out writes`);
    }
  }
  // The report is written when the run ends or fails: over the progress a stopped run keeps for the next, or where
  // the finished run removes its files.
  if (resume !== undefined && isResumeFile(basename(place)) && dirname(place) === await placeOf(resume)) {
    throw new Error(`it is a file --resume ${resume} keeps the run's progress in`);
  }
  const info = await statOrNull(path);
  if (info?.isDirectory) throw new Error("it is a directory");
  if (info) {
    (await Deno.open(path, { write: true })).close(); // no truncate: the old report stays until the new one
    return;
  }
  const parent = dirname(path);
  if (!(await statOrNull(parent))?.isDirectory) throw new Error(`${parent} does not exist or is not a directory`);
  (await Deno.open(path, { write: true, createNew: true })).close();
  await Deno.remove(path);
}

/** What stat says of `path`, or null where nothing is there (also under a regular file). */
async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return null;
    throw e;
  }
}

/** The canonical path of `path`, or null where it does not resolve. */
async function realPathOrNull(path: string): Promise<string | null> {
  try {
    return await Deno.realPath(path);
  } catch {
    return null;
  }
}
