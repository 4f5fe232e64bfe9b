/**
 * Windows of token ids for calibration and evaluation: seeded window starts, gathering them, and the files of exact
 * ids (uint16, or uint32 for larger vocabularies) and window starts (int64) that the CLI's third calibration source,
 * and the bundled corpus, use.
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
      // Which window, and where it would end: a start near the end is as wrong as one past it.
      const where = s < 0 ? "is negative" : `+ ${seqLen} tokens runs past the ${ids.length} tokens there are`;
      throw new RangeError(`window ${w} (of ${starts.length}): its start ${s} ${where}`);
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

/**
 * Reads a uint32 little-endian token file, for vocabularies past uint16's 65,536 ids (Llama 3's 128,256). Ids are
 * held as int32, like the tokenizer's: one of 2^31 or more, past any vocabulary, is refused here, as it would wrap.
 */
export async function readU32(path: string): Promise<Int32Array> {
  const b = await Deno.readFile(path);
  if (b.byteLength % 4) throw new RangeError(`${path}: byte length is not a multiple of 4 for uint32 ids`);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const ids = new Int32Array(b.byteLength / 4);
  for (let i = 0; i < ids.length; i++) {
    const id = v.getUint32(i * 4, true);
    if (id >= 2 ** 31) throw new RangeError(`${path}: token id ${id} (token ${i}) is past any vocabulary`);
    ids[i] = id;
  }
  return ids;
}

/**
 * Reads a token file by its name: uint32 where it ends in `.u32`, uint16 (the bundled corpus's) otherwise. For a
 * vocabulary of `vocabSize` past 65,536 ids the name must say which (`.u16` or `.u32`): a uint32 file of another name
 * would be read as twice as many uint16 halves, every one within the vocabulary, and measure nonsense without a word.
 */
export function readTokenIds(path: string, vocabSize = 0): Promise<TokenArray> {
  if (/\.u32$/i.test(path)) return readU32(path);
  if (vocabSize > 65_536 && !/\.u16$/i.test(path)) {
    return Promise.reject(
      new RangeError(
        `the model's ${vocabSize} token ids do not all fit uint16: name the file *.u32 if it holds uint32 ids, ` +
          "*.u16 if uint16",
      ),
    );
  }
  return readU16(path);
}

/** Reads an int64 little-endian file of window starts. */
export async function readI64(path: string): Promise<number[]> {
  const b = await Deno.readFile(path);
  if (b.byteLength % 8) throw new RangeError(`${path}: byte length is not a multiple of 8`);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return Array.from({ length: b.byteLength / 8 }, (_, i) => Number(v.getBigInt64(i * 8, true)));
}
