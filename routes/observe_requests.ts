/**
 * Every request's id, metrics and one log line, as Hono middleware. The id is the client's X-Request-Id when usable,
 * else a fresh UUID, and is echoed in the answer's headers and in error messages that point at the log.
 */
import type { MiddlewareHandler } from "hono";
import { ERROR_CODE_HEADER } from "../contract/errors.ts";
import type { Metrics } from "../observe/metrics.ts";
import type { AppEnv } from "./env.ts";

/**
 * A client's own X-Request-Id when it is 1-128 visible ASCII characters. Anything else (spaces, Latin-1 bytes, a
 * longer value) would make log lines ambiguous or unbounded, and a cut one would no longer match the client's.
 */
function clientRequestId(value: string | undefined): string | undefined {
  return value !== undefined && /^[\x21-\x7e]{1,128}$/.test(value) ? value : undefined;
}

/**
 * `text` past `max` UTF-16 units: its first `max` and "...", not splitting a surrogate pair: JSON.stringify would
 * write the half as `\ud83d`, which some JSON readers refuse (Python's, once the text is encoded as UTF-8).
 */
export function cut(text: string, max: number): string {
  if (text.length <= max) return text;
  const end = /[\uD800-\uDBFF]/.test(text[max - 1]!) ? max - 1 : max;
  return `${text.slice(0, end)}...`;
}

/**
 * The middleware: counts each request under `routeLabel(path)` by status, observes its latency and bytes out, and
 * hands `log` one structured entry (never tensor data).
 */
export function observeRequests(
  metrics: Metrics,
  routeLabel: (path: string) => string,
  log: ((entry: Record<string, unknown>) => void) | undefined,
): MiddlewareHandler<AppEnv> {
  return async function observe(c, next) {
    const start = performance.now();
    const id = clientRequestId(c.req.header("x-request-id")) ?? crypto.randomUUID();
    c.set("requestId", id);
    await next();
    c.header("x-request-id", id);
    const route = routeLabel(c.req.path);
    const seconds = (performance.now() - start) / 1000;
    const status = String(c.res.status);
    metrics.requests.inc({ route, status });
    metrics.latency.observe(seconds, { route, status });
    // /v1/prune sets Content-Length; the other answers are small JSON or text, measured by reading a clone.
    const declared = c.res.headers.get("content-length");
    const out = declared !== null ? Number(declared) : (await c.res.clone().arrayBuffer()).byteLength;
    // Declared here so that HEAD, which Hono answers with GET's headers and no body, states GET's length (RFC 9110
    // 9.3.2), not the 0 of its empty body.
    if (declared === null) c.res.headers.set("content-length", String(out));
    metrics.bytesOut.inc({}, c.req.method === "HEAD" ? 0 : out);
    log?.({
      ts: new Date().toISOString(),
      id,
      method: cut(c.req.method, 16), // a client may send any token as its method
      path: cut(c.req.path, 256), // one line stays short
      status: c.res.status,
      ms: Math.round(seconds * 1e5) / 100,
      layers: c.get("layers"),
      elements: c.get("elements"),
      timings: c.get("timings"),
      error: c.res.status >= 400 ? c.res.headers.get(ERROR_CODE_HEADER) ?? undefined : undefined,
    });
  };
}
