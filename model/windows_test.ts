import assert from "node:assert/strict";
import { gatherWindows, randomStarts, readI64, readTokenIds, readU16, readU32, seededRandom } from "./windows.ts";

const root = (p: string) => new URL(`../${p}`, import.meta.url).pathname;

Deno.test("gatherWindows() takes the reference's calibration windows; randomStarts() is seeded", async () => {
  const ids = await readU16(root("data/corpus/calib_ids.u16"));
  const starts = await readI64(root("data/corpus/calib_starts_seed0.i64"));
  assert.equal(starts.length, 64);
  assert.equal(starts[0], 93824); // first int64 of the file
  const w = gatherWindows(ids, starts, 256);
  assert.equal(w.length, 64 * 256);
  assert.deepEqual(Array.from(w.subarray(256, 512)), Array.from(ids.subarray(starts[1]!, starts[1]! + 256)));
  assert.deepEqual(randomStarts(1000, 5, 256, 7), randomStarts(1000, 5, 256, 7));
  assert.notDeepEqual(randomStarts(1000, 5, 256, 7), randomStarts(1000, 5, 256, 8));
  assert.ok(randomStarts(300, 100, 256, 1).every((s) => s >= 0 && s <= 44));
  // Uniform over [0, length - seqLen], both ends included: the last window ending at the last token is drawn too.
  const drawn = new Set(randomStarts(300, 2000, 256, 3));
  assert.deepEqual([...drawn].sort((a, b) => a - b), Array.from({ length: 45 }, (_, i) => i));
  assert.deepEqual(randomStarts(256, 3, 256, 5), [0, 0, 0], "one window fits: it starts at 0");
});

Deno.test("readU32() reads little-endian uint32 ids past uint16; readTokenIds() picks the width by name", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // Llama 3's vocabulary (128,256 ids) and the largest id int32 holds, written byte by byte.
    const want = [0, 1, 65535, 65536, 128255, 2 ** 31 - 1, 300];
    const bytes = new Uint8Array(want.length * 4);
    want.forEach((id, i) => bytes.set([id & 255, (id >>> 8) & 255, (id >>> 16) & 255, id >>> 24], i * 4));
    await Deno.writeFile(`${dir}/ids.u32`, bytes);
    await Deno.writeFile(`${dir}/IDS.U32`, bytes);
    await Deno.writeFile(`${dir}/ids.u16`, bytes);
    await Deno.writeFile(`${dir}/ids.bin`, bytes);
    assert.deepEqual(Array.from(await readU32(`${dir}/ids.u16`)), want, "readU32 ignores the name");
    assert.deepEqual(Array.from(await readTokenIds(`${dir}/ids.u32`)), want);
    assert.deepEqual(Array.from(await readTokenIds(`${dir}/IDS.U32`)), want);
    // Any other name keeps the bundled corpus's uint16: the same bytes as twice the ids, low half first.
    const halves = want.flatMap((id) => [id & 0xffff, id >>> 16]);
    assert.deepEqual(Array.from(await readTokenIds(`${dir}/ids.u16`)), halves);
    assert.deepEqual(Array.from(await readTokenIds(`${dir}/ids.bin`)), halves);
    // Past 65,536 ids, the name must say the width: read as uint16, a uint32 file passes every vocabulary check.
    await assert.rejects(readTokenIds(`${dir}/ids.bin`, 128_256), /128256 token ids do not all fit uint16: name/);
    assert.deepEqual(Array.from(await readTokenIds(`${dir}/ids.u16`, 128_256)), halves);
    assert.deepEqual(Array.from(await readTokenIds(`${dir}/ids.u32`, 128_256)), want);
    assert.deepEqual(Array.from(await readTokenIds(`${dir}/ids.bin`, 65_536)), halves);
    // 2^31 would wrap to a negative int32, which no vocabulary check would catch.
    await Deno.writeFile(`${dir}/wrap.u32`, new Uint8Array([...bytes, 0, 0, 0, 128]));
    await assert.rejects(readTokenIds(`${dir}/wrap.u32`), /wrap\.u32: token id 2147483648 \(token 7\) is past any/);
    await Deno.writeFile(`${dir}/ragged.u32`, bytes.subarray(0, 26));
    await assert.rejects(readTokenIds(`${dir}/ragged.u32`), /ragged\.u32: byte length is not a multiple of 4/);
    await Deno.writeFile(`${dir}/empty.u32`, new Uint8Array(0));
    assert.equal((await readTokenIds(`${dir}/empty.u32`)).length, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("seededRandom() is mulberry32, so that --seed draws the same windows in every version", () => {
  // From a separate implementation of mulberry32 (Python, unsigned 32-bit arithmetic), seed 0 and 123456789.
  const r = seededRandom(0);
  assert.deepEqual([r(), r(), r()], [0.26642920868471265, 0.0003297457005828619, 0.2232720274478197]);
  assert.deepEqual(randomStarts(100_000, 5, 256, 0), [26574, 32, 22270, 14582, 46613]);
  assert.deepEqual(randomStarts(100_000, 3, 256, 123456789), [25713, 96829, 78332]);
});

Deno.test("gatherWindows() refuses a negative start; readU16 and readI64 refuse a file of ragged length", async () => {
  const ids = Uint16Array.from({ length: 10 }, (_, i) => i);
  assert.deepEqual(Array.from(gatherWindows(ids, [6], 4)), [6, 7, 8, 9]);
  assert.throws(() => gatherWindows(ids, [-1], 4), /^RangeError: window 0 \(of 1\): its start -1 is negative$/);
  assert.throws(
    () => gatherWindows(ids, [6, 0, 7], 4),
    /^RangeError: window 2 \(of 3\): its start 7 \+ 4 tokens runs past the 10 tokens there are$/,
  );
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/odd.u16`, new Uint8Array(3));
    await assert.rejects(readU16(`${dir}/odd.u16`), /odd\.u16: odd byte length for uint16 ids/);
    await Deno.writeFile(`${dir}/ragged.i64`, new Uint8Array(12));
    await assert.rejects(readI64(`${dir}/ragged.i64`), /ragged\.i64: byte length is not a multiple of 8/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readI64() reads signed int64 starts; readTokenIds() takes .u16 in any case past 65,536 ids", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // -1 (all ones), 2^40 + 5 and 93824, little-endian, written byte by byte.
    const bytes = new Uint8Array([
      ...[255, 255, 255, 255, 255, 255, 255, 255],
      ...[5, 0, 0, 0, 0, 1, 0, 0],
      ...[0x80, 0x6e, 0x01, 0, 0, 0, 0, 0],
    ]);
    await Deno.writeFile(`${dir}/starts.i64`, bytes);
    const starts = await readI64(`${dir}/starts.i64`);
    assert.deepEqual(starts, [-1, 2 ** 40 + 5, 93824]);
    // A negative start is named as such, not as a huge unsigned number.
    assert.throws(
      () => gatherWindows(new Uint16Array(8), [starts[0]!], 4),
      /^RangeError: window 0 \(of 1\): its start -1 is negative$/,
    );
    // The width's name is read as .u32 is, in either case.
    await Deno.writeFile(`${dir}/IDS.U16`, new Uint8Array([1, 0, 0, 1]));
    assert.deepEqual(Array.from(await readTokenIds(`${dir}/IDS.U16`, 128_256)), [1, 256]);
    // Any odd length is refused, not read short of its last byte: 5 bytes as well as 3.
    await Deno.writeFile(`${dir}/five.u16`, new Uint8Array(5));
    await assert.rejects(readU16(`${dir}/five.u16`), /five\.u16: odd byte length for uint16 ids/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gatherWindows() lays window w at w * seqLen, each the ids from its start, overlapping or not", () => {
  const ids = Int32Array.from({ length: 12 }, (_, i) => 100 + i);
  // Windows of 3 from starts 9, 0, 1 and 9 again: an obvious oracle, one id at a time.
  const starts = [9, 0, 1, 9];
  const want: number[] = [];
  for (const s of starts) for (let k = 0; k < 3; k++) want.push(ids[s + k]!);
  assert.deepEqual(Array.from(gatherWindows(ids, starts, 3)), want);
  assert.deepEqual(Array.from(gatherWindows(ids, [], 3)), []);
});
