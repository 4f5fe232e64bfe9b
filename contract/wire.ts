/**
 * msgpack as the contract wants it: plain maps, arrays, strings, numbers, booleans, nil and `bin` — no records,
 * no extension types. Typed arrays are sent as `bin` views of their bytes (msgpackr would otherwise tag them
 * with an extension type). Decoded `bin` values are views into the body, not copies.
 */
import { addExtension, Packr, Unpackr } from "msgpackr";
import { ZpruneError } from "./errors.ts";

const packr = new Packr({ useRecords: false, variableMapSize: true, moreTypes: false });
// msgpackr decodes its record extension (fixext type 0x72) whatever the options, into plain objects that
// `foreignValue` cannot tell apart: the unpacker gets a structures table of its own, where a record definition
// leaves an entry that `decodeMsgpack` refuses (and clears).
const structures: object[] = [];
/** Ids of the records defined in `structures`: integer keys, negative for two-byte definitions (msgpackr also keeps
 * bookkeeping properties such as `sharedLength` on the array). */
const recordIds = () => Object.keys(structures).filter((k) => /^-?\d+$/.test(k));
// structuredClone: false makes msgpackr refuse its id/pointer extensions (0x69, 0x70), which otherwise decode to
// the plain value they wrap and so would slip an extension type past `foreignValue`.
const unpackr = new Unpackr({
  useRecords: false,
  mapsAsObjects: true,
  int64AsType: "number",
  structuredClone: false,
  structures,
});
/** The extension types msgpackr decodes on its own (undefined, bigint, error, ids, pointers, records, Set, typed
 * arrays, RegExp, bundled strings, timestamp). */
const MSGPACKR_EXTENSIONS = [0x00, 0x42, 0x62, 0x65, 0x69, 0x70, 0x72, 0x73, 0x74, 0x78, 0xff];

/**
 * Makes msgpackr refuse every extension type, process-wide: some decode to plain values (bundled strings to
 * strings, any of them as a map key to a string) that `foreignValue` cannot see. The server calls this; the client,
 * which decodes only the server's plain answers, leaves its host program's msgpackr as it found it (msgpackr's
 * extension table is shared by the whole process).
 */
export function refuseExtensionTypes(): void {
  for (const type of MSGPACKR_EXTENSIONS) {
    addExtension({
      type,
      unpack() {
        throw new Error(`extension type 0x${type.toString(16).padStart(2, "0")} is not plain msgpack`);
      },
    });
  }
}

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

/** Decodes exactly one complete msgpack value, or throws `bad_msgpack`. */
export function decodeMsgpack(bytes: Uint8Array): unknown {
  if (bytes.byteLength === 0) throw new ZpruneError("bad_msgpack", "the body is empty; send one msgpack map");
  let value: unknown;
  try {
    value = unpackr.unpack(bytes);
    if (recordIds().length > 0) throw new Error("a record definition (extension 0x72)");
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    const why = msg.startsWith("Data read, but end of buffer not reached")
      ? "trailing bytes after the first value"
      : msg.split("\n")[0]!.slice(0, 120);
    throw new ZpruneError("bad_msgpack", `the body is not one complete msgpack value (${why})`, { cause: err });
  } finally {
    for (const k of recordIds()) delete (structures as unknown as Record<string, unknown>)[k];
    structures.length = 0;
  }
  const bad = foreignValue(value, "", bytes.buffer);
  if (bad !== null) {
    throw new ZpruneError("bad_msgpack", `${bad}: only plain msgpack types are accepted (no extension types, no 0xc1)`);
  }
  return value;
}

/**
 * The path of the first value that plain msgpack cannot carry (an extension type msgpackr turned into a Date,
 * Set, typed array..., or its marker for the reserved byte 0xc1), or null when the tree is plain. A `bin` is a
 * view into the body (`body`); msgpackr's typed-array extension (0x74) decodes to a Uint8Array too, but one
 * with its own buffer, so that is how the two are told apart.
 */
function foreignValue(v: unknown, path: string, body: ArrayBufferLike): string | null {
  if (v === null || typeof v === "string" || typeof v === "number" || typeof v === "boolean") return null;
  if (typeof v !== "object") return path || "(body)";
  if (v instanceof Uint8Array) {
    const plain = v.constructor === Uint8Array || v.constructor.name === "Buffer";
    return plain && v.buffer === body ? null : path || "(body)";
  }
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const bad = foreignValue(v[i], `${path}[${i}]`, body);
      if (bad !== null) return bad;
    }
    return null;
  }
  if (Object.getPrototypeOf(v) !== Object.prototype) return path || "(body)";
  for (const [k, x] of Object.entries(v)) {
    const bad = foreignValue(x, path ? `${path}.${k}` : k, body);
    if (bad !== null) return bad;
  }
  return null;
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
