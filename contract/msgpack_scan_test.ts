import assert from "node:assert/strict";
import { Packr } from "msgpackr";
import { ZpruneError } from "./errors.ts";
import { invalidUtf8At, scanMsgpack } from "./msgpack_scan.ts";

const packr = new Packr({ useRecords: false, variableMapSize: true, moreTypes: false });
const code = (c: string, includes = "") => (e: unknown) =>
  e instanceof ZpruneError && e.code === c && e.message.includes(includes);

/** A seeded xorshift generator in [0, 1). */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

/** A random plain value whose encoding uses every header family: ints and floats of each width, strings and bins
 * around the 8/16/32-bit length boundaries, fix/16/32 maps and arrays. */
function randomValue(r: () => number, depth: number): unknown {
  const pick = Math.floor(r() * (depth > 3 ? 8 : 11));
  const lengths = [0, 1, 31, 32, 255, 256, 65535, 65536];
  const len = () => lengths[Math.floor(r() * lengths.length)]!;
  switch (pick) {
    case 0:
      return null;
    case 1:
      return r() < 0.5;
    case 2: {
      const mags = [1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1];
      const m = mags[Math.floor(r() * mags.length)]!;
      return r() < 0.5 ? m : -m;
    }
    case 3:
      return r() < 0.5 ? 0.5 : r() * 1e300;
    case 4:
      return "s".repeat(len());
    case 5:
    case 6:
    case 7:
      return new Uint8Array(len());
    case 8:
    case 9: {
      const n = [0, 1, 15, 16, 17][Math.floor(r() * 5)]!;
      return Array.from({ length: n }, () => randomValue(r, depth + 1));
    }
    default: {
      const n = [0, 1, 15, 16, 17][Math.floor(r() * 5)]!;
      const m: Record<string, unknown> = {};
      for (let i = 0; i < n; i++) m[`k${i}`] = randomValue(r, depth + 1);
      return m;
    }
  }
}

Deno.test("scanMsgpack() passes every plain value msgpackr encodes, refusing each prefix and a trailing byte", () => {
  const r = rng(2026);
  let checkedPrefixes = 0;
  for (let i = 0; i < 200; i++) {
    const bytes = new Uint8Array(packr.pack(randomValue(r, 0)));
    scanMsgpack(bytes);
    const longer = new Uint8Array(bytes.length + 1);
    longer.set(bytes);
    assert.throws(() => scanMsgpack(longer), code("bad_msgpack", "1 trailing byte after"));
    // Every strict prefix ends inside a value: all of them for small encodings, 100 spread out for large ones.
    const step = bytes.length > 200 ? Math.ceil(bytes.length / 100) : 1;
    for (let cut = 0; cut < bytes.length; cut += step) {
      assert.throws(() => scanMsgpack(bytes.subarray(0, cut)), code("bad_msgpack"), `prefix ${cut} of ${bytes.length}`);
      checkedPrefixes++;
    }
  }
  assert.ok(checkedPrefixes > 5_000, `${checkedPrefixes} prefixes`);
});

Deno.test("scanMsgpack() reads views at any offset of a larger buffer", () => {
  const inner = packr.pack({ a: [1, new Uint8Array(300), "x".repeat(40)] });
  const outer = new Uint8Array(inner.length + 7);
  outer.set(inner, 3);
  scanMsgpack(outer.subarray(3, 3 + inner.length));
  assert.throws(() => scanMsgpack(outer.subarray(3, 4 + inner.length)), code("bad_msgpack", "trailing"));
});

Deno.test("scanMsgpack() refuses every extension header and the reserved byte 0xc1, wherever they stand", () => {
  const exts = [
    [0xd4, 0x01, 0x00],
    [0xd5, 0x01, 0, 0],
    [0xd6, 0xff, 0, 0, 0, 1],
    [0xd7, 0x01, ...new Array(8).fill(0)],
    [0xd8, 0x01, ...new Array(16).fill(0)],
    [0xc7, 0x01, 0x74, 0x00],
    [0xc8, 0x00, 0x01, 0x74, 0x00],
    [0xc9, 0x00, 0x00, 0x00, 0x01, 0x74, 0x00],
  ];
  for (const e of exts) {
    assert.throws(() => scanMsgpack(new Uint8Array(e)), code("bad_msgpack", "extension"), `${e}`);
    assert.throws(() => scanMsgpack(new Uint8Array([0x92, 0x01, ...e])), code("bad_msgpack", "extension"), `${e}`);
    assert.throws(() => scanMsgpack(new Uint8Array([0x81, 0xa1, 0x61, ...e])), code("bad_msgpack", "extension"));
  }
  assert.throws(() => scanMsgpack(new Uint8Array([0xc1])), code("bad_msgpack", "0xc1"));
  assert.throws(() => scanMsgpack(new Uint8Array([0x91, 0xc1])), code("bad_msgpack", "0xc1"));
  // Inside a bin or a string the same bytes are data, not headers (0xc7 0x80 is "ǀ" in UTF-8; 0xc1 is in none).
  scanMsgpack(new Uint8Array([0x92, 0xc4, 0x02, 0xc1, 0xd6, 0xa2, 0xc7, 0x80]));
});

Deno.test("scanMsgpack() takes string and integer map keys only", () => {
  // {"a": 1, str8 "b": {"": nil}, 7: 1, -1: 1, uint16 300: 1, int64 -2: 1}
  scanMsgpack(
    new Uint8Array([
      0x86,
      ...[0xa1, 0x61, 0x01],
      ...[0xd9, 0x01, 0x62, 0x81, 0xa0, 0xc0],
      ...[0x07, 0x01],
      ...[0xff, 0x01],
      ...[0xcd, 0x01, 0x2c, 0x01],
      ...[0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0x01],
    ]),
  );
  const keys = [[0xc0], [0xc3], [0xc4, 0x01, 0x61], [0x80], [0x90], [0xca, 0, 0, 0, 0], [0xcb, 0, 0, 0, 0, 0, 0, 0, 0]];
  for (const k of keys) {
    assert.throws(() => scanMsgpack(new Uint8Array([0x81, ...k, 0x01])), code("invalid_request", "map key"), `${k}`);
    // The second key of a map and a key in a nested map are checked too; a value may be anything.
    assert.throws(() => scanMsgpack(new Uint8Array([0x82, 0xa1, 0x61, ...k, ...k, 0x01])), code("invalid_request"));
    assert.throws(() => scanMsgpack(new Uint8Array([0x91, 0x81, ...k, 0x01])), code("invalid_request"));
    scanMsgpack(new Uint8Array([0x81, 0xa1, 0x61, ...k]));
  }
});

Deno.test("scanMsgpack() refuses a string key twice in one map, however it is spelt, and only in one map", () => {
  // {"layers": 1, "layers": 2}, the second as str8: the same key in another header.
  const twice = [0x82, 0xa6, ...new TextEncoder().encode("layers"), 0x01, 0xd9, 0x06];
  assert.throws(
    () => scanMsgpack(new Uint8Array([...twice, ...new TextEncoder().encode("layers"), 0x02])),
    code("invalid_request", '"layers"'),
  );
  // The same key in sibling maps, in a map and its nested map, or after the map closed is no duplicate.
  scanMsgpack(packr.pack([{ name: 1 }, { name: 2 }]));
  scanMsgpack(packr.pack({ name: { name: 1 }, other: [{ name: 2 }] }));
  // A deeper map's duplicate is found, after the outer map's keys were seen.
  assert.throws(() => scanMsgpack(dupNested()), code("invalid_request", '"x" at byte 8'));
  // Past 16 keys the check goes on (in a Set): 40 distinct keys pass, a repeat of the third after them fails.
  const many = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, i]));
  scanMsgpack(packr.pack(many));
  const repeat = packr.pack({ ...many, zz: 0 });
  const at = repeat.lastIndexOf(0xa2); // the header of "zz", the last key: rename it "k2"
  repeat.set([0x6b, 0x32], at + 1);
  assert.throws(() => scanMsgpack(repeat), code("invalid_request", '"k2"'));
  // A decoder reads invalid UTF-8 as U+FFFD, so "a\xff" and "a\xfe" would be one key: refused as not UTF-8 first.
  assert.throws(
    () => scanMsgpack(new Uint8Array([0x82, 0xa2, 0x61, 0xff, 0x01, 0xa2, 0x61, 0xfe, 0x02])),
    code("bad_msgpack", "the string at byte 1 is not valid UTF-8 (at byte 3)"),
  );
  const accent = [0xa2, 0xc3, 0xa9]; // "é" in UTF-8
  assert.throws(() => scanMsgpack(new Uint8Array([0x82, ...accent, 1, ...accent, 2])), code("invalid_request", '"é"'));
  // A key longer than any field's is not compared: a 64 MB one costs its UTF-8 check, however often it repeats.
  const L = 64e6, str32 = [0xdb, 0x03, 0xd0, 0x90, 0x00]; // a str32 header of 64,000,000 bytes
  const long = new Uint8Array(1 + 2 * (5 + L + 1) + 1); // {key: nil, the same key: nil} and a trailing nil
  long[0] = 0x82;
  for (const at of [1, 1 + 5 + L + 1]) {
    long.set(str32, at);
    long[at + 5 + L] = 0xc0;
  }
  long[long.length - 1] = 0xc0;
  assert.throws(() => scanMsgpack(long), code("bad_msgpack", "trailing"));
  scanMsgpack(long.subarray(0, long.length - 1));
});

/** {"a": [{"x": 1, "x": 2}]}: a duplicate inside a nested map. */
function dupNested(): Uint8Array {
  return new Uint8Array([0x81, 0xa1, 0x61, 0x91, 0x82, 0xa1, 0x78, 0x01, 0xa1, 0x78, 0x02]);
}

Deno.test("scanMsgpack() knows every fixed-size format's payload: whole passes, one byte short or over fails", () => {
  // From the msgpack spec: nil, false, true; uint8-64; int8-64; float32, float64.
  const sizes: [number, number][] = [
    [0xc0, 0],
    [0xc2, 0],
    [0xc3, 0],
    [0xcc, 1],
    [0xcd, 2],
    [0xce, 4],
    [0xcf, 8],
    [0xd0, 1],
    [0xd1, 2],
    [0xd2, 4],
    [0xd3, 8],
    [0xca, 4],
    [0xcb, 8],
  ];
  // Strings and bins: 8-, 16- and 32-bit big-endian lengths, here of 3 bytes.
  const lengths: [number[], number][] = [
    [[0xd9, 3], 3],
    [[0xda, 0, 3], 3],
    [[0xdb, 0, 0, 0, 3], 3],
    [[0xc4, 3], 3],
    [[0xc5, 0, 3], 3],
    [[0xc6, 0, 0, 0, 3], 3],
    [[0xa3], 3],
  ];
  const cases = [
    ...sizes.map(([b, k]) => [[b], k] as [number[], number]),
    ...lengths,
  ];
  for (const [head, k] of cases) {
    const whole = [...head, ...new Array(k).fill(0x61)];
    for (const wrap of [(v: number[]) => v, (v: number[]) => [0x92, ...v, 0xc0], (v: number[]) => [0x81, 0xa0, ...v]]) {
      scanMsgpack(new Uint8Array(wrap(whole)));
      if (whole.length > 1) {
        assert.throws(() => scanMsgpack(new Uint8Array(wrap(whole.slice(0, -1)))), code("bad_msgpack"), `${head}`);
      }
      assert.throws(() => scanMsgpack(new Uint8Array([...wrap(whole), 0xc0])), code("bad_msgpack"), `${head}`);
    }
  }
});

Deno.test("scanMsgpack() holds nesting to maxDepth levels, empty containers included", () => {
  const limits = { maxDepth: 6, maxValues: 1000 };
  for (const [name, open, close] of [["arrays", [0x91], [0x90]], ["maps", [0x81, 0xa1, 0x61], [0x80]]] as const) {
    const nest = (levels: number) => new Uint8Array([...new Array(levels - 1).fill(open).flat(), ...close]);
    scanMsgpack(nest(6), limits);
    assert.throws(() => scanMsgpack(nest(7), limits), code("invalid_request", "deeper than 6"), name);
  }
  // Depth is nesting, not the number of containers: siblings at one level are fine.
  scanMsgpack(new Uint8Array([0x93, 0x91, 0x90, 0x91, 0x90, 0x91, 0x90]), { maxDepth: 3, maxValues: 100 });
});

Deno.test("scanMsgpack() counts every value, keys and headers included, against maxValues", () => {
  // {"a": [1, 2, 3]}: the map, its key, the array and 3 ints = 6 values.
  const six = new Uint8Array([0x81, 0xa1, 0x61, 0x93, 0x01, 0x02, 0x03]);
  scanMsgpack(six, { maxDepth: 4, maxValues: 6 });
  assert.throws(() => scanMsgpack(six, { maxDepth: 4, maxValues: 5 }), code("invalid_request", "more than 5"));
  // 2M empty maps in one array32: refused at the limit, long before a decoder would have built them.
  const n = 2_000_000;
  const body = new Uint8Array(5 + n).fill(0x80);
  body.set([0xdd, (n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
  assert.throws(() => scanMsgpack(body), code("invalid_request", `more than ${2 ** 20}`));
});

Deno.test("scanMsgpack() refuses counts and lengths the rest of the body cannot hold, before reading on", () => {
  const ff = [0xff, 0xff, 0xff, 0xff];
  const cases = [
    [0xdd, ...ff, 0xc0], // array32 of 4G entries
    [0xdf, ...ff, 0xa1, 0x61, 0xc0], // map32 of 4G entries
    [0xdc, 0x00, 0x03, 0xc0, 0xc0], // array16 of 3 with 2 present
    [0xc6, ...ff, 0x00], // bin32 of 4 GiB
    [0xdb, 0x00, 0x00, 0x00, 0x02, 0x61], // str32 of 2 with 1 present
    [0xcb, 0, 0, 0], // float64 cut short
  ];
  for (const c of cases) assert.throws(() => scanMsgpack(new Uint8Array(c)), code("bad_msgpack"), `${c}`);
});

Deno.test("invalidUtf8At() agrees with a fatal TextDecoder: all 1- and 2-byte strings, longer ones at edges", () => {
  const fatal = new TextDecoder("utf-8", { fatal: true });
  const valid = (b: Uint8Array) => {
    try {
      fatal.decode(b);
      return true;
    } catch {
      return false;
    }
  };
  // Where it reports a byte, what comes before is valid and what starts there is not.
  const check = (b: Uint8Array) => {
    const at = invalidUtf8At(b, 0, b.length);
    assert.equal(at === -1, valid(b), `[${[...b].map((x) => x.toString(16))}]: ${at}`);
    if (at >= 0) assert.ok(valid(b.subarray(0, at)) && !valid(b.subarray(at)), `[${[...b]}] at ${at}`);
  };
  for (let a = 0; a < 256; a++) {
    check(new Uint8Array([a]));
    for (let b = 0; b < 256; b++) check(new Uint8Array([a, b]));
  }
  // Every lead of 3 and 4 bytes and more, with the bytes after it at the edges of the ranges RFC 3629 allows there
  // (0x80-0x8f, 0x90-0x9f, 0xa0-0xbf) and past them.
  const edges = [0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff];
  for (let a = 0xe0; a < 256; a++) {
    for (const b of edges) {
      for (const c of edges) {
        check(new Uint8Array([a, b, c]));
        for (const d of edges) check(new Uint8Array([a, b, c, d]));
      }
    }
  }
  // Text in every UTF-8 length (ASCII, Latin, CJK, emoji) is valid; one byte cut off the end is not, and a range of
  // a larger buffer is read from its offset.
  const text = new TextEncoder().encode("zprune: é, 剪枝, 🌲");
  assert.equal(invalidUtf8At(text, 0, text.length), -1);
  assert.equal(invalidUtf8At(text, 0, text.length - 1), text.length - 4);
  assert.equal(invalidUtf8At(new Uint8Array([0xff, ...text, 0xff]), 1, text.length), -1);
});

Deno.test("scanMsgpack() refuses a string that is not UTF-8, as a key or a value, at any depth", () => {
  // {"layers": [{"name": "AA"}]} with the name's first byte made 0xff, 0xc0 (overlong) or a surrogate's lead 0xed 0xa0.
  const good = packr.pack({ layers: [{ name: "AAA" }] });
  scanMsgpack(good);
  const at = good.indexOf(0xa3, good.indexOf(0x61) + 1); // the header of "AAA" (after "name"'s letters)
  for (const bad of [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80]]) {
    const body = good.slice();
    body.set(bad, at + 1);
    assert.throws(() => scanMsgpack(body), code("bad_msgpack", `the string at byte ${at} is not valid UTF-8`));
  }
  assert.throws(() => scanMsgpack(new Uint8Array([0x81, 0xa1, 0x80, 0xc0])), code("bad_msgpack", "UTF-8"));
});
