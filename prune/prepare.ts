/**
 * From a schema-valid request to backend jobs: the checks zod cannot express (byte lengths against shapes,
 * activations against columns, N:M divisibility, finiteness and sign of activations, limits), each failing
 * with the contract's code and a message that names the field and the fix.
 */
import {
  DEFAULT_EXPONENT,
  DTYPE_BYTES,
  NEEDS_ACTIVATIONS,
  parsePattern,
  type PruneRequest,
  type Tensor,
} from "../contract/api.ts";
import { ZpruneError } from "../contract/errors.ts";
import { workingMemoryBytes } from "../contract/working_memory.ts";
import type { LayerJob, PruneParams } from "./backend.ts";
import { decode, decodeInto, firstNonFinite } from "../contract/dtype_codec.ts";
import { nonFiniteWeight } from "./prune_layer.ts";

/** Limits a request must respect. */
export interface PrepareLimits {
  /** Most elements in one layer's weight. */
  maxLayerElements: number;
}

/** A request turned into backend work. */
export interface PreparedRequest {
  params: PruneParams;
  layers: LayerJob[];
}

function fail(
  code: "invalid_request" | "shape_mismatch" | "non_finite" | "activations_required" | "too_large",
  msg: string,
): never {
  throw new ZpruneError(code, msg);
}

/** Checks that `t.data` holds exactly product(shape) elements of its dtype. */
function checkBytes(t: Tensor, path: string): number {
  const count = t.shape.reduce((a, b) => a * b, 1);
  const want = count * DTYPE_BYTES[t.dtype];
  if (t.data.byteLength !== want) {
    // Exactly, however large: a shape of huge sizes would print as 1.8e19 or with float digits otherwise.
    const exact = t.shape.reduce((a, b) => a * BigInt(b), BigInt(DTYPE_BYTES[t.dtype]));
    fail(
      "shape_mismatch",
      `${path}.data: ${t.data.byteLength} bytes, but shape [${t.shape.join(", ")}] of ${t.dtype} needs ${exact}`,
    );
  }
  return count;
}

/** Gives the event loop a turn when one is due (a promise to await), else undefined. */
export type Pause = () => Promise<void> | undefined;

/** Elements of `inputs` decoded and summed at a time: small scratch, and a chance to pause between blocks. */
const INPUT_BLOCK = 1 << 16;

/**
 * Column sums of squares of `inputs` data ([tokens, cols] of `dtype`) in float64, kept so: a block of rows at a time,
 * so a large tensor is never decoded whole and the event loop gets its turns (`pause`) while it is summed. Not rounded
 * to float32: the squares of tiny inputs (1e-25) would vanish there while their act_j and scores are well in range.
 * A sum past float32's largest is refused when `scored` (the method's scores use it), as an actNormSq that large could
 * not be sent: its act_j times a weight overflows float32 scores at the default exponents. Magnitude ignores it.
 */
async function inputSums(
  t: Tensor,
  cols: number,
  path: string,
  pause: Pause,
  scored: boolean,
): Promise<Float64Array> {
  const size = DTYPE_BYTES[t.dtype];
  const tokens = t.data.byteLength / size / cols;
  const rowsPerBlock = Math.max(1, Math.floor(INPUT_BLOCK / cols));
  const sums = new Float64Array(cols);
  const values = new Float32Array(rowsPerBlock * cols); // one block's decoded values, reused block after block
  for (let r0 = 0; r0 < tokens; r0 += rowsPerBlock) {
    const count = (Math.min(tokens, r0 + rowsPerBlock) - r0) * cols;
    const bad = decodeInto(
      values,
      t.data.subarray(r0 * cols * size, r0 * cols * size + count * size),
      t.dtype,
      0,
      count,
    );
    if (bad >= 0) fail("non_finite", `${path}.inputs[${r0 * cols + bad}] is NaN or infinite`);
    for (let i = 0; i < count; i++) sums[i % cols]! += values[i]! * values[i]!;
    const p = pause();
    if (p) await p;
  }
  const over = scored ? sums.findIndex((v) => v > F32_MAX) : -1;
  if (over >= 0) fail("non_finite", `${path}.inputs: the sum of squares of column ${over} overflows float32`);
  return sums;
}

/** The largest finite float32. */
const F32_MAX = 3.4028234663852886e38;

/** actNormSq (f32, [cols], finite, >= 0) from the request, or the column sums of squares of `inputs` (f64). */
async function activations(
  layer: PruneRequest["layers"][number],
  cols: number,
  path: string,
  pause: Pause,
  scored: boolean,
): Promise<Float32Array | Float64Array | null> {
  const { actNormSq, inputs } = layer;
  if (actNormSq && inputs) fail("invalid_request", `${path}: give actNormSq or inputs, not both`);
  if (actNormSq) {
    if (actNormSq.dtype !== "f32") fail("invalid_request", `${path}.actNormSq.dtype: must be "f32"`);
    if (actNormSq.shape.length !== 1 || actNormSq.shape[0] !== cols) {
      fail(
        "shape_mismatch",
        `${path}.actNormSq.shape: [${actNormSq.shape.join(", ")}], but the weight has ${cols} columns`,
      );
    }
    checkBytes(actNormSq, `${path}.actNormSq`);
    const { values, bad } = decode(actNormSq.data, "f32");
    if (bad >= 0) fail("non_finite", `${path}.actNormSq[${bad}] is NaN or infinite`);
    const neg = values.findIndex((v) => v < 0);
    if (neg >= 0) {
      fail("invalid_request", `${path}.actNormSq[${neg}] is negative (${values[neg]}); it is a sum of squares`);
    }
    return values;
  }
  if (inputs) {
    if (inputs.shape.length !== 2 || inputs.shape[1] !== cols) {
      fail("shape_mismatch", `${path}.inputs.shape: [${inputs.shape.join(", ")}], expected [tokens, ${cols}]`);
    }
    checkBytes(inputs, `${path}.inputs`);
    // Sum of squares per input feature; the inputs count as one calibration sequence.
    return await inputSums(inputs, cols, path, pause, scored);
  }
  return null;
}

/** The backend's `non_finite` error for the first NaN or infinite weight of `layers`, in order; undefined if none. */
function firstWeightError(layers: readonly LayerJob[]): ZpruneError | undefined {
  for (const layer of layers) {
    const bad = firstNonFinite(layer.weight, layer.dtype);
    if (bad >= 0) return nonFiniteWeight(layer, bad);
  }
  return undefined;
}

/** Working memory a prepared request needs at its peak, in bytes: the contract's `workingMemoryBytes`. */
export function estimateBytes(req: PreparedRequest, bodyBytes: number): number {
  const { returnWeight: weight, returnScore: score, method } = req.params;
  return workingMemoryBytes(req.layers, bodyBytes, { weight, score, method });
}

/**
 * Validates a schema-valid request against the limits and builds the backend's jobs. `pause` lets the event loop
 * run while large `inputs` are summed (the caller's turn-taking; by default none).
 */
export async function prepareRequest(
  req: PruneRequest,
  limits: PrepareLimits,
  pause: Pause = () => undefined,
): Promise<PreparedRequest> {
  const pattern = parsePattern(req.pattern, req.sparsity);
  const params: PruneParams = {
    method: req.method,
    pattern,
    exponent: req.options?.exponent ?? DEFAULT_EXPONENT[req.method],
    returnWeight: req.return.includes("weight"),
    returnScore: req.return.includes("score"),
  };
  const dataFree = req.options?.dataFree === true;
  const layers: LayerJob[] = [];
  for (const [i, layer] of req.layers.entries()) {
    const path = `layers[${i}]`;
    const { weight } = layer;
    if (weight.shape.length !== 2) {
      fail("invalid_request", `${path}.weight.shape: expected [rows, cols], got [${weight.shape.join(", ")}]`);
    }
    const [rows, cols] = weight.shape as [number, number];
    if (rows < 1 || cols < 1) fail("invalid_request", `${path}.weight.shape: rows and cols must be at least 1`);
    // Bytes first: a shape the data does not fill is a shape_mismatch (API.md) whatever its size, not too_large.
    checkBytes(weight, `${path}.weight`);
    if (rows * cols > limits.maxLayerElements) {
      fail(
        "too_large",
        `${path}.weight: ${rows * cols} elements, over this server's limit of ${limits.maxLayerElements} per layer`,
      );
    }
    if (pattern.kind === "nm" && cols % pattern.m !== 0) {
      fail(
        "shape_mismatch",
        `${path}.weight.shape: ${cols} columns is not a multiple of M = ${pattern.m} for "${req.pattern}"`,
      );
    }
    // Activations are checked for every method (API.md refuses NaN and infinity in them), but only the methods that
    // score with them get them: magnitude's scores are |W| alone.
    const scored = NEEDS_ACTIVATIONS[req.method];
    const checked = await activations(layer, cols, path, pause, scored).catch((e: unknown) => {
      // The backend checks each layer's weights as it computes the layer, in request order, once every layer's
      // activations passed here: a NaN weight in an earlier layer is the request's first non-finite value, and is
      // named rather than these activations. Scanned only on this failure: a valid request pays nothing.
      throw e instanceof ZpruneError && e.code === "non_finite" ? firstWeightError(layers) ?? e : e;
    });
    const actNormSq = scored ? checked : null;
    if (!actNormSq && scored && !dataFree) {
      fail(
        "activations_required",
        `${path}: method "${req.method}" needs actNormSq or inputs; send them, or set options.dataFree to true`,
      );
    }
    layers.push({ name: layer.name, rows, cols, dtype: weight.dtype, weight: weight.data, actNormSq });
  }
  return { params, layers };
}
