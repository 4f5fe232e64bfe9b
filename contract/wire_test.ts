import assert from "node:assert/strict";
import { ZpruneError } from "./errors.ts";
import { Packr, Unpackr } from "msgpackr";
import { decodeMsgpack, encodeMsgpack, encodeMsgpackView } from "./wire.ts";

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

Deno.test("encodeMsgpackView() answers stay intact while later values are packed, small and large", () => {
  // The response route packs its parts as views and copies them once; this is what it relies on.
  const views: Uint8Array[] = [];
  const copies: Uint8Array[] = [];
  for (const size of [3, 100_000, 7, 5_000_000, 1, 20_000]) {
    const v = encodeMsgpackView({ n: size, x: new Uint8Array(size).fill(size & 255) });
    views.push(v);
    copies.push(v.slice());
  }
  views.forEach((v, i) => assert.ok(v.every((b, j) => b === copies[i]![j]), `view ${i} was overwritten`));
  const big = decodeMsgpack(copies[3]!) as { n: number; x: Uint8Array };
  assert.equal(big.n, 5_000_000);
  assert.ok(big.x.length === 5_000_000 && big.x.every((b) => b === (5_000_000 & 255)));
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

Deno.test("decodeMsgpack() refuses bundled strings and extension-typed map keys, which msgpackr reads as strings", () => {
  const bundled = new Packr({ useRecords: false, bundleStrings: true }).pack(sample);
  const keys = [
    new Uint8Array([0x81, 0xd4, 0x00, 0x00, 0x01]), // {undefined (ext 0x00): 1}, which msgpackr reads as {"undefined": 1}
    new Uint8Array([0x81, 0xd4, 0x42, 0x05, 0x01]), // {bigint (ext 0x42): 1}, which msgpackr reads as {"5": 1}
  ];
  // The independent expectation: msgpackr alone turns each into a plain-looking value.
  const plain = new Unpackr({ useRecords: false, mapsAsObjects: true });
  assert.deepEqual(plain.unpack(bundled), sample);
  for (const k of keys) assert.equal(Object.keys(plain.unpack(k) as object).length, 1);
  assert.throws(() => decodeMsgpack(bundled), isBad);
  for (const k of keys) assert.throws(() => decodeMsgpack(k), isBad, `${k}`);
  assert.deepEqual(decodeMsgpack(encodeMsgpack(sample)), sample);
});
