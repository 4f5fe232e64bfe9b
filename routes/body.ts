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

/** Error names of a request body whose connection the client closed or reset. */
const CLIENT_GONE = new Set(["BadResource", "ConnectionReset", "ConnectionAborted", "UnexpectedEof"]);

/** The bytes of request bodies held before they compute, bounded by `limit`. */
export class BodyBudget {
  #held = 0;

  /** `limit`: bytes all held bodies may take together; `retryAfterSeconds`: what a refused client is told. */
  constructor(readonly limit: number, readonly retryAfterSeconds = 1) {}

  /** Bytes held now. */
  get held(): number {
    return this.#held;
  }

  /** A hold for one body, empty until it grows. */
  open(): BodyHold {
    let mine = 0;
    return {
      grow: (bytes: number) => {
        if (bytes <= mine) return;
        // A lone body may always be read (the queue then judges it), as a lone request may always run.
        if (this.#held - mine > 0 && this.#held + (bytes - mine) > this.limit) {
          throw new ZpruneError(
            "busy",
            `request bodies waiting for this server already hold ${this.#held - mine} of ${this.limit} bytes; ` +
              "retry later",
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
  /** Raises the hold to `bytes`; throws `busy` when the budget cannot take it. */
  grow(bytes: number): void;
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
  const reader = req.body.getReader();
  let stop = () => {};
  const stopped = new Promise<never>((_, reject) => {
    if (!signal) return;
    stop = () => reject(signal.reason);
    signal.addEventListener("abort", stop, { once: true });
  });
  stopped.catch(() => {}); // observed by the race below, or not at all
  try {
    // With a trustworthy Content-Length, read straight into one buffer of that size (no second copy; its pages
    // are the system's only once written).
    let out = Number.isSafeInteger(length) && length > 0 ? new Uint8Array(length) : new Uint8Array(64 * 1024);
    let n = 0;
    for (;;) {
      const { done, value } = await Promise.race([reader.read(), stopped]);
      if (done) break;
      if (n + value.byteLength > limit) throw tooLarge(limit);
      hold?.grow(n + value.byteLength);
      if (n + value.byteLength > out.byteLength) {
        const grown = new Uint8Array(Math.min(limit, Math.max(out.byteLength * 2, n + value.byteLength)));
        grown.set(out.subarray(0, n));
        out = grown;
      }
      out.set(value, n);
      n += value.byteLength;
    }
    return out.subarray(0, n);
  } catch (err) {
    await reader.cancel().catch(() => {});
    // Deno reports a client that went away mid-upload as one of these: the client's doing, not a server error.
    // A close and a half-close (shutdown of the sending side only) both read as an early end of the stream, so
    // the answer, which a half-closed client does receive, says what was missing. (How much came is not known:
    // Deno's stream fails without yielding the last partial chunk.)
    if (err instanceof Error && CLIENT_GONE.has(err.name)) {
      const whole = Number.isSafeInteger(length) ? `the ${length} bytes its Content-Length declares` : "its end";
      throw new ZpruneError(
        "client_closed_request",
        `the client closed the connection, or its sending side, before the body reached ${whole}`,
        { cause: err },
      );
    }
    throw err;
  } finally {
    signal?.removeEventListener("abort", stop);
  }
}
