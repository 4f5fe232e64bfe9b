/** Server configuration from environment variables, with the defaults README.md documents. */
import { memoryLimitBytes } from "./runtime/host_limits.ts";

/** Which compute backend to use. */
export type BackendChoice = "auto" | "webgpu" | "cpu";

/** Everything the server is configured with. */
export interface ServerConfig {
  port: number;
  host: string;
  backend: BackendChoice;
  /** Bearer token required on /v1/* and /metrics; empty = no auth. */
  token: string;
  maxBodyBytes: number;
  maxLayerElements: number;
  /** Requests computing at once. */
  concurrency: number;
  /** Requests waiting beyond those; more are answered 429. */
  maxQueue: number;
  /** Bytes of working memory that requests computing at once may hold together (estimated per request). */
  memoryBudgetBytes: number;
  /** Per-request deadline in milliseconds (0 = none). */
  deadlineMs: number;
  /** Origins allowed by CORS ("*" or a comma-separated list; empty = CORS off). */
  corsOrigins: string;
  /** One JSON log line per request on stdout. */
  log: boolean;
}

/** The defaults, used where a variable is unset. */
export const DEFAULT_CONFIG: ServerConfig = {
  port: 8787,
  host: "0.0.0.0",
  backend: "auto",
  token: "",
  maxBodyBytes: 2 * 1024 ** 3,
  maxLayerElements: 2 ** 28,
  concurrency: 2,
  maxQueue: 64,
  // A third: waiting bodies (and unread answers) and computing requests each take up to the budget, and the
  // computing ones somewhat more than estimated (README, "Configuration"): measured up to 2.6 times it together.
  memoryBudgetBytes: Math.floor(memoryLimitBytes() / 3),
  deadlineMs: 600_000,
  corsOrigins: "",
  log: true,
};

type Env = (name: string) => string | undefined;

/** The integer in variable `name`, or `fallback` when it is unset or empty. */
function int(env: Env, name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = env(name)?.trim();
  if (raw === undefined || raw === "") return fallback;
  // Plain decimal digits only: Number() would also take "0x1F90", "8.787e3" or "0b1".
  const v = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  }
  return v;
}

/**
 * ZPRUNE_TOKEN without the whitespace around it that a mounted secret file often ends with (a trailing newline).
 * Control characters inside could never arrive in an `Authorization` header, nor non-ASCII ones match, so such a
 * token is refused.
 */
function token(env: Env): string {
  const t = (env("ZPRUNE_TOKEN") ?? "").trim();
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(t)) throw new RangeError("ZPRUNE_TOKEN must not contain control characters");
  // Header values arrive as bytes that the runtime reads one character each (Latin-1), so a token with other
  // characters, sent as UTF-8 as clients do, could never match: refuse it rather than lock every client out.
  if (/[^\x20-\x7e]/.test(t)) throw new RangeError("ZPRUNE_TOKEN must be printable ASCII");
  return t;
}

/**
 * ZPRUNE_CORS_ORIGINS: `*`, or origins as browsers send them in the Origin header, `scheme://host[:port]` with no path,
 * trailing slash or wildcard. CORS compares the header with each entry exactly, so an entry in any other form (a path,
 * an uppercase host, a default port, `*.example.com`) would silently allow nobody: refused, with the form a browser
 * sends where there is one. `null` (sandboxed frames, files) is refused too: any page can send it.
 */
function corsOrigins(env: Env): string {
  const raw = (env("ZPRUNE_CORS_ORIGINS") ?? "").trim();
  const origins = raw.split(",").map((o) => o.trim()).filter(Boolean);
  if (origins.includes("*")) return "*";
  for (const o of origins) {
    const refuse = (why: string) => {
      throw new RangeError(
        `ZPRUNE_CORS_ORIGINS must be * or a comma-separated list of origins such as https://nb.example:8888, ` +
          `got "${raw}": "${o}" ${why}`,
      );
    };
    if (!/^[a-z][a-z0-9+.-]*:\/\/[^/?#*\s]+$/.test(o)) {
      // A page's address (a path, a trailing slash, an uppercase scheme): name the origin its browser sends.
      const sent = URL.canParse(o) ? new URL(o).origin : "null";
      refuse(`is not scheme://host[:port]${sent !== "null" && !sent.includes("*") ? `; browsers send ${sent}` : ""}`);
    }
    let url: URL | undefined;
    try {
      url = new URL(o);
    } catch {
      refuse("is not a URL");
    }
    // http(s) origins are normalised by browsers (lowercase, punycode, no default port); extension and app schemes
    // (chrome-extension://id, vscode-webview://id) have an opaque origin and are sent as written.
    if (url!.origin !== "null" && url!.origin !== o) refuse(`is sent by browsers as ${url!.origin}`);
  }
  return origins.join(",");
}

/** The value of variable `name`, one of `choices`, or `fallback` when it is unset or blank. */
function oneOf<T extends string>(env: Env, name: string, choices: readonly T[], fallback: T): T {
  const raw = env(name)?.trim();
  if (raw === undefined || raw === "") return fallback;
  if (!(choices as readonly string[]).includes(raw)) {
    const listed = `${choices.slice(0, -1).join(", ")} or ${choices.at(-1)}`;
    throw new RangeError(`${name} must be ${listed}, got "${raw}"`);
  }
  return raw as T;
}

/** Reads the configuration from `env` (a lookup such as `Deno.env.get`); throws RangeError on bad values. */
export function loadConfig(env: Env): ServerConfig {
  const backend = oneOf(env, "ZPRUNE_BACKEND", ["auto", "webgpu", "cpu"] as const, DEFAULT_CONFIG.backend);
  return {
    port: int(env, "PORT", DEFAULT_CONFIG.port, 0, 65535),
    host: env("HOST")?.trim() || DEFAULT_CONFIG.host,
    backend,
    token: token(env),
    maxBodyBytes: int(env, "ZPRUNE_MAX_BODY_BYTES", DEFAULT_CONFIG.maxBodyBytes, 1),
    // Both backends address mask bits and elements with 32-bit arithmetic (i >>> 3, u32 in WGSL).
    maxLayerElements: int(env, "ZPRUNE_MAX_LAYER_ELEMENTS", DEFAULT_CONFIG.maxLayerElements, 1, 2 ** 32 - 1),
    concurrency: int(env, "ZPRUNE_CONCURRENCY", DEFAULT_CONFIG.concurrency, 1),
    maxQueue: int(env, "ZPRUNE_MAX_QUEUE", DEFAULT_CONFIG.maxQueue, 0),
    memoryBudgetBytes: int(env, "ZPRUNE_MEMORY_BUDGET_BYTES", DEFAULT_CONFIG.memoryBudgetBytes, 1),
    // Timers take at most 2^31 - 1 ms; a longer one fires at once (and every request would miss its deadline).
    deadlineMs: int(env, "ZPRUNE_DEADLINE_MS", DEFAULT_CONFIG.deadlineMs, 0, 2 ** 31 - 1),
    corsOrigins: corsOrigins(env),
    // Only 0 and 1: "false" or "off" once left logging on without a word.
    log: oneOf(env, "ZPRUNE_LOG", ["0", "1"] as const, DEFAULT_CONFIG.log ? "1" : "0") === "1",
  };
}
