/**
 * `deno task prune`: prunes a Hugging Face LLaMA checkpoint end to end through the zprune endpoint and measures
 * perplexity before and after. With no flags it prunes the bundled zp-llama-9m with the bundled corpus exactly as
 * models/zp-llama-9m/reference.json was made (zpruner, layer, 0.5) against an in-process server.
 *
 * Run `deno task prune --help` for the flags.
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { ZpruneClient } from "../client/mod.ts";
import { type Method, METHODS } from "../contract/api.ts";
import {
  ForwardPool,
  gatherWindows,
  loadModel,
  loadTokenizer,
  perplexity,
  type PerplexityResult,
  pruneSequential,
  randomStarts,
  readI64,
  readU16,
  type SequentialResult,
  type TokenArray,
  tokenizeConversations,
  tokenizeCorpus,
  writeCheckpoint,
} from "../model/mod.ts";
import { startLocalServer } from "./_local_server.ts";

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

const HELP = `deno task prune [flags]

Prunes every decoder block's 7 linear layers of a LLaMA checkpoint, block by block, through POST /v1/prune,
and reports dense and pruned perplexity.

  --model DIR            checkpoint directory (default: models/zp-llama-9m)
  --server URL           zprune server (default: an in-process server on the CPU backend)
  --token TOKEN          bearer token for --server (default: $ZPRUNE_TOKEN)
  --method M             zpruner | wanda | ria | magnitude (default zpruner)
  --pattern P            layer | row | N:M (default layer)
  --sparsity S           0 <= S < 1, for layer and row (default 0.5)
  --exponent E           activation exponent (default: the method's)
calibration (default: data/corpus/calib_ids.u16 at calib_starts_seed0.i64, 64 x 256, as reference.json):
  --calib-ids FILE.u16 --calib-starts FILE.i64 --seqlen L
  --calib-text FILE --nsamples N --seqlen L --seed S     random windows of the tokenized text
  --calib-jsonl FILE --nsamples N --seqlen L --seed S    conversations, rendered with the chat template if any
evaluation (default: data/corpus/test_ids.u16):
  --eval-ids FILE.u16 | --eval-text FILE
  --eval-windows N|all   windows of seqlen tokens from the start (default 64)
  --skip-dense           do not measure the dense model
output:
  --out DIR              write the pruned checkpoint (same shards, dtype, config and tokenizer)
  --report FILE.json     dense and pruned perplexity, per-layer stats, timings
  --workers N            forward-pass workers (default: one per core)
`;

/** Everything the CLI measured. */
export interface PruneReport {
  model: string;
  server: string;
  backend: string;
  device: string;
  method: string;
  pattern: string;
  sparsity?: number;
  calibration: { source: string; windows: number; seqlen: number };
  evaluation: { source: string };
  evalWindows: number;
  densePpl?: number;
  prunedPpl: number;
  pruned: number;
  total: number;
  achievedSparsity: number;
  layers: SequentialResult["layers"];
  blocks: SequentialResult["blocks"];
  timings: {
    loadMs: number;
    denseEvalMs?: number;
    pruneMs: number;
    prunedEvalMs: number;
    writeMs?: number;
    totalMs: number;
  };
  out?: string;
  /** The matching figures of the model's reference.json, when the run reproduces how they were made. */
  reference?: { densePpl: number; prunedPpl?: number };
}

/**
 * The reference.json figures that this run should reproduce: only for the default calibration and evaluation data,
 * the reference's sparsity and either its 64 windows or the whole test set.
 */
async function referenceFor(
  modelDir: string,
  key: string,
  sparsity: number | undefined,
  evalWindows: number,
  totalWindows: number,
): Promise<PruneReport["reference"]> {
  let ref: { sparsity: number; eval_windows: number; dense_ppl: number[]; ppl: Record<string, number[]> };
  try {
    ref = JSON.parse(await Deno.readTextFile(`${modelDir}/reference.json`));
  } catch {
    return undefined;
  }
  const at = evalWindows === ref.eval_windows ? 1 : evalWindows === totalWindows ? 0 : -1;
  if (at < 0 || (sparsity !== undefined && sparsity !== ref.sparsity)) return undefined;
  return { densePpl: ref.dense_ppl[at]!, prunedPpl: ref.ppl[key]?.[at] };
}

/** A progress line on stderr when it is a terminal; silent otherwise. */
function progress(): (label: string, done: number, total: number) => void {
  if (!Deno.stderr.isTerminal()) return () => {};
  const enc = new TextEncoder();
  return (label, done, total) => {
    const width = 30, fill = Math.round((done / total) * width);
    const line = `\r${label.padEnd(16)} [${"#".repeat(fill)}${" ".repeat(width - fill)}] ${done}/${total}`;
    Deno.stderr.writeSync(enc.encode(done >= total ? line + "\n" : line));
  };
}

/** Runs the CLI with `args`; returns the report (also written to --report when given). */
export async function main(args: string[]): Promise<PruneReport | undefined> {
  const { values: v } = parseArgs({
    args,
    options: {
      model: { type: "string" },
      server: { type: "string" },
      token: { type: "string" },
      method: { type: "string" },
      pattern: { type: "string" },
      sparsity: { type: "string" },
      exponent: { type: "string" },
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
      workers: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (v.help) {
    console.log(HELP);
    return undefined;
  }
  const num = (name: string, s: string | undefined, fallback: number): number => {
    if (s === undefined) return fallback;
    const n = Number(s);
    if (!Number.isFinite(n)) throw new TypeError(`--${name} expects a number, got ${s}`);
    return n;
  };
  const t0 = performance.now();
  const bar = progress();
  const modelDir = v.model ?? DEFAULTS.model;
  const seqlen = num("seqlen", v.seqlen, DEFAULTS.seqlen);
  const method = (v.method ?? DEFAULTS.method) as Method;
  if (!METHODS.includes(method)) throw new TypeError(`--method must be one of ${METHODS.join(", ")}, got ${method}`);
  const pattern = v.pattern ?? DEFAULTS.pattern;
  const sparsity = /^\d+:\d+$/.test(pattern) ? undefined : num("sparsity", v.sparsity, DEFAULTS.sparsity);
  const exponent = v.exponent !== undefined ? num("exponent", v.exponent, 0) : undefined;

  const model = await loadModel(modelDir);
  const needsTokenizer = v["calib-text"] !== undefined || v["calib-jsonl"] !== undefined ||
    v["eval-text"] !== undefined;
  const tok = needsTokenizer ? await loadTokenizer(modelDir) : undefined;

  // Calibration windows.
  let calib: TokenArray, calibWindows: number, calibSource: string;
  if (v["calib-text"] !== undefined || v["calib-jsonl"] !== undefined) {
    const ids = v["calib-text"] !== undefined
      ? tokenizeCorpus(tok!, await Deno.readTextFile(v["calib-text"]))
      : tokenizeConversations(tok!, await Deno.readTextFile(v["calib-jsonl"]!));
    calibWindows = num("nsamples", v.nsamples, DEFAULTS.nsamples);
    const seed = num("seed", v.seed, 0);
    calib = gatherWindows(ids, randomStarts(ids.length, calibWindows, seqlen, seed), seqlen);
    calibSource = `${v["calib-text"] ?? v["calib-jsonl"]} (${ids.length} tokens, seed ${seed})`;
  } else {
    const idsPath = v["calib-ids"] ?? DEFAULTS.calibIds;
    const startsPath = v["calib-starts"] ?? (v["calib-ids"] === undefined ? DEFAULTS.calibStarts : undefined);
    if (startsPath === undefined) throw new TypeError("--calib-ids needs --calib-starts");
    const starts = await readI64(startsPath);
    calib = gatherWindows(await readU16(idsPath), starts, seqlen);
    calibWindows = starts.length;
    calibSource = `${idsPath} at ${startsPath}`;
  }

  // Evaluation ids.
  const evalIds: TokenArray = v["eval-text"] !== undefined
    ? tokenizeCorpus(tok!, await Deno.readTextFile(v["eval-text"]))
    : await readU16(v["eval-ids"] ?? DEFAULTS.evalIds);
  const evalWindows = v["eval-windows"] === "all"
    ? Infinity
    : num("eval-windows", v["eval-windows"], DEFAULTS.evalWindows);
  const loadMs = performance.now() - t0;
  const isDefaultData = seqlen === DEFAULTS.seqlen && exponent === undefined &&
    calibSource === `${DEFAULTS.calibIds} at ${DEFAULTS.calibStarts}` &&
    v["eval-text"] === undefined && (v["eval-ids"] ?? DEFAULTS.evalIds) === DEFAULTS.evalIds;

  const local = v.server === undefined ? await startLocalServer() : undefined;
  const pool = await ForwardPool.create(model.cfg, model.weights, {
    seqLen: seqlen,
    calibWindows,
    workers: v.workers !== undefined ? num("workers", v.workers, 1) : undefined,
  });
  try {
    const client = new ZpruneClient({ url: local?.url ?? v.server!, token: v.token ?? Deno.env.get("ZPRUNE_TOKEN") });
    let dense: PerplexityResult | undefined;
    if (!v["skip-dense"]) dense = await perplexity(pool, evalIds, evalWindows, (d, n) => bar("dense eval", d, n));

    let t = performance.now();
    const res = await pruneSequential(
      model.ckpt,
      model.cfg,
      pool,
      client,
      { method, pattern, sparsity, exponent },
      calib,
      calibWindows,
      (l) => bar("pruning blocks", l + 1, model.cfg.nLayers),
    );
    const pruneMs = performance.now() - t;
    const pruned = await perplexity(pool, evalIds, evalWindows, (d, n) => bar("pruned eval", d, n));

    let writeMs: number | undefined;
    if (v.out !== undefined) {
      t = performance.now();
      await writeCheckpoint(model.ckpt, v.out);
      writeMs = performance.now() - t;
    }
    const report: PruneReport = {
      model: modelDir,
      server: v.server ?? "in-process",
      backend: res.backend,
      device: res.device,
      method,
      pattern,
      sparsity,
      calibration: { source: calibSource, windows: calibWindows, seqlen },
      evaluation: { source: v["eval-text"] ?? v["eval-ids"] ?? DEFAULTS.evalIds },
      evalWindows: pruned.windows,
      densePpl: dense?.ppl,
      prunedPpl: pruned.ppl,
      pruned: res.pruned,
      total: res.total,
      achievedSparsity: res.pruned / res.total,
      layers: res.layers,
      blocks: res.blocks,
      timings: {
        loadMs,
        denseEvalMs: dense?.ms,
        pruneMs,
        prunedEvalMs: pruned.ms,
        writeMs,
        totalMs: performance.now() - t0,
      },
      out: v.out,
      reference: isDefaultData
        ? await referenceFor(
          modelDir,
          `${method}/${pattern}`,
          sparsity,
          pruned.windows,
          Math.floor(evalIds.length / seqlen),
        )
        : undefined,
    };
    if (v.report !== undefined) await Deno.writeTextFile(v.report, JSON.stringify(report, null, 2) + "\n");
    return report;
  } finally {
    pool.close();
    await local?.close();
  }
}

if (import.meta.main) {
  try {
    const r = await main(Deno.args);
    if (r) {
      const f = (x: number | undefined) => x === undefined ? "-" : x.toFixed(4);
      console.log(`model        ${r.model}`);
      console.log(`server       ${r.server} (${r.backend}, ${r.device})`);
      console.log(`pruning      ${r.method}/${r.pattern}${r.sparsity !== undefined ? ` at ${r.sparsity}` : ""}`);
      console.log(
        `calibration  ${r.calibration.windows} x ${r.calibration.seqlen} tokens from ${r.calibration.source}`,
      );
      console.log(
        `sparsity     ${r.pruned} / ${r.total} = ${r.achievedSparsity.toFixed(4)} over ${r.layers.length} layers`,
      );
      console.log(`perplexity   dense ${f(r.densePpl)}  pruned ${f(r.prunedPpl)}  (${r.evalWindows} windows)`);
      console.log(
        `time         ${(r.timings.totalMs / 1000).toFixed(1)} s (pruning ${(r.timings.pruneMs / 1000).toFixed(1)} s)`,
      );
      if (r.reference) {
        console.log(
          `reference    dense ${f(r.reference.densePpl)}  pruned ${f(r.reference.prunedPpl)}  (reference.json)`,
        );
      }
      if (r.out) console.log(`written      ${r.out}`);
    }
  } catch (e) {
    console.error(`prune: ${e instanceof Error ? e.message : String(e)}`);
    Deno.exit(1);
  }
}
