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

/** Encodes a value as plain msgpack; typed arrays become `bin`, undefined fields are left out. */
export function encodeMsgpack(value: unknown): Uint8Array<ArrayBuffer> {
  // msgpackr packs into a buffer it shares with later calls: copy out, so no answer shares memory with another.
  return new Uint8Array(encodeMsgpackView(value));
}

/**
 * Like `encodeMsgpack`, but answers msgpackr's own view of its shared buffer, without a copy: only for bytes that
 * the caller copies elsewhere before anything else is encoded (a response assembled by `concatBytes`).
 */
export function encodeMsgpackView(value: unknown): Uint8Array {
  return packr.pack(binViews(value));
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
