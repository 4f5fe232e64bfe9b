/**
 * `deno task prune`: prunes a Hugging Face LLaMA checkpoint end to end through the zprune endpoint and measures
 * perplexity before and after. With no flags it prunes the bundled zp-llama-9m with the bundled corpus exactly as
 * models/zp-llama-9m/reference.json was made (zpruner, layer, 0.5) against an in-process server.
 *
 * Run `deno task prune --help` for the flags.
 */
import { resolve } from "node:path";
import { DEFAULT_EXPONENT } from "../contract/api.ts";
import { type InfoAnswer, ZpruneClient, ZpruneError } from "../client/mod.ts";
import { errorChain } from "../contract/errors.ts";
import {
  canonicalJson,
  checkModelFits,
  type Checkpoint,
  ForwardPool,
  gatherWindows,
  type LayerRule,
  loadModel,
  loadTokenizer,
  perplexity,
  pruneSequential,
  randomStarts,
  readI64,
  readJsonFile,
  readTokenIds,
  readUtf8Text,
  type SequentialResult,
  type TokenArray,
  tokenizeConversations,
  tokenizeCorpus,
  writeCheckpoint,
} from "../model/mod.ts";
import { checkOutputs, DEFAULTS, HELP, parsePruneArgs, type PruneArgs, UsageError } from "./_prune_args.ts";
import { startLocalServer } from "./_local_server.ts";
import { keptMessage, type Measured, prunedMessage, RunStop, StoppedBy } from "./_run_stop.ts";
import { checkpointDigest, type KeptDense, type RunIdentity, RunProgress, tokensDigest } from "./_resume.ts";

export { DEFAULTS };

/** How long --server may take to answer GET /v1/info before the run gives up on it. */
const PROBE_TIMEOUT_MS = 15_000;

/** Everything the CLI measured. */
export interface PruneReport {
  model: string;
  server: string;
  /** The backend and device that answered the last layer. */
  backend: string;
  device: string;
  /**
   * Where more than one backend or device answered (servers changed between the runs of --resume, or one --server
   * balanced over several): each, in the order first seen, with how many layers it answered.
   */
  servedBy?: SequentialResult["servedBy"];
  method: string;
  pattern: string;
  sparsity?: number;
  /** The activation exponent the server used: --exponent, or the method's default; absent for magnitude. */
  exponent?: number;
  /** How the layer pattern's masks were applied (--layer-rule); absent for the other patterns. */
  layerRule?: LayerRule;
  calibration: { source: string; windows: number; seqlen: number };
  evaluation: { source: string };
  evalWindows: number;
  densePpl?: number;
  prunedPpl: number;
  /** Weights the server pruned, weights in the pruned layers, and weights at zero in them once masked. */
  pruned: number;
  total: number;
  zeros: number;
  /** zeros / total: the sparsity of the pruned layers as written, zeros they had before included. */
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
  /** Weight files of other formats in the model's directory, not copied to --out (they hold the dense weights). */
  outLeftOut?: string[];
  /** The matching figures of the model's reference.json, when the run reproduces how they were made. */
  reference?: { densePpl: number; prunedPpl?: number };
  /**
   * Where this run continued an earlier one (--resume): how many blocks it had pruned (their records and timings are
   * that run's) and whether the dense perplexity is that run's.
   */
  resumed?: { dir: string; blocks: number; densePpl: boolean };
}

/** A dense evaluation, measured by this run or kept by an earlier one (--resume). */
type DenseResult = Measured;

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
    ref = await readJsonFile(`${modelDir}/reference.json`) as typeof ref;
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

/**
 * Asks the server for GET /v1/info, which needs the token, so that a wrong URL or token fails before any work
 * rather than after the dense evaluation. Throws naming the URL and the cause.
 */
async function probeServer(client: ZpruneClient, tokenFrom: string | undefined): Promise<InfoAnswer> {
  try {
    return await client.info({ signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
  } catch (e) {
    // A stale $ZPRUNE_TOKEN is easy to forget: say where the token sent came from, or that none was.
    const sent = tokenFrom ? ` (the token sent is ${tokenFrom}'s)` : " (none was sent: give --token or $ZPRUNE_TOKEN)";
    const why = e instanceof ZpruneError
      ? `${e.code}${e.status ? ` (HTTP ${e.status})` : ""}: ${e.message}${e.code === "unauthorized" ? sent : ""}`
      : e instanceof DOMException && e.name === "TimeoutError"
      ? `no answer within ${PROBE_TIMEOUT_MS / 1000} s`
      : errorChain(e);
    throw new Error(`zprune server ${client.url} (--server) failed GET /v1/info: ${why}`, { cause: e });
  }
}

/** `read()`'s result; its failure names the flag and file it came from (a missing file, a bad JSONL line). */
async function fromFlag<T>(flag: string, file: string, read: () => T | Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (e) {
    throw new Error(`${flag} ${file}: ${e instanceof Error ? e.message : e}`, { cause: e });
  }
}

/** The run's calibration windows, concatenated, and a description of their source for the report. */
async function calibrationWindows(
  args: PruneArgs,
  tokenizer: () => ReturnType<typeof loadTokenizer>,
  vocabSize: number,
): Promise<{ tokens: TokenArray; windows: number; source: string }> {
  const src = args.calibration, T = args.seqlen;
  if (src.kind === "windows") {
    const starts = await fromFlag("--calib-starts", src.starts, async () => {
      const s = await readI64(src.starts);
      if (s.length === 0) throw new RangeError("it holds no window starts");
      return s;
    });
    const ids = await fromFlag("--calib-ids", src.ids, () => readTokenIds(src.ids, vocabSize));
    // The bundled starts were drawn for the default windows: longer ones may run past the ids, which is neither
    // file's fault. Otherwise a start past the ids is either file's fault: both are named.
    const bundled = resolve(src.starts) === DEFAULTS.calibStarts && resolve(src.ids) === DEFAULTS.calibIds;
    const [flag, files] = bundled
      ? [
        "the default calibration",
        `(windows drawn for --seqlen ${DEFAULTS.seqlen}; for --seqlen ${T}, give --calib-text)`,
      ]
      : ["--calib-starts", `${src.starts} (with --calib-ids ${src.ids})`];
    return {
      tokens: await fromFlag(flag, files, () => gatherWindows(ids, starts, T)),
      windows: starts.length,
      source: `${src.ids} at ${src.starts}`,
    };
  }
  const tok = await tokenizer();
  const flag = `--calib-${src.kind}`;
  const ids = await fromFlag(flag, src.file, async () => {
    const text = await readUtf8Text(src.file);
    return src.kind === "text" ? tokenizeCorpus(tok, text) : tokenizeConversations(tok, text);
  });
  return {
    tokens: await fromFlag(
      flag,
      src.file,
      () => gatherWindows(ids, randomStarts(ids.length, src.nsamples, T, src.seed), T),
    ),
    windows: src.nsamples,
    source: `${src.file} (${ids.length} tokens, seed ${src.seed})`,
  };
}

/**
 * How many calibration tokens the run will cache, from its flags alone (the model is not read yet): how the model's
 * f16 weights are kept depends on it. A starts file that cannot be read counts none (its reader names it later).
 */
async function calibrationTokens(args: PruneArgs): Promise<number> {
  const c = args.calibration;
  if (c.kind !== "windows") return c.nsamples * args.seqlen;
  return Math.floor(((await Deno.stat(c.starts).catch(() => undefined))?.size ?? 0) / 8) * args.seqlen;
}

/** Which of the run's data are the bundled token ids, however their paths are spelled (relative, say). */
function bundledIds(args: PruneArgs): { calibration: boolean; evaluation: boolean } {
  return {
    calibration: args.calibration.kind === "windows" && resolve(args.calibration.ids) === DEFAULTS.calibIds,
    evaluation: args.evaluation.kind === "ids" && resolve(args.evaluation.file) === DEFAULTS.evalIds,
  };
}

/** The parts of a `tokenizer.json` that decide which ids a text gets, canonical; undefined where there is none. */
async function tokenizerIdentity(dir: string): Promise<string | undefined> {
  let json: Record<string, unknown>;
  try {
    json = await readJsonFile(`${dir}/tokenizer.json`) as Record<string, unknown>;
  } catch {
    return undefined; // missing or unreadable: nothing to compare (a run that tokenizes text reports it)
  }
  const { model, added_tokens, normalizer, pre_tokenizer, post_processor } = json;
  return canonicalJson({ model, added_tokens, normalizer, pre_tokenizer, post_processor });
}

/**
 * Refuses the default calibration or evaluation data for a model whose tokenizer is not the bundled model's: they
 * are token ids of that tokenizer, and another model would still give a perplexity, a meaningless one. Tokenizers
 * are compared by what decides the ids (vocabulary, merges, added tokens, normalisation, pre- and post-processing),
 * not by how their file is written. A model directory without config.json is left to the model loader's error.
 */
async function checkDefaultIds(args: PruneArgs): Promise<void> {
  const bundled = bundledIds(args);
  const defaults = [bundled.calibration ? "calibration" : "", bundled.evaluation ? "evaluation" : ""]
    .filter((d) => d !== "");
  if (defaults.length === 0 || !(await Deno.stat(`${args.model}/config.json`).then(() => true, () => false))) return;
  const [ours, theirs] = await Promise.all([tokenizerIdentity(args.model), tokenizerIdentity(DEFAULTS.model)]);
  if (ours !== undefined && ours === theirs) return;
  throw new TypeError(
    `--model ${args.model}: the default ${defaults.join(" and ")} data are token ids of the bundled ` +
      `zp-llama-9m's tokenizer, and this model's ${
        ours === undefined ? "has no tokenizer.json to compare with it" : "tokenizer.json is another one"
      }: give ` +
      [
        defaults.includes("calibration")
          ? "--calib-text FILE (or --calib-jsonl, or --calib-ids with --calib-starts)"
          : "",
        defaults.includes("evaluation") ? "--eval-text FILE (or --eval-ids)" : "",
      ].filter((f) => f !== "").join(" and "),
  );
}

/** Throws naming `flag` and `file` when a token id of `ids` is outside the model's vocabulary of `vocab`. */
function checkVocabulary(ids: TokenArray, vocab: number, flag: string, file: string): void {
  const at = ids.findIndex((id) => id >= vocab);
  if (at >= 0) {
    throw new RangeError(
      `${flag} ${file}: token id ${ids[at]} (token ${at}) is outside the model's vocabulary of ${vocab}: ids made ` +
        "with another tokenizer?",
    );
  }
}

/**
 * The evaluation's token ids and how many whole windows of --seqlen they hold; refuses too few tokens, more
 * --eval-windows than there are, and ids past the vocabulary in the windows evaluated.
 */
async function evaluationIds(
  args: PruneArgs,
  tokenizer: () => ReturnType<typeof loadTokenizer>,
  vocabSize: number,
): Promise<{ evalIds: TokenArray; evalTotal: number }> {
  const { seqlen } = args;
  const { kind: evalKind, file: evalFile } = args.evaluation;
  // The tokenizer first, outside fromFlag: a broken tokenizer.json is the model's fault, not the text's.
  const evalTok = evalKind === "text" ? await tokenizer() : undefined;
  const evalIds: TokenArray = evalTok
    ? await fromFlag("--eval-text", evalFile, async () => tokenizeCorpus(evalTok, await readUtf8Text(evalFile)))
    : await fromFlag("--eval-ids", evalFile, () => readTokenIds(evalFile, vocabSize));
  const evalTotal = Math.floor(evalIds.length / seqlen);
  if (evalTotal < 1) {
    throw new RangeError(`--seqlen ${seqlen} is longer than the ${evalIds.length} tokens of ${evalFile}`);
  }
  if (args.evalWindowsGiven && args.evalWindows !== Infinity && args.evalWindows > evalTotal) {
    throw new RangeError(
      `--eval-windows ${args.evalWindows}: ${evalFile} holds ${evalTotal} windows of ${seqlen} tokens ` +
        "(--eval-windows all evaluates them all)",
    );
  }
  // Only the windows evaluated: what lies past them is never read.
  const evaluated = Math.min(args.evalWindows, evalTotal) * seqlen;
  checkVocabulary(evalIds.subarray(0, evaluated), vocabSize, `--eval-${evalKind}`, evalFile);
  return { evalIds, evalTotal };
}

/** A client of an in-process server started for this run, closed with `resources`. */
async function localClient(resources: AsyncDisposableStack): Promise<ZpruneClient> {
  const local = await startLocalServer();
  resources.defer(() => local.close());
  return new ZpruneClient({ url: local.url });
}

/**
 * Writes what was measured before the run failed or was stopped to --report (an evaluation may have taken a long
 * while), with where it stopped; a report that cannot be written does not hide the error.
 */
async function reportFailure(
  args: PruneArgs,
  dense: DenseResult | undefined,
  kept: number | undefined,
  e: unknown,
  prunedEval?: Measured,
): Promise<void> {
  if (args.report === undefined) return;
  const { method, pattern, sparsity } = args;
  const failed = {
    model: args.model,
    server: args.server ?? "in-process",
    method,
    pattern,
    sparsity,
    exponent: usedExponent(args),
    layerRule: usedRule(args),
    evalWindows: dense?.windows ?? prunedEval?.windows,
    densePpl: dense?.ppl,
    prunedPpl: prunedEval?.ppl,
    error: errorChain(e),
    // Blocks pruned and kept in --resume DIR, this run's and earlier ones': the next run continues after them.
    ...(kept !== undefined ? { resume: { dir: args.resume, blocks: kept } } : {}),
    // The server's code and status, as the console line gives them: what a script reading the report branches on.
    ...(e instanceof ZpruneError ? { code: e.code, status: e.status } : {}),
  };
  await Deno.writeTextFile(args.report, JSON.stringify(failed, null, 2) + "\n").catch(() => {});
}

/** The activation exponent the server uses for this run: --exponent or the method's default; none for magnitude. */
function usedExponent(args: PruneArgs): number | undefined {
  return args.method === "magnitude" ? undefined : args.exponent ?? DEFAULT_EXPONENT[args.method];
}

/** The layer rule of this run's masks: --layer-rule for the layer pattern; none for the others. */
function usedRule(args: PruneArgs): LayerRule | undefined {
  return args.pattern === "layer" ? args.layerRule : undefined;
}

/** Prints a finished run's summary (the --report file has the whole of it). */
function printReport(r: PruneReport): void {
  const f = (x: number | undefined) => x === undefined ? "-" : x.toFixed(4);
  console.log(`model        ${r.model}`);
  console.log(`server       ${r.server} (${r.backend}, ${r.device})`);
  for (const s of r.servedBy ?? []) {
    console.log(`             ${s.layers} layer(s) answered by ${s.backend}, ${s.device}`);
  }
  const exact = r.layers.filter((l) => l.exactPath !== undefined).length;
  if (exact > 0) {
    console.log(`             ${exact} layer(s) computed on the server's exact CPU path (see the report)`);
  }
  const at = r.sparsity !== undefined ? ` at ${r.sparsity}` : "";
  const exponent = r.exponent !== undefined ? `, exponent ${r.exponent}` : "";
  const rule = r.layerRule !== undefined && r.layerRule !== "exact" ? `, layer rule ${r.layerRule}` : "";
  console.log(`pruning      ${r.method}/${r.pattern}${at}${exponent}${rule}`);
  console.log(
    `calibration  ${r.calibration.windows} x ${r.calibration.seqlen} tokens from ${r.calibration.source}`,
  );
  console.log(
    `sparsity     ${r.zeros} / ${r.total} = ${r.achievedSparsity.toFixed(4)} zero over ${r.layers.length} layers`,
  );
  if (r.zeros !== r.pruned) {
    console.log(`             ${r.pruned} pruned by this run, ${r.zeros - r.pruned} zero before`);
  }
  console.log(`perplexity   dense ${f(r.densePpl)}  pruned ${f(r.prunedPpl)}  (${r.evalWindows} windows)`);
  console.log(
    `time         ${(r.timings.totalMs / 1000).toFixed(1)} s (pruning ${(r.timings.pruneMs / 1000).toFixed(1)} s)`,
  );
  if (r.reference) {
    console.log(
      `reference    dense ${f(r.reference.densePpl)}  pruned ${f(r.reference.prunedPpl)}  (reference.json)`,
    );
  }
  if (r.resumed) {
    console.log(
      `resumed      ${r.resumed.blocks} block(s) pruned by an earlier run, kept in ${r.resumed.dir}` +
        (r.resumed.densePpl ? "; its dense perplexity" : ""),
    );
  }
  if (r.out) console.log(`written      ${r.out}`);
  if (r.outLeftOut?.length) console.log(`             not copied (dense weights): ${r.outLeftOut.join(", ")}`);
}

/** The flags parsed and the outputs checked, any refusal rethrown as a UsageError with the same message. */
async function flagsChecked(argv: string[]): Promise<PruneArgs | undefined> {
  try {
    const args = parsePruneArgs(argv);
    if (args) await checkOutputs(args);
    return args;
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e), { cause: e });
  }
}

/** Runs the CLI with `args`; returns the report (also written to --report when given), undefined for --help. */
export async function main(argv: string[]): Promise<PruneReport | undefined> {
  const args = await flagsChecked(argv);
  if (!args) {
    console.log(HELP);
    return undefined;
  }
  // From here on a signal ends the run with its report and a line saying what is kept (see RunStop).
  using stop: RunStop = new RunStop(args.resume, (why) => reportFailure(args, stop.dense, stop.kept, why));
  const t0 = performance.now();
  const bar = progress();
  const { seqlen, method, pattern, sparsity, exponent } = args;

  // Read as the server reads its own (config.ts): trimmed, and empty is none.
  const envToken = Deno.env.get("ZPRUNE_TOKEN")?.trim() || undefined;
  const tokenFrom = args.token !== undefined ? "--token" : envToken !== undefined ? "$ZPRUNE_TOKEN" : undefined;
  const remote = args.server !== undefined
    ? new ZpruneClient({ url: args.server, token: args.token ?? envToken })
    : undefined;
  const remoteInfo = remote ? await probeServer(remote, tokenFrom) : undefined;
  await checkDefaultIds(args);

  // The loader names the file it could not read or use; the flag that chose the directory is named here.
  const model = await loadModel(args.model, { seqLen: seqlen, cacheTokens: await calibrationTokens(args) }).catch((
    e: unknown,
  ) => {
    const As = e instanceof RangeError ? RangeError : TypeError;
    throw new As(`--model ${args.model}: ${e instanceof Error ? e.message : e}`, { cause: e });
  });
  let tok: ReturnType<typeof loadTokenizer> | undefined;
  const tokenizer = () => tok ??= loadTokenizer(args.model);
  const calib = await calibrationWindows(args, tokenizer, model.cfg.vocabSize);
  const calibFlag = args.calibration.kind === "windows" ? "--calib-ids" : `--calib-${args.calibration.kind}`;
  const calibFile = args.calibration.kind === "windows" ? args.calibration.ids : args.calibration.file;
  checkVocabulary(calib.tokens, model.cfg.vocabSize, calibFlag, calibFile);
  const { evalIds, evalTotal } = await evaluationIds(args, tokenizer, model.cfg.vocabSize);
  const loadMs = performance.now() - t0;
  const bundled = bundledIds(args);
  const isDefaultData = seqlen === DEFAULTS.seqlen && exponent === undefined && bundled.calibration &&
    bundled.evaluation && args.calibration.kind === "windows" &&
    resolve(args.calibration.starts) === DEFAULTS.calibStarts;

  // Whatever fails from here on, every worker and server started is closed, so that the process can exit.
  await using resources = new AsyncDisposableStack();
  const client = remote ?? await localClient(resources);
  // A layer the server would refuse is better named now than after the dense evaluation (minutes to hours).
  try {
    const limits = (remoteInfo ?? await client.info()).limits;
    checkModelFits(model.ckpt, model.cfg, limits, pattern, method, args.layerRule !== "exact");
  } catch (e) {
    const against = remote ? `--server ${remote.url}` : "the in-process server";
    throw new RangeError(`the model against ${against}: ${e instanceof Error ? e.message : e}`, { cause: e });
  }
  // An earlier run's progress is checked before the pool starts and the dense evaluation: another run's is refused.
  const saved = args.resume === undefined ? undefined : await fromFlag(
    "--resume",
    args.resume,
    async () => RunProgress.open(args.resume!, await runIdentity(args, model.ckpt, model.cfg.nLayers, calib)),
  );
  if (saved) resources.use(saved); // DIR stays locked until the run ends, whichever way
  stop.blocks = model.cfg.nLayers;
  stop.kept = saved?.done.length;
  // Its workers are started for the dense evaluation, or for pruning with --skip-dense.
  stop.phase = args.skipDense ? "pruning" : "evaluating the dense model";
  const pool = await ForwardPool.create(model.cfg, model.weights, {
    seqLen: seqlen,
    calibWindows: calib.windows,
    workers: args.workers,
    mostWindows: Math.max(calib.windows, Math.min(args.evalWindows, evalTotal)),
  });
  resources.defer(() => pool.close());

  let dense: DenseResult | undefined, denseKept = false;
  if (!args.skipDense) {
    // The evaluated ids: a kept dense perplexity counts only for the same ones.
    const windows = Math.min(args.evalWindows, evalTotal);
    const sha256 = saved ? tokensDigest(evalIds.subarray(0, windows * seqlen)) : "";
    const earlier = saved?.dense;
    if (earlier && earlier.sha256 === sha256 && earlier.windows === windows) {
      dense = stop.dense = earlier;
      denseKept = true;
    } else {
      dense = await perplexity(pool, evalIds, args.evalWindows, (d, n) => bar("dense eval", d, n));
      stop.dense = dense;
      const keep: KeptDense = { ppl: dense.ppl, windows: dense.windows, ms: dense.ms, sha256 };
      if (saved) await fromFlag("--resume", args.resume!, () => saved.keepDense(keep));
    }
  }

  let t = performance.now();
  let res: SequentialResult;
  stop.phase = "pruning";
  try {
    res = await pruneSequential(
      model.ckpt,
      model.cfg,
      pool,
      client,
      { method, pattern, sparsity, exponent, layerRule: args.layerRule },
      calib.tokens,
      calib.windows,
      {
        done: saved?.done,
        keep: saved && (async (b) => {
          await fromFlag("--resume", args.resume!, () => saved.keepBlock(b));
          stop.kept = b.block + 1;
        }),
        onBlock: (l) => {
          stop.pruned = l + 1;
          bar("pruning blocks", l + 1, model.cfg.nLayers);
        },
      },
    );
  } catch (e) {
    await reportFailure(args, dense, stop.kept, e);
    if (saved) {
      console.error(`prune: ${keptMessage(stop.kept!, model.cfg.nLayers, args.resume!)}`);
    } else if (stop.pruned > 0) {
      console.error(`prune: ${prunedMessage(stop.pruned, model.cfg.nLayers)}`);
    }
    throw e;
  }
  const pruneMs = performance.now() - t;
  stop.phase = "evaluating the pruned model";
  const pruned = await perplexity(pool, evalIds, args.evalWindows, (d, n) => bar("pruned eval", d, n)).catch(
    async (e: unknown) => {
      // The dense perplexity was measured (minutes to hours) and the blocks pruned: the report keeps what there is.
      await reportFailure(args, dense, stop.kept, e);
      throw e;
    },
  );

  let writeMs: number | undefined, outLeftOut: string[] | undefined;
  if (args.out !== undefined) {
    t = performance.now();
    try {
      const out = args.out;
      outLeftOut = await stop.stoppable(
        `--out ${out} was written`,
        (signal) => writeCheckpoint(model.ckpt, out, signal),
      );
    } catch (e) {
      // Both perplexities were measured (minutes to hours): the report keeps them.
      await reportFailure(args, dense, stop.kept, e, pruned);
      throw e;
    }
    writeMs = performance.now() - t;
  }
  stop.finishing();
  const report: PruneReport = {
    model: args.model,
    server: args.server ?? "in-process",
    backend: res.backend,
    device: res.device,
    ...(res.servedBy.length > 1 ? { servedBy: res.servedBy } : {}),
    method,
    pattern,
    sparsity,
    exponent: usedExponent(args),
    layerRule: usedRule(args),
    calibration: { source: calib.source, windows: calib.windows, seqlen },
    evaluation: { source: args.evaluation.file },
    evalWindows: pruned.windows,
    densePpl: dense?.ppl,
    prunedPpl: pruned.ppl,
    pruned: res.pruned,
    total: res.total,
    zeros: res.zeros,
    achievedSparsity: res.zeros / res.total,
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
    out: args.out,
    outLeftOut,
    reference: isDefaultData
      ? await referenceFor(args.model, `${method}/${pattern}`, sparsity, pruned.windows, evalTotal)
      : undefined,
    ...(saved && saved.done.length + (denseKept ? 1 : 0) > 0
      ? { resumed: { dir: args.resume!, blocks: saved.done.length, densePpl: denseKept } }
      : {}),
  };
  if (args.report !== undefined) await Deno.writeTextFile(args.report, JSON.stringify(report, null, 2) + "\n");
  // Only once the checkpoint and the report are written: a run that fails writing them continues with every block.
  await saved?.finish().catch((e: unknown) => {
    // The run is done: its progress left behind costs disk, and a rerun of the same flags would only apply it all.
    console.error(`prune: --resume ${args.resume}: its files could not be removed (${errorChain(e)})`);
  });
  if (stop.late) {
    throw new StoppedBy(stop.late, `${stop.late} while the outputs were put in place; they are complete`);
  }
  return report;
}

/** What this run's masks depend on, for --resume to tell an earlier run's progress from another's. */
async function runIdentity(
  args: PruneArgs,
  ckpt: Checkpoint,
  blocks: number,
  calib: { tokens: TokenArray; windows: number; source: string },
): Promise<RunIdentity> {
  return {
    model: await Deno.realPath(args.model),
    checkpoint: checkpointDigest(ckpt),
    blocks,
    method: args.method,
    pattern: args.pattern,
    ...(args.sparsity !== undefined ? { sparsity: args.sparsity } : {}),
    ...(usedExponent(args) !== undefined ? { exponent: usedExponent(args) } : {}),
    layerRule: args.layerRule,
    seqlen: args.seqlen,
    calibration: { source: calib.source, windows: calib.windows, sha256: tokensDigest(calib.tokens) },
  };
}

if (import.meta.main) {
  try {
    const r = await main(Deno.args);
    if (r) printReport(r);
  } catch (e) {
    // A server's refusal says which code and status, for a log or a retry decision.
    const code = e instanceof ZpruneError ? ` (${e.code}${e.status ? `, HTTP ${e.status}` : ""})` : "";
    console.error(`prune: ${errorChain(e)}${code}`);
    Deno.exit(e instanceof StoppedBy ? e.exitCode : e instanceof UsageError ? 2 : 1);
  }
}
