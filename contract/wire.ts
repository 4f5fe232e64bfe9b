/**
 * msgpack as the contract wants it: plain maps, arrays, strings, numbers, booleans, nil and `bin` — no records,
 * no extension types. Typed arrays are sent as `bin` views of their bytes (msgpackr would otherwise tag them
 * with an extension type). Decoded `bin` values are views into the body, not copies.
 */
import { Packr, Unpackr } from "msgpackr";
import { ZpruneError } from "./errors.ts";
import { scanMsgpack } from "./msgpack_scan.ts";

const packr = new Packr({ useRecords: false, variableMapSize: true, moreTypes: false });
// Bodies reach the unpacker only after `scanMsgpack` has refused every extension type, so none of msgpackr's
// extensions (records, typed arrays, bundled strings...) can turn into a value plain msgpack cannot carry.
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "number" });

/** Replaces every typed array that is not a Uint8Array by a Uint8Array view of the same bytes (no copy). */
function binViews(value: unknown): unknown {
  if (value instanceof Uint8Array || value === null || typeof value !== "object") return value;
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (Array.isArray(value)) return value.map(binViews);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    // defineProperty, not assignment: a "__proto__" key stays a key instead of replacing the prototype.
    if (v !== undefined) {
      Object.defineProperty(out, k, { value: binViews(v), enumerable: true, writable: true, configurable: true });
    }
  }
  return out;
}

/** Binaries longer than this are referenced by the pieces of a message, not packed into msgpackr's buffer. */
const REFERENCED_BIN_BYTES = 1024;

/** The header of a msgpack container or bin of `n` entries or bytes: the shortest of its fix, 8-, 16-, 32-bit forms. */
function lengthHeader(n: number, fix: number | null, c8: number | null, c16: number, c32: number): Uint8Array {
  // The widest form counts to 2^32 - 1: past it the length would wrap and declare a few bytes of a huge value.
  if (n > 0xffffffff) {
    throw new RangeError(`msgpack cannot carry ${n} bytes or entries in one value (at most 2^32 - 1)`);
  }
  if (fix !== null && n < 16) return Uint8Array.of(fix | n);
  if (c8 !== null && n < 0x100) return Uint8Array.of(c8, n);
  if (n < 0x10000) return Uint8Array.of(c16, n >>> 8, n & 0xff);
  return Uint8Array.of(c32, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/** Whether `value` (after `binViews`) holds a binary longer than REFERENCED_BIN_BYTES anywhere. */
function holdsLargeBin(value: unknown): boolean {
  if (value instanceof Uint8Array) return value.byteLength > REFERENCED_BIN_BYTES;
  if (value === null || typeof value !== "object") return false;
  return (Array.isArray(value) ? value : Object.values(value)).some(holdsLargeBin);
}

/** Appends the pieces of `value` (after `binViews`) to `out`. */
function collectPieces(value: unknown, out: Uint8Array[]): void {
  if (!holdsLargeBin(value)) {
    // Small throughout (a scalar, a stats map, a layer with a small mask): msgpackr packs it in one call, far
    // cheaper than a piece per scalar. The piece is a view of msgpackr's buffer (a Buffer's slice() would not copy
    // either); msgpackr never writes over bytes it has returned, and encodeMsgpack's concatenation copies them out.
    out.push(packr.pack(value));
  } else if (value instanceof Uint8Array) {
    out.push(lengthHeader(value.byteLength, null, 0xc4, 0xc5, 0xc6), value);
  } else if (Array.isArray(value)) {
    out.push(lengthHeader(value.length, 0x90, null, 0xdc, 0xdd));
    for (const v of value) collectPieces(v, out);
  } else {
    const entries = Object.entries(value as object);
    out.push(lengthHeader(entries.length, 0x80, null, 0xde, 0xdf));
    for (const [k, v] of entries) {
      out.push(packr.pack(k));
      collectPieces(v, out);
    }
  }
}

/**
 * `value` as plain msgpack, in pieces whose concatenation is the message (typed arrays become `bin`, undefined
 * fields are left out). The containers that hold binaries over 1 KiB get their headers written here and those
 * binaries are views of the caller's bytes; everything else is packed by msgpackr (views of its buffer). msgpackr
 * keeps its buffer between calls, grown to the largest value it ever packed: were the tensors packed there, one large
 * answer would hold that much memory for the life of the process, and every tensor would be copied twice on its way
 * out.
 */
export function msgpackPieces(value: unknown): Uint8Array[] {
  const out: Uint8Array[] = [];
  collectPieces(binViews(value), out);
  return out;
}

/** Encodes a value as plain msgpack into a new array; typed arrays become `bin`, undefined fields are left out. */
export function encodeMsgpack(value: unknown): Uint8Array<ArrayBuffer> {
  return concatBytes(msgpackPieces(value));
}

/** Decodes exactly one complete plain msgpack value, or throws `bad_msgpack` (`invalid_request` for structure no
 * request has: see `scanMsgpack`). */
export function decodeMsgpack(bytes: Uint8Array): unknown {
  if (bytes.byteLength === 0) throw new ZpruneError("bad_msgpack", "the body is empty; send one msgpack map");
  scanMsgpack(bytes);
  try {
    return unpackr.unpack(bytes);
  } catch (err) {
    // The scan found the body complete and plain; msgpackr refusing it anyway is still the body's fault.
    const why = (err instanceof Error ? err.message : String(err)).split("\n")[0]!.slice(0, 120);
    throw new ZpruneError("bad_msgpack", `the body is not one complete msgpack value (${why})`, { cause: err });
  }
}

/** The media types of a msgpack body: the registered one, and the older one many clients still send. */
export const MSGPACK_MEDIA_TYPES = ["application/msgpack", "application/x-msgpack"] as const;

/** Whether `type` (lower-case, without parameters) is a msgpack media type. */
export function isMsgpackType(type: string): boolean {
  return (MSGPACK_MEDIA_TYPES as readonly string[]).includes(type);
}

/** Concatenates byte chunks into one array. */
export function concatBytes(chunks: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let n = 0;
  for (const c of chunks) n += c.byteLength;
  const out = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.byteLength;
  }
  return out;
}
