/**
 * Windows of token ids for calibration and evaluation: seeded window starts, gathering them, and the files of exact
 * ids (uint16) and window starts (int64) that the CLI's third calibration source, and the bundled corpus, use.
 */
import type { TokenArray } from "./tokenizer.ts";

/** A deterministic generator of uniform numbers in [0, 1) (mulberry32), so that a seed fixes the windows. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Window starts drawn uniformly from [0, length - seqLen] with a seeded generator. */
export function randomStarts(length: number, count: number, seqLen: number, seed: number): number[] {
  if (length < seqLen) throw new RangeError(`${length} tokens are fewer than one window of ${seqLen}`);
  const rand = seededRandom(seed);
  return Array.from({ length: count }, () => Math.floor(rand() * (length - seqLen + 1)));
}

/** Gathers windows of `seqLen` tokens starting at `starts` into one array (windows, seqLen). */
export function gatherWindows(ids: TokenArray, starts: readonly number[], seqLen: number): Int32Array {
  const out = new Int32Array(starts.length * seqLen);
  starts.forEach((s, w) => {
    if (!(s >= 0 && s + seqLen <= ids.length)) {
      throw new RangeError(`window start ${s} leaves the ${ids.length} tokens`);
    }
    out.set(ids.subarray(s, s + seqLen), w * seqLen);
  });
  return out;
}

/** Reads a uint16 little-endian token file. */
export async function readU16(path: string): Promise<Uint16Array> {
  const b = await Deno.readFile(path);
  if (b.byteLength % 2) throw new RangeError(`${path}: odd byte length for uint16 ids`);
  return new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2);
}

/** Reads an int64 little-endian file of window starts. */
export async function readI64(path: string): Promise<number[]> {
  const b = await Deno.readFile(path);
  if (b.byteLength % 8) throw new RangeError(`${path}: byte length is not a multiple of 8`);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return Array.from({ length: b.byteLength / 8 }, (_, i) => Number(v.getBigInt64(i * 8, true)));
}
