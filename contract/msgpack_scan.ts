/**
 * A structural check of a msgpack body that runs before anything is decoded. It walks the value headers only
 * (a `bin` or string is skipped by its length), allocates only for short map keys, and refuses:
 * - anything but one complete value: truncation, trailing bytes, a length that runs past the end (400);
 * - anything plain msgpack cannot carry: extension types, the reserved byte 0xc1, a string that is not UTF-8 (400);
 * - structure no request has: nesting deeper than `maxDepth`, more than `maxValues` values, map keys that are not
 *   strings or integers, a string key (of up to 64 bytes: any field's) twice in one map (422: decoders disagree on
 *   which one wins, so a proxy that checked the first `layers` would not have checked what runs).
 * Decoding first and checking after is what it prevents: a decoder builds every value before a schema can count
 * them (100 MB of empty maps is 100M objects, enough to exhaust the heap), walks deep nesting by recursion, and
 * msgpackr describes trailing bytes by JSON-encoding the whole decoded value, tensor bytes included.
 */
import { ZpruneError } from "./errors.ts";

/** Bounds on a msgpack value's shape. */
export interface ScanLimits {
  /** Containers nested inside each other, the outermost counting 1. */
  maxDepth: number;
  /** Values of any kind, map keys and container headers included. */
  maxValues: number;
}

/**
 * The bounds a request or answer keeps. A request is 5 deep (body, layers, layer, tensor, shape) and about 25
 * values per layer, at most 4096 layers: 100K values; these leave room for fields a client adds.
 */
export const WIRE_LIMITS: ScanLimits = { maxDepth: 32, maxValues: 1 << 20 };

/** The longest map key compared with its siblings: field names are a few ASCII letters. */
const KEY_MAX = 64;

/**
 * A key (valid UTF-8: the scan checks every string first) as the decoder reads it, so keys equal here are keys the
 * decoder would merge. ASCII, every field name, is read without the decoder.
 */
function keyName(bytes: Uint8Array, pos: number, length: number, utf8: TextDecoder): string {
  let name = "";
  for (let i = pos; i < pos + length; i++) {
    const b = bytes[i]!;
    if (b >= 0x80) return utf8.decode(bytes.subarray(pos, pos + length));
    name += String.fromCharCode(b);
  }
  return name;
}

/**
 * The offset of the first byte of `bytes[pos, pos + length)` that does not continue valid UTF-8 (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF), or -1 when all of it is valid. It allocates nothing: a string may be
 * as long as the body.
 */
export function invalidUtf8At(bytes: Uint8Array, pos: number, length: number): number {
  const end = pos + length;
  let i = pos;
  while (i < end) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    // The sequence's length and the range of its second byte, which rules out overlong forms, surrogates and
    // code points past U+10FFFF (RFC 3629, section 4); later bytes are any continuation byte.
    let n: number, lo = 0x80, hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) n = 2;
    else if (b >= 0xe0 && b <= 0xef) {
      n = 3;
      if (b === 0xe0) lo = 0xa0;
      else if (b === 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 4;
      if (b === 0xf0) lo = 0x90;
      else if (b === 0xf4) hi = 0x8f;
    } else return i;
    if (i + n > end) return i;
    const second = bytes[i + 1]!;
    if (second < lo || second > hi) return i;
    for (let k = 2; k < n; k++) if ((bytes[i + k]! & 0xc0) !== 0x80) return i;
    i += n;
  }
  return -1;
}

/** Bytes that follow each fixed-size header byte 0xc0-0xdf (nil .. map32), or -1 where the byte needs more. */
function fixedPayload(b: number): number {
  switch (b) {
    case 0xc0: // nil
    case 0xc2: // false
    case 0xc3: // true
      return 0;
    case 0xcc: // uint8
    case 0xd0: // int8
      return 1;
    case 0xcd:
    case 0xd1:
      return 2;
    case 0xca: // float32
    case 0xce:
    case 0xd2:
      return 4;
    case 0xcb: // float64
    case 0xcf:
    case 0xd3:
      return 8;
    default:
      return -1;
  }
}

/** One value's header: its kind, the payload bytes that follow it, and the entries of a container it opens. */
interface Header {
  /** Where the payload starts (after the header's length bytes). */
  end: number;
  /** Payload bytes to skip (a string's, a bin's, a number's). */
  skip: number;
  /** Entries of the array or map this header opens, or -1. */
  open: number;
  map: boolean;
  str: boolean;
  int: boolean;
}

/** The error for a body that is not one complete value. */
function incomplete(why: string): ZpruneError {
  return new ZpruneError("bad_msgpack", `the body is not one complete msgpack value (${why})`);
}

/** Throws `incomplete` unless `k` bytes from `pos` lie within the body. */
function need(bytes: Uint8Array, pos: number, k: number): void {
  if (pos + k > bytes.byteLength) throw incomplete(`it ends inside a value at byte ${pos}`);
}

/**
 * Reads the header at `at` (its first byte is there) into `h`, one object for the whole scan (a hostile body may hold
 * a million one-byte values); refuses the reserved byte and extension types.
 */
function readHeader(bytes: Uint8Array, view: DataView, at: number, h: Header): void {
  need(bytes, at, 1);
  const b = bytes[at]!;
  h.end = at + 1;
  h.skip = 0;
  h.open = -1;
  h.map = h.str = h.int = false;
  const fixed = fixedPayload(b);
  if (b <= 0x7f || b >= 0xe0) {
    h.int = true; // positive or negative fixint
  } else if (b <= 0x8f) {
    h.open = b & 0x0f;
    h.map = true;
  } else if (b <= 0x9f) {
    h.open = b & 0x0f;
  } else if (b <= 0xbf) {
    h.skip = b & 0x1f;
    h.str = true;
  } else if (fixed >= 0) {
    h.skip = fixed;
    h.int = b >= 0xcc && b <= 0xd3; // uint8..uint64, int8..int64
  } else if (b === 0xc4 || b === 0xc5 || b === 0xc6 || b === 0xd9 || b === 0xda || b === 0xdb) {
    // bin8/16/32 and str8/16/32: a length of 1, 2 or 4 bytes.
    const width = b <= 0xc6 ? 1 << (b - 0xc4) : 1 << (b - 0xd9);
    need(bytes, h.end, width);
    h.skip = width === 1 ? bytes[h.end]! : width === 2 ? view.getUint16(h.end) : view.getUint32(h.end);
    h.end += width;
    h.str = b >= 0xd9;
  } else if (b >= 0xdc && b <= 0xdf) {
    // array16, array32, map16, map32.
    const width = b === 0xdc || b === 0xde ? 2 : 4;
    need(bytes, h.end, width);
    h.open = width === 2 ? view.getUint16(h.end) : view.getUint32(h.end);
    h.end += width;
    h.map = b >= 0xde;
  } else if (b === 0xc1) {
    throw new ZpruneError(
      "bad_msgpack",
      `the reserved byte 0xc1 at byte ${at} is not msgpack; only plain msgpack types are accepted`,
    );
  } else {
    // ext8/16/32 (0xc7-0xc9) and fixext (0xd4-0xd8)
    const type = b <= 0xc9 ? bytes[h.end + (1 << (b - 0xc7))] : bytes[h.end];
    const which = type === undefined ? "" : ` 0x${type.toString(16).padStart(2, "0")}`;
    throw new ZpruneError(
      "bad_msgpack",
      `an extension type${which} at byte ${at}: only plain msgpack types are accepted (no extension types)`,
    );
  }
}

/** The string keys of each open map so far, to refuse a key given twice in one map. */
class MapKeys {
  // A short list per map (a request's maps hold a few), a Set past 16: a long list would make the scan quadratic.
  readonly #keys: (string[] | Set<string>)[] = [];
  readonly #utf8 = new TextDecoder();

  /** A map opens at `depth`, with no keys yet. */
  open(depth: number): void {
    this.#keys[depth] = [];
  }

  /** Checks the key at `at` (header `h`) of the map at `depth`. */
  check(bytes: Uint8Array, at: number, h: Header, depth: number): void {
    // msgpackr makes string and integer keys into property names (an integer key is then an unknown field, ignored
    // as any other); a container, bin, float, boolean or nil key has no such reading.
    if (!h.str && !h.int) {
      throw new ZpruneError(
        "invalid_request",
        `the map key at byte ${at} is neither a string nor an integer; a request's maps are keyed by field names`,
      );
    }
    // Only keys a field could have are compared: a longer one is an unknown field whatever it repeats, and reading
    // it would cost time and memory in proportion to a key a client may make as long as the body.
    if (!h.str || h.skip > KEY_MAX) return;
    need(bytes, h.end, h.skip);
    const name = keyName(bytes, h.end, h.skip, this.#utf8);
    const seen = this.#keys[depth]!;
    if (Array.isArray(seen) ? seen.includes(name) : seen.has(name)) {
      throw new ZpruneError(
        "invalid_request",
        `the map key ${JSON.stringify(name)} at byte ${at} appears twice in its map; send each field once`,
      );
    }
    if (!Array.isArray(seen)) seen.add(name);
    else if (seen.push(name) > 16) this.#keys[depth] = new Set(seen);
  }
}

/** Throws the contract's error unless `bytes` is exactly one complete plain msgpack value within `limits`. */
export function scanMsgpack(bytes: Uint8Array, limits: ScanLimits = WIRE_LIMITS): void {
  const n = bytes.byteLength;
  const view = new DataView(bytes.buffer, bytes.byteOffset, n);
  // Per open container: values still to read, and whether it is a map (its even-numbered values are keys).
  const left = new Float64Array(limits.maxDepth + 1);
  const isMap = new Uint8Array(limits.maxDepth + 1);
  const keys = new MapKeys();
  let depth = 0;
  left[0] = 1; // the body: one value
  let pos = 0;
  let values = 0;
  const h: Header = { end: 0, skip: 0, open: -1, map: false, str: false, int: false };
  for (;;) {
    while (depth > 0 && left[depth] === 0) depth--;
    if (depth === 0 && left[0] === 0) break;
    const key = isMap[depth] === 1 && left[depth]! % 2 === 0;
    left[depth]!--;
    if (++values > limits.maxValues) {
      throw new ZpruneError(
        "invalid_request",
        `the body holds more than ${limits.maxValues} msgpack values; a request is one map of at most 4096 layers, ` +
          "each a few fields with its tensors as bin",
      );
    }
    const at = pos;
    readHeader(bytes, view, at, h);
    pos = h.end;
    if (h.str) {
      need(bytes, pos, h.skip);
      // msgpack's strings are UTF-8; a decoder reads an invalid sequence as U+FFFD, so two layers' names could come
      // back as one.
      const bad = invalidUtf8At(bytes, pos, h.skip);
      if (bad >= 0) {
        throw new ZpruneError(
          "bad_msgpack",
          `the string at byte ${at} is not valid UTF-8 (at byte ${bad}); msgpack strings are UTF-8`,
        );
      }
    }
    if (key) keys.check(bytes, at, h, depth);
    if (h.open < 0) {
      need(bytes, pos, h.skip);
      pos += h.skip;
      continue;
    }
    const entries = h.map ? h.open * 2 : h.open;
    // Every value takes at least one byte: a count the rest of the body cannot hold is a truncated body, and
    // is refused before anything waits on it.
    if (entries > n - pos) {
      const kind = h.map ? "map" : "array";
      throw incomplete(`a ${kind} at byte ${at} declares ${h.open} entries; ${n - pos} bytes follow`);
    }
    // The open container's own level: `depth` counts the containers this value sits in.
    if (depth === limits.maxDepth) {
      throw new ZpruneError(
        "invalid_request",
        `the body nests containers deeper than ${limits.maxDepth} levels; a request needs 5`,
      );
    }
    if (entries > 0) {
      depth++;
      left[depth] = entries;
      isMap[depth] = h.map ? 1 : 0;
      if (h.map) keys.open(depth);
    }
  }
  if (pos < n) throw incomplete(`${n - pos} trailing byte${n - pos === 1 ? "" : "s"} after the first value`);
}
