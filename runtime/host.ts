/**
 * The runtime seam: the few host calls the server needs (environment, listening, signals, exit), for Deno and
 * Bun. Everything else in zprune uses web-standard APIs, so this file is the only place that names a runtime.
 */

type Fetch = (req: Request) => Response | Promise<Response>;

interface BunServer {
  port: number;
  stop(closeActiveConnections?: boolean): Promise<void> | void;
}
interface BunGlobal {
  serve(
    opts: { port: number; hostname: string; fetch: Fetch; maxRequestBodySize?: number; idleTimeout?: number },
  ): BunServer;
}
interface ProcessGlobal {
  env: Record<string, string | undefined>;
  on(signal: string, cb: () => void): void;
  exit(code?: number): never;
}

const g = globalThis as unknown as { Deno?: typeof Deno; Bun?: BunGlobal; process?: ProcessGlobal };

/** Which runtime runs this process. */
export const runtimeName: "deno" | "bun" | "other" = g.Deno ? "deno" : g.Bun ? "bun" : "other";

/** Reads an environment variable. */
export function getEnv(name: string): string | undefined {
  if (g.Deno) return g.Deno.env.get(name);
  return g.process?.env[name];
}

/** A listening server. */
export interface Listening {
  /** The bound port (useful with port 0). */
  port: number;
  /** Stops accepting connections and resolves when in-flight requests have finished. */
  shutdown(): Promise<void>;
}

/** Serves `fetch` on host:port. */
export function listen(fetch: Fetch, opts: { port: number; host: string; maxBodyBytes: number }): Promise<Listening> {
  if (g.Deno) {
    const D = g.Deno;
    return new Promise((resolve) => {
      const server = D.serve({
        port: opts.port,
        hostname: opts.host,
        onListen: (addr) => resolve({ port: (addr as Deno.NetAddr).port, shutdown: () => server.shutdown() }),
      }, fetch);
    });
  }
  if (g.Bun) {
    // Bun refuses bodies over 128 MiB unless told otherwise; our own limit is enforced in routes/body.ts.
    const server = g.Bun.serve({
      port: opts.port,
      hostname: opts.host,
      fetch,
      maxRequestBodySize: opts.maxBodyBytes + 1,
      idleTimeout: 255,
    });
    return Promise.resolve({ port: server.port, shutdown: async () => await server.stop(false) });
  }
  return Promise.reject(new Error("zprune serves under Deno or Bun"));
}

/** Calls `cb` once on SIGINT or SIGTERM. */
export function onShutdownSignal(cb: (signal: string) => void): void {
  let called = false;
  const once = (s: string) => () => {
    if (!called) {
      called = true;
      cb(s);
    }
  };
  for (const s of ["SIGINT", "SIGTERM"] as const) {
    if (g.Deno) g.Deno.addSignalListener(s, once(s));
    else g.process?.on(s, once(s));
  }
}

/** Ends the process. */
export function exit(code: number): never {
  if (g.Deno) g.Deno.exit(code);
  return g.process!.exit(code);
}
