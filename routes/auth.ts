/** Bearer-token middleware: constant-time comparison, so response timing leaks nothing about the token. */
import type { MiddlewareHandler } from "hono";
import { ZpruneError } from "../contract/errors.ts";

const encoder = new TextEncoder();

/** Compares two strings in time that depends only on the expected one's length. */
function timingSafeEqual(expected: string, given: string): boolean {
  const a = encoder.encode(expected), b = encoder.encode(given);
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ (b.length ? b[i % b.length]! : 0);
  return diff === 0;
}

/** Requires `Authorization: Bearer <token>`; with an empty token, lets everything through. */
export function bearerAuth(token: string): MiddlewareHandler {
  return async function bearerAuth(c, next) {
    if (token) {
      const header = c.req.header("authorization") ?? "";
      const m = /^Bearer\s+(.+)$/i.exec(header.trim());
      if (!m || !timingSafeEqual(token, m[1]!)) {
        // RFC 6750 section 3: a 401 names the scheme it wants.
        throw new ZpruneError("unauthorized", "send Authorization: Bearer <token> with this server's token", {
          headers: { "WWW-Authenticate": 'Bearer realm="zprune"' },
        });
      }
    }
    await next();
  };
}
