/**
 * Reading a request body under a byte limit: refused from Content-Length before a byte is read, and while
 * streaming once the count passes the limit, so no body is ever buffered past it. Bodies that are read but not yet
 * computing (being read, validated, or waiting in the queue) are held to a shared budget as well: the queue's
 * memory budget covers requests once they compute, and without this any number of large bodies could pile up
 * in front of it.
 */
import { ZpruneError } from "../contract/errors.ts";

function tooLarge(limit: number): ZpruneError {
  return new ZpruneError(
    "too_large",
    `the body exceeds this server's limit of ${limit} bytes; send fewer or smaller layers`,
  );
}

/** The first buffer a body with a Content-Length is read into, at most: it grows as bytes arrive. */
export const FIRST_BUFFER_BYTES = 16 * 1024 * 1024;

/** Error names of a request body whose connection the client closed or reset. */
const CLIENT_GONE = new Set(["BadResource", "ConnectionReset", "ConnectionAborted", "UnexpectedEof"]);

/**
 * Whether a body stream's failure is its client leaving. Deno 2.9 reports a reset (RST) mid-body as an `Http` error,
 * "unexpected EOF while reading HTTP/1 body", where a close (FIN) gives one of CLIENT_GONE's names.
 */
function clientGone(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return CLIENT_GONE.has(err.name) || (err.name === "Http" && /unexpected EOF/i.test(err.message));
}

/**
 * Whether a body stream's failure is Deno's parser refusing the client's framing: a malformed HTTP/1 chunk
 * ("invalid HTTP/1 request: ..."), or an HTTP/2 (h2c) stream whose DATA frames break the protocol (fewer or more bytes
 * than its content-length, or past its flow-control window), which Deno 2.9 reports as an `Http` error, "error reading
 * a body from connection", and answers by resetting the stream.
 */
function malformedFraming(err: Error): boolean {
  return /^invalid HTTP/i.test(err.message) ||
    (err.name === "Http" && /^error reading a body from connection/i.test(err.message));
}

/**
 * The error for a body stream that failed: the client's leaving (499), or else a body Deno's parser refused (a
 * malformed chunk, say), which is the client's fault too and answered 400, not 500.
 */
function unreadable(err: unknown): never {
  // Deno's parsers word their refusals so; anything else (a stream already read, say) stays the server's.
  if (!(err instanceof Error) || !malformedFraming(err)) throw err;
  throw new ZpruneError(
    "bad_msgpack",
    `the request body could not be read, its HTTP framing is malformed: ${err.message.slice(0, 200)}`,
    { cause: err },
  );
}

/**
 * The bytes of request bodies held before they compute, bounded by `limit` together with bytes held elsewhere
 * outside the compute budget (answers still being written to slow clients).
 */
export class BodyBudget {
  #held = 0;

  /**
   * `limit`: bytes all held bodies may take together; `retryAfterSeconds`: what a refused client is told;
   * `heldElsewhere`: bytes counted against the same limit (answers being written).
   */
  constructor(
    readonly limit: number,
    readonly retryAfterSeconds = 1,
    readonly heldElsewhere: () => number = () => 0,
  ) {}

  /** Bytes held now. */
  get held(): number {
    return this.#held;
  }

  /** A hold for one body, empty until it grows. */
  open(): BodyHold {
    let mine = 0;
    return {
      grow: (bytes: number, declared = 0) => {
        // A body larger than the whole budget can never compute, alone or not: the queue counts the body in every
        // request's cost, and refuses a cost over the budget. It is refused as the queue would refuse it (413), by
        // its declared length before a byte is read where it has one, and so before a 429 a client would retry in
        // vain.
        if (Math.max(bytes, declared) > this.limit) {
          const size = declared > bytes ? `${declared} bytes declared` : `${bytes} bytes so far`;
          throw new ZpruneError(
            "too_large",
            `the body passes this server's memory budget of ${this.limit} bytes by itself (${size}); send fewer or ` +
              "smaller layers per request",
          );
        }
        if (bytes <= mine) return;
        // A lone body within the budget may be read (the queue then judges it), as a lone request may run. Beside
        // other bodies or answers its clients have yet to read, it must fit the budget with them, else it waits (429).
        const others = this.#held - mine, answers = this.heldElsewhere();
        if (others + answers > 0 && others + answers + bytes > this.limit) {
          throw new ZpruneError(
            "busy",
            `request bodies waiting for this server${answers ? " and answers its clients have yet to read" : ""} ` +
              `already hold ${others + answers} of ${this.limit} bytes; retry later`,
            { headers: { "Retry-After": String(this.retryAfterSeconds) } },
          );
        }
        this.#held += bytes - mine;
        mine = bytes;
      },
      release: () => {
        this.#held -= mine;
        mine = 0;
      },
    };
  }
}

/** One body's share of a BodyBudget. */
export interface BodyHold {
  /**
   * Raises the hold to `bytes` of a body `declared` long (0: unknown); throws `busy` when the budget cannot take it
   * now, `too_large` when it never could (either length over the whole budget).
   */
  grow(bytes: number, declared?: number): void;
  /** Gives the whole hold back; safe to call more than once. */
  release(): void;
}

/**
 * Reads the whole body of `req`, at most `limit` bytes, into one Uint8Array. `hold` grows with the bytes received
 * (not the declared length: a client that declares a large body and sends nothing holds nothing); `signal` ends a
 * read that takes too long or whose client went away, with the signal's reason.
 */
export async function readBody(
  req: Request,
  limit: number,
  hold?: BodyHold,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  const length = declared === null ? NaN : Number(declared);
  if (length > limit) throw tooLarge(limit);
  if (!req.body) return new Uint8Array(0);
  signal?.throwIfAborted();
  if (Number.isSafeInteger(length) && length > 0) hold?.grow(0, length); // 413 now for a body over the whole budget
  const reader = req.body.getReader();
  let pending: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;
  // Each read waits on a promise of its own, which an abort rejects. (Racing every read against one promise that
  // never settles kept each read's result, its chunk, reachable from that promise until the body was read: the
  // whole body twice, measured in an audit as +542 MiB for a 256 MiB body.)
  let rejectRead: ((reason: unknown) => void) | undefined;
  const stop = () => rejectRead?.(signal!.reason);
  signal?.addEventListener("abort", stop, { once: true });
  try {
    // With a Content-Length, the buffer takes its whole size once a quarter of it has come: large bodies are
    // copied at most about half over, while a client that declares much and sends little reserves (virtual)
    // memory of at most 16 MiB or 4 times what it sent (the budget counts what it sent).
    const expected = Number.isSafeInteger(length) && length > 0 ? length : 0;
    let out = new Uint8Array(expected ? Math.min(expected, FIRST_BUFFER_BYTES) : 64 * 1024);
    let n = 0;
    for (;;) {
      signal?.throwIfAborted();
      const read = pending = reader.read();
      const { done, value } = await new Promise<ReadableStreamReadResult<Uint8Array>>((resolve, reject) => {
        rejectRead = reject;
        read.then(resolve, (err) => {
          try {
            unreadable(err);
          } catch (e) {
            reject(e);
          }
        });
      });
      rejectRead = undefined;
      pending = undefined;
      if (done) break;
      if (n + value.byteLength > limit) throw tooLarge(limit);
      hold?.grow(n + value.byteLength, expected);
      if (n + value.byteLength > out.byteLength) {
        const need = n + value.byteLength;
        const size = expected && need >= expected / 4 ? expected : Math.max(out.byteLength * 2, need);
        const grown = new Uint8Array(Math.min(limit, Math.max(size, need)));
        grown.set(out.subarray(0, n));
        out = grown;
      }
      out.set(value, n);
      n += value.byteLength;
    }
    return out.subarray(0, n);
  } catch (err) {
    // Deno 2.9 never settles a read pending when its body stream is cancelled, and that read keeps the stream and
    // its buffer (up to 64 KiB) alive for good: a stalled upload past its deadline leaked both. Such a stream is
    // cancelled once its read settles instead (more bytes came, or the client left); until then it lasts as long
    // as the connection.
    const cancel = () => reader.cancel().catch(() => {});
    if (pending) void pending.then(cancel, cancel);
    else await cancel();
    // Deno reports a client that went away mid-upload as one of these: the client's doing, not a server error.
    // A close and a half-close (shutdown of the sending side only) both end the stream with an error, and the
    // half-closed client does receive the answer. Deno 2.9's stream fails without yielding the last chunk, even
    // after a complete body at times, so how much came is not known and the message does not guess.
    if (clientGone(err)) {
      const size = Number.isSafeInteger(length) ? ` (${length} bytes declared)` : "";
      throw new ZpruneError(
        "client_closed_request",
        `the client closed the connection, or its sending side, before its body${size} could be read`,
        { cause: err },
      );
    }
    throw err;
  } finally {
    signal?.removeEventListener("abort", stop);
  }
}
