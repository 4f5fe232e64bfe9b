/**
 * The runtime seam: the few host calls the server needs (environment, listening, signals, exit), for Deno and
 * Bun. The server's request path uses web-standard APIs only; the WebGPU backend (Deno's WebGPU, gpu/) and the
 * CLI's model code (files, workers) are Deno's and say so where they start.
 */
import { type Drain, drainable, type Fetch, WRITE_STALL_MS } from "./drain.ts";

interface BunServer {
  readonly port: number;
  /** Requests whose answers are not yet written to the last byte (or whose clients left). */
  readonly pendingRequests: number;
  stop(closeActiveConnections?: boolean): Promise<void> | void;
  /** Sets the idle timeout of the connection carrying `req`, in seconds (0: none), until set again. */
  timeout(req: Request, seconds: number): void;
}
interface BunGlobal {
  serve(opts: {
    port: number;
    hostname: string;
    fetch: (req: Request, server: BunServer) => Response | Promise<Response>;
    maxRequestBodySize?: number;
    idleTimeout?: number;
  }): BunServer;
}
interface ProcessGlobal {
  env: Record<string, string | undefined>;
  argv: string[];
  on(signal: string, cb: () => void): void;
  off(signal: string, cb: () => void): void;
  exit(code?: number): never;
}

const g = globalThis as unknown as { Deno?: typeof Deno; Bun?: BunGlobal; process?: ProcessGlobal };

/** Which runtime runs this process. */
export const runtimeName: "deno" | "bun" | "other" = g.Deno ? "deno" : g.Bun ? "bun" : "other";

/**
 * Whether a streamed answer with a Content-Length goes out with that length (Deno). Bun sends any stream in chunks
 * instead, dropping the length, so there an answer whose length the client should see is sent as one array.
 */
export const streamsKeepLength: boolean = runtimeName === "deno";

/** Reads an environment variable. */
export function getEnv(name: string): string | undefined {
  if (g.Deno) return g.Deno.env.get(name);
  return g.process?.env[name];
}

/** The arguments the script was started with (after the script's name). */
export const args: readonly string[] = g.Deno ? g.Deno.args : g.process?.argv.slice(2) ?? [];

/** A listening server. */
export interface Listening {
  /** The bound port (useful with port 0). */
  port: number;
  /**
   * Requests being handled now, from their arrival until their answer's body has been handed to the runtime to the
   * last byte (or the client left): reading the body, computing and writing the answer all count. Under Bun, until
   * Bun has written it to the last byte (its `pendingRequests`).
   */
  readonly inFlight: number;
  /**
   * Bytes of answers handed to the runtime but not yet written to the last byte (slow clients' answers, held in
   * memory meanwhile). Answers of up to 64 KiB, and all under Bun, are not counted.
   */
  readonly answerBytes: number;
  /**
   * Answers dropped so far because their client took no part of them for WRITE_STALL_MS (each named on stderr as it
   * is dropped). Always 0 under Bun, which drops none (its idle timeout closes such a connection).
   */
  readonly answersDropped: number;
  /**
   * Starts draining: from now on every new request is answered `refuse(req)` at once, while those in flight go on
   * (their answers say `Connection: close`). Resolves true once none is in flight, or false after `limitMs` with
   * some still there. Call it before `shutdown`.
   */
  drain: Drain;
  /** Stops accepting connections and resolves when in-flight requests have finished. */
  shutdown(): Promise<void>;
}

/** Bun's idle timeout for keep-alive connections between requests, in seconds: its largest. */
const BUN_IDLE_SECONDS = 255;

/**
 * `req` with an absolute URL. Bun gives a request without a Host header (HTTP/1.0 allows that, and some health
 * checkers send none) its bare path as its URL, which Hono reads as another path: every route answered 404. Body,
 * headers and the abort signal carry over to the copy.
 */
function withAbsoluteUrl(req: Request, port: number): Request {
  return req.url.startsWith("/") ? new Request(`http://localhost:${port}${req.url}`, req) : req;
}

/** Sets a Bun connection's idle timeout; a request whose connection has closed has none to set. */
function setIdle(server: BunServer, req: Request, seconds: number): void {
  try {
    server.timeout(req, seconds);
  } catch { /* the connection is gone */ }
}

/**
 * Serves `fetch` on host:port. `bunIdleSeconds` (tests only) replaces the idle timeout of a Bun server's connections
 * between requests; `writeStallMs` (tests only) replaces WRITE_STALL_MS.
 */
export function listen(
  fetch: Fetch,
  opts: { port: number; host: string; bunIdleSeconds?: number; writeStallMs?: number },
): Promise<Listening> {
  // Bun sends a stream in chunks even with a Content-Length, so there the gate counts an answer until its handler
  // returns, and Bun's own count (below) until it is written.
  const gate = drainable(fetch, {
    untilWritten: streamsKeepLength,
    writeStallMs: opts.writeStallMs ?? WRITE_STALL_MS,
  });
  const listening = (port: number, shutdown: () => Promise<void>): Listening => ({
    port,
    get inFlight() {
      return gate.inFlight();
    },
    get answerBytes() {
      return gate.answerBytes();
    },
    get answersDropped() {
      return gate.answersDropped();
    },
    drain: gate.drain,
    shutdown,
  });
  if (g.Deno) return listenDeno(g.Deno, gate.fetch, opts, listening);
  if (g.Bun) {
    const idle = opts.bunIdleSeconds ?? BUN_IDLE_SECONDS;
    const server = g.Bun.serve({
      port: opts.port,
      hostname: opts.host,
      // Bun answers a body over this limit itself, with a bare 413 before the app sees the request, or by failing
      // the body stream mid-read; routes/body.ts enforces our own limit, with the contract's error, from the
      // Content-Length or while streaming, and Bun buffers none of a body the handler does not read.
      maxRequestBodySize: Number.MAX_SAFE_INTEGER,
      idleTimeout: idle,
      fetch: async (req, bun) => {
        // Bun's idle timeout also runs while a handler computes, and cuts the connection of a request that takes
        // longer (at most 255 s) than ZPRUNE_DEADLINE_MS allows: none while it is handled; the deadline bounds it.
        // Then back to the server's own, which closes idle keep-alive connections.
        setIdle(bun, req, 0);
        try {
          return await gate.fetch(withAbsoluteUrl(req, bun.port));
        } finally {
          setIdle(bun, req, idle);
        }
      },
    });
    // The gate counts a request until its handler returns; Bun's own count, until its answer is written to the last
    // byte (or its client left). The drain waits for both, as Deno's does: else the exit cut off a large answer on
    // its way to a slow client, and said that every request was answered.
    return Promise.resolve({
      port: server.port,
      get inFlight() {
        return Math.max(gate.inFlight(), server.pendingRequests);
      },
      get answerBytes() {
        return gate.answerBytes();
      },
      get answersDropped() {
        return gate.answersDropped();
      },
      async drain(refuse, limitMs) {
        const start = Date.now();
        if (!await gate.drain(refuse, limitMs)) return false;
        while (server.pendingRequests > 0) {
          if (Date.now() - start >= limitMs) return false;
          await new Promise((r) => setTimeout(r, 50));
        }
        return true;
      },
      shutdown: async () => await server.stop(false),
    });
  }
  return Promise.reject(new Error("zprune serves under Deno or Bun"));
}

/** How long a failed listener waits before it listens again. */
const RELISTEN_MS = 1000;
/** Failed listeners that shutdown() still shuts down, besides the one listening now. */
const KEPT_LISTENERS = 8;

/**
 * Deno.serve, kept listening: Deno's listener stops for good when `accept` fails (EMFILE, once a flood of idle
 * connections has taken every file descriptor; denoland/deno#10148), and its `finished` promise rejects, which
 * would end the process. Connections already open are still served; the port is listened on again after
 * RELISTEN_MS, and again until that succeeds; new clients are refused meanwhile.
 */
function listenDeno(
  D: typeof Deno,
  fetch: Fetch,
  opts: { port: number; host: string },
  listening: (port: number, shutdown: () => Promise<void>) => Listening,
): Promise<Listening> {
  const servers = new Set<Deno.HttpServer>();
  let stopping = false;
  const shutdown = async () => {
    stopping = true;
    // Every listener ever opened: a failed one may still be serving the connections it accepted.
    await Promise.all([...servers].map((s) => s.shutdown().catch(() => {})));
  };
  return new Promise((resolve, reject) => {
    let bound = opts.port; // the port actually bound (opts.port may be 0), listened on again after a failure
    let retrying = false; // one log line per run of failed attempts, not one a second
    const serve = (port: number, first: boolean) => {
      if (stopping) return;
      let server: Deno.HttpServer;
      try {
        server = D.serve({
          port,
          hostname: opts.host,
          onListen: (addr) => {
            bound = (addr as Deno.NetAddr).port;
            if (first) return resolve(listening(bound, shutdown));
            retrying = false;
            console.error(`zprune: listening on ${opts.host}:${port} again`);
          },
        }, fetch);
      } catch (err) {
        if (first) return reject(err);
        if (!retrying) {
          console.error(`zprune: cannot listen on ${opts.host}:${port} (${(err as Error).message}); retrying`);
        }
        retrying = true;
        setTimeout(() => serve(port, false), RELISTEN_MS);
        return;
      }
      servers.add(server);
      server.finished.catch((err: Error) => {
        if (stopping) return;
        // A failed listener is kept for shutdown while it may still serve the connections it had; a flood kept up
        // for hours fails one a second, so only the latest few are kept (the process's exit closes the rest).
        for (const old of servers) if (servers.size > KEPT_LISTENERS) servers.delete(old);
        console.error(
          `zprune: the listener on ${opts.host}:${bound} failed (${err.message}); ` +
            `listening again in ${RELISTEN_MS} ms`,
        );
        setTimeout(() => serve(bound, false), RELISTEN_MS);
      });
    };
    serve(opts.port, true);
  });
}

/**
 * A repeat of the first shutdown signal sooner than this is a copy forwarded by a parent process, not a second one.
 * Copies come within milliseconds; a second earns room for a loaded machine, and an operator's Ctrl-C a second later
 * still counts.
 */
const SIGNAL_ECHO_MS = 1000;

/**
 * Calls `first` on the first SIGINT or SIGTERM, `again` on every later one (an operator insisting) but its echo.
 * Returns the function that removes the listeners.
 */
export function onShutdownSignal(first: (signal: string) => void, again: (signal: string) => void): () => void {
  let seen: { signal: string; at: number } | null = null;
  const on = (s: string) => () => {
    if (!seen) {
      seen = { signal: s, at: performance.now() };
      return first(s);
    }
    // Ctrl-C reaches every process of the terminal's group, and `npm run` and `deno task` pass it on to their child as
    // well: the server gets the same signal twice within milliseconds. That copy is not a second Ctrl-C.
    if (s === seen.signal && performance.now() - seen.at < SIGNAL_ECHO_MS) return;
    again(s);
  };
  const listeners = (["SIGINT", "SIGTERM"] as const).map((s) => [s, on(s)] as const);
  for (const [s, listener] of listeners) {
    if (g.Deno) g.Deno.addSignalListener(s, listener);
    else g.process?.on(s, listener);
  }
  return () => {
    for (const [s, listener] of listeners) {
      if (g.Deno) g.Deno.removeSignalListener(s, listener);
      else g.process?.off(s, listener);
    }
  };
}

/** Ends the process. */
export function exit(code: number): never {
  if (g.Deno) g.Deno.exit(code);
  return g.process!.exit(code);
}
