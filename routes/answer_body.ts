/**
 * The body of a `POST /v1/prune` answer from its encoded pieces. A small answer is joined into one array, which the
 * runtime sends whole. A large one is a stream of its pieces as they are: an array body would be copied by the
 * Response (Deno copies it), on top of the copy joining makes, so a large answer with weights and scores was held
 * three times (measured in an audit: f32 4096x4096 with both back, 129 MiB more at the peak for the Response's copy
 * alone). Small pieces (msgpack headers, small masks and stats) go out joined in runs of up to 64 KiB, and each
 * piece is let go once it is written.
 */
import { concatBytes } from "../contract/wire.ts";
import { WHOLE_ANSWER_BYTES } from "../runtime/drain.ts";
import { streamsKeepLength } from "../runtime/host.ts";

/** The largest run of small pieces joined into one chunk of the stream. */
const RUN_BYTES = 64 * 1024;

const EMPTY = new Uint8Array(0);

/**
 * The body for `pieces` of `byteLength` bytes in all; takes the pieces (a stream empties the array as it goes).
 * `stream` false (under Bun, which would send a stream without its length) joins them whatever the size.
 */
export function answerBody(
  pieces: Uint8Array[],
  byteLength: number,
  stream = streamsKeepLength,
): Uint8Array<ArrayBuffer> | ReadableStream {
  // Up to the size the listener hands over whole, one array; larger ones stream.
  if (byteLength <= WHOLE_ANSWER_BYTES || !stream) return concatBytes(pieces);
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i >= pieces.length) return controller.close();
      const first = pieces[i]!;
      if (first.byteLength >= RUN_BYTES) {
        pieces[i++] = EMPTY;
        return controller.enqueue(first);
      }
      let n = 0, end = i;
      while (end < pieces.length && pieces[end]!.byteLength < RUN_BYTES && n + pieces[end]!.byteLength <= RUN_BYTES) {
        n += pieces[end++]!.byteLength;
      }
      const run = new Uint8Array(n);
      for (let o = 0; i < end; i++) {
        run.set(pieces[i]!, o);
        o += pieces[i]!.byteLength;
        pieces[i] = EMPTY;
      }
      controller.enqueue(run);
    },
    cancel() {
      pieces.length = 0;
    },
  });
}
