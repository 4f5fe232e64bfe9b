/**
 * How a run applies the "layer" pattern. The server prunes exactly k = floor(sparsity * n) weights, ties by index
 * (API.md). The Wanda code base's layer-wide threshold (its magnitude baseline; RIA's code for a layer-wide pattern
 * likewise), which reference.json's masks follow, prunes every weight whose score is at most the (k+1)-th lowest
 * (`W_metric <= torch.sort(W_metric.flatten())[0][k]`): k + 1 weights, more where scores tie there, at least one even
 * at sparsity 0. `le-kth` rebuilds each layer's mask so from the scores the server returns with it; its masks are a
 * function of those scores, which a WebGPU server computes in float32 (equal ones may then differ from the CPU's).
 */
import type { PruneResponse } from "../contract/api.ts";
import { ZpruneError } from "../contract/errors.ts";
import { decode } from "../contract/dtype_codec.ts";
import { layerStats } from "../prune/mask_stats.ts";

/** "exact": the server's mask as it is; "le-kth": every weight scored at most the (k+1)-th lowest score. */
export type LayerRule = "exact" | "le-kth";

/** Every rule, the default first. */
export const LAYER_RULES: readonly LayerRule[] = ["exact", "le-kth"];

/** One layer of a server's answer. */
type AnsweredLayer = PruneResponse["layers"][number];

/**
 * The order statistic k (0-based: the (k+1)-th lowest) of scores >= 0, by their bit patterns, which sort as the values
 * do there (-0 read as +0): a histogram of the high 16 bits finds its bucket, one of the low 16 bits within that bucket
 * its key. Two reads of the scores; no sort. The caller has checked the scores.
 */
function orderStatistic(score: Float32Array, k: number): number {
  const bits = new Uint32Array(score.buffer, score.byteOffset, score.length);
  const key = (i: number) => (score[i] === 0 ? 0 : bits[i]!);
  const high = new Uint32Array(1 << 16);
  for (let i = 0; i < bits.length; i++) high[key(i) >>> 16]!++;
  let top = 0, below = 0;
  while (below + high[top]! <= k) below += high[top++]!;
  const low = new Uint32Array(1 << 16);
  for (let i = 0; i < bits.length; i++) {
    const b = key(i);
    if (b >>> 16 === top) low[b & 0xffff]!++;
  }
  let bottom = 0;
  while (below + low[bottom]! <= k) below += low[bottom++]!;
  return new Float32Array(new Uint32Array([((top << 16) | bottom) >>> 0]).buffer)[0]!;
}

/**
 * The mask of every weight whose score is at most the (k+1)-th lowest (bit i row-major, LSB first, 1 = pruned): k + 1
 * weights, or more where scores tie with it; with k >= n (nothing left to keep) every weight. `threshold` is that
 * score, the largest pruned (the largest score of all when k >= n; -Infinity when there are none), +0 for a zero.
 */
export function maskAtMostKth(score: Float32Array, k: number): { mask: Uint8Array; threshold: number } {
  const n = score.length;
  if (!Number.isInteger(k) || k < 0) throw new RangeError(`k = ${k} weights to prune`);
  // The radix passes read the bits, which sort as the values only for scores >= 0.
  const bad = score.findIndex((s) => !(s >= 0 && s < Infinity));
  if (bad >= 0) throw new RangeError(`score[${bad}] is ${score[bad]}, not a finite score >= 0`);
  const mask = new Uint8Array(Math.ceil(n / 8));
  // + 0: a -0 score reads as +0, as scores are >= 0.
  const threshold = (k < n ? orderStatistic(score, k) : score.reduce((a, s) => Math.max(a, s), -Infinity)) + 0;
  for (let i = 0; i < n; i++) if (score[i]! <= threshold) mask[i >> 3]! |= 1 << (i & 7);
  return { mask, threshold };
}

/**
 * `layer`, answered with its scores for the "layer" pattern, as `rule` applies it: for "le-kth" the mask of
 * `maskAtMostKth` at the server's k (its pruned count), with its stats; the scores are dropped either way. Throws
 * `invalid_response` for scores that are missing, negative or not finite.
 */
export function applyLayerRule(layer: AnsweredLayer, rule: LayerRule): AnsweredLayer {
  const { score, ...rest } = layer;
  if (rule === "exact") return rest;
  const [rows, cols] = layer.shape as [number, number];
  const n = rows * cols;
  if (!score || score.dtype !== "f32" || score.data.byteLength !== 4 * n) {
    throw new ZpruneError("invalid_response", `${layer.name}: no f32 score of each weight, which le-kth needs`);
  }
  const { values } = decode(score.data, "f32");
  let rebuilt;
  try {
    rebuilt = maskAtMostKth(values, layer.stats.pruned);
  } catch (e) {
    throw new ZpruneError("invalid_response", `${layer.name}: ${e instanceof Error ? e.message : e}`);
  }
  const { mask, threshold } = rebuilt;
  const stats = { ...layer.stats, ...layerStats(mask, rows, cols) };
  if (n > 0) stats.threshold = threshold;
  return { ...rest, mask, stats };
}
