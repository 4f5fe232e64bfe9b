/**
 * The compute backend seam: what the routes hand to a backend and what they get back. The CPU backend
 * (`prune/cpu_backend.ts`) and the WebGPU backend (`gpu/webgpu_backend.ts`) both implement `Backend`, so every
 * behaviour test can run against both.
 */
import type { BackendKind, DType, LayerResponse, LayerStats, Method, Pattern } from "../contract/api.ts";

/** Request-wide parameters, shared by every layer of one request. */
export interface PruneParams {
  method: Method;
  pattern: Pattern;
  /** Activation exponent: act_j = actNormSq_j ^ (exponent / 2). */
  exponent: number;
  /** Return the pruned weights (in the request's dtype). */
  returnWeight: boolean;
  /** Return the f32 score of every weight. */
  returnScore: boolean;
}

/** One validated layer: shapes agree with byte lengths; activations are finite and non-negative. */
export interface LayerJob {
  name: string;
  /** Output features. */
  rows: number;
  /** Input features. */
  cols: number;
  dtype: DType;
  /** Raw little-endian row-major bytes, `rows * cols * size(dtype)` long; may be unaligned. Not yet checked for NaN. */
  weight: Uint8Array;
  /**
   * Per input feature: sum of x_j^2 over calibration tokens / sequences; `null` means no activations (all ones).
   * float32 as the wire carries it, or the float64 sums the server took of `inputs`: rounded to float32, the squares
   * of tiny inputs would vanish, and those of huge ones overflow, where act_j and the scores are well in range.
   */
  actNormSq: Float32Array | Float64Array | null;
}

/** What a backend answers for one layer. */
export interface LayerOutput {
  /** ceil(rows*cols/8) bytes; bit i (row-major, LSB first) is 1 where the weight is pruned. */
  mask: Uint8Array;
  /** The pruned weights in the request's dtype (when `returnWeight`). */
  weight?: Uint8Array;
  /** The f32 score of every weight (when `returnScore`). */
  score?: Float32Array;
  stats: LayerStats;
  /** Why a GPU backend computed this layer on its exact CPU path instead (absent when it did not). */
  exactPath?: string;
}

/** A compute backend. Implementations must be safe to call concurrently; each call is independent. */
export interface Backend {
  readonly kind: BackendKind;
  /** The adapter's description or the CPU's model name. */
  readonly device: string;
  /**
   * Prunes one layer. Throws `ZpruneError("non_finite")` naming the layer and first index when the weight holds
   * NaN or infinity, `ZpruneError("unavailable")` when the device failed (the backend then restarts itself).
   */
  prune(params: PruneParams, layer: LayerJob, signal?: AbortSignal): Promise<LayerOutput>;
  /**
   * Prunes layers of one request as one group, a promise per layer in order, each settling as `prune()`'s would: a GPU
   * backend computes them back to back and waits for their read-backs once (Deno's `mapAsync` waits about 10 ms per
   * await, however many maps it covers). The group's memory is the caller's to bound (`layerGroups` of
   * prune/run_layers.ts). Absent where grouping gains nothing (the CPU backend gives each layer every core).
   */
  pruneTogether?(params: PruneParams, layers: readonly LayerJob[], signal?: AbortSignal): Promise<LayerOutput>[];
  /** Workers or devices discarded after a failure since the backend was created (for `/metrics`). */
  readonly restarts: number;
  /**
   * Layers a GPU backend computed on the exact CPU path because float32 could not give the CPU backend's masks
   * (docs/GPU.md) or the layer does not fit the device (for `/metrics`; always 0 for the CPU backend).
   */
  readonly exactPathLayers: number;
  /**
   * Host memory kept between layers for reuse (the CPU path's scratch buffers), given back once idle (for
   * `/metrics`; absent counts as none).
   */
  readonly keptBytes?: number;
  /**
   * Why the backend cannot compute now: from a failure (a device or worker lost) until its restart has succeeded,
   * and while the last restart failed too (a GPU that is gone, so every layer is answered 503 until a later one
   * restarts it). Null or absent while it can compute.
   */
  readonly unavailable?: string | null;
  /** While `unavailable`, tries to restart in the background (a health check asks; no layer may come to). */
  recover?(): void;
  /** Releases workers and devices. */
  close(): Promise<void>;
}

/** The wire form of one layer's output: the mask, stats, and what the request asked to be returned. */
export function toLayerResponse(
  layer: { name: string; rows: number; cols: number; dtype: DType },
  out: LayerOutput,
): LayerResponse {
  const { name, rows, cols, dtype } = layer;
  const r: LayerResponse = { name, shape: [rows, cols], mask: out.mask, stats: out.stats };
  if (out.exactPath !== undefined) r.exactPath = out.exactPath;
  if (out.weight) r.weight = { dtype, shape: [rows, cols], data: out.weight };
  if (out.score) {
    const s = out.score;
    r.score = { dtype: "f32", shape: [rows, cols], data: new Uint8Array(s.buffer, s.byteOffset, s.byteLength) };
  }
  return r;
}
