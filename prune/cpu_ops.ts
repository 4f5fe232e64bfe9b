/**
 * The CPU backend's parallel operations: each works on a row or element range of shared typed arrays, so the
 * same function runs on the main thread or on any worker. `runOp` is the one dispatcher both sides use.
 */
import type { DType, Method } from "../contract/api.ts";
import { decodeInto } from "../contract/dtype_codec.ts";
import { accumulateSums, centredSums, type MatrixSums, newSums, type ScoreContext, scoreRows } from "./scores.ts";
import { histogramHigh, histogramLow, markBelow, markGather, markTies, selectNM, selectRows } from "./select.ts";

/** Every operation a worker can run, with its arguments. Arrays may be views of SharedArrayBuffers. */
export type CpuOp =
  | {
    op: "decodeSums";
    raw: Uint8Array;
    dtype: DType;
    W: Float32Array;
    method: Method;
    cols: number;
    r0: number;
    r1: number;
  }
  | {
    op: "centred";
    W: Float32Array;
    cols: number;
    r0: number;
    r1: number;
    invRow: Float64Array;
    invCol: Float64Array;
    meanR: number;
    meanC: number;
    smallBelow: number;
  }
  | { op: "score"; W: Float32Array; ctx: ScoreContext; r0: number; r1: number; out: Float32Array; hist: boolean }
  | { op: "histLow"; keys: Uint32Array; e0: number; e1: number; top: number }
  | { op: "markBelow"; keys: Uint32Array; e0: number; e1: number; t: number; mask: Uint8Array }
  | {
    op: "markGather";
    keys: Uint32Array;
    e0: number;
    e1: number;
    top: number;
    mask: Uint8Array;
    out: Uint32Array;
    at: number;
  }
  | { op: "markTies"; keys: Uint32Array; e0: number; e1: number; t: number; quota: number; mask: Uint8Array }
  | { op: "rows"; keys: Uint32Array; cols: number; k: number; mask: Uint8Array; r0: number; r1: number }
  | { op: "nm"; keys: Uint32Array; cols: number; n: number; m: number; mask: Uint8Array; r0: number; r1: number };

/** Result of `score`: the first score past float32's range (or -1), and the histogram when asked for. */
export interface ScoreResult {
  over: number;
  hist: Uint32Array | null;
}

/** Result of `decodeSums`: the first non-finite index (or -1) and the partial sums of its row range. */
export interface DecodeSumsResult extends MatrixSums {
  bad: number;
}

/**
 * Runs one operation on this thread and returns its (structured-cloneable) result. Every hot loop lives in a
 * small function of its own: this dispatcher sees every operation's shape, and a loop inlined here would be
 * deoptimised each time a new shape arrives.
 */
export function runOp(o: CpuOp): unknown {
  switch (o.op) {
    case "decodeSums": {
      const bad = decodeInto(o.W, o.raw, o.dtype, o.r0 * o.cols, o.r1 * o.cols);
      // The block's rows only (rows r0..r1 at 0..r1-r0): sized by r1, the blocks of a tall layer allocated about 16
      // times its rows' sums between them.
      const s = newSums(o.r1 - o.r0, o.cols, o.method);
      if (bad < 0) accumulateSums(o.method, o.W, o.cols, o.r0, o.r1, s);
      return { bad, ...s } satisfies DecodeSumsResult;
    }
    case "centred":
      return centredSums(o.W, o.cols, o.r0, o.r1, o.invRow, o.invCol, o.meanR, o.meanC, o.smallBelow);
    case "score": {
      const over = scoreRows(o.W, o.ctx, o.r0, o.r1, o.out);
      if (!o.hist || over >= 0) return { over, hist: null } satisfies ScoreResult;
      // The top-16-bit histogram of the scores just written, while they are still warm in cache.
      const keys = new Uint32Array(o.out.buffer, o.out.byteOffset, o.out.length);
      return { over, hist: histogramHigh(keys, o.r0 * o.ctx.cols, o.r1 * o.ctx.cols) } satisfies ScoreResult;
    }
    case "histLow":
      return histogramLow(o.keys, o.e0, o.e1, o.top);
    case "markBelow":
      return markBelow(o.keys, o.e0, o.e1, o.t, o.mask);
    case "markGather":
      return markGather(o.keys, o.e0, o.e1, o.top, o.mask, o.out, o.at);
    case "markTies":
      markTies(o.keys, o.e0, o.e1, o.t, o.quota, o.mask);
      return null;
    case "rows":
      selectRows(o.keys, o.cols, o.k, o.mask, o.r0, o.r1);
      return null;
    case "nm":
      selectNM(o.keys, o.cols, o.n, o.m, o.mask, o.r0, o.r1);
      return null;
  }
}
