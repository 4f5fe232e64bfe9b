/**
 * Encodes the answer of `POST /v1/prune` with `timings` last, so that the timings it carries include its own
 * encoding. The answer comes as pieces, its tensors by reference (see `msgpackPieces`): a large answer is written
 * from them as they are, never copied whole.
 */
import type { PruneResponse, Timings } from "./api.ts";
import { encodeMsgpack, msgpackPieces } from "./wire.ts";

/** An encoded answer: its pieces in order (join them for the body's bytes), their total length, and its timings. */
export interface EncodedResponse {
  pieces: Uint8Array[];
  byteLength: number;
  timings: Timings;
}

/**
 * The msgpack body of `head` plus `timings`, the same bytes as msgpackr's for `{...head, timings}`; `finish` gets
 * the time spent encoding `head` and returns the timings to write.
 */
export function encodePruneResponse(
  head: Omit<PruneResponse, "timings">,
  finish: (encodeMs: number) => Timings,
): EncodedResponse {
  const t0 = performance.now();
  const entries = Object.entries(head).filter(([, v]) => v !== undefined);
  // A fixmap (up to 15 entries) is all a response needs; its header is the entry count, timings included.
  if (entries.length + 1 > 15) throw new RangeError(`a response of ${entries.length + 1} fields needs a map16`);
  const pieces: Uint8Array[] = [Uint8Array.of(0x80 | (entries.length + 1))];
  for (const [k, v] of entries) pieces.push(...msgpackPieces(k), ...msgpackPieces(v));
  pieces.push(...msgpackPieces("timings"));
  const timings = finish(performance.now() - t0);
  pieces.push(encodeMsgpack(timings));
  return { pieces, byteLength: pieces.reduce((n, p) => n + p.byteLength, 0), timings };
}
