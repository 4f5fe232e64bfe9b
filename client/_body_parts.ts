/** The parts of the Blob a request body is sent as (`pruneLayers`), from the msgpack pieces that encode it. */
import { concatBytes } from "../contract/wire.ts";

/** Small pieces are joined into parts of at most this size; larger pieces are cut to it. */
export const BODY_PART_BYTES = 1 << 20;

/**
 * The pieces' bytes, in order, as parts of at most BODY_PART_BYTES: Deno reads a Blob part whole as it sends it. A
 * piece up to a sixteenth of that (headers, small values: msgpackr's few bytes each, small tensors) is joined with its
 * neighbours into one part, up to the limit; a larger one is sent from its own bytes, cut into parts, and copied only
 * where it is a view of a SharedArrayBuffer (no BlobPart).
 */
export function bodyParts(pieces: Iterable<Uint8Array>): Uint8Array<ArrayBuffer>[] {
  const parts: Uint8Array<ArrayBuffer>[] = [];
  let small: Uint8Array[] = [], smallBytes = 0;
  const join = () => {
    if (smallBytes > 0) parts.push(concatBytes(small));
    small = [];
    smallBytes = 0;
  };
  for (const piece of pieces) {
    if (piece.byteLength <= BODY_PART_BYTES / 16) {
      // Joined up to the limit, not beyond: 4096 small layers of 56 KiB were one part of 224 MiB (692-695 MiB of extra
      // peak memory in an audit, against 558 MiB with parts of 1 MiB).
      if (smallBytes + piece.byteLength > BODY_PART_BYTES) join();
      small.push(piece);
      smallBytes += piece.byteLength;
      continue;
    }
    join();
    for (let at = 0; at < piece.byteLength; at += BODY_PART_BYTES) {
      const part = piece.subarray(at, at + BODY_PART_BYTES);
      // A copy by the Uint8Array constructor: a subclass's slice() may not copy (Node's Buffer gives a view).
      parts.push(part.buffer instanceof ArrayBuffer ? part as Uint8Array<ArrayBuffer> : new Uint8Array(part));
    }
  }
  join();
  return parts;
}
