/**
 * The HTTP app: `createApp(deps)` wires the routes, auth, CORS, metrics, request logs and the one `onError`
 * that turns every failure into the contract's error answer. Runtime-neutral: Deno and Bun serve `app.fetch`
 * alike (see runtime/host.ts).
 */
import { type Context, Hono } from "hono";
import { cors } from "hono/cors";
import {
  API_VERSION,
  DTYPES,
  type InfoResponse,
  METHODS,
  PATTERN_FORMS,
  REQUEST_BOUNDS,
  RETURNS,
} from "../contract/api.ts";
import { WIRE_LIMITS } from "../contract/msgpack_scan.ts";
import { ERROR_CODE_HEADER, ZpruneError } from "../contract/errors.ts";
import { encodeMsgpack, isMsgpackType } from "../contract/wire.ts";
import { DEFAULT_CONFIG, type ServerConfig } from "../config.ts";
import { Metrics } from "../observe/metrics.ts";
import type { Backend } from "../prune/backend.ts";
import { isDeadline, WorkQueue } from "../prune/queue.ts";
import { bearerAuth } from "./auth.ts";
import { BodyBudget } from "./body.ts";
import type { AppEnv } from "./env.ts";
import { observeRequests } from "./observe_requests.ts";
import { isAllocationFailure } from "../runtime/out_of_memory.ts";
import { WHOLE_ANSWER_BYTES, WRITE_STALL_MS } from "../runtime/drain.ts";
import { openApiDocument } from "./openapi.ts";
import { pruneHandler } from "./prune.ts";
import pkg from "../package.json" with { type: "json" };

/**
 * The contract's error answer for `err`: JSON, or msgpack when the client asks for it. A 429 or 503 says when to
 * try again: its own Retry-After, else `retryAfterSeconds` (a backend's `unavailable` carries none of its own).
 */
function errorResponse(c: Context<AppEnv>, err: unknown, retryAfterSeconds: number): Response {
  let e = toZpruneError(err);
  if (e.code === "internal") {
    // The cause goes to the log, not to the client: its message may name files, hosts or other internals.
    const id = c.get("requestId") ?? "-";
    console.error(`zprune: internal error in request ${id}:`, err);
    e = new ZpruneError("internal", `internal error (request ${id}); the server's log has the details`);
  }
  const body = e.toBody();
  const headers: Record<string, string> = { ...e.headers, [ERROR_CODE_HEADER]: e.code };
  if ((e.status === 429 || e.status === 503) && !Object.keys(headers).some((k) => k.toLowerCase() === "retry-after")) {
    headers["Retry-After"] = String(retryAfterSeconds);
  }
  if (wantsMsgpack(c.req.header("accept"))) {
    return new Response(encodeMsgpack(body), {
      status: e.status,
      headers: { ...headers, "content-type": "application/msgpack" },
    });
  }
  return c.json(body, e.status as 400, headers);
}

/** What the app is built from. Only `backend` is required; the rest default. */
export interface AppDeps {
  backend: Backend;
  config?: Partial<ServerConfig>;
  metrics?: Metrics;
  queue?: WorkQueue;
  /** Receives one structured entry per request (never tensor data); default: none. */
  log?: (entry: Record<string, unknown>) => void;
  /** True once the server is draining for shutdown: every new request but GET /metrics is then 503 (main.ts). */
  draining?: () => boolean;
  /**
   * Bytes of answers handed to the runtime that slow clients have yet to read (`Listening.answerBytes`): they count
   * with waiting bodies against the memory budget, so that clients which do not read cannot pile answers up.
   */
  answerBytes?: () => number;
  /** Answers dropped so far because their clients stopped reading them (`Listening.answersDropped`). */
  answersDropped?: () => number;
}

/** The server's version, from package.json. */
const VERSION: string = pkg.version;

/** Maps anything thrown to the contract's error (status, code, message). */
function toZpruneError(err: unknown): ZpruneError {
  if (err instanceof ZpruneError) return err;
  if (err instanceof DOMException && err.name === "AbortError") {
    return new ZpruneError("client_closed_request", "the client closed the connection before the answer");
  }
  // POST /v1/prune answers its own deadline, 503 or 504 by where the time went (routes/deadline.ts).
  if (isDeadline(err)) {
    return new ZpruneError("unavailable", "the server's deadline passed; retry shortly");
  }
  // Memory the host could not give just now (here or in a CPU worker): the request was sound and may succeed later,
  // so it is answered like a busy backend, not as a bug.
  if (isAllocationFailure(err)) {
    return new ZpruneError(
      "unavailable",
      "the server could not allocate the memory for this request just now; retry shortly, or send smaller layers",
      { cause: err },
    );
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ZpruneError("internal", `internal error: ${message}`, { cause: err });
}

/**
 * Whether an error answer should be msgpack: the Accept header names msgpack and not JSON, counting only the media
 * ranges it accepts (a q of 0 refuses one).
 */
function wantsMsgpack(accept: string | undefined): boolean {
  const accepted = (accept ?? "").toLowerCase().split(",").flatMap((range) => {
    const [type = "", ...params] = range.split(";").map((x) => x.trim());
    const q = params.find((p) => /^q\s*=/.test(p));
    return q && !(Number(q.split("=")[1]) > 0) ? [] : [type];
  });
  return accepted.some(isMsgpackType) && !accepted.some(isJsonType);
}

/** Whether a media type is JSON: application/json, or a type with the +json suffix (RFC 6839) such as problem+json. */
function isJsonType(type: string): boolean {
  // application/json-seq (RFC 7464) and the like are other formats, however they begin.
  return type === "application/json" || /^[^/]+\/[^/]+\+json$/.test(type);
}

/** The server's gauges and backend counters, read from their sources whenever /metrics is scraped. */
function registerGauges(
  metrics: Metrics,
  backend: Backend,
  queue: WorkQueue,
  bodies: BodyBudget,
  answerBytes: () => number,
  answersDropped: () => number,
): void {
  metrics.gauge("zprune_queue_depth", "Requests waiting for a compute slot.", () => queue.depth);
  // Counted by the backend where it replaces a worker or device: a 503 for a full queue or a deadline is no restart.
  metrics.counterOf(
    "zprune_backend_restarts_total",
    "Compute workers or devices discarded after a failure (the backend starts fresh ones).",
    () => backend.restarts,
  );
  metrics.counterOf(
    "zprune_exact_path_layers_total",
    "Layers the WebGPU backend computed on the exact CPU path (where float32 cannot give the CPU backend's masks, " +
      "the layer is too large for the device or its rows too wide for the row pattern, or the GPU's mask miscounted; " +
      "slower, same answer).",
    () => backend.exactPathLayers,
  );
  // Up to 2 GiB that an idle server holds for 30 s after its last large layer: without it, RSS is unexplained.
  metrics.gauge(
    "zprune_backend_kept_bytes",
    "Host memory the backend keeps between layers for reuse (CPU scratch buffers; given back after 30 s idle).",
    () => backend.keptBytes ?? 0,
  );
  metrics.gauge(
    "zprune_answer_bytes_pending",
    "Bytes of answers over 64 KiB that their clients have yet to read (counted with waiting bodies).",
    answerBytes,
  );
  metrics.counterOf(
    "zprune_answers_dropped_total",
    `Answers over ${WHOLE_ANSWER_BYTES / 1024} KiB dropped because the client took no part of them for ` +
      `${WRITE_STALL_MS / 1000} s (answered, and counted in zprune_bytes_out_total, but not delivered).`,
    answersDropped,
  );
  metrics.gauge(
    "zprune_body_bytes_held",
    "Bytes of request bodies being read or waiting for a compute slot.",
    () => bodies.held,
  );
  // Both include a request answered early (deadline, client gone) whose layer in flight has not stopped yet.
  metrics.gauge(
    "zprune_requests_in_flight",
    "Requests computing now (answered ones included while work they started still runs).",
    () => queue.running,
  );
  metrics.gauge(
    "zprune_memory_in_use_bytes",
    "Estimated working memory of the requests computing now (as zprune_requests_in_flight counts them).",
    () => queue.bytesInUse,
  );
}

/** Builds the app. */
export function createApp(deps: AppDeps): Hono<AppEnv> {
  const config: ServerConfig = { ...DEFAULT_CONFIG, ...deps.config };
  const metrics = deps.metrics ?? new Metrics();
  // /v1/info gives clients the queue's limits, which they plan their requests by: an injected queue must have them.
  if (deps.queue && (deps.queue.memoryBudget !== config.memoryBudgetBytes || deps.queue.maxQueue !== config.maxQueue)) {
    throw new RangeError(
      `the work queue's memoryBudget ${deps.queue.memoryBudget} and maxQueue ${deps.queue.maxQueue} differ from the ` +
        `config's ${config.memoryBudgetBytes} and ${config.maxQueue}, which /v1/info reports`,
    );
  }
  const queue = deps.queue ??
    new WorkQueue({
      concurrency: config.concurrency,
      maxQueue: config.maxQueue,
      memoryBudget: config.memoryBudgetBytes,
    });
  // Every 429 and 503 tells the client when to return, and all say the same.
  const retryAfter = queue.retryAfterSeconds;
  const { backend } = deps;
  // Bodies being read or waiting for a slot share the same budget as the requests computing: together they stay
  // within about twice the budget, however many clients upload at once (measured up to 2.6 times: README).
  const answerBytes = deps.answerBytes ?? (() => 0);
  // The queue's budget (the config's): a body past it never computes.
  const bodies = new BodyBudget(queue.memoryBudget, queue.retryAfterSeconds, answerBytes);
  registerGauges(metrics, backend, queue, bodies, answerBytes, deps.answersDropped ?? (() => 0));

  const app = new Hono<AppEnv>();
  // API.md's "requests by route and status": a request is counted under its route's path whoever answered it (auth's
  // 401, the drain's 503, a CORS preflight), so only a path no route serves is "unmatched", which also keeps the
  // label's values few. Read on first use, once every route below is registered.
  let routePaths: ReadonlySet<string> | undefined;
  const routeLabel = (path: string): string => {
    routePaths ??= new Set(app.routes.filter((r) => r.method !== "ALL").map((r) => r.path));
    return routePaths.has(path) ? path : "unmatched";
  };

  // Request id, metrics and the one log line per request.
  app.use("*", observeRequests(metrics, routeLabel, deps.log));

  if (config.corsOrigins) {
    const origins = config.corsOrigins.split(",").map((o) => o.trim()).filter(Boolean);
    app.use(
      "*",
      cors({
        origin: origins.includes("*") ? "*" : origins,
        allowHeaders: ["Authorization", "Content-Type", "Accept", "X-Request-Id"],
        allowMethods: ["GET", "POST", "OPTIONS"],
        // WWW-Authenticate too: a browser client can then tell a 401's scheme from its answer, as any other client.
        exposeHeaders: ["Retry-After", "WWW-Authenticate", "X-Request-Id", "X-Zprune-Error"],
        maxAge: 600,
      }),
    );
  }

  // While the server drains for shutdown, requests already in flight finish and new ones are told to go elsewhere,
  // through the same error path as any other answer (logged, counted, msgpack or JSON, CORS headers).
  // GET /metrics is still answered: a draining server's last counts can be scraped, and it is quick.
  app.use("*", async function refuseWhileDraining(c, next) {
    if (deps.draining?.() && !(c.req.path === "/metrics" && (c.req.method === "GET" || c.req.method === "HEAD"))) {
      throw new ZpruneError("unavailable", "the server is shutting down; retry shortly", {
        headers: { Connection: "close" },
      });
    }
    await next();
  });

  const auth = bearerAuth(config.token);
  app.use("/v1/*", auth);
  app.use("/metrics", auth);

  app.get("/healthz", (c) => {
    // A backend with no usable device (lost and not yet replaced, or its restart failed too) cannot answer a layer: a
    // health check must say so, so that an orchestrator replaces the server (whose `auto` start then picks what the
    // host still has) if it does not come back.
    const why = backend.unavailable;
    if (why) {
      // Out of rotation, the server gets no layer to restart the backend with: the check itself starts a retry,
      // whose outcome the next check sees. The reason is read again after: it says that a worker is starting now.
      backend.recover?.();
      throw new ZpruneError("unavailable", `the ${backend.kind} backend cannot compute: ${backend.unavailable ?? why}`);
    }
    return c.json({ status: "ok", backend: backend.kind });
  });

  app.get("/v1/info", (c) => {
    const info: InfoResponse = {
      name: "zprune",
      version: VERSION,
      apiVersion: API_VERSION,
      backend: backend.kind,
      device: backend.device,
      limits: {
        maxBodyBytes: config.maxBodyBytes,
        maxLayerElements: config.maxLayerElements,
        maxQueue: config.maxQueue,
        memoryBudgetBytes: config.memoryBudgetBytes,
        msgpack: WIRE_LIMITS,
        ...REQUEST_BOUNDS,
      },
      methods: METHODS,
      patterns: PATTERN_FORMS,
      dtypes: DTYPES,
      returns: RETURNS,
    };
    return c.json(info);
  });

  app.get(
    "/metrics",
    (c) => c.text(metrics.render(), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }),
  );

  const openapi = openApiDocument(VERSION);
  app.get("/openapi.json", (c) => c.json(openapi));

  app.post(
    "/v1/prune",
    pruneHandler({
      backend,
      queue,
      bodies,
      metrics,
      maxBodyBytes: config.maxBodyBytes,
      maxLayerElements: config.maxLayerElements,
      deadlineMs: config.deadlineMs,
      answersPending: answerBytes,
    }),
  );

  // Answered, not thrown: Hono runs the not-found handler outside the middleware chain's error handling, so a
  // throw here skipped the request's metrics, log line and request id.
  app.notFound((c) =>
    errorResponse(c, new ZpruneError("not_found", "no such route; see GET /openapi.json"), retryAfter)
  );

  app.onError((err, c) => errorResponse(c, err, retryAfter));

  return app;
}
