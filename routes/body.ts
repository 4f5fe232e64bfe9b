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
            `request bodies waiting for this server already hold ${this.#held} of ${this.limit} bytes; retry later`,
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

/** Reads the whole body of `req`, at most `limit` bytes, into one Uint8Array, growing `hold` as it goes. */
export async function readBody(req: Request, limit: number, hold?: BodyHold): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  const length = declared === null ? NaN : Number(declared);
  if (length > limit) throw tooLarge(limit);
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  try {
    // With a trustworthy Content-Length, read straight into one buffer of that size (no second copy).
    const exact = Number.isSafeInteger(length) && length > 0;
    hold?.grow(exact ? length : 64 * 1024);
    let out = exact ? new Uint8Array(length) : new Uint8Array(64 * 1024);
    let n = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (n + value.byteLength > limit) throw tooLarge(limit);
      if (n + value.byteLength > out.byteLength) {
        const size = Math.min(limit, Math.max(out.byteLength * 2, n + value.byteLength));
        hold?.grow(size);
        const grown = new Uint8Array(size);
        grown.set(out.subarray(0, n));
        out = grown;
      }
      out.set(value, n);
      n += value.byteLength;
    }
    return out.subarray(0, n);
  } catch (err) {
    await reader.cancel().catch(() => {});
    throw err;
  }
}
