/**
 * Load bench: `main.ts` as a subprocess on the CPU backend (loopback only), 16 concurrent clients x 200 requests
 * of mixed sizes (64x256 to 1024x1024), methods, patterns and dtypes, built from seeded random data. Every answer
 * is checked against its own request's mask from `pruneLayer` (the inline CPU path, computed here before the
 * load starts), name and shape: the point is that no answer carries another request's layer. Reports p50/p99
 * latency, throughput (req/s, MB/s) and the server's peak RSS (VmHWM), as JSON and a markdown table, and writes
 * the table into docs/PERFORMANCE.md under "## Load".
 *
 *   ./node_modules/.bin/deno run -A bench/load_bench.ts [--clients 16] [--requests 200] [--no-doc]
 *
 * `--backend webgpu` runs the server on the WebGPU backend instead (any adapter, lavapipe included), whose answers
 * must equal the same CPU masks: an isolation check of the GPU worker's queue under concurrent load. It never writes
 * the document (a software adapter's speed means nothing).
 */
import { fileURLToPath } from "node:url";
import { cpus } from "node:os";
import {
  DEFAULT_EXPONENT,
  type DType,
  DTYPE_BYTES,
  type Method,
  parsePattern,
  type PruneResponse,
} from "../contract/api.ts";
import { decodeMsgpack, encodeMsgpack } from "../contract/wire.ts";
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { pruneLayer } from "../prune/prune_layer.ts";
import { randomLayer, rng } from "../tests/_random.ts";

const ROOT = new URL("../", import.meta.url);
const args = Deno.args;
const opt = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const CLIENTS = opt("clients", 16);
const PER_CLIENT = opt("requests", 200);
const DISTINCT = opt("distinct", 96);
const TIME_LIMIT_MS = opt("time-limit-s", 420) * 1000;
const BACKEND = (args.includes("--backend") ? args[args.indexOf("--backend") + 1] : undefined) ?? "cpu";
if (BACKEND !== "cpu" && BACKEND !== "webgpu") throw new Error(`--backend ${BACKEND}: expected cpu or webgpu`);
const WRITE_DOC = !args.includes("--no-doc") && BACKEND === "cpu";

// ---- requests and their expected answers -------------------------------------------------------------------

const SHAPES: Array<[number, number]> = [
  [64, 256],
  [128, 512],
  [256, 256],
  [256, 1024],
  [512, 512],
  [512, 1024],
  [1024, 512],
  [1024, 1024],
];
const METHODS: Method[] = ["zpruner", "wanda", "ria", "magnitude"];
const PATTERNS = ["layer", "row", "2:4", "4:8"];
const DTYPES: DType[] = ["f32", "f16", "bf16"];

interface Spec {
  body: Uint8Array<ArrayBuffer>;
  layers: Array<{ name: string; rows: number; cols: number; mask: Uint8Array; pruned: number }>;
  elements: number;
}

async function buildSpecs(): Promise<Spec[]> {
  const rand = rng(0x10ad);
  const specs: Spec[] = [];
  for (let s = 0; s < DISTINCT; s++) {
    const method = METHODS[s % METHODS.length]!;
    const pattern = PATTERNS[Math.floor(s / METHODS.length) % PATTERNS.length]!;
    const dtype = DTYPES[Math.floor(rand() * DTYPES.length)]!;
    const sparsity = Math.round((0.3 + rand() * 0.4) * 100) / 100;
    const nLayers = rand() < 0.25 ? 2 : 1;
    const reqLayers = [], expected: Spec["layers"] = [];
    let elements = 0;
    const params: PruneParams = {
      method,
      pattern: parsePattern(pattern, sparsity),
      exponent: DEFAULT_EXPONENT[method],
      returnWeight: false,
      returnScore: false,
    };
    for (let l = 0; l < nLayers; l++) {
      const [rows, cols] = SHAPES[Math.floor(rand() * SHAPES.length)]!;
      const { weight, actNormSq } = randomLayer(rand, { rows, cols, dtype });
      const name = `req${s}.layer${l}.${method}.${pattern}.${dtype}.${rows}x${cols}`;
      const job: LayerJob = { name, rows, cols, dtype, weight, actNormSq };
      const out = await pruneLayer(params, job);
      expected.push({ name, rows, cols, mask: out.mask, pruned: out.stats.pruned });
      elements += rows * cols;
      reqLayers.push({
        name,
        weight: { dtype, shape: [rows, cols], data: weight },
        actNormSq: { dtype: "f32", shape: [cols], data: new Uint8Array(actNormSq.buffer) },
      });
      if (weight.byteLength !== rows * cols * DTYPE_BYTES[dtype]) throw new Error("fixture size");
    }
    const body = encodeMsgpack({ method, pattern, sparsity, layers: reqLayers });
    specs.push({ body, layers: expected, elements });
  }
  return specs;
}

// ---- the server ------------------------------------------------------------------------------------------

async function startServer(): Promise<{ url: string; pid: number; child: Deno.ChildProcess; stop(): Promise<number> }> {
  const child = new Deno.Command(fileURLToPath(new URL("node_modules/.bin/deno", ROOT)), {
    args: ["run", "-A", "main.ts"],
    cwd: fileURLToPath(ROOT),
    env: { PORT: "0", HOST: "127.0.0.1", ZPRUNE_BACKEND: BACKEND, ZPRUNE_LOG: "0", ZPRUNE_TOKEN: "" },
    stdout: "inherit", // the request log, off here
    stderr: "piped", // the startup line
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = Date.now() + 60_000;
  let m: RegExpExecArray | null = null;
  while (!(m = /zprune listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(text)) && Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  if (!m) throw new Error(`the server did not start: ${text}`);
  // Pass the rest of stderr on (drain messages, errors), so the child never blocks on a full pipe.
  (async () => {
    const enc = new TextEncoder();
    for (let r = await reader.read(); !r.done; r = await reader.read()) Deno.stderr.writeSync(enc.encode(r.value));
  })();
  return {
    url: m[1]!,
    pid: child.pid,
    child,
    async stop() {
      child.kill("SIGTERM");
      return (await child.status).code;
    },
  };
}

function vmHWM(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  return m ? Number(m[1]) * 1024 : NaN;
}

function loadavg(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

// ---- the load ------------------------------------------------------------------------------------------------

interface Tally {
  latencies: number[];
  status: Record<string, number>;
  mismatches: string[];
  bytesIn: number;
  bytesOut: number;
  elements: number;
  failures: string[];
}

function check(spec: Spec, bytes: Uint8Array): string | null {
  const body = decodeMsgpack(bytes) as PruneResponse;
  if (body.backend !== BACKEND) return `answered by the ${body.backend} backend, expected ${BACKEND}`;
  if (body.layers.length !== spec.layers.length) return `${body.layers.length} layers, expected ${spec.layers.length}`;
  for (let i = 0; i < spec.layers.length; i++) {
    const got = body.layers[i]!, want = spec.layers[i]!;
    if (got.name !== want.name) return `layer ${i} is "${got.name}", expected "${want.name}"`;
    if (got.shape[0] !== want.rows || got.shape[1] !== want.cols) return `${want.name}: shape ${got.shape}`;
    if (got.stats.pruned !== want.pruned) return `${want.name}: pruned ${got.stats.pruned}, expected ${want.pruned}`;
    if (got.mask.length !== want.mask.length) return `${want.name}: mask of ${got.mask.length} bytes`;
    for (let b = 0; b < want.mask.length; b++) {
      if (got.mask[b] !== want.mask[b]) return `${want.name}: mask differs at byte ${b}`;
    }
  }
  return null;
}

async function client(url: string, specs: Spec[], seed: number, tally: Tally, stopAt: number): Promise<number> {
  const rand = rng(seed);
  let sent = 0;
  for (let r = 0; r < PER_CLIENT && Date.now() < stopAt; r++) {
    const spec = specs[Math.floor(rand() * specs.length)]!;
    const t0 = performance.now();
    try {
      const res = await fetch(`${url}/v1/prune`, {
        method: "POST",
        headers: { "content-type": "application/msgpack" },
        body: spec.body,
        signal: AbortSignal.timeout(120_000),
      });
      const bytes = new Uint8Array(await res.arrayBuffer());
      const ms = performance.now() - t0;
      sent++;
      tally.status[res.status] = (tally.status[res.status] ?? 0) + 1;
      tally.bytesIn += spec.body.byteLength;
      tally.bytesOut += bytes.byteLength;
      if (res.status !== 200) {
        tally.failures.push(`${res.status}: ${new TextDecoder().decode(bytes).slice(0, 200)}`);
        continue;
      }
      tally.latencies.push(ms);
      tally.elements += spec.elements;
      const problem = check(spec, bytes);
      if (problem) tally.mismatches.push(problem);
    } catch (err) {
      sent++;
      tally.status.error = (tally.status.error ?? 0) + 1;
      tally.failures.push(err instanceof Error ? `${err.name}: ${err.message}` : String(err));
    }
  }
  return sent;
}

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

// ---- main ----------------------------------------------------------------------------------------------------

const loadBefore = loadavg();
const tBuild = performance.now();
const specs = await buildSpecs();
const buildMs = performance.now() - tBuild;
const server = await startServer();
const rssIdle = vmHWM(server.pid);
const tally: Tally = { latencies: [], status: {}, mismatches: [], bytesIn: 0, bytesOut: 0, elements: 0, failures: [] };
// Warm-up (JIT, worker pool): one of each shape class, not counted.
for (const spec of specs.slice(0, 8)) {
  await (await fetch(`${server.url}/v1/prune`, {
    method: "POST",
    headers: { "content-type": "application/msgpack" },
    body: spec.body,
  })).arrayBuffer();
}

const t0 = performance.now();
const stopAt = Date.now() + TIME_LIMIT_MS;
const sent = await Promise.all(
  Array.from({ length: CLIENTS }, (_, c) => client(server.url, specs, 1000 + c, tally, stopAt)),
);
const wallS = (performance.now() - t0) / 1000;
const rssPeak = vmHWM(server.pid);
const metrics = await (await fetch(`${server.url}/metrics`)).text();
const exitCode = await server.stop();
const loadAfter = loadavg();

const lat = [...tally.latencies].sort((a, b) => a - b);
const total = sent.reduce((a, b) => a + b, 0);
const fiveXX = Object.entries(tally.status).filter(([k]) => k.startsWith("5")).reduce((a, [, v]) => a + v, 0);
const summary = {
  machine: `${cpus()[0]?.model ?? "unknown CPU"} (${cpus().length} cores), ${
    Math.round(Deno.systemMemoryInfo().total / 2 ** 30)
  } GiB`,
  deno: Deno.version.deno,
  server: BACKEND === "cpu"
    ? "main.ts subprocess, CPU backend, default settings (ZPRUNE_CONCURRENCY=2, one worker per core), log off"
    : "main.ts subprocess, WebGPU backend (ZPRUNE_BACKEND=webgpu), default settings otherwise, log off",
  clients: CLIENTS,
  requestsPerClient: PER_CLIENT,
  requests: total,
  completedAll: total === CLIENTS * PER_CLIENT,
  distinctRequests: specs.length,
  wallSeconds: Math.round(wallS * 100) / 100,
  status: tally.status,
  mismatches: tally.mismatches.length,
  fiveXX,
  latencyMs: {
    p50: Math.round(quantile(lat, 0.5) * 10) / 10,
    p90: Math.round(quantile(lat, 0.9) * 10) / 10,
    p99: Math.round(quantile(lat, 0.99) * 10) / 10,
    max: Math.round((lat.at(-1) ?? NaN) * 10) / 10,
  },
  throughput: {
    requestsPerSecond: Math.round((total / wallS) * 10) / 10,
    megabytesPerSecondIn: Math.round((tally.bytesIn / 1e6 / wallS) * 10) / 10,
    megabytesPerSecondInOut: Math.round(((tally.bytesIn + tally.bytesOut) / 1e6 / wallS) * 10) / 10,
    elementsPerSecond: 0, // of the answered requests
  },
  bytes: { in: tally.bytesIn, out: tally.bytesOut },
  serverRssBytes: { afterStart: rssIdle, peak: rssPeak },
  loadAverage: { before: loadBefore, after: loadAfter },
  serverExitCode: exitCode,
  oracleBuildMs: Math.round(buildMs),
  firstProblems: [...tally.mismatches, ...tally.failures].slice(0, 5),
  metricsRequests200: Number(
    /zprune_requests_total\{route="\/v1\/prune",status="200"\} (\d+)/.exec(metrics)?.[1] ?? NaN,
  ),
};
const meanElements = specs.reduce((a, s) => a + s.elements, 0) / specs.length;
summary.throughput.elementsPerSecond = Math.round(tally.elements / wallS);

console.log(JSON.stringify(summary, null, 2));

const mb = (b: number) => (b / 2 ** 20).toFixed(0);
const table = [
  "| clients x requests | distinct requests | wall (s) | req/s | MB/s in (in+out) | M elements/s | p50 (ms) " +
  "| p90 (ms) | p99 (ms) | max (ms) | mismatches | 5xx | other non-200 | server peak RSS (MiB) |",
  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  `| ${CLIENTS} x ${PER_CLIENT} (${total} sent) | ${specs.length} | ${summary.wallSeconds} ` +
  `| ${summary.throughput.requestsPerSecond} | ${summary.throughput.megabytesPerSecondIn} ` +
  `(${summary.throughput.megabytesPerSecondInOut}) | ${(summary.throughput.elementsPerSecond / 1e6).toFixed(1)} ` +
  `| ${summary.latencyMs.p50} | ${summary.latencyMs.p90} | ${summary.latencyMs.p99} | ${summary.latencyMs.max} ` +
  `| ${tally.mismatches.length} | ${fiveXX} | ${total - (tally.status["200"] ?? 0) - fiveXX} ` +
  `| ${mb(rssPeak)} (${mb(rssIdle)} after start) |`,
].join("\n");
console.log("\n" + table);

if (WRITE_DOC) {
  const section = `## Load

\`./node_modules/.bin/deno run -A bench/load_bench.ts\` (it rewrites this section with its results; \`--no-doc\`
prints them only): \`main.ts\` as a subprocess on the CPU backend with its default settings
(\`ZPRUNE_CONCURRENCY=2\`, one worker per core; request log off), ${CLIENTS} concurrent clients x ${PER_CLIENT}
requests over loopback. The requests are drawn at random (seeded) from ${specs.length} distinct ones: one or two layers
of 64x256 to 1024x1024 (mean ${
    (meanElements / 1e6).toFixed(2)
  } M elements per request), every method, \`layer\`/\`row\`/\`2:4\`/\`4:8\`,
f32/f16/bf16. Every answer is compared with its own request's expected mask (from \`pruneLayer\`, the inline CPU path,
computed before the load), layer names, shapes and pruned counts: a mismatch would mean an answer carried another
request's layer or a wrong mask. Latency is per request at the client, from sending to the last byte of the answer.
Peak RSS is the server process's VmHWM (its worker threads included).

${table}

Machine: ${summary.machine}, Deno ${summary.deno}. Load average (1, 5, 15 min) before the run ${loadBefore}, after
${loadAfter}${
    // The 1-minute average still carries the last minute's commands; above half the cores means real competition.
    Number(loadBefore.split(" ")[0]) > cpus().length / 2
      ? ": other work was running on the machine at the same time, so the absolute figures are pessimistic"
      : ""}. Measured ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC.
`;
  const path = new URL("docs/PERFORMANCE.md", ROOT);
  let doc = "";
  try {
    doc = Deno.readTextFileSync(path); // read just before writing: other sections may have changed meanwhile
  } catch { /* absent: created below */ }
  if (!doc) doc = "# Performance\n";
  const start = doc.search(/^## Load\s*$/m);
  if (start >= 0) {
    const rest = doc.slice(start + 1);
    const next = rest.search(/^## /m);
    doc = doc.slice(0, start) + section + (next >= 0 ? "\n" + rest.slice(next) : "");
  } else doc = doc.trimEnd() + "\n\n" + section;
  Deno.writeTextFileSync(path, doc);
  // The project's formatter aligns the table (deno task check runs fmt --check over docs/ too).
  await new Deno.Command(fileURLToPath(new URL("node_modules/.bin/deno", ROOT)), {
    args: ["fmt", "--quiet", fileURLToPath(path)],
    cwd: fileURLToPath(ROOT),
  }).output();
  console.log(`\nwrote the "## Load" section of docs/PERFORMANCE.md`);
}

if (tally.mismatches.length || fiveXX || !summary.completedAll) Deno.exit(1);
