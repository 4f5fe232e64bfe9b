/**
 * The slow, obvious oracle of API.md: scores straight from the definitions in float64 (no algebraic
 * shortcuts), selection by sorting (score, index) pairs. Independent of prune/ on purpose: it shares no code
 * with the backends it checks (the contract's one constant for its ambiguity band aside).
 */
import { AMBIGUITY_BAND } from "../contract/api.ts";

/** f16 bits -> number, from the IEEE 754 definition. */
function f16ToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, f = h & 1023;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** bf16 bits -> number. */
function bf16ToNumber(h: number): number {
  const b = new DataView(new ArrayBuffer(4));
  b.setUint32(0, h << 16);
  return b.getFloat32(0);
}

/** Decodes tensor bytes with a DataView, element by element. */
export function oracleDecode(bytes: Uint8Array, dtype: "f32" | "f16" | "bf16"): number[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: number[] = [];
  if (dtype === "f32") { for (let i = 0; i < bytes.byteLength; i += 4) out.push(dv.getFloat32(i, true)); }
  else if (dtype === "f16") {
    for (let i = 0; i < bytes.byteLength; i += 2) {
      out.push(f16ToNumber(dv.getUint16(i, true)));
    }
  } else for (let i = 0; i < bytes.byteLength; i += 2) out.push(bf16ToNumber(dv.getUint16(i, true)));
  return out;
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Scores of every weight, row-major, in float64, per API.md "Scores". */
export function oracleScores(
  method: string,
  W: number[],
  rows: number,
  cols: number,
  actNormSq: number[] | null,
  exponent: number,
): { scores: number[]; alpha?: number } {
  const at = (r: number, c: number) => W[r * cols + c]!;
  const act = (c: number) => (actNormSq ? actNormSq[c]! ** (exponent / 2) : 1);
  const A = W.map(Math.abs);
  if (method === "magnitude") return { scores: A };
  if (method === "wanda") return { scores: A.map((a, i) => a * act(i % cols)) };
  if (method === "ria") {
    const rowSum = Array.from({ length: rows }, (_, r) => A.slice(r * cols, (r + 1) * cols).reduce((a, b) => a + b, 0));
    const colSum = Array.from({ length: cols }, (_, c) => {
      let s = 0;
      for (let r = 0; r < rows; r++) s += A[r * cols + c]!;
      return s;
    });
    return {
      scores: A.map((a, i) => {
        const r = Math.floor(i / cols), c = i % cols;
        const t = (colSum[c] ? a / colSum[c]! : 0) + (rowSum[r] ? a / rowSum[r]! : 0);
        return t === 0 ? 0 : t * act(c);
      }),
    };
  }
  const rowNorm = Array.from({ length: rows }, (_, r) => Math.hypot(...W.slice(r * cols, (r + 1) * cols)));
  const colNorm = Array.from(
    { length: cols },
    (_, c) => Math.hypot(...Array.from({ length: rows }, (_, r) => at(r, c))),
  );
  const Wr = W.map((w, i) => (rowNorm[Math.floor(i / cols)] ? w / rowNorm[Math.floor(i / cols)]! : 0));
  const Wc = W.map((w, i) => (colNorm[i % cols] ? w / colNorm[i % cols]! : 0));
  // API.md: "a zero std ... gives z = 0". The zero is the exact one: entries equal in exact arithmetic (a single
  // row or column, constant rows...) differ here by rounding, so a std at rounding level (2^-40 of the entries'
  // root mean square, far above float64's noise and far below any real spread) counts as zero.
  const z = (xs: number[]) => {
    const m = mean(xs);
    // Corrected two-pass: subtracting (Σd)²/n removes the error of the computed mean itself.
    const d = xs.reduce((a, b) => a + (b - m), 0);
    const ss = xs.reduce((a, b) => a + (b - m) ** 2, 0) - (d * d) / xs.length;
    const s = xs.length > 1 ? Math.sqrt(Math.max(0, ss) / (xs.length - 1)) : 0;
    const rms = Math.sqrt(xs.reduce((a, b) => a + b * b, 0) / xs.length);
    return xs.map((x) => (s > 2 ** -40 * rms ? (x - m) / s : 0));
  };
  const zr = z(Wr), zc = z(Wc);
  const meanAbs = mean(A);
  const small = A.filter((a) => a < 0.1 * meanAbs).length / A.length;
  const alpha = 0.7 * (1 - 0.3 * small);
  const scores = W.map((_, i) => {
    const s = alpha * Math.abs(zr[i]!) ** 3 + (1 - alpha) * Math.abs(zc[i]!) ** 3;
    return s === 0 ? 0 : s * act(i % cols);
  });
  return { scores, alpha };
}

/** Indices of the k lowest of `idx` by (score, index). */
function lowest(scores: number[], idx: number[], k: number): number[] {
  return [...idx].sort((a, b) => scores[a]! - scores[b]! || a - b).slice(0, k);
}

/** The pruned set per API.md "Selection", as a boolean per weight, and the thresholds of each group. */
export function oracleSelect(
  scores: number[],
  rows: number,
  cols: number,
  pattern: { kind: "layer"; sparsity: number } | { kind: "row"; sparsity: number } | {
    kind: "nm";
    n: number;
    m: number;
  },
): { pruned: boolean[]; groups: { members: number[]; threshold: number }[] } {
  const pruned = scores.map(() => false);
  const groups: { members: number[]; threshold: number }[] = [];
  const take = (members: number[], k: number) => {
    const low = lowest(scores, members, k);
    for (const i of low) pruned[i] = true;
    groups.push({ members, threshold: low.length ? scores[low[low.length - 1]!]! : -Infinity });
  };
  const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
  if (pattern.kind === "layer") take(range(0, rows * cols), Math.floor(pattern.sparsity * (rows * cols)));
  else if (pattern.kind === "row") {
    for (let r = 0; r < rows; r++) take(range(r * cols, (r + 1) * cols), Math.floor(pattern.sparsity * cols));
  } else {
    for (let g = 0; g < rows * cols; g += pattern.m) take(range(g, g + pattern.m), pattern.n);
  }
  return { pruned, groups };
}

/** Bit i of a packed mask. */
export function bit(mask: Uint8Array, i: number): boolean {
  return ((mask[i >> 3]! >> (i & 7)) & 1) === 1;
}

/**
 * Checks a mask against the oracle: the same count in every group, and any disagreement only between scores
 * within relative 1e-5 of the group's threshold (the contract's ambiguity band). Returns a list of problems.
 */
export function compareWithOracle(
  mask: Uint8Array,
  scores: number[],
  sel: ReturnType<typeof oracleSelect>,
): string[] {
  const problems: string[] = [];
  for (const g of sel.groups) {
    let ours = 0, theirs = 0;
    for (const i of g.members) {
      const a = bit(mask, i), b = sel.pruned[i]!;
      ours += a ? 1 : 0;
      theirs += b ? 1 : 0;
      if (a !== b) {
        const s = scores[i]!, t = g.threshold;
        if (!(Math.abs(s - t) <= AMBIGUITY_BAND * Math.abs(t))) {
          problems.push(`index ${i}: ours ${a}, oracle ${b}, score ${s} vs threshold ${t}`);
        }
      }
    }
    if (ours !== theirs) problems.push(`group at ${g.members[0]}: ${ours} pruned, oracle ${theirs}`);
    if (problems.length > 5) break;
  }
  return problems;
}
