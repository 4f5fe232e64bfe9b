/**
 * A TypeScript client for the zprune endpoint over plain `fetch`. Deno and Bun import it as it is, Deno under this
 * repository's deno.json (`zod` and `msgpackr` resolve from its node_modules, as `npm ci` installed them: a script
 * elsewhere runs with `--config path/to/zprune/deno.json`); elsewhere it needs a bundler or TypeScript loader (with
 * `zod` and `msgpackr`), and `AbortSignal.any` for calls given a signal.
 *
 * @example
 * ```ts
 * const client = new ZpruneClient({ url: "http://127.0.0.1:8787", token: "secret" });
 * const res = await client.pruneLayers({ method: "zpruner", sparsity: 0.5, layers: [{ name, weight, actNormSq }] });
 * applyMask(weightBytes, "f16", res.layers[0]!.mask);
 * ```
 */
import {
  type DType,
  DTYPE_BYTES,
  type HealthResponse,
  HealthResponseSchema,
  InfoResponseSchema,
  parsePattern,
  prunedCounts,
  type PruneRequestInput,
  type PruneResponse,
  PruneResponseSchema,
  type Tensor,
} from "../contract/api.ts";
import {
  type AnyErrorCode,
  ERROR_CODE_HEADER,
  ERROR_STATUS,
  errorChain,
  type ErrorCode,
  ZpruneError,
} from "../contract/errors.ts";
import { decodeMsgpack, encodeMsgpack, msgpackPieces } from "../contract/wire.ts";
import { bodyParts } from "./_body_parts.ts";
import { z } from "zod";
import { decode, zeroMasked } from "../contract/dtype_codec.ts";
import { countBits } from "../contract/mask_bits.ts";
import { startTimeout } from "../contract/timeout.ts";

export { ZpruneError };
export type { DType, HealthResponse, PruneRequestInput, PruneResponse, Tensor };

/**
 * An attempt's time limit by default: past the server's default deadline (600 s, `ZPRUNE_DEADLINE_MS`), so that a
 * request the server is still working on gets the server's own answer (503 to retry, or 504, naming where the time
 * went) rather than a client timeout that cannot tell a slow layer from a hung server.
 */
export const DEFAULT_TIMEOUT_MS = 660_000;

/** Options of a client. */
export interface ClientOptions {
  /** Base URL of the server, e.g. `http://127.0.0.1:8787`. */
  url: string;
  /** Sent as `Authorization: Bearer <token>` when set. */
  token?: string;
  /**
   * Per-attempt time limit in milliseconds, upload and download included: 1 to 2^31 - 1 (a timer's range), or
   * `Infinity` for none (default `DEFAULT_TIMEOUT_MS`, 660000).
   */
  timeoutMs?: number;
  /**
   * Retries after a 429 or 503 answer, or a connection refused, reset or lost mid-answer (no other failure: an
   * unknown host or a certificate refused fails at once): an integer, or Infinity (default 4).
   */
  retries?: number;
  /** First backoff delay in milliseconds, doubled each retry, with full jitter (default 200). */
  backoffMs?: number;
  /**
   * Upper bound of one wait between tries in milliseconds, a server's Retry-After included, up to 2^31 - 1 (default
   * 10000).
   */
  maxBackoffMs?: number;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /** Waits `ms` before a retry, rejecting with `signal`'s reason if it aborts (default: a timer); tests record it. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** Encodes a request body as contract msgpack (plain maps; typed arrays as `bin`, never ext types). */
export function encodeRequest(request: PruneRequestInput): Uint8Array<ArrayBuffer> {
  return encodeMsgpack(request);
}

export { decodeMsgpack };

/**
 * The bytes of `encodeRequest(request)` as a Blob, which `pruneLayers` sends. A Uint8Array body would be one copy of
 * every tensor, and fetch copies such a body again as it sends it (Deno's three times, at the peak: five times the
 * weights held for a large layer, theirs included). A Blob is made of the tensors' own bytes in a single copy, streamed
 * from part by part (`bodyParts`), and sent again as it is on a retry.
 */
function requestBlob(request: PruneRequestInput): Blob {
  return new Blob(bodyParts(msgpackPieces(request)));
}

/**
 * Builds a wire tensor from any typed array or DataView, a view into a larger buffer included: only its own bytes
 * are sent, as they are (little-endian; f16 from a Float16Array, say). A RangeError where they are not the shape's
 * byte length in `dtype`.
 */
export function tensor(dtype: DType, shape: readonly number[], data: ArrayBufferView): Tensor {
  // Bytes that cannot be the shape's (a Float32Array given as f16, say) would be uploaded whole for a 422
  // `shape_mismatch`. Other faults of the shape itself are left to the server's own message.
  if (shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    const need = shape.reduce((a, d) => a * d, 1) * DTYPE_BYTES[dtype];
    if (Number.isSafeInteger(need) && need !== data.byteLength) {
      throw new RangeError(`${data.byteLength} bytes, but shape [${shape.join(", ")}] of ${dtype} needs ${need}`);
    }
  }
  return { dtype, shape: [...shape], data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/**
 * The values of a tensor (an answer's `weight` or `score`, or any wire tensor) as a new Float32Array, row-major:
 * f16 and bf16 widened exactly. An answer's tensors are views into its body at any byte offset, so a Float32Array
 * over their buffer may not be possible; this copies.
 */
export function tensorValues(t: Tensor): Float32Array {
  const n = t.data.byteLength / DTYPE_BYTES[t.dtype];
  if (!Number.isInteger(n)) throw new RangeError(`${t.data.byteLength} bytes is not a whole number of ${t.dtype}`);
  return decode(t.data, t.dtype).values;
}

/**
 * Zeroes, in place, every element of `weightBytes` (row-major, `dtype`) whose bit is set in `mask` (bit i =
 * element i, LSB first). Works on unaligned bytes of any dtype; returns the number of masked elements (those that
 * were zero already included).
 */
export function applyMask(weightBytes: Uint8Array, dtype: DType, mask: Uint8Array): number {
  const size = DTYPE_BYTES[dtype], n = weightBytes.byteLength / size;
  if (!Number.isInteger(n)) throw new RangeError(`${weightBytes.byteLength} bytes is not a whole number of ${dtype}`);
  return zeroMasked(weightBytes, dtype, mask);
}

/**
 * The code of an HTTP status when neither the body nor the X-Zprune-Error header names one: the contract's first code
 * with that status, else `http_<status>` (as the Python client answers). A 504 without the server's body is a proxy's
 * gateway timeout, not the server's `deadline_exceeded`: that code only counts when the server says it.
 */
function codeOfStatus(status: number): AnyErrorCode {
  const hit = (Object.entries(ERROR_STATUS) as [ErrorCode, number][])
    .find(([code, s]) => s === status && code !== "deadline_exceeded");
  return hit?.[0] ?? `http_${status}`;
}

/** The shape of an error code (as the Python client checks it): a server's code it does not know yet is kept. */
const CODE_SHAPE = /^[a-z][a-z0-9_]{0,63}$/;

/**
 * Turns an error answer (JSON or msgpack `{error: {code, message}}`) into a ZpruneError; throws `signal`'s reason
 * if it aborts (a timeout, the caller's abort) while the body downloads.
 */
async function errorOf(res: Response, signal: AbortSignal): Promise<ZpruneError> {
  // An error answer cut short still has its status and headers to tell what happened.
  const bytes = await res.arrayBuffer().then((b) => new Uint8Array(b), () => {
    if (signal.aborted) throw signal.reason;
    return new Uint8Array(0);
  });
  const type = res.headers.get("content-type") ?? "";
  let body: unknown;
  try {
    body = type.includes("msgpack") ? decodeMsgpack(bytes) : JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    body = undefined;
  }
  const err = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  const headers: Record<string, string> = {};
  const retryAfter = res.headers.get("retry-after");
  if (retryAfter !== null) headers["Retry-After"] = retryAfter;
  // The id the server logged the request under: what to quote when asking its operator about the error.
  const requestId = res.headers.get("x-request-id");
  if (requestId !== null) headers["X-Request-Id"] = requestId;
  // The header repeats the server's code: an answer whose body was cut short (or replaced by a proxy) still says it.
  const named = [err?.code, res.headers.get(ERROR_CODE_HEADER)?.trim()]
    .find((c): c is string => typeof c === "string" && CODE_SHAPE.test(c));
  const code: AnyErrorCode = named ?? codeOfStatus(res.status);
  const message = typeof err?.message === "string"
    ? err.message
    : `HTTP ${res.status}: ${new TextDecoder().decode(bytes.subarray(0, 200))}`;
  // The answer's own status: a proxy's 502 or 504 has no code of the contract (http_502 here), but its status
  // still says what happened.
  return new ZpruneError(code, message, { headers, status: res.status });
}

/** Milliseconds a Retry-After header asks for (seconds or an HTTP date), or undefined. */
function retryAfterMs(value: string | null): number | undefined {
  if (value === null) return undefined;
  const s = Number(value);
  if (Number.isFinite(s)) return Math.max(0, s * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** The largest delay a timer takes: past it, it fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Sleeps `ms`, or rejects as soon as `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.min(ms, MAX_TIMER_MS));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Whether two shapes are the same. */
function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, k) => d === b[k]);
}

/**
 * Checks that `res` answers `request`: its layers, in order, by name and shape, with masks of their length whose 1
 * bits the stats count, the tensors `return` asked for, and returned tensors of the layer's shape and their bytes
 * (weights in the request's dtype, scores in f32); else `invalid_response`.
 */
function checkLayers(request: PruneRequestInput, res: PruneResponse, status: number): void {
  const asked = request.layers;
  const patternName = request.pattern ?? "layer", pattern = parsePattern(patternName, request.sparsity);
  if (res.layers.length !== asked.length) {
    throw invalidResponse(`${res.layers.length} layer(s) answered for the ${asked.length} sent`, status);
  }
  res.layers.forEach((layer, i) => {
    const want = asked[i]!, shape = want.weight.shape;
    const where = `layer ${i} (${JSON.stringify(layer.name)})`;
    if (layer.name !== want.name || !sameShape(layer.shape, shape)) {
      throw invalidResponse(
        `${where} answered as ${JSON.stringify(layer.shape)}, sent as ${JSON.stringify(want.name)} ` +
          JSON.stringify(shape),
        status,
      );
    }
    const count = layer.shape.reduce((a, d) => a * d, 1);
    if (layer.mask.byteLength !== Math.ceil(count / 8)) {
      throw invalidResponse(`${where}: a mask of ${layer.mask.byteLength} bytes for ${count} weights`, status);
    }
    // API.md: pruned is the number of 1 bits in the mask, total rows * cols; callers count with them.
    const pruned = countBits(layer.mask, 0, count);
    if (layer.stats.pruned !== pruned || layer.stats.total !== count) {
      throw invalidResponse(
        `${where}: stats say ${layer.stats.pruned} of ${layer.stats.total} pruned, the mask ${pruned} of ${count}`,
        status,
      );
    }
    // API.md: exactly so many for the pattern, whichever weights they are.
    const counts = prunedCounts(pattern, shape[0]!, shape[1]!);
    if (!counts.includes(pruned)) {
      const at = pattern.kind === "nm" ? "" : ` at ${pattern.sparsity}`;
      throw invalidResponse(
        `${where}: ${pruned} of ${count} weights pruned, where ${patternName}${at} prunes ${counts.join(" or ")}`,
        status,
      );
    }
    // The weights come back in the request's dtype, the scores in f32; each when `return` asks for it.
    const returned = [["weight", layer.weight, want.weight.dtype], ["score", layer.score, "f32"]] as const;
    for (const [key, t, dtype] of returned) {
      if (!t) {
        if (request.return?.includes(key)) throw invalidResponse(`${where}: no ${key}, which return asked for`, status);
        continue;
      }
      if (t.dtype !== dtype || !sameShape(t.shape, shape) || t.data.byteLength !== count * DTYPE_BYTES[t.dtype]) {
        throw invalidResponse(
          `${where}: the returned ${key} is ${t.dtype} ${JSON.stringify(t.shape)} in ${t.data.byteLength} bytes ` +
            `(${dtype} ${JSON.stringify(shape)} expected)`,
          status,
        );
      }
    }
  });
}

/** The first 60 bytes of an answer, quoted as text (a JSON string: control bytes escaped), for an error message. */
function opening(bytes: Uint8Array): string {
  const head = new TextDecoder().decode(bytes.subarray(0, 60));
  return JSON.stringify(head) + (bytes.byteLength > 60 ? "..." : "");
}

/** The error for an answer that breaks the contract (`status`: the HTTP status it came with). */
function invalidResponse(message: string, status: number): ZpruneError {
  return new ZpruneError("invalid_response", message, { status });
}

/**
 * `answer` itself once it passes `schema` (the schema's output would drop fields a newer server adds), or
 * `invalid_response` naming the first problem and where.
 */
function parseAnswer<T>(schema: z.ZodType<T>, answer: unknown, path: string, status: number): T {
  const parsed = schema.safeParse(answer);
  if (parsed.success) return answer as T;
  const issue = parsed.error.issues[0];
  throw invalidResponse(
    `${path} answered out of contract: ${issue ? `${issue.path.join(".") || "(root)"}: ${issue.message}` : "?"}`,
    status,
  );
}

/**
 * `/v1/info` as this client takes it. Its lists of methods, patterns, dtypes and returns say what the server accepts in
 * a request. API.md lets a newer server add, not rename, drop or reinterpret: one that accepts a new method (or
 * pattern, dtype, return) changes nothing this client sends, so names it does not know are kept as strings; the lists
 * and everything else are still checked. The backend stays one of the contract's: a prune answer naming another is
 * refused (by the Python client too), so a server cannot add one within version 1.
 */
const InfoAnswerSchema = InfoResponseSchema.extend({
  methods: z.array(z.string()).readonly(),
  patterns: z.array(z.string()).readonly(),
  dtypes: z.array(z.string()).readonly(),
  returns: z.array(z.string()).readonly(),
});
/** `GET /v1/info`'s answer, whose lists may name methods, patterns, dtypes and returns this client does not know. */
export type InfoAnswer = z.infer<typeof InfoAnswerSchema>;

/**
 * Error codes of a connection refused, reset, aborted or closed before the whole answer came, as Node (`ECONN*`,
 * undici's `UND_ERR_SOCKET`) and Bun (older ones: `ConnectionRefused`, `ConnectionClosed`) name them.
 */
const TRANSIENT_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "UND_ERR_SOCKET",
  "ConnectionRefused",
  "ConnectionClosed",
]);

/**
 * The same in an error's message, which is all Deno gives ("tcp connect error: Connection refused (os error 111)",
 * "connection closed before message completed", "error reading a body from connection"; Windows says "actively
 * refused" and "forcibly closed").
 */
const TRANSIENT_MESSAGE =
  /connection (refused|reset|closed|abort)|actively refused|forcibly closed|broken pipe|error reading a body/i;

/**
 * Whether fetch's error, or one of its causes, is a connection refused, reset, aborted or lost mid-answer: what a
 * server restarting looks like, worth another try, as the Python client retries its ConnectionError and IncompleteRead.
 * Nothing else is: an unknown host, a certificate refused, a peer that does not speak HTTP would fail the same way
 * again, and a connect timeout has already waited; nor is a browser's bare "Failed to fetch", which says nothing.
 */
function isTransient(err: unknown): boolean {
  const seen = new Set<unknown>();
  const queue = [err];
  // A cause chain may loop back; Node gives an AggregateError of each address it tried.
  while (queue.length > 0) {
    const e = queue.shift();
    if (seen.has(e) || typeof e !== "object" || e === null) continue;
    seen.add(e);
    const { code, message, cause, errors } = e as Record<string, unknown>;
    if (typeof code === "string" && TRANSIENT_CODES.has(code)) return true;
    if (typeof message === "string" && TRANSIENT_MESSAGE.test(message)) return true;
    queue.push(cause, ...(Array.isArray(errors) ? errors : []));
  }
  return false;
}

/** `unreachable` (status 0: no HTTP answer) for a fetch that failed, quoting its error and that error's causes. */
function unreachable(url: string, err: unknown): ZpruneError {
  return new ZpruneError("unreachable", `cannot reach ${url}: ${errorChain(err)}`, { cause: err, status: 0 });
}

/** Checks a numeric option: a number within [min, max] (Infinity only where `max` is), an integer if `whole`. */
function checkedOption(name: string, value: number, min: number, max: number, whole = false): number {
  const ok = typeof value === "number" && value >= min && value <= max &&
    (!whole || Number.isInteger(value) || value === Infinity);
  if (!ok) {
    throw new RangeError(`${name} must be ${whole ? "an integer" : "a number"} from ${min} to ${max}, got ${value}`);
  }
  return value;
}

/** A UTF-16 surrogate not part of a pair (with the `u` flag, a pair is one code point, not matched). */
const LONE_SURROGATE = /\p{Cs}/u;

/** A client of one zprune server. */
export class ZpruneClient {
  readonly url: string;
  readonly #opts: Required<Omit<ClientOptions, "token" | "url">> & { token?: string };

  /** Creates a client; nothing is sent until the first call. */
  constructor(options: ClientOptions) {
    // Surrounding whitespace (a URL read from a file ends with a newline) is dropped, as the Python client drops it:
    // new URL() would ignore it, but the paths appended after it would not be read as part of the URL.
    this.url = options.url.trim().replace(/\/+$/, "");
    // A URL fetch can never use is a mistake to report now, not a failure to retry with backoff. Paths are appended
    // to the base as text: a query or fragment would swallow them, and credentials in it would go out as Basic
    // auth beside the token.
    let url: URL | undefined;
    try {
      url = new URL(this.url);
    } catch { /* reported below */ }
    if (url?.protocol !== "http:" && url?.protocol !== "https:") {
      throw new TypeError(`${JSON.stringify(options.url)}: expected http://host:port or https://host:port`);
    }
    if (url.search || url.hash || url.username || url.password || /[?#]/.test(this.url)) {
      throw new TypeError(
        `${JSON.stringify(options.url)}: the base URL takes no query, fragment or user:password (give a token)`,
      );
    }
    // A token no HTTP header can carry (a character past Latin-1, a line break inside) would fail every call with
    // fetch's bare TypeError: refused now, naming the option without quoting the secret.
    if (options.token !== undefined) {
      try {
        new Headers({ authorization: `Bearer ${options.token}` });
      } catch {
        throw new TypeError("token: it holds characters an HTTP header cannot carry (a bearer token is ASCII)");
      }
    }
    this.#opts = {
      token: options.token,
      timeoutMs: options.timeoutMs === Infinity
        ? Infinity
        : checkedOption("timeoutMs", options.timeoutMs ?? DEFAULT_TIMEOUT_MS, 1, MAX_TIMER_MS),
      retries: checkedOption("retries", options.retries ?? 4, 0, Infinity, true),
      backoffMs: checkedOption("backoffMs", options.backoffMs ?? 200, 0, MAX_TIMER_MS),
      maxBackoffMs: checkedOption("maxBackoffMs", options.maxBackoffMs ?? 10_000, 0, MAX_TIMER_MS),
      fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
      sleep: options.sleep ?? sleep,
    };
  }

  /**
   * Prunes the request's layers (`POST /v1/prune`). Tensors' `data` are bytes: `tensor()` makes them from any typed
   * array. Throws `ZpruneError` with the server's code, `invalid_response` for an answer that breaks the contract
   * (layers not the request's in number, order, names and shapes, a mask or returned tensor of another size, a
   * returned weight not in the request's dtype or score not in f32, or a tensor `return` asked for missing),
   * `unreachable` when no answer came (after every try for a connection refused, reset or lost mid-answer; at once
   * for an unknown host, a certificate refused or a peer that does not speak HTTP), or the abort reason (a
   * `TimeoutError` after `timeoutMs`, or the signal's reason at once when it is aborted already). Fields a newer server
   * adds are kept in the answer.
   * A layer name with a lone surrogate, which UTF-8 cannot carry, is a `TypeError` before anything is sent.
   */
  async pruneLayers(request: PruneRequestInput, options: { signal?: AbortSignal } = {}): Promise<PruneResponse> {
    // Aborted already: not worth a copy of every tensor into the body first.
    options.signal?.throwIfAborted();
    // Names travel as UTF-8, which has no lone surrogate (msgpackr writes U+FFFD): the server would answer another
    // name than this one, after pruning the whole request.
    (Array.isArray(request.layers) ? request.layers : []).forEach((layer, i) => {
      if (typeof layer?.name === "string" && LONE_SURROGATE.test(layer.name)) {
        throw new TypeError(
          `layers[${i}].name ${JSON.stringify(layer.name)} holds a lone surrogate, which UTF-8 cannot carry`,
        );
      }
    });
    const body = requestBlob(request);
    const { bytes, status, requestId, contentType } = await this.#send("/v1/prune", {
      method: "POST",
      headers: { "content-type": "application/msgpack", accept: "application/msgpack" },
      body,
    }, options.signal);
    try {
      let answer: unknown;
      try {
        answer = decodeMsgpack(bytes);
      } catch (err) {
        // Not zprune's answer at all (a proxy's page, another service on the port): say what came instead. Labelled
        // msgpack (an answer cut short, say): why it does not decode. Empty: its size says it all (the decoder's
        // words for an empty body are advice to a client sending one).
        const what = `the answer (HTTP ${status}, ${contentType ?? "no content-type"}, ${bytes.byteLength} bytes)`;
        const why = bytes.byteLength === 0
          ? ""
          : /msgpack/i.test(contentType ?? "")
          ? `: ${(err as Error).message}`
          : `, it begins ${opening(bytes)}`;
        throw new ZpruneError("invalid_response", `${what} is not plain msgpack${why}`, { status, cause: err });
      }
      const res = parseAnswer(PruneResponseSchema, answer, "/v1/prune", status);
      checkLayers(request, res, status);
      return res;
    } catch (err) {
      // An answer out of contract is worth asking the server's operator about, as an error answer is.
      if (err instanceof ZpruneError && requestId !== null) err.headers["X-Request-Id"] = requestId;
      throw err;
    }
  }

  /**
   * `GET /v1/info`: version, backend, device, limits, and the methods, patterns, dtypes and returns the server accepts,
   * those this client does not know yet included (as the Python client returns them).
   */
  async info(options: { signal?: AbortSignal } = {}): Promise<InfoAnswer> {
    return parseAnswer(InfoAnswerSchema, await this.#getJson("/v1/info", options.signal), "/v1/info", 200);
  }

  /** `GET /healthz`. */
  async health(options: { signal?: AbortSignal } = {}): Promise<HealthResponse> {
    return parseAnswer(HealthResponseSchema, await this.#getJson("/healthz", options.signal), "/healthz", 200);
  }

  /** A GET whose 2xx answer is JSON, parsed. */
  async #getJson(path: string, signal?: AbortSignal): Promise<unknown> {
    const { bytes, status } = await this.#send(
      path,
      { method: "GET", headers: { accept: "application/json" } },
      signal,
    );
    try {
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (err) {
      throw invalidResponse(`${path} answered something other than JSON: ${(err as Error).message}`, status);
    }
  }

  /**
   * Sends with auth, a per-attempt timeout and retries; resolves with a 2xx answer's whole body, or
   * throws. The body is read inside the attempt, so a connection lost mid-answer is retried like a refused one,
   * and an abort or timeout while it downloads throws its own reason.
   */
  async #send(
    path: string,
    init: RequestInit,
    signal?: AbortSignal,
  ): Promise<{ bytes: Uint8Array; status: number; requestId: string | null; contentType: string | null }> {
    const o = this.#opts;
    const headers = new Headers(init.headers);
    if (o.token !== undefined) headers.set("authorization", `Bearer ${o.token}`);
    for (let attempt = 0;; attempt++) {
      // Cleared as the attempt ends: AbortSignal.timeout's timer would hold each call's signals for the whole time.
      const timeout = startTimeout(o.timeoutMs, `no answer within ${o.timeoutMs} ms`);
      const attemptSignal = signal ? AbortSignal.any([signal, timeout.signal]) : timeout.signal;
      let res: Response;
      try {
        // Not followed: a POST answered 301-303 comes back as a GET without its body, then reads as a wrong route,
        // and one answered 307 or 308 would send every body twice. The error names the URL to give instead.
        res = await o.fetch(`${this.url}${path}`, { ...init, headers, signal: attemptSignal, redirect: "manual" });
        if (res.ok) {
          const bytes = new Uint8Array(await res.arrayBuffer());
          const contentType = res.headers.get("content-type");
          return { bytes, status: res.status, requestId: res.headers.get("x-request-id"), contentType };
        }
        if ((res.status >= 300 && res.status < 400) || res.type === "opaqueredirect") {
          await res.body?.cancel();
          const to = res.headers.get("location");
          throw new ZpruneError(
            "invalid_response",
            `${path} was redirected${to ? ` to ${to}` : ""} (HTTP ${res.status}): give the server's own URL as \`url\``,
            { status: res.status },
          );
        }
        if ((res.status === 429 || res.status === 503) && attempt < o.retries) {
          const wait = retryAfterMs(res.headers.get("retry-after"));
          await res.body?.cancel();
          // Retry-After is the least wait, plus a little jitter so that many clients do not return in lockstep;
          // the doubling backoff still applies (zprune says 1 s however long it stays busy: the growth is the
          // client's). Capped at maxBackoffMs: a day's Retry-After, or a date years ahead, must not hang the caller.
          const delay = wait === undefined
            ? this.#backoff(attempt)
            : Math.min(o.maxBackoffMs, Math.max(wait + Math.random() * o.backoffMs * 0.5, this.#backoff(attempt)));
          timeout.clear();
          await o.sleep(delay, signal);
          continue;
        }
        throw await errorOf(res, attemptSignal);
      } catch (err) {
        if (err instanceof ZpruneError) throw err;
        if (attemptSignal.aborted) throw attemptSignal.reason ?? err;
        // fetch fails with a TypeError (in Deno, Bun, Node and browsers) whose causes say why: `unreachable`, as in
        // the Python client, with that error kept as its cause and quoted. Anything else (a custom fetch's bug,
        // memory) is thrown at once, as it is: another try would meet it again.
        if (!(err instanceof TypeError)) throw err;
        // Only a connection refused, reset or lost mid-answer is retried: the server may be restarting. An unknown
        // host or a certificate refused is `unreachable` at once.
        if (!isTransient(err) || attempt >= o.retries) throw unreachable(this.url, err);
        timeout.clear();
        await o.sleep(this.#backoff(attempt), signal);
        continue;
      } finally {
        timeout.clear();
      }
    }
  }

  /** Exponential backoff with full jitter: uniform in [0, min(max, base * 2^attempt)]. */
  #backoff(attempt: number): number {
    // 2^attempt is Infinity past attempt 1023, and 0 * Infinity NaN: a wait of NaN ms (none, Retry-After ignored).
    return Math.random() * Math.min(this.#opts.maxBackoffMs, this.#opts.backoffMs * 2 ** Math.min(attempt, 64));
  }
}
