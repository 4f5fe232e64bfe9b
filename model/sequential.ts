/**
 * Sequential pruning of a LLaMA checkpoint through the endpoint, the way reference.json was made (see the model
 * card): for each decoder block in order, one forward of all calibration windows through the model as pruned so far
 * collects actNormSq for the block's seven linear layers; one request prunes all seven (several, where the server's
 * body limit or memory budget needs); the masks are applied (under the layer rule "le-kth", rebuilt from the returned
 * scores first: model/layer_rule.ts); then the next block. Also perplexity over consecutive windows.
 */
import type { DType, Method, PruneResponse, Timings } from "../contract/api.ts";
import { ZpruneError } from "../contract/errors.ts";
import { workingMemoryBytes } from "../contract/working_memory.ts";
import { countZeros, firstNonFinite } from "../contract/dtype_codec.ts";
import { applyMask, type ZpruneClient } from "../client/mod.ts";
import type { Checkpoint, StoredTensor } from "./safetensors.ts";
import { LINEAR_NAMES, type LinearName, type LlamaConfig } from "./config.ts";
import { STATS_OF } from "./llama.ts";
import type { ForwardPool } from "./pool.ts";
import { applyLayerRule, type LayerRule } from "./layer_rule.ts";
import type { TokenArray } from "./tokenizer.ts";

/** What to ask the server for. */
export interface PruneSettings {
  method: "zpruner" | "wanda" | "ria" | "magnitude";
  /** "layer", "row" or "N:M". */
  pattern: string;
  /** Required for "layer" and "row". */
  sparsity?: number;
  /** Activation exponent; the server's per-method default when absent. */
  exponent?: number;
  /** How "layer" masks are applied (model/layer_rule.ts); "exact", the server's masks, when absent. */
  layerRule?: LayerRule;
}

/** One pruned linear layer as the report lists it. */
export interface LayerRecord {
  name: string;
  shape: [number, number];
  stats: PruneResponse["layers"][number]["stats"];
  /** Weights at zero once the mask is applied: the pruned ones, and any zero the mask left (a model pruned before). */
  zeros: number;
  /** Why the server computed it on its exact CPU path instead of the GPU (absent when it did not). */
  exactPath?: string;
}

/** One block's request as the report lists it. */
export interface BlockRecord {
  block: number;
  /** Forward pass collecting statistics, ms. */
  collectMs: number;
  /** Round trip of the prune request(s), ms. */
  requestMs: number;
  /** The server's own timings (summed over the block's requests). */
  server: PruneResponse["timings"];
  /** Applying the masks to the checkpoint and the workers' weights, ms. */
  applyMs: number;
  /**
   * Moving the cached calibration hidden states past the block with its pruned weights (a forward of the block), ms.
   * Absent for the last block (its outputs would feed no block) and for a block whose record an earlier run kept
   * (--resume): it is kept before the advance.
   */
  advanceMs?: number;
}

/** The outcome of sequential pruning. */
export interface SequentialResult {
  layers: LayerRecord[];
  blocks: BlockRecord[];
  /** The backend and device that answered the last layer. */
  backend: string;
  device: string;
  /** Each backend and device that answered, in the order first seen, with how many layers it answered. */
  servedBy: { backend: string; device: string; layers: number }[];
  /** Total pruned, total weights and weights at zero once masked, over every pruned layer. */
  pruned: number;
  total: number;
  zeros: number;
}

/** A block pruned already (by a run that stopped, see cli/_resume.ts): the server's answers for its layers. */
export interface PrunedBlock {
  block: number;
  /** The block's seven layers in LINEAR_NAMES order, as the server answered them (masks included). */
  layers: PruneResponse["layers"];
  record: BlockRecord;
  backend: string;
  device: string;
}

/** How `pruneSequential` continues a stopped run and keeps its own progress. */
export interface SequentialProgress {
  /** Blocks 0, 1, ... pruned already: their masks are applied again, in order, and no request is made for them. */
  done?: readonly PrunedBlock[];
  /** Called with each block this run prunes, once its masks are applied and before the next block starts. */
  keep?: (block: PrunedBlock) => Promise<void>;
  /** Called as each block is pruned or applied again, with its index. */
  onBlock?: (block: number) => void;
}

/** A layer of a prune request, as this module builds them. */
interface RequestLayer {
  name: string;
  weight: { dtype: DType; shape: readonly number[]; data: Uint8Array };
  // Only its size counts here: checkModelFits passes one for a layer whose activations are not collected yet.
  actNormSq: { data: { readonly byteLength: number } };
}

/** The server's limits (`GET /v1/info`) each request must keep within. */
export interface RequestLimits {
  maxBodyBytes: number;
  memoryBudgetBytes: number;
}

/** Bytes of msgpack around a layer's tensors (keys, dtype, shapes), and around the request's layers: generous. */
const LAYER_OVERHEAD = 256, REQUEST_OVERHEAD = 256;

/** About how many bytes `l` takes in a request body (an over-estimate). */
function bodyBytes(l: RequestLayer): number {
  return l.weight.data.byteLength + l.actNormSq.data.byteLength + 3 * l.name.length + LAYER_OVERHEAD;
}

/** The server's working-memory estimate for `layers` sent in a body of `body` bytes (masks, and scores if `score`). */
function workingBytes(layers: readonly RequestLayer[], body: number, method?: Method, score?: boolean): number {
  return workingMemoryBytes(
    layers.map((l) => ({ rows: l.weight.shape[0]!, cols: l.weight.shape[1]!, dtype: l.weight.dtype })),
    body,
    { method, score },
  );
}

/**
 * Splits `layers` (kept in order) into as few consecutive groups as keep each request's body within `maxBodyBytes`
 * and its working memory, as the server estimates it (with the scores returned where `score`), within
 * `memoryBudgetBytes`; throws, naming it, for a layer that alone would not fit.
 */
export function batchBySize<T extends RequestLayer>(
  layers: T[],
  limits: RequestLimits,
  method?: Method,
  score?: boolean,
): T[][] {
  const batches: T[][] = [];
  let current: T[] = [], bytes = REQUEST_OVERHEAD;
  for (const l of layers) {
    const size = bodyBytes(l);
    if (REQUEST_OVERHEAD + size > limits.maxBodyBytes) {
      throw new ZpruneError(
        "too_large",
        `${l.name}: about ${REQUEST_OVERHEAD + size} bytes to send, over the server's limit of ${limits.maxBodyBytes}`,
      );
    }
    const alone = workingBytes([l], REQUEST_OVERHEAD + size, method, score);
    if (alone > limits.memoryBudgetBytes) {
      throw new ZpruneError(
        "too_large",
        `${l.name}: about ${alone} bytes of working memory on the server, over its budget of ` +
          `${limits.memoryBudgetBytes}`,
      );
    }
    if (
      current.length > 0 &&
      (bytes + size > limits.maxBodyBytes ||
        workingBytes([...current, l], bytes + size, method, score) > limits.memoryBudgetBytes)
    ) {
      batches.push(current);
      current = [];
      bytes = REQUEST_OVERHEAD;
    }
    current.push(l);
    bytes += size;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/** `e` with where it happened in front of its message, its code and status kept. */
function located(where: string, e: unknown): Error {
  if (e instanceof ZpruneError) {
    return new ZpruneError(e.code, `${where}: ${e.message}`, { status: e.status, headers: e.headers, cause: e });
  }
  return new Error(`${where}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}

/** The linear weights of decoder block `l`, in LINEAR_NAMES order. */
function blockLinears(ckpt: Checkpoint, l: number): { name: LinearName; full: string; t: StoredTensor }[] {
  return LINEAR_NAMES.map((name) => {
    const full = `model.layers.${l}.${name}.weight`;
    const t = ckpt.tensors.get(full);
    if (!t || t.shape.length !== 2) throw new TypeError(`checkpoint has no 2-d tensor ${full}`);
    return { name, full, t };
  });
}

/**
 * Checks, before any work, that a server with `limits` takes every linear layer of the model under `pattern` and
 * `method` (whose working memory differs a little), with its scores returned where `score` (layer rule "le-kth"): each
 * within its body limit, memory budget and largest layer alone (requests are split by the first two), its columns a
 * multiple of M for "N:M", its weights finite. Throws a RangeError naming the first layer that would be refused and
 * why.
 */
export function checkModelFits(
  ckpt: Checkpoint,
  cfg: LlamaConfig,
  limits: RequestLimits & { maxLayerElements: number },
  pattern: string,
  method?: Method,
  score?: boolean,
): void {
  const m = Number(/^\d+:(\d+)$/.exec(pattern)?.[1] ?? 0);
  for (let l = 0; l < cfg.nLayers; l++) {
    const layers = blockLinears(ckpt, l).map(({ full, t }) => {
      const [rows, cols] = t.shape as [number, number];
      if (m > 0 && cols % m !== 0) {
        throw new RangeError(`${full}: its ${cols} columns are not a multiple of M = ${m} (pattern ${pattern})`);
      }
      if (rows * cols > limits.maxLayerElements) {
        throw new RangeError(
          `${full}: ${rows} x ${cols} weights, over the server's largest layer of ${limits.maxLayerElements}`,
        );
      }
      // The server would name this weight too, but only once its block is sent, after the blocks before it were pruned
      // (minutes to hours of work on a large model).
      const bad = firstNonFinite(t.data, t.dtype);
      if (bad >= 0) {
        const where = `weight[${bad}] (row ${Math.floor(bad / cols)}, column ${bad % cols})`;
        throw new RangeError(`${full}: ${where} is NaN or infinite; the checkpoint needs mending before pruning`);
      }
      return { name: full, weight: t, actNormSq: { data: { byteLength: 4 * cols } } };
    });
    try {
      batchBySize(layers, limits, method, score);
    } catch (e) {
      throw e instanceof ZpruneError ? new RangeError(e.message, { cause: e }) : e;
    }
  }
}

/**
 * Prunes every decoder block of `ckpt` in order, editing its tensors in place (so `writeCheckpoint` then writes the
 * pruned model) and the pool's weights alike. `calib` holds `windows` windows of `pool.seqLen` tokens. The pool must
 * hold `decodeWeights(ckpt)` (as `loadModel` gives both): its workers receive only the masks, not the pruned weights.
 * `progress.done` continues a stopped run: applying its masks, in order, gives every later block the inputs the stopped
 * run would have given it.
 */
export async function pruneSequential(
  ckpt: Checkpoint,
  cfg: LlamaConfig,
  pool: ForwardPool,
  client: ZpruneClient,
  settings: PruneSettings,
  calib: TokenArray,
  windows: number,
  progress: SequentialProgress = {},
): Promise<SequentialResult> {
  const result: SequentialResult = {
    layers: [],
    blocks: [],
    backend: "",
    device: "",
    servedBy: [],
    pruned: 0,
    total: 0,
    zeros: 0,
  };
  const rule = settings.layerRule ?? "exact";
  if (rule !== "exact" && settings.pattern !== "layer") {
    throw new RangeError(`layer rule ${rule} applies to the layer pattern, not ${settings.pattern}`);
  }
  const done = progress.done ?? [];
  if (done.length > cfg.nLayers) throw new RangeError(`${done.length} blocks pruned already, of ${cfg.nLayers}`);
  // Where every block was kept, the calibration states would feed no request: the masks alone are applied.
  const toPrune = done.length < cfg.nLayers;
  const { limits } = toPrune ? await client.info() : { limits: undefined };
  if (toPrune) await pool.calibBegin(calib, windows);
  for (const [l, block] of done.entries()) {
    if (block.block !== l) throw new RangeError(`block ${block.block} given as the pruned block ${l}`);
    await applyBlock(ckpt, pool, l, block.layers, result);
    result.blocks.push(block.record);
    servedBy(result, block.backend, block.device, block.layers.length);
    // The last block's outputs would feed no block.
    if (toPrune && l + 1 < cfg.nLayers) await pool.calibAdvance(l);
    progress.onBlock?.(l);
  }
  for (let l = done.length; l < cfg.nLayers; l++) {
    let t0 = performance.now();
    const stats = await pool.calibCollect(l);
    const collectMs = performance.now() - t0;
    const tensors = blockLinears(ckpt, l);
    // actNormSq = sum over calibration tokens of x_j² / number of calibration sequences, sent as f32.
    const layers = tensors.map(({ name, full, t }) => {
      const sums = stats[STATS_OF[name]];
      const act = Float32Array.from(sums, (s) => s / windows);
      return {
        name: full,
        weight: { dtype: t.dtype, shape: t.shape, data: t.data },
        actNormSq: { dtype: "f32" as const, shape: [act.length], data: new Uint8Array(act.buffer) },
      };
    });
    t0 = performance.now();
    const answers: PruneResponse["layers"] = [];
    const server: Timings = { decodeMs: 0, computeMs: 0, encodeMs: 0, totalMs: 0 };
    for (const batch of batchBySize(layers, limits!, settings.method, rule !== "exact")) {
      let res: PruneResponse;
      try {
        res = await client.pruneLayers({
          method: settings.method,
          pattern: settings.pattern,
          sparsity: settings.sparsity,
          options: settings.exponent !== undefined ? { exponent: settings.exponent } : undefined,
          // le-kth rebuilds the masks from the scores.
          return: rule === "exact" ? undefined : ["mask", "score"],
          layers: batch,
        });
      } catch (e) {
        // Blocks before this one are pruned (in the checkpoint and the pool): say where the run stopped. A message
        // about one layer names it by its field path in the request ("layers[3].actNormSq[0] ..."): name it.
        const at = e instanceof Error ? /^layers\[(\d+)\]/.exec(e.message) : null;
        const one = at ? batch[Number(at[1])] : undefined;
        throw located(one ? `block ${l}, ${one.name}` : `block ${l} (${batch.map((x) => x.name).join(", ")})`, e);
      }
      try {
        answers.push(...res.layers.map((layer) => applyLayerRule(layer, rule)));
      } catch (e) {
        throw located(`block ${l}`, e);
      }
      for (const k of Object.keys(server) as (keyof Timings)[]) server[k] += res.timings[k];
      servedBy(result, res.backend, res.device, res.layers.length);
    }
    const requestMs = performance.now() - t0;
    t0 = performance.now();
    await applyBlock(ckpt, pool, l, answers, result);
    const record = { block: l, collectMs, requestMs, server, applyMs: performance.now() - t0 };
    // Kept before the advance: a run stopped during it (a block's forward, minutes on a large model) keeps the block.
    await progress.keep?.({ block: l, layers: answers, record, backend: result.backend, device: result.device });
    if (l + 1 < cfg.nLayers) {
      t0 = performance.now();
      await pool.calibAdvance(l);
      result.blocks.push({ ...record, advanceMs: performance.now() - t0 });
    } else {
      result.blocks.push(record);
    }
    progress.onBlock?.(l);
  }
  return result;
}

/** Counts `layers` answered by `backend` on `device`, which are now the last to have answered. */
function servedBy(result: SequentialResult, backend: string, device: string, layers: number): void {
  result.backend = backend;
  result.device = device;
  const seen = result.servedBy.find((s) => s.backend === backend && s.device === device);
  if (seen) seen.layers += layers;
  else result.servedBy.push({ backend, device, layers });
}

/**
 * Applies the masks of block `l`'s answers (`answers`, in LINEAR_NAMES order) to the checkpoint's tensors and the
 * pool's weights, and adds its layers to `result`.
 */
async function applyBlock(
  ckpt: Checkpoint,
  pool: ForwardPool,
  l: number,
  answers: PruneResponse["layers"],
  result: SequentialResult,
): Promise<void> {
  for (const [i, { name, full, t }] of blockLinears(ckpt, l).entries()) {
    const out = answers[i];
    // The contract promises request order; check rather than trust, a wrong mask would silently corrupt the model.
    if (!out || out.name !== full || out.shape[0] !== t.shape[0] || out.shape[1] !== t.shape[1]) {
      throw new Error(`server answered ${out?.name ?? "nothing"} for ${full}`);
    }
    applyMask(t.data, t.dtype, out.mask);
    // The workers decoded the same checkpoint at start, so zeroing the same bits keeps them equal to it.
    await pool.maskLinear(l, name, out.mask);
    // What the written weights will hold: more than the server pruned where the layer had zeros already.
    const zeros = countZeros(t.data, t.dtype);
    result.layers.push({
      name: full,
      shape: out.shape,
      stats: out.stats,
      zeros,
      ...(out.exactPath !== undefined ? { exactPath: out.exactPath } : {}),
    });
    result.pruned += out.stats.pruned;
    result.total += out.stats.total;
    result.zeros += zeros;
  }
}

/** Perplexity over consecutive non-overlapping windows. */
export interface PerplexityResult {
  ppl: number;
  meanLoss: number;
  windows: number;
  tokens: number;
  ms: number;
  /** Loss sum of each window (seqLen - 1 positions), in order. */
  losses: Float64Array;
}

/**
 * Perplexity of the pool's model on `ids` cut into consecutive windows of `pool.seqLen` tokens (tail dropped),
 * the first `maxWindows` of them (all by default): exp of the mean loss over the seqLen - 1 predicted positions.
 */
export async function perplexity(
  pool: ForwardPool,
  ids: TokenArray,
  maxWindows = Infinity,
  onWindow?: (done: number, total: number) => void,
): Promise<PerplexityResult> {
  const T = pool.seqLen;
  const windows = Math.min(maxWindows, Math.floor(ids.length / T));
  if (windows < 1) throw new RangeError(`${ids.length} tokens hold no window of ${T}`);
  const t0 = performance.now();
  const losses = await pool.losses(ids, windows, (d) => onWindow?.(d, windows));
  let sum = 0;
  for (const l of losses) sum += l;
  const meanLoss = sum / (windows * (T - 1));
  return { ppl: Math.exp(meanLoss), meanLoss, windows, tokens: windows * T, ms: performance.now() - t0, losses };
}
