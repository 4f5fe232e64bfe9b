/**
 * Test helpers: a real listener on a free loopback port serving `createApp`, the golden fixtures, and small helpers
 * the listener tests share (random layers, raw writes, mask and metrics reads).
 */
import assert from "node:assert/strict";
import type { PruneResponse } from "../contract/api.ts";
import { decodeMsgpack } from "../contract/wire.ts";
import { rng } from "./_random.ts";
import { type AppDeps, createApp } from "../routes/app.ts";
import type { Backend } from "../prune/backend.ts";

/** A running test server. */
export interface TestServer {
  url: string;
  close(): Promise<void>;
}

/** Serves `createApp(deps)` on 127.0.0.1 with an OS-chosen port. */
export function startServer(deps: AppDeps): Promise<TestServer> {
  const app = createApp(deps);
  return new Promise((resolve) => {
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
    resolve({ url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() });
  });
}

/** A golden case: the request body and its expected answer. */
export interface Golden {
  name: string;
  request: Uint8Array;
  expected: {
    name: string;
    shape: [number, number];
    mask: Uint8Array;
    pruned: number;
    total: number;
    ambiguous: Uint8Array;
    ambiguousCount: number;
    alpha?: number;
  };
}

const GOLDEN_DIR = new URL("./fixtures/golden/", import.meta.url);

/** Every golden case in tests/fixtures/golden, by name. */
export function goldenCases(): Golden[] {
  return [...Deno.readDirSync(GOLDEN_DIR)]
    .map((e) => e.name)
    .filter((n) => n.endsWith(".request.msgpack"))
    .map((n) => n.replace(".request.msgpack", ""))
    .sort()
    .map(goldenCase);
}

/** The golden case `name` (its two files only); throws when tests/fixtures/golden has no such case. */
export function goldenCase(name: string): Golden {
  return {
    name,
    request: Deno.readFileSync(new URL(`${name}.request.msgpack`, GOLDEN_DIR)),
    expected: decodeMsgpack(Deno.readFileSync(new URL(`${name}.expected.msgpack`, GOLDEN_DIR))) as Golden["expected"],
  };
}

/** Problems of `mask` against a golden answer: bit count and every unambiguous position. */
export function goldenProblems(mask: Uint8Array, expected: Golden["expected"]): string[] {
  const problems: string[] = [];
  let count = 0;
  for (let i = 0; i < expected.total; i++) count += (mask[i >> 3]! >> (i & 7)) & 1;
  if (count !== expected.pruned) problems.push(`${count} bits set, expected ${expected.pruned}`);
  if (mask.length !== expected.mask.length) {
    problems.push(`mask has ${mask.length} bytes, expected ${expected.mask.length}`);
  }
  for (let b = 0; b < expected.mask.length && problems.length < 5; b++) {
    const diff = (mask[b]! ^ expected.mask[b]!) & ~expected.ambiguous[b]!;
    if (diff) problems.push(`byte ${b}: got ${mask[b]}, expected ${expected.mask[b]} (unambiguous bits ${diff})`);
  }
  return problems;
}

/** POSTs a msgpack body to /v1/prune. */
export function postPrune(url: string, body: Uint8Array, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${url}/v1/prune`, {
    method: "POST",
    headers: { "content-type": "application/msgpack", ...headers },
    body: body as Uint8Array<ArrayBuffer>,
  });
}

/** A backend that is `inner` except for `prune`, which a test supplies (to hold, count or watch calls). */
export function withPrune(inner: Backend, prune: Backend["prune"]): Backend {
  return {
    kind: inner.kind,
    device: inner.device,
    get restarts() {
      return inner.restarts;
    },
    get exactPathLayers() {
      return inner.exactPathLayers;
    },
    prune,
    close: () => inner.close(),
  };
}

/** A random f32 layer with activations, as a request layer. */
export function f32Layer(name: string, rows: number, cols: number, seed: number) {
  const rand = rng(seed);
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = (rand() * 2 - 1) * 0.05;
  const a = new Float32Array(cols);
  for (let i = 0; i < cols; i++) a[i] = rand() * 10 + 0.01;
  return {
    name,
    weight: { dtype: "f32", shape: [rows, cols], data: new Uint8Array(w.buffer) },
    actNormSq: { dtype: "f32", shape: [cols], data: new Uint8Array(a.buffer) },
  };
}

/** The number of set bits among the first `n` of a packed mask. */
export function popcount(mask: Uint8Array, n: number): number {
  let c = 0;
  for (let i = 0; i < n; i++) c += (mask[i >> 3]! >> (i & 7)) & 1;
  return c;
}

/** Posts golden case `name` to `url` and asserts its answer is exactly the golden mask. */
export async function assertGoldenExact(url: string, name = "zpruner-layer-f16"): Promise<void> {
  const g = goldenCase(name);
  const res = await postPrune(url, g.request);
  assert.equal(res.status, 200, name);
  const body = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
  assert.equal(body.layers[0]!.name, g.expected.name);
  assert.deepEqual(goldenProblems(body.layers[0]!.mask, g.expected), [], name);
}

/**
 * `p`, or a failure saying what never came if it has not settled within `ms`. A bound against hanging forever
 * when the server behaves otherwise than the test expects, generous enough never to judge speed.
 */
export async function within<T>(p: Promise<T>, what: string, ms = 60_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms / 1000} s, giving up`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Writes all of `bytes` to a raw connection. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let o = 0; o < bytes.length;) o += await conn.write(bytes.subarray(o));
}

/** The value of an unlabelled gauge in Prometheus text. */
export async function gauge(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  assert.ok(m, `${name} in /metrics`);
  return Number(m[1]);
}

/**
 * Runs the Deno script `module` with `args` (under `-A` and any `flags`) in a child process of its own, so that its
 * memory is measured alone, and returns the JSON of the last line it prints; throws with its output unless it exits 0.
 */
export async function childJson<T>(module: URL, args: string[], flags: string[] = []): Promise<T> {
  const res = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...flags, module.pathname, ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const out = new TextDecoder().decode(res.stdout);
  if (res.code !== 0) {
    throw new Error(`${module.pathname} exited ${res.code}: ${out}${new TextDecoder().decode(res.stderr)}`);
  }
  return JSON.parse(out.trim().split("\n").at(-1)!) as T;
}
