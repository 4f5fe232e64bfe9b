/**
 * A TypeScript client for the zprune endpoint over plain `fetch` (Deno, Bun, Node 18+, browsers).
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
  type InfoResponse,
  type PruneRequestInput,
  type PruneResponse,
  PruneResponseSchema,
  type Tensor,
} from "../contract/api.ts";
import { ERROR_STATUS, type ErrorCode, isErrorCode, ZpruneError } from "../contract/errors.ts";
import { decodeMsgpack, encodeMsgpack } from "../contract/wire.ts";
import { zeroMasked } from "../prune/decode.ts";

export { ZpruneError };
export type { PruneRequestInput, PruneResponse, Tensor };

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
  /** Per-attempt time limit in milliseconds (default `DEFAULT_TIMEOUT_MS`, 660000). */
  timeoutMs?: number;
  /** Retries after a 429 or 503 answer, or a connection refused, reset or lost mid-answer (default 4). */
  retries?: number;
  /** First backoff delay in milliseconds, doubled each retry, with full jitter (default 200). */
  backoffMs?: number;
  /** Upper bound of one wait between tries in milliseconds, a server's Retry-After included (default 10000). */
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

/** Builds a wire tensor from any typed array (its bytes are sent as they are, little-endian). */
export function tensor(dtype: DType, shape: number[], data: ArrayBufferView<ArrayBuffer>): Tensor {
  return { dtype, shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/**
 * Zeroes, in place, every element of `weightBytes` (row-major, `dtype`) whose bit is set in `mask` (bit i =
 * element i, LSB first). Works on unaligned bytes of any dtype; returns the number of elements zeroed.
 */
export function applyMask(weightBytes: Uint8Array, dtype: DType, mask: Uint8Array): number {
  const size = DTYPE_BYTES[dtype], n = weightBytes.byteLength / size;
  if (!Number.isInteger(n)) throw new RangeError(`${weightBytes.byteLength} bytes is not a whole number of ${dtype}`);
  return zeroMasked(weightBytes, dtype, mask);
}

/**
 * The code of an HTTP status when the body names none we know. A 504 without the server's body is a proxy's gateway
 * timeout, not the server's `deadline_exceeded`: that code only counts when the body says it.
 */
function codeOfStatus(status: number): ErrorCode {
  const hit = (Object.entries(ERROR_STATUS) as [ErrorCode, number][])
    .find(([code, s]) => s === status && code !== "deadline_exceeded");
  return hit?.[0] ?? "internal";
}

/** Turns an error answer (JSON or msgpack `{error: {code, message}}`) into a ZpruneError. */
async function errorOf(res: Response): Promise<ZpruneError> {
  // An error answer cut short still has its status and headers to tell what happened.
  const bytes = await res.arrayBuffer().then((b) => new Uint8Array(b), () => new Uint8Array(0));
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
  const code = isErrorCode(err?.code) ? err.code : codeOfStatus(res.status);
  const message = typeof err?.message === "string"
    ? err.message
    : `HTTP ${res.status}: ${new TextDecoder().decode(bytes.subarray(0, 200))}`;
  // The answer's own status: a proxy's 502 or 504 has no code of the contract ("internal" here), but its status
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
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A client of one zprune server. */
export class ZpruneClient {
  readonly url: string;
  readonly #opts: Required<Omit<ClientOptions, "token" | "url">> & { token?: string };

  /** Creates a client; nothing is sent until the first call. */
  constructor(options: ClientOptions) {
    this.url = options.url.replace(/\/+$/, "");
    // A URL fetch can never use is a mistake to report now, not a failure to retry with backoff.
    let scheme = "";
    try {
      scheme = new URL(this.url).protocol;
    } catch { /* reported below */ }
    if (scheme !== "http:" && scheme !== "https:") {
      throw new TypeError(`${JSON.stringify(options.url)}: expected http://host:port or https://host:port`);
    }
    this.#opts = {
      token: options.token,
      timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      retries: options.retries ?? 4,
      backoffMs: options.backoffMs ?? 200,
      maxBackoffMs: options.maxBackoffMs ?? 10_000,
      fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
      sleep: options.sleep ?? sleep,
    };
  }

  /**
   * Prunes the request's layers (`POST /v1/prune`). Typed arrays anywhere in the request are sent as `bin`.
   * Throws `ZpruneError` with the server's code, or the abort reason (a `TimeoutError` after `timeoutMs`).
   */
  async pruneLayers(request: PruneRequestInput, options: { signal?: AbortSignal } = {}): Promise<PruneResponse> {
    const body = encodeRequest(request);
    const reply = await this.#send("/v1/prune", {
      method: "POST",
      headers: { "content-type": "application/msgpack", accept: "application/msgpack" },
      body,
    }, options.signal);
    let answer: unknown;
    try {
      answer = decodeMsgpack(reply);
    } catch (err) {
      // The HTTP status was 200: the fault is the answer's, which the status says as it was.
      throw new ZpruneError("internal", `the server's answer is not plain msgpack: ${(err as Error).message}`, {
        status: 200,
      });
    }
    const parsed = PruneResponseSchema.safeParse(answer);
    if (!parsed.success) {
      throw new ZpruneError("internal", `malformed prune response: ${parsed.error.issues[0]?.message ?? "?"}`, {
        status: 200,
      });
    }
    return parsed.data;
  }

  /** `GET /v1/info`: version, backend, device and limits. */
  info(options: { signal?: AbortSignal } = {}): Promise<InfoResponse> {
    return this.#getJson("/v1/info", options.signal);
  }

  /** `GET /healthz`. */
  health(options: { signal?: AbortSignal } = {}): Promise<{ status: string; backend: string }> {
    return this.#getJson("/healthz", options.signal);
  }

  /** A GET whose 2xx answer is JSON. */
  async #getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
    const body = await this.#send(path, { method: "GET", headers: { accept: "application/json" } }, signal);
    return JSON.parse(new TextDecoder().decode(body)) as T;
  }

  /**
   * Sends with auth, a per-attempt timeout and retries; resolves with a 2xx answer's whole body, or
   * throws. The body is read inside the attempt, so a connection lost mid-answer is retried like a refused one,
   * and an abort or timeout while it downloads throws its own reason.
   */
  async #send(path: string, init: RequestInit, signal?: AbortSignal): Promise<Uint8Array> {
    const o = this.#opts;
    const headers = new Headers(init.headers);
    if (o.token !== undefined) headers.set("authorization", `Bearer ${o.token}`);
    for (let attempt = 0;; attempt++) {
      const timeout = AbortSignal.timeout(o.timeoutMs);
      const attemptSignal = signal ? AbortSignal.any([signal, timeout]) : timeout;
      let res: Response;
      try {
        res = await o.fetch(`${this.url}${path}`, { ...init, headers, signal: attemptSignal });
        if (res.ok) return new Uint8Array(await res.arrayBuffer());
      } catch (err) {
        if (attemptSignal.aborted) throw attemptSignal.reason ?? err;
        // A refused or reset connection, before or during the answer: the server may be restarting, so it is
        // worth another try.
        if (attempt >= o.retries) throw err;
        await o.sleep(this.#backoff(attempt), signal);
        continue;
      }
      if ((res.status === 429 || res.status === 503) && attempt < o.retries) {
        const wait = retryAfterMs(res.headers.get("retry-after"));
        await res.body?.cancel();
        // Retry-After is the least wait, plus a little jitter so that many clients do not return in lockstep; the
        // doubling backoff still applies (zprune says 1 s however long it stays busy: the growth is the client's).
        // Capped at maxBackoffMs: a day's Retry-After, or a date years ahead, must not hang the caller.
        const delay = wait === undefined
          ? this.#backoff(attempt)
          : Math.min(o.maxBackoffMs, Math.max(wait + Math.random() * o.backoffMs * 0.5, this.#backoff(attempt)));
        await o.sleep(delay, signal);
        continue;
      }
      throw await errorOf(res);
    }
  }

  /** Exponential backoff with full jitter: uniform in [0, min(max, base * 2^attempt)]. */
  #backoff(attempt: number): number {
    return Math.random() * Math.min(this.#opts.maxBackoffMs, this.#opts.backoffMs * 2 ** attempt);
  }
}
