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
      const header = c.req.header("authorization");
      const m = /^Bearer\s+(.+)$/i.exec(header?.trim() ?? "");
      if (!m || !timingSafeEqual(token, m[1]!)) {
        // Which of the three it is tells a client with a stale token from one that sent none; nothing of the token.
        const what = header === undefined
          ? "no Authorization header"
          : m
          ? "the bearer token sent is not this server's"
          : "the Authorization header is not Bearer <token>";
        // RFC 6750 section 3: a 401 names the scheme it wants, and a token refused as such is an invalid_token.
        throw new ZpruneError("unauthorized", `${what}: send Authorization: Bearer <token> with this server's token`, {
          headers: { "WWW-Authenticate": `Bearer realm="zprune"${m ? ', error="invalid_token"' : ""}` },
        });
      }
    }
    await next();
  };
}
