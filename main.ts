/**
 * zprune's entry point: configuration from the environment, the backend, the app, one startup line on stderr (stdout
 * is the JSON request log's alone), and a graceful shutdown on SIGINT or SIGTERM: new requests are answered 503
 * (but GET /metrics, and CORS preflights where ZPRUNE_CORS_ORIGINS is set: its middleware answers them 204 first)
 * while those in flight (uploads included) finish, for at most the request deadline and a margin; then the server
 * closes, the backend is released, and the process exits 0. A second signal, or the drain outliving its limit, exits
 * at once with status 1.
 *
 *   deno task serve        # or: bun --no-env-file main.ts  (CPU backend; Bun would read a .env file otherwise)
 */
import { loadConfig } from "./config.ts";
import { Metrics } from "./observe/metrics.ts";
import { WorkQueue } from "./prune/queue.ts";
import { createApp } from "./routes/app.ts";
import { chooseBackend } from "./runtime/choose_backend.ts";
import { drainServer } from "./runtime/drain.ts";
import { args, exit, getEnv, listen, onShutdownSignal, runtimeName } from "./runtime/host.ts";

/** Runs a startup step; a failure ends the process with one line saying what failed, not a stack trace. */
async function startup<T>(what: string, step: () => T | Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (e) {
    console.error(`zprune: ${what}: ${e instanceof Error ? e.message : e}`);
    return exit(1);
  }
}

/**
 * The drain's limit past the request deadline: a request in flight ends by its deadline (503 at the latest), and
 * this is the time to answer it.
 */
const DRAIN_MARGIN_MS = 5_000;
/** The drain's limit without a deadline (ZPRUNE_DEADLINE_MS=0): the default deadline's ten minutes. */
const DRAIN_CAP_MS = 600_000;

// Registered first: a process without handlers (the container's PID 1, say) would ignore SIGTERM while the
// backend starts. Before the server listens there is nothing to drain, only a backend to release once there is one.
let release = (): void | Promise<void> => {};
let shutdown = async (signal: string): Promise<void> => {
  console.error(`zprune: ${signal} before listening; exit 0`);
  await release();
  exit(0);
};
let inFlight = () => 0;
onShutdownSignal((signal) => shutdown(signal), (signal) => {
  console.error(`zprune: ${signal} again, exiting at once with ${inFlight()} request(s) unfinished; exit 1`);
  exit(1);
});

if (args.length > 0) {
  console.error(
    `zprune: main.ts takes no arguments (got ${args.join(" ")}); it is configured by environment variables`,
  );
  exit(2);
}
const config = await startup("bad configuration", () => loadConfig(getEnv));
const backend = await startup(`no ${config.backend} backend`, () => chooseBackend(config.backend));
const queue = new WorkQueue({
  concurrency: config.concurrency,
  maxQueue: config.maxQueue,
  memoryBudget: config.memoryBudgetBytes,
});
// stdout carries the request log alone, one JSON object per line; everything else goes to stderr.
const log = config.log ? (entry: Record<string, unknown>) => console.log(JSON.stringify(entry)) : undefined;
let draining = false;
let answerBytes = () => 0;
let answersDropped = () => 0;
const app = createApp({
  backend,
  config,
  queue,
  metrics: new Metrics(),
  log,
  draining: () => draining,
  answerBytes: () => answerBytes(),
  answersDropped: () => answersDropped(),
});
release = () => backend.close();
const server = await startup(
  `cannot listen on ${config.host}:${config.port}`,
  () => listen(app.fetch, { port: config.port, host: config.host }),
);
inFlight = () => server.inFlight;
answerBytes = () => server.answerBytes;
answersDropped = () => server.answersDropped;
shutdown = drainAndExit;
console.error(
  `zprune listening on http://${urlHost(config.host)}:${server.port} backend=${backend.kind} ` +
    `device="${backend.device}" runtime=${runtimeName} auth=${config.token ? "on" : "off"}`,
);

/** The host as a URL writes it: an unspecified address as a loopback one to try it on, IPv6 in brackets. */
function urlHost(host: string): string {
  if (host === "0.0.0.0") return "127.0.0.1";
  if (host === "::" || host === "[::]") return "[::1]";
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

/** Drains the requests in flight, closes the server and the backend, and exits (1 past the drain's limit). */
async function drainAndExit(signal: string): Promise<void> {
  // At most the longest timer (2^31 - 1 ms): past it setTimeout fires at once, and the deadline may be that long.
  const limitMs = Math.min(config.deadlineMs > 0 ? config.deadlineMs + DRAIN_MARGIN_MS : DRAIN_CAP_MS, 2 ** 31 - 1);
  draining = true; // new requests: 503 from the app (GET /metrics aside)
  // Its lines are said before the backend closes (the WebGPU one may wait on its worker): a failing close loses none.
  if (await drainServer(server, app.fetch, signal, limitMs, console.error) === 1) exit(1);
  // Work a request gave up on (a layer still on the GPU after its deadline) ends with the backend.
  await backend.close();
  exit(0);
}
