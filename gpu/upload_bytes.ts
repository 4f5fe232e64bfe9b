/** Uploading a layer's raw bytes, which need be neither aligned nor a multiple of 4 long, as `writeBuffer` wants. */

/**
 * Writes possibly unaligned bytes whose length need not be a multiple of 4: the aligned body straight from the
 * caller's view (no copy on our side), the 1-3 byte tail padded with zeros.
 */
export function uploadBytes(
  queue: Pick<GPUQueue, "writeBuffer">,
  buffer: GPUBuffer,
  bytes: Uint8Array,
): void {
  // Not `& ~3`: bitwise operators work on int32, and a 2 GiB binding (the H200's) holds 2^31 bytes.
  const body = bytes.byteLength - (bytes.byteLength % 4);
  if (body > 0) queue.writeBuffer(buffer, 0, bytes as Uint8Array<ArrayBuffer>, 0, body);
  if (body < bytes.byteLength) {
    const tail = new Uint8Array(4);
    tail.set(bytes.subarray(body));
    queue.writeBuffer(buffer, body, tail);
  }
}
