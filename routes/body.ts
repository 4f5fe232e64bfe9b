/**
 * Reading a request body under a byte limit: refused from Content-Length before a byte is read, and while
 * streaming once the count passes the limit, so no body is ever buffered past it.
 */
import { ZpruneError } from "../contract/errors.ts";

function tooLarge(limit: number): ZpruneError {
  return new ZpruneError(
    "too_large",
    `the body exceeds this server's limit of ${limit} bytes; send fewer or smaller layers`,
  );
}

/** Reads the whole body of `req`, at most `limit` bytes, into one Uint8Array. */
export async function readBody(req: Request, limit: number): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  const length = declared === null ? NaN : Number(declared);
  if (length > limit) throw tooLarge(limit);
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  // With a trustworthy Content-Length, read straight into one buffer of that size (no second copy).
  let out = Number.isSafeInteger(length) && length > 0 ? new Uint8Array(length) : new Uint8Array(64 * 1024);
  let n = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (n + value.byteLength > limit) throw tooLarge(limit);
      if (n + value.byteLength > out.byteLength) {
        const grown = new Uint8Array(Math.min(limit, Math.max(out.byteLength * 2, n + value.byteLength)));
        grown.set(out.subarray(0, n));
        out = grown;
      }
      out.set(value, n);
      n += value.byteLength;
    }
  } catch (err) {
    await reader.cancel().catch(() => {});
    throw err;
  }
  return out.subarray(0, n);
}
