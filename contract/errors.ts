/**
 * The contract's error codes (API.md, "Errors") and the one error type that carries them across layers.
 * Routes, validation and backends throw `ZpruneError`; the app's single `onError` maps it to a response.
 */
import { z } from "zod";

/**
 * Every error code with its HTTP status: API.md's, and those it leaves out (404 for unknown routes, 499, 500, and
 * 504 for a request whose own time outlasted the server's deadline).
 */
export const ERROR_STATUS = {
  bad_msgpack: 400,
  unauthorized: 401,
  not_found: 404,
  too_large: 413,
  unsupported_media_type: 415,
  invalid_request: 422,
  shape_mismatch: 422,
  non_finite: 422,
  activations_required: 422,
  busy: 429,
  // The client went away before its answer; logged and counted. Only a client that closed just its sending side
  // mid-body receives it.
  client_closed_request: 499,
  internal: 500,
  unavailable: 503,
  // Past the deadline after the request's own time (its body's arrival with no other request at the server, its
  // work with none computing alongside) took half of it or more (routes/deadline.ts): the same request would likely
  // miss it again, so unlike 503 it says "do not retry as is" (clients retry 429 and 503 only).
  deadline_exceeded: 504,
} as const;

/** A contract error code, e.g. `"shape_mismatch"`. */
export type ErrorCode = keyof typeof ERROR_STATUS;

/**
 * The JSON (or msgpack) body of every error answer. `code` stays an open string in the schema (and so in
 * /openapi.json), listing today's codes in its description: API.md does not promise a closed set, and a client
 * generated from a closed enum would reject a code added later.
 */
export const ErrorResponseSchema = z.object({
  error: z.object({
    code: z.string().describe(`one of ${Object.keys(ERROR_STATUS).join(", ")}; accept others too`),
    message: z.string(),
  }),
});
/** The JSON (or msgpack) body of every error answer this server writes. */
export interface ErrorBody {
  error: { code: AnyErrorCode; message: string };
}

/**
 * The response header that repeats an error answer's code: it reaches whoever reads only headers (a proxy's log,
 * a HEAD request, a client that cannot parse the body).
 */
export const ERROR_CODE_HEADER = "x-zprune-error";

/**
 * The code a `ZpruneError` carries: one of this server's, or (in a client) another a newer server answered with, or
 * the client's own: `invalid_response` for an answer that breaks the contract, `unreachable` for no answer at all.
 */
export type AnyErrorCode = ErrorCode | (string & Record<never, never>);

/** A domain error that carries the contract's code; `status` follows from the code. */
export class ZpruneError extends Error {
  override name = "ZpruneError";
  readonly code: AnyErrorCode;
  readonly status: number;
  /** Extra response headers, e.g. `Retry-After` for `busy`; a client's errors also keep the answer's `X-Request-Id`. */
  readonly headers: Record<string, string>;

  constructor(
    code: AnyErrorCode,
    message: string,
    options: { cause?: unknown; headers?: Record<string, string>; status?: number } = {},
  ) {
    super(message, { cause: options.cause });
    this.code = code;
    // The contract's status for the code; a client may record the status an answer really had.
    this.status = options.status ?? (isErrorCode(code) ? ERROR_STATUS[code] : 500);
    this.headers = options.headers ?? {};
  }

  /** The wire form of this error. */
  toBody(): ErrorBody {
    return { error: { code: this.code, message: this.message } };
  }
}

/** True when `code` is one of the contract's codes. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === "string" && Object.hasOwn(ERROR_STATUS, code);
}

/** An error's message followed by those of its causes that it does not already quote (fetch says why in a cause). */
export function errorChain(e: unknown): string {
  let text = e instanceof Error ? e.message : String(e);
  // A chain may loop back (a.cause = b, b.cause = a); each error is quoted once.
  const seen = new Set<unknown>([e]);
  for (
    let c = e instanceof Error ? e.cause : undefined;
    c !== undefined && !seen.has(c);
    c = c instanceof Error ? c.cause : undefined
  ) {
    seen.add(c);
    const m = c instanceof Error ? c.message : String(c);
    if (!text.includes(m)) text += `: ${m}`;
  }
  return text;
}
