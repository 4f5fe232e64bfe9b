import assert from "node:assert/strict";
import { ZpruneError } from "./errors.ts";
import { Packr, Unpackr } from "msgpackr";
import { decodeMsgpack, encodeMsgpack, isMsgpackType } from "./wire.ts";

Deno.test("encodeMsgpack() sends typed arrays as bin and answers never alias each other", () => {
  const a = encodeMsgpack({ x: new Float32Array([1, 2]) });
  const before = a.slice();
  const b = encodeMsgpack({ x: new Float32Array([3, 4]) });
  // A later encode must not overwrite an earlier answer (msgpackr reuses its buffer unless we copy out).
  assert.deepEqual(a, before);
  assert.notEqual(a.buffer, b.buffer);
  assert.equal(a[3], 0xc4, "bin 8, not an extension type");
  const da = decodeMsgpack(a) as { x: Uint8Array };
  assert.deepEqual(Array.from(new Float32Array(da.x.slice().buffer)), [1, 2]);
});

Deno.test("encodeMsgpack() writes what msgpackr does, for containers holding a large bin at every header size", () => {
  // The oracle: msgpackr packing the whole value itself, with the options the module uses.
  const oracle = new Packr({ useRecords: false, variableMapSize: true, moreTypes: false });
  const sizes = [0, 1, 15, 16, 255, 256, 1024, 1025, 65535, 65536, 70_000];
  const large = new Uint8Array(1025).fill(9);
  const map = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i % 3 ? i : -i * 1e9]));
  const values: unknown[] = [
    ...sizes.map((n) => new Uint8Array(n).map((_, i) => i * 7)),
    ...sizes.map((n) => Array.from({ length: n }, (_, i) => (i % 2 ? 0.5 * i : "s".repeat(i % 40)))),
    ...sizes.filter((n) => n <= 65536).map(map),
    // Containers holding a large bin get their headers written by the module: every header size again.
    ...sizes.filter((n) => n > 0).map((n) => Array.from({ length: n }, (_, i) => (i === n - 1 ? large : i))),
    ...sizes.filter((n) => n > 0 && n <= 65536).map((n) => ({ ...map(n - 1), bin: large })),
    {
      name: "layer",
      shape: [4096, 4096],
      mask: new Uint8Array(3000).fill(0xa5),
      small: new Uint8Array([1, 2, 3]),
      stats: { pruned: 2 ** 33, sparsity: 0.5, nested: [null, true, false, -1, 2 ** 53 - 1, "é".repeat(300)] },
      ["__proto__"]: { kept: "as a key" }, // computed: a plain "__proto__" in a literal sets the prototype
    },
  ];
  for (const v of values) {
    const want = oracle.pack(v).slice();
    const got = encodeMsgpack(v);
    assert.ok(got.byteLength === want.byteLength && got.every((b, i) => b === want[i]), `differs: ${String(v)}`);
  }
});

Deno.test("encodeMsgpack() leaves msgpackr's buffer small after a large value, and its answers stay intact", () => {
  const answers: Uint8Array[] = [];
  const copies: Uint8Array[] = [];
  for (const size of [3, 100_000, 7, 64 << 20, 1, 20_000]) {
    const v = encodeMsgpack({ n: size, x: new Uint8Array(size).fill(size & 255) });
    answers.push(v);
    copies.push(v.slice());
  }
  answers.forEach((v, i) => assert.ok(v.every((b, j) => b === copies[i]![j]), `answer ${i} was overwritten`));
  const big = decodeMsgpack(answers[3]!) as { n: number; x: Uint8Array };
  assert.ok(big.n === 64 << 20 && big.x.length === 64 << 20 && big.x.every((b) => b === 0));
  // msgpackr 2.x packs into one buffer shared by every Packr, which only grows: a value packed now shows its size.
  // The 64 MiB bin went into the answer directly, so that buffer never held it. The bound leaves room for what the
  // test above packs (a few MiB: each test file runs in its own isolate, so only this file's tests count).
  const shared = new Packr().pack(1).buffer.byteLength;
  assert.ok(shared < 16 << 20, `msgpackr's buffer holds ${shared} bytes`);
});

Deno.test("decodeMsgpack() refuses truncated, trailing, empty and extension-typed bodies", () => {
  const good = encodeMsgpack({ a: [1, 2, 3] });
  const bad = [
    good.subarray(0, 3),
    new Uint8Array([...good, 0]),
    new Uint8Array(0),
    new Uint8Array([0xd6, 0xff, 0, 0, 0, 1]),
    new Uint8Array([0x91, 0xc1]),
  ];
  for (const b of bad) {
    assert.throws(() => decodeMsgpack(b), (e: unknown) => e instanceof ZpruneError && e.code === "bad_msgpack");
  }
});

Deno.test("decodeMsgpack() keeps __proto__ keys from touching prototypes", () => {
  const v = decodeMsgpack(encodeMsgpack(JSON.parse('{"__proto__": {"polluted": 1}}'))) as Record<string, unknown>;
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(Object.getPrototypeOf(v), Object.prototype);
});

const isBad = (e: unknown) => e instanceof ZpruneError && e.code === "bad_msgpack";
const sample = { method: "magnitude", layers: [{ name: "a", n: 70 }, { name: "b", n: 71 }] };

Deno.test("decodeMsgpack() refuses well-formed msgpackr records, and still reads ints 64-127", () => {
  const records = new Packr({ useRecords: true }).pack(sample);
  assert.equal(records[1], 0x72, "the sample defines a record");
  assert.throws(() => decodeMsgpack(records), isBad);
  // A two-byte record definition (0xd5 0x72 id high-byte), which msgpackr keys by a negative number; without the
  // check it reads as {"a": 1}.
  assert.throws(() => decodeMsgpack(new Uint8Array([0xd5, 0x72, 0x00, 0x01, 0x91, 0xa1, 0x61, 0x01])), isBad);
  // After a refusal, plain bodies decode as before: fixints 0x40-0x7f are numbers, not record references.
  assert.deepEqual(decodeMsgpack(encodeMsgpack(sample)), sample);
  assert.deepEqual(decodeMsgpack(new Uint8Array([0x93, 0x40, 0x72, 0x7f])), [64, 114, 127]);
});

Deno.test("decodeMsgpack() refuses bundled strings and ext-typed map keys, which msgpackr reads as strings", () => {
  const bundled = new Packr({ useRecords: false, bundleStrings: true }).pack(sample);
  const keys = [
    // {undefined (ext 0x00): 1}, which msgpackr reads as {"undefined": 1}
    new Uint8Array([0x81, 0xd4, 0x00, 0x00, 0x01]),
    // {bigint (ext 0x42): 1}, which msgpackr reads as {"5": 1}
    new Uint8Array([0x81, 0xd4, 0x42, 0x05, 0x01]),
  ];
  // The independent expectation: msgpackr alone turns each into a plain-looking value.
  const plain = new Unpackr({ useRecords: false, mapsAsObjects: true });
  assert.deepEqual(plain.unpack(bundled), sample);
  for (const k of keys) assert.equal(Object.keys(plain.unpack(k) as object).length, 1);
  assert.throws(() => decodeMsgpack(bundled), isBad);
  for (const k of keys) assert.throws(() => decodeMsgpack(k), isBad, `${k}`);
  assert.deepEqual(decodeMsgpack(encodeMsgpack(sample)), sample);
});

Deno.test("encodeMsgpack() refuses a bin longer than msgpack's 32-bit length can declare", () => {
  // A view that reports 2^32 + 5 bytes, as a 4 GiB tensor would, without allocating one: the header would wrap
  // to declare 5 bytes.
  class Huge extends Uint8Array {
    override get byteLength(): number {
      return 2 ** 32 + 5;
    }
  }
  assert.throws(() => encodeMsgpack({ data: new Huge(2048) }), RangeError);
  assert.throws(() => encodeMsgpack({ data: new Huge(2048) }), /msgpack cannot carry 4294967301 bytes/);
  // Up to the limit the header is the 32-bit one, big-endian.
  const pieces = encodeMsgpack({ data: new Uint8Array(70_000) });
  assert.deepEqual([...pieces.subarray(6, 11)], [0xc6, 0x00, 0x01, 0x11, 0x70]);
});

Deno.test("encodeMsgpack() leaves undefined fields out and sends a __proto__ key as a key, small or large", () => {
  // Decoded as Maps: msgpackr's object decoding renames a "__proto__" key, which would hide what was sent.
  const asMap = new Unpackr({ useRecords: false, mapsAsObjects: false });
  for (const big of [new Uint8Array(0), new Uint8Array(4096)]) {
    const v = decodeMsgpack(encodeMsgpack({ a: 1, b: undefined, big })) as Record<string, unknown>;
    assert.deepEqual(Object.keys(v), ["a", "big"]);
    const p = asMap.unpack(encodeMsgpack({ ...JSON.parse('{"__proto__": 7}'), big })) as Map<string, unknown>;
    assert.deepEqual([...p.keys()], ["__proto__", "big"], `bin of ${big.byteLength} bytes`);
    assert.equal(p.get("__proto__"), 7);
  }
});

Deno.test("isMsgpackType() takes exactly the two msgpack media types", () => {
  assert.ok(isMsgpackType("application/msgpack"));
  assert.ok(isMsgpackType("application/x-msgpack"));
  for (const t of ["application/msgpackx", "application/x-msgpack2", "application/json", "msgpack", ""]) {
    assert.equal(isMsgpackType(t), false, t);
  }
});
