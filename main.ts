/**
 * zprune's entry point: configuration from the environment, the backend, the app, one startup line, and a
 * graceful shutdown (stop accepting, finish in-flight work, release the backend) on SIGINT or SIGTERM.
 *
 *   deno task serve        # or: bun main.ts  (CPU backend)
 */
import { loadConfig } from "./config.ts";
import { Metrics } from "./observe/metrics.ts";
import { WorkQueue } from "./prune/queue.ts";
import { createApp } from "./routes/app.ts";
import { chooseBackend } from "./runtime/choose_backend.ts";
import { exit, getEnv, listen, onShutdownSignal, runtimeName } from "./runtime/host.ts";

const config = loadConfig(getEnv);
const backend = await chooseBackend(config.backend);
const queue = new WorkQueue({
  concurrency: config.concurrency,
  maxQueue: config.maxQueue,
  memoryBudget: config.memoryBudgetBytes,
});
const app = createApp({
  backend,
  config,
  queue,
  metrics: new Metrics(),
  log: config.log ? (entry) => console.log(JSON.stringify(entry)) : undefined,
});
const server = await listen(app.fetch, { port: config.port, host: config.host, maxBodyBytes: config.maxBodyBytes });
const shownHost = config.host === "0.0.0.0"
  ? "127.0.0.1"
  : config.host.includes(":")
  ? `[${config.host}]`
  : config.host;
console.log(
  `zprune listening on http://${shownHost}:${server.port} backend=${backend.kind} device="${backend.device}" runtime=${runtimeName}`,
);

onShutdownSignal(async (signal) => {
  console.log(`zprune: ${signal}, draining ${queue.running + queue.depth} request(s)`);
  await server.shutdown();
  await queue.drained();
  await backend.close();
  exit(0);
});
