import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { BODY_PART_BYTES, bodyParts } from "./_body_parts.ts";

/** `n` bytes counting up from `from` (mod 251), so that any reordering or loss shows. */
const bytes = (n: number, from: number) => Uint8Array.from({ length: n }, (_, i) => (from + i) % 251);

/** The pieces joined, the oracle for what the parts must hold in order. */
function joined(pieces: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(pieces.reduce((a, p) => a + p.byteLength, 0));
  let at = 0;
  for (const p of pieces) (out.set(p, at), at += p.byteLength);
  return out;
}

Deno.test("bodyParts() keeps the bytes in order in parts of at most BODY_PART_BYTES, small pieces joined", () => {
  const small = BODY_PART_BYTES / 16; // the largest piece still joined
  const cases: [string, number[]][] = [
    ["many small pieces: joined up to the limit, not into one part", Array(100).fill(small - 8)],
    ["pieces that fill a part exactly", Array(32).fill(small)],
    ["headers between large pieces", [5, 3 * BODY_PART_BYTES + 7, 9, 2, BODY_PART_BYTES, 1]],
    ["one byte past the joined size: cut, not joined", [small + 1, small + 1, 4]],
    ["nothing", []],
    ["empty pieces, alone and between large ones", [0, BODY_PART_BYTES + 3, 0, 0, BODY_PART_BYTES, 0]],
  ];
  for (const [what, sizes] of cases) {
    let from = 0;
    const pieces = sizes.map((n) => bytes(n, from += 7));
    const parts = bodyParts(pieces);
    assert.deepEqual(joined(parts), joined(pieces), what);
    const largest = Math.max(0, ...parts.map((p) => p.byteLength));
    assert.ok(largest <= BODY_PART_BYTES, `${what}: a part of ${largest} bytes`);
    assert.ok(parts.every((p) => p.byteLength > 0), `${what}: an empty part`);
  }
  // 100 pieces of 65528 bytes: 6.25 MiB in 7 parts (16 pieces each), where they were one part before.
  assert.equal(bodyParts(Array.from({ length: 100 }, () => bytes(small - 8, 0))).length, 7);
  // 32 pieces of exactly a sixteenth: joined (the sixteenth is included), 16 to a part that is then exactly full.
  const parts = bodyParts(Array.from({ length: 32 }, () => bytes(small, 0))).map((p) => p.byteLength);
  assert.deepEqual(parts, [BODY_PART_BYTES, BODY_PART_BYTES]);
});

Deno.test("bodyParts() sends a large piece from its own bytes, a SharedArrayBuffer's view copied", () => {
  const own = bytes(3 * BODY_PART_BYTES, 1);
  const parts = bodyParts([own]);
  assert.equal(parts.length, 3);
  assert.ok(parts.every((p) => p.buffer === own.buffer), "a part of an ArrayBuffer's piece is a view, not a copy");
  const shared = new Uint8Array(new SharedArrayBuffer(BODY_PART_BYTES + 1));
  shared.set(bytes(BODY_PART_BYTES + 1, 2));
  const copied = bodyParts([shared]);
  assert.ok(copied.every((p) => p.buffer instanceof ArrayBuffer), "no part is a SharedArrayBuffer's view");
  assert.deepEqual(joined(copied), new Uint8Array(shared));
  // Node's Buffer over a SharedArrayBuffer: its slice() is a view, not a copy, which no Blob takes.
  const buffered = bodyParts([Buffer.from(shared.buffer)]);
  assert.ok(
    buffered.every((p) => p.buffer instanceof ArrayBuffer),
    "no part of a Buffer is a SharedArrayBuffer's view",
  );
  assert.deepEqual(joined(buffered), new Uint8Array(shared));
  assert.equal(new Blob(buffered).size, BODY_PART_BYTES + 1);
});
