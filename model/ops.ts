/**
 * The forward pass's building blocks, output first as in llama2.c (`rmsnorm(out, x, w, ...)`), over whole
 * windows of T tokens at once. `matmul` runs a WebAssembly SIMD kernel (model/matmul.wat) when all three
 * arrays live in one `Arena`'s memory, and a plain loop otherwise; everything else is plain TypeScript.
 */
import { MATMUL_WASM_BASE64 } from "./_matmul_wasm.ts";
import type { RopeScaling } from "./config.ts";
import { decodeInto } from "../contract/dtype_codec.ts";

type MatmulFn = (out: number, x: number, w: number, T: number, n: number, d: number) => void;
/** The 3x4 and 1x4 kernels for one weight type. */
type KernelPair = { mm3x4: MatmulFn; mm1x4: MatmulFn };
type WasmKernels = Record<"f32" | HalfType, KernelPair>;

/** The 16-bit float formats a weight matrix may be kept in. */
export type HalfType = "bf16" | "f16";

/**
 * A weight matrix kept in a checkpoint's 16-bit format (half the memory of float32): `matmul` widens each weight to
 * float32 exactly as it reads it, so products equal those of the float32 matrix, bit for bit.
 */
export interface HalfMatrix {
  readonly dtype: HalfType;
  /** The raw 16-bit values, row-major. */
  readonly data: Uint16Array;
}

/** A weight matrix as `matmul` takes it: float32, or 16-bit floats widened as they are read. */
export type WeightMatrix = Float32Array | HalfMatrix;

/** Kernels by the ArrayBuffer of the memory they were instantiated on; lets `matmul` find them from its arrays. */
const KERNELS = new WeakMap<ArrayBufferLike, WasmKernels>();
let MODULE: WebAssembly.Module | undefined;

/** The largest arena: a 32-bit WebAssembly memory holds at most 65536 pages of 64 KiB, 4 GiB. */
export const ARENA_MAX_BYTES = 65536 * 65536;

/** A fixed-size WebAssembly memory handed out as aligned Float32Arrays; never grows, so views stay valid. */
export class Arena {
  readonly memory: WebAssembly.Memory;
  #used = 0;

  /** Reserves `bytes` (rounded up to 64 KiB pages; at most `ARENA_MAX_BYTES`). */
  constructor(readonly bytes: number) {
    const pages = Math.ceil(bytes / 65536);
    if (pages * 65536 > ARENA_MAX_BYTES) throw new RangeError(`arena of ${bytes} bytes exceeds WebAssembly's 4 GiB`);
    this.memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
    MODULE ??= new WebAssembly.Module(Uint8Array.from(atob(MATMUL_WASM_BASE64), (c) => c.charCodeAt(0)));
    const e = new WebAssembly.Instance(MODULE, { env: { memory: this.memory } }).exports;
    const pair = (suffix: string): KernelPair => ({
      mm3x4: e[`matmul_3x4${suffix}`] as MatmulFn,
      mm1x4: e[`matmul_1x4${suffix}`] as MatmulFn,
    });
    KERNELS.set(this.memory.buffer, { f32: pair(""), bf16: pair("_bf16"), f16: pair("_f16") });
  }

  /** A zeroed Float32Array of n elements, 16-byte aligned. */
  f32(n: number): Float32Array {
    return new Float32Array(this.memory.buffer, this.#take(n * 4), n);
  }

  /** A zeroed Uint16Array of n elements (16-bit weights), 16-byte aligned. */
  u16(n: number): Uint16Array {
    return new Uint16Array(this.memory.buffer, this.#take(n * 2), n);
  }

  /** The offset of the next `bytes` bytes, rounded up to 16. */
  #take(bytes: number): number {
    const at = this.#used;
    this.#used = at + Math.ceil(bytes / 16) * 16;
    if (this.#used > this.memory.buffer.byteLength) throw new RangeError("arena exhausted; reserve more bytes");
    return at;
  }
}

/** out (T, d) = x (T, n) · w (d, n)ᵀ; w is laid out like torch's Linear.weight, float32 or 16-bit (`HalfMatrix`). */
export function matmul(out: Float32Array, x: Float32Array, w: WeightMatrix, T: number, n: number, d: number): void {
  const half = w instanceof Float32Array ? undefined : w;
  const wv = half ? half.data : w as Float32Array;
  const k = KERNELS.get(out.buffer)?.[half?.dtype ?? "f32"];
  if (k === undefined || x.buffer !== out.buffer || wv.buffer !== out.buffer || n % 4 !== 0) {
    matmulColumns(out, x, w, T, n, d, 0);
    return;
  }
  const T3 = T - (T % 3), d4 = d - (d % 4);
  k.mm3x4(out.byteOffset, x.byteOffset, wv.byteOffset, T, n, d);
  if (T3 < T) k.mm1x4(out.byteOffset + T3 * d * 4, x.byteOffset + T3 * n * 4, wv.byteOffset, T - T3, n, d);
  if (d4 < d) matmulColumns(out, x, w, T, n, d, d4);
}

/** The plain-loop matmul over columns [j0, d) of out (every row); a 16-bit row is widened once per use. */
function matmulColumns(
  out: Float32Array,
  x: Float32Array,
  w: WeightMatrix,
  T: number,
  n: number,
  d: number,
  j0: number,
): void {
  // Column by column: a 16-bit row is widened once for every token.
  const row = w instanceof Float32Array ? undefined : new Float32Array(n);
  for (let j = j0; j < d; j++) {
    if (row) widenRow(row, w as HalfMatrix, j * n, n);
    const [wr, wo] = row ? [row, 0] : [w as Float32Array, j * n];
    for (let t = 0; t < T; t++) {
      const xo = t * n;
      let s = 0;
      for (let i = 0; i < n; i++) s += x[xo + i]! * wr[wo + i]!;
      out[t * d + j] = s;
    }
  }
}

/** Writes `n` weights of `w` from element `at` into `out` as float32 (exact: every 16-bit float is a float32). */
export function widenRow(out: Float32Array, w: HalfMatrix, at: number, n: number): void {
  const bytes = new Uint8Array(w.data.buffer, w.data.byteOffset + 2 * at, 2 * n);
  decodeInto(out, bytes, w.dtype, 0, n);
}

/** out (T, n) = x / rms(x) * w, row by row (HF LlamaRMSNorm, computed in float32 or better). */
export function rmsnorm(out: Float32Array, x: Float32Array, w: Float32Array, T: number, n: number, eps: number): void {
  for (let t = 0; t < T; t++) {
    const o = t * n;
    let ss = 0;
    for (let j = 0; j < n; j++) ss += x[o + j]! * x[o + j]!;
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let j = 0; j < n; j++) out[o + j] = w[j]! * Math.fround(x[o + j]! * inv);
  }
}

/**
 * RoPE's inverse frequencies theta^(-2i / headDim), i < headDim / 2, with `scaling` applied, each step rounded to
 * float32 as transformers computes them in float32 tensors.
 */
export function ropeInvFreq(headDim: number, theta: number, scaling?: RopeScaling): Float32Array {
  const f = Math.fround;
  const inv = new Float32Array(headDim / 2).map((_, i) => f(1 / f(theta ** ((2 * i) / headDim))));
  if (scaling?.type === "linear") return inv.map((x) => f(x / f(scaling.factor)));
  if (scaling?.type !== "llama3") return inv;
  const { lowFreqFactor: low, highFreqFactor: high, originalMaxPositions: orig } = scaling;
  const factor = f(scaling.factor), lowWavelen = f(orig / low), highWavelen = f(orig / high);
  return inv.map((x) => {
    const wavelen = f(f(2 * Math.PI) / x);
    if (wavelen < highWavelen) return x; // high frequencies: as trained
    if (wavelen > lowWavelen) return f(x / factor); // low frequencies: stretched by the factor
    // Between the two: blended, from x / factor at the low edge to x at the high edge.
    const smooth = f(f(f(orig / wavelen) - f(low)) / f(high - low));
    return f(f(f(f(1 - smooth) * x) / factor) + f(smooth * x));
  });
}

/** cos and sin tables (T, headDim / 2) for RoPE: angle = position * inverse frequency, in float32 like HF. */
export function ropeTables(
  T: number,
  headDim: number,
  theta: number,
  scaling?: RopeScaling,
): { cos: Float32Array; sin: Float32Array } {
  const half = headDim / 2;
  const cos = new Float32Array(T * half), sin = new Float32Array(T * half);
  const inv = ropeInvFreq(headDim, theta, scaling);
  for (let i = 0; i < half; i++) {
    const invFreq = inv[i]!;
    for (let t = 0; t < T; t++) {
      const a = Math.fround(t * invFreq);
      cos[t * half + i] = Math.cos(a);
      sin[t * half + i] = Math.sin(a);
    }
  }
  return { cos, sin };
}

/**
 * Rotates x (T, nHeads * headDim) in place in the HF `rotate_half` convention: dimension i pairs with
 * i + headDim/2 (not with i + 1 as in the original LLaMA code).
 */
export function rope(
  x: Float32Array,
  T: number,
  nHeads: number,
  headDim: number,
  cos: Float32Array,
  sin: Float32Array,
) {
  const half = headDim / 2, stride = nHeads * headDim;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < nHeads; h++) {
      const o = t * stride + h * headDim;
      for (let i = 0; i < half; i++) {
        const c = cos[t * half + i]!, s = sin[t * half + i]!;
        const a = x[o + i]!, b = x[o + i + half]!;
        x[o + i] = a * c - b * s;
        x[o + i + half] = b * c + a * s;
      }
    }
  }
}

/** Scratch for `attention`, allocated once per window length. */
export interface AttentionScratch {
  qh: Float32Array; // (T, headDim) one head's queries
  kh: Float32Array; // (T, headDim) its key/value head's keys
  vt: Float32Array; // (headDim, T) its values, transposed so that att · v is a matmul
  att: Float32Array; // (T, T) scores, then probabilities
  ho: Float32Array; // (T, headDim) one head's output
}

/**
 * Causal grouped-query attention over one window: out (T, nHeads * headDim) from q (T, nHeads * headDim) and
 * k, v (T, nKvHeads * headDim); query head h reads key/value head floor(h / (nHeads / nKvHeads)).
 */
export function attention(
  out: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  T: number,
  nHeads: number,
  nKvHeads: number,
  headDim: number,
  s: AttentionScratch,
): void {
  const qDim = nHeads * headDim, kvDim = nKvHeads * headDim, group = nHeads / nKvHeads;
  const scale = 1 / Math.sqrt(headDim);
  for (let h = 0; h < nHeads; h++) {
    const kvh = Math.floor(h / group);
    if (h % group === 0) {
      for (let t = 0; t < T; t++) {
        for (let e = 0; e < headDim; e++) {
          s.kh[t * headDim + e] = k[t * kvDim + kvh * headDim + e]!;
          s.vt[e * T + t] = v[t * kvDim + kvh * headDim + e]!;
        }
      }
    }
    for (let t = 0; t < T; t++) {
      for (let e = 0; e < headDim; e++) s.qh[t * headDim + e] = q[t * qDim + h * headDim + e]!;
    }
    // Full T x T scores through the SIMD matmul; the masked half costs less than a scalar causal loop.
    matmul(s.att, s.qh, s.kh, T, headDim, T);
    for (let t = 0; t < T; t++) {
      const o = t * T;
      let max = -Infinity;
      for (let u = 0; u <= t; u++) max = Math.max(max, s.att[o + u]! * scale);
      let sum = 0;
      for (let u = 0; u <= t; u++) {
        const p = Math.exp(s.att[o + u]! * scale - max);
        s.att[o + u] = p;
        sum += p;
      }
      const inv = 1 / sum;
      for (let u = 0; u <= t; u++) s.att[o + u]! *= inv;
      s.att.fill(0, o + t + 1, o + T);
    }
    matmul(s.ho, s.att, s.vt, T, T, headDim);
    for (let t = 0; t < T; t++) {
      for (let e = 0; e < headDim; e++) out[t * qDim + h * headDim + e] = s.ho[t * headDim + e]!;
    }
  }
}

/** x (T * n) = silu(x) * y, elementwise (the LLaMA MLP's gate). */
export function swiglu(x: Float32Array, y: Float32Array, len: number): void {
  for (let i = 0; i < len; i++) {
    const g = x[i]!;
    x[i] = (g / (1 + Math.exp(-g))) * y[i]!;
  }
}

/** x += y over the first len elements (a residual connection). */
export function accum(x: Float32Array, y: Float32Array, len: number): void {
  for (let i = 0; i < len; i++) x[i]! += y[i]!;
}

/** out[t, j] += bias[j] for t < T, rows of bias.length (a linear layer's bias after its product); none: a no-op. */
export function addBias(out: Float32Array, bias: Float32Array | undefined, T: number): void {
  if (!bias) return;
  const n = bias.length;
  for (let t = 0; t < T; t++) {
    const o = t * n;
    for (let j = 0; j < n; j++) out[o + j]! += bias[j]!;
  }
}

/** acc[j] += sum over t of x[t, j]², in float64 (calibration statistics). */
export function sumSquares(acc: Float64Array, x: Float32Array, T: number, n: number): void {
  for (let t = 0; t < T; t++) {
    const o = t * n;
    for (let j = 0; j < n; j++) acc[j]! += x[o + j]! * x[o + j]!;
  }
}
