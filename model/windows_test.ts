import assert from "node:assert/strict";
import { gatherWindows, randomStarts, readI64, readTokenIds, readU16, readU32 } from "./windows.ts";

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
