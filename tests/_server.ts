/** Test helpers: a real listener on a free loopback port serving `createApp`, and the golden fixtures. */
import { decodeMsgpack } from "../contract/wire.ts";
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
