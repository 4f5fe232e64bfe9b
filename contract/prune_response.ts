/**
 * Encodes the answer of `POST /v1/prune` with `timings` last, so that the timings it carries include its own
 * encoding: the rest is written first (tensors by reference, see `msgpackPieces`), then the timings into room kept
 * for them.
 */
import type { PruneResponse, Timings } from "./api.ts";
import { concatBytes, encodeMsgpack, msgpackPieces } from "./wire.ts";

/** The longest msgpack of a `Timings` map: every value a float64 (9 bytes), the longest a number packs to. */
const TIMINGS_MAX_BYTES = encodeMsgpack({ decodeMs: 0.1, computeMs: 0.1, encodeMs: 0.1, totalMs: 0.1 }).byteLength;

/**
 * The msgpack body of `head` plus `timings`, the same bytes as msgpackr's for `{...head, timings}`; `finish` gets
 * the time spent encoding `head` and returns the timings to write.
 */
export function encodePruneResponse(
  head: Omit<PruneResponse, "timings">,
  finish: (encodeMs: number) => Timings,
): { bytes: Uint8Array<ArrayBuffer>; timings: Timings } {
  const t0 = performance.now();
  const entries = Object.entries(head).filter(([, v]) => v !== undefined);
  // A fixmap (up to 15 entries) is all a response needs; its header is the entry count, timings included.
  if (entries.length + 1 > 15) throw new RangeError(`a response of ${entries.length + 1} fields needs a map16`);
  const pieces: Uint8Array[] = [Uint8Array.of(0x80 | (entries.length + 1))];
  for (const [k, v] of entries) pieces.push(...msgpackPieces(k), ...msgpackPieces(v));
  pieces.push(...msgpackPieces("timings"), new Uint8Array(TIMINGS_MAX_BYTES));
  const body = concatBytes(pieces);
  const at = body.byteLength - TIMINGS_MAX_BYTES;
  const timings = finish(performance.now() - t0);
  const packed = encodeMsgpack(timings);
  body.set(packed, at);
  return { bytes: body.subarray(0, at + packed.byteLength), timings };
}
