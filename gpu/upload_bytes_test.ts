import assert from "node:assert/strict";
import { uploadBytes } from "./upload_bytes.ts";

/** A queue that records each write: buffer offset, source offset, size, and the bytes of a small source. */
function recordingQueue() {
  const writes: { at: number; from: number; size: number; bytes: number[] | null }[] = [];
  const queue = {
    writeBuffer(_b: GPUBuffer, at: number, data: BufferSource, from = 0, size?: number) {
      const view = data instanceof Uint8Array ? data : new Uint8Array(data as ArrayBuffer);
      const n = size ?? view.byteLength - from;
      writes.push({ at, from, size: n, bytes: n <= 16 ? [...view.subarray(from, from + n)] : null });
    },
  } as Pick<GPUQueue, "writeBuffer">;
  return { queue, writes };
}

const buffer = {} as GPUBuffer;

Deno.test("uploadBytes: the aligned body from the caller's view, the tail padded with zeros", () => {
  for (const [len, body] of [[0, 0], [3, 0], [4, 4], [10, 8], [16, 16]] as [number, number][]) {
    const bytes = new Uint8Array(len).map((_, i) => i + 1);
    const { queue, writes } = recordingQueue();
    uploadBytes(queue, buffer, bytes);
    const want = [];
    if (body > 0) want.push({ at: 0, from: 0, size: body, bytes: [...bytes.subarray(0, body)] });
    if (len > body) {
      const tail = [0, 0, 0, 0];
      tail.splice(0, len - body, ...bytes.subarray(body));
      want.push({ at: body, from: 0, size: 4, bytes: tail });
    }
    assert.deepEqual(writes, want, `length ${len}`);
  }
});

Deno.test("uploadBytes: a view of 2^31 + 3 bytes (past int32) still splits at 2^31", () => {
  // The H200 binds 2 GiB, so one tile's bytes may pass 2^31 - 1, where `length & ~3` turns negative.
  const bytes = new Uint8Array(2 ** 31 + 3); // zero pages: the kernel maps them lazily
  bytes[2 ** 31] = 7;
  bytes[2 ** 31 + 2] = 9;
  const { queue, writes } = recordingQueue();
  uploadBytes(queue, buffer, bytes);
  assert.deepEqual(writes, [
    { at: 0, from: 0, size: 2 ** 31, bytes: null },
    { at: 2 ** 31, from: 0, size: 4, bytes: [7, 0, 9, 0] },
  ]);
});

Deno.test("uploadBytes: any length at any byte offset lands in the buffer as the bytes, zero-padded to 4", () => {
  // Engine uploads are subarrays of a request body: a tile starts at any byte. Replays the writes into a model of
  // the GPU buffer (writeBuffer's offset and size counted in the view's elements, from the view's own start).
  const body = Uint8Array.from({ length: 40 }, (_, i) => 101 + i);
  for (let offset = 0; offset < 4; offset++) {
    for (let len = 0; len <= 17; len++) {
      const bytes = body.subarray(offset, offset + len);
      const gpu = new Uint8Array(Math.ceil(len / 4) * 4).fill(0xaa);
      let calls = 0, tails = 0;
      const queue = {
        writeBuffer(_b: GPUBuffer, at: number, data: BufferSource, from = 0, size?: number) {
          calls++;
          assert.ok(ArrayBuffer.isView(data), "writes typed arrays");
          const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
          const n = size ?? view.byteLength - from;
          // writeBuffer wants a buffer offset and a size that are multiples of 4.
          assert.equal(at % 4, 0);
          assert.equal(n % 4, 0);
          if (data !== bytes) tails++; // only the 1-3 byte tail may be a copy
          gpu.set(view.subarray(from, from + n), at);
        },
      } as Pick<GPUQueue, "writeBuffer">;
      uploadBytes(queue, buffer, bytes);
      const want = new Uint8Array(gpu.length);
      want.set(bytes);
      assert.deepEqual([...gpu], [...want], `offset ${offset}, length ${len}`);
      assert.ok(tails <= 1 && calls <= 2, `offset ${offset}, length ${len}: ${calls} writes, ${tails} copies`);
      if (len % 4 === 0) assert.equal(tails, 0, `length ${len}: an aligned length needs no copy`);
    }
  }
});
