import assert from "node:assert/strict";
import { concatBytes } from "../contract/wire.ts";
import { WHOLE_ANSWER_BYTES } from "../runtime/drain.ts";
import { answerBody } from "./answer_body.ts";

/** `n` bytes counting up from `seed`. */
const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i + seed) & 255);

Deno.test("answerBody: a small answer is one array of its pieces joined", () => {
  const pieces = [bytes(3, 1), bytes(1000, 2), bytes(10, 3)];
  const body = answerBody([...pieces], 1013);
  assert.ok(body instanceof Uint8Array);
  assert.deepEqual(body, concatBytes(pieces));
});

Deno.test("answerBody: a large answer streams its pieces, large ones as they are, small ones in runs", async () => {
  // Headers and stats (a few bytes), small masks (16 KiB), and tensors past 64 KiB, interleaved.
  const pieces: Uint8Array[] = [];
  for (let k = 0; k < 6; k++) pieces.push(bytes(5, k), bytes(16 * 1024, k), bytes(3, k), bytes(200_000 + k, k));
  const expected = concatBytes(pieces);
  const large = pieces.filter((p) => p.byteLength >= 64 * 1024);
  const given = [...pieces];
  const body = answerBody(given, expected.byteLength);
  assert.ok(expected.byteLength > WHOLE_ANSWER_BYTES && body instanceof ReadableStream);
  const chunks: Uint8Array[] = [];
  for await (const c of body as ReadableStream<Uint8Array>) chunks.push(c);
  assert.deepEqual(concatBytes(chunks), expected);
  // The tensors went out as the very arrays given (no copy); runs of small pieces stayed within 64 KiB.
  for (const t of large) assert.ok(chunks.includes(t), "a large piece by reference");
  for (const c of chunks) if (!large.includes(c)) assert.ok(c.byteLength <= 64 * 1024, `${c.byteLength}`);
  assert.ok(chunks.length < pieces.length, "small pieces joined");
  assert.ok(given.every((p) => p.byteLength === 0), "each piece let go once written");
  // Where streams lose their length (Bun), the same answer is one array.
  const joined = answerBody([...pieces], expected.byteLength, false);
  assert.ok(joined instanceof Uint8Array);
  assert.deepEqual(joined, expected);
});

Deno.test("answerBody: at the boundaries, 64 KiB goes whole and a piece of 64 KiB goes out as it is", async () => {
  // An answer of exactly WHOLE_ANSWER_BYTES (a 512x1024 layer's mask alone is 64 KiB) is one array: the listener
  // writes it at once. One byte more streams.
  assert.equal(WHOLE_ANSWER_BYTES, 64 * 1024);
  assert.ok(answerBody([bytes(WHOLE_ANSWER_BYTES, 1)], WHOLE_ANSWER_BYTES) instanceof Uint8Array);
  assert.ok(answerBody([bytes(WHOLE_ANSWER_BYTES + 1, 1)], WHOLE_ANSWER_BYTES + 1) instanceof ReadableStream);
  // A piece of exactly 64 KiB between small ones: the stream ends, with every byte, in a few reads.
  const pieces = [bytes(10, 1), bytes(64 * 1024, 2), bytes(10, 3)];
  const expected = concatBytes(pieces);
  const reader = (answerBody([...pieces], expected.byteLength) as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  for (let reads = 0;; reads++) {
    assert.ok(reads < 10, `still streaming after ${reads} reads (${chunks.map((c) => c.byteLength)})`);
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
  }
  assert.deepEqual(concatBytes(chunks), expected);
  assert.ok(chunks.includes(pieces[1]!), "the 64 KiB piece by reference");
});
