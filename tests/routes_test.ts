/**
 * The routes beside /v1/prune, and /v1/prune's optional parts: several layers in order, `return` of weights
 * and scores, `inputs` in place of actNormSq, and concurrent requests that must not change each other's answers.
 */
import assert from "node:assert/strict";
import type { InfoResponse, PruneResponse } from "../contract/api.ts";
import { decodeMsgpack, encodeMsgpack } from "../contract/wire.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { createApp } from "../routes/app.ts";
import { pruneLayer } from "../prune/prune_layer.ts";
import {
  childJson,
  f32Layer,
  goldenCase,
  goldenCases,
  goldenProblems,
  postPrune,
  startServer,
  within,
  withPrune,
} from "./_server.ts";
import { randomLayer, rng } from "./_random.ts";
import { compareWithOracle, oracleDecode, oracleScores, oracleSelect } from "./_oracle.ts";

async function prune(url: string, body: unknown): Promise<PruneResponse> {
  const res = await postPrune(url, encodeMsgpack(body));
  assert.equal(res.status, 200, await res.clone().text());
  return decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
}

Deno.test("GET /v1/info, /openapi.json and /metrics describe the server", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({ backend, config: { maxBodyBytes: 12345, maxLayerElements: 999 } });
  try {
    const info = await (await fetch(`${server.url}/v1/info`)).json() as InfoResponse;
    assert.equal(info.backend, "cpu");
    assert.equal(info.device, backend.device);
    assert.equal(info.limits.maxBodyBytes, 12345);
    assert.equal(info.limits.maxLayerElements, 999);
    // The bounds the schema and the msgpack scan enforce are the ones listed (checked against the server below).
    assert.equal(info.limits.maxLayers, 4096);
    assert.deepEqual(info.limits.exponent, { min: 0, max: 64 });
    assert.deepEqual(info.limits.msgpack, { maxDepth: 32, maxValues: 2 ** 20 });
    assert.equal(typeof info.limits.memoryBudgetBytes, "number");
    assert.deepEqual([...info.methods].sort(), ["magnitude", "ria", "wanda", "zpruner"]);
    assert.deepEqual([...info.dtypes].sort(), ["bf16", "f16", "f32"]);
    assert.ok(info.patterns.includes("N:M") && info.patterns.includes("layer") && info.patterns.includes("row"));
    const doc = await (await fetch(`${server.url}/openapi.json`)).json();
    assert.equal(doc.openapi, "3.1.0");
    for (const p of ["/v1/prune", "/healthz", "/v1/info", "/metrics", "/openapi.json"]) assert.ok(doc.paths[p], p);
    // Every code of the contract's error table (docs/API.md) is listed under its status, plus 500 internal.
    const responses = doc.paths["/v1/prune"].post.responses;
    const apiMd = await Deno.readTextFile(new URL("../docs/API.md", import.meta.url));
    const table = [...apiMd.matchAll(/^\| (\d{3}) \| ([a-z_]+) \|/gm)].map((m) => [m[1]!, m[2]!] as const);
    assert.ok(table.length >= 10, "API.md's error table was found");
    for (const [status, code] of [...table, ["500", "internal"] as const]) {
      assert.match(responses[status]?.description ?? "", new RegExp(`\\b${code}\\b`), `${status} ${code}`);
    }
    assert.ok(!JSON.stringify(responses).includes("not_found"), "/v1/prune never answers not_found");
    // A client that half-closes mid-body does receive its 499 (tests/errors_test.ts): the document lists it.
    assert.match(responses["499"]?.description ?? "", /client_closed_request/);
    assert.match(responses["429"].description, /Retry-After/);
    // API.md: "The server may add fields": no schema in the document may forbid them.
    assert.ok(!JSON.stringify(doc).includes('"additionalProperties":false'), "a schema forbids added fields");
    assert.ok(JSON.stringify(doc.components.schemas.PruneResponse).includes('"rowSparsity"'));
    const reqSchema = doc.components.schemas.PruneRequest;
    assert.deepEqual(reqSchema.required, ["layers"]);
    assert.deepEqual(reqSchema.properties.method.anyOf[0].enum, ["zpruner", "wanda", "ria", "magnitude"]);
    const g = goldenCase("tiny-zpruner-layer-f32");
    await (await postPrune(server.url, g.request)).arrayBuffer();
    const text = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(text, /^# TYPE zprune_requests_total counter$/m);
    assert.match(text, /^zprune_requests_total\{route="\/v1\/prune",status="200"\} 1$/m);
    assert.match(text, /^zprune_request_duration_seconds_bucket\{le="\+Inf",route="\/v1\/prune",status="200"\} 1$/m);
    assert.match(text, new RegExp(`^zprune_bytes_in_total ${g.request.byteLength}$`, "m"));
    assert.match(text, /^zprune_bytes_out_total [1-9][0-9]*$/m);
    assert.match(text, /^zprune_compute_seconds_total [0-9.e-]+$/m);
    assert.match(text, /^zprune_queue_depth 0$/m);
    assert.match(text, /^zprune_backend_restarts_total 0$/m);
    assert.match(text, /^# TYPE zprune_exact_path_layers_total counter$/m);
    assert.match(text, /^zprune_exact_path_layers_total 0$/m);
    assert.match(text, /^# TYPE zprune_answers_dropped_total counter$/m);
    assert.match(text, /^zprune_answers_dropped_total 0$/m);
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("/metrics: zprune_answers_dropped_total's help gives the size and the wait the README gives", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const said = /An answer over (\d+) KiB [^.]*? no part of it for (\d+) s/.exec(readme.replace(/\s+/g, " "));
  assert.ok(said, "the README says when an answer is dropped");
  const backend = createCpuBackend({ threads: 0 });
  try {
    const text = await (await createApp({ backend, config: { log: false } }).request("/metrics")).text();
    const help = /^# HELP zprune_answers_dropped_total (.*)$/m.exec(text)?.[1] ?? "";
    assert.ok(help.includes(`over ${said[1]} KiB`) && help.includes(`for ${said[2]} s`), help);
  } finally {
    await backend.close();
  }
});

Deno.test("/metrics: zprune_answers_dropped_total is the listener's count at each scrape", async () => {
  const backend = createCpuBackend({ threads: 0 });
  let dropped = 0;
  const app = createApp({ backend, config: { log: false }, answersDropped: () => dropped });
  const scrape = async () =>
    Number(/^zprune_answers_dropped_total (\d+)$/m.exec(await (await app.request("/metrics")).text())?.[1]);
  try {
    assert.equal(await scrape(), 0);
    dropped = 3;
    assert.equal(await scrape(), 3);
  } finally {
    await backend.close();
  }
});

Deno.test("/openapi.json lists the 401 and 503 each route answers, as the app answers them", async () => {
  const backend = createCpuBackend({ threads: 0 });
  let draining = false;
  const app = createApp({ backend, config: { token: "t", log: false }, draining: () => draining });
  try {
    const doc = await (await app.request("/openapi.json")).json();
    const routes = Object.entries(doc.paths as Record<string, Record<string, { responses: object }>>)
      .flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ path, method, op })));
    assert.equal(routes.length, 5);
    for (const { path, method, op } of routes) {
      const listed = Object.keys(op.responses);
      const ask = () => app.request(path, { method: method.toUpperCase() });
      const open = await ask();
      await open.body?.cancel();
      assert.equal(listed.includes("401"), open.status === 401, `${method} ${path}: answered ${open.status}`);
      draining = true;
      const closing = await ask();
      draining = false;
      await closing.body?.cancel();
      // Every route refuses while draining but GET /metrics, whose last counts stay scrapable: as listed.
      assert.equal(
        closing.status === 503,
        listed.includes("503"),
        `${method} ${path}: ${closing.status} while draining`,
      );
      assert.equal(closing.status === 503, path !== "/metrics", `${method} ${path} while draining`);
      if (closing.status !== 503) assert.equal(closing.status, open.status, `${method} ${path}: as when not draining`);
    }
    // What prepare.ts refuses beyond the tensor schema is stated on the fields, in words and as schema
    // (clients/python/tests/test_openapi.py checks the whole document against the server with a validator).
    const layer = doc.components.schemas.PruneRequest.properties.layers.items.properties;
    const actNormSq = layer.actNormSq.anyOf.find((s: { type: string }) => s.type === "object");
    assert.match(actNormSq.description, /f32/);
    assert.deepEqual(actNormSq.properties.dtype.enum, ["f32"]);
    assert.match(layer.weight.description, /\[rows, cols\]/);
    assert.deepEqual([layer.weight.properties.shape.minItems, layer.weight.properties.shape.maxItems], [2, 2]);
  } finally {
    await backend.close();
  }
});

Deno.test("/openapi.json lists the headers and media type of each answer, as the app answers them", async () => {
  const backend = createCpuBackend({ threads: 0 });
  let draining = false;
  const app = createApp({ backend, config: { token: "t", log: false }, draining: () => draining });
  // The headers a client acts on (README, Routes): names compared case-insensitively, as HTTP does.
  const watched = ["x-request-id", "x-zprune-error", "www-authenticate", "retry-after"];
  const auth = { authorization: "Bearer t" };
  const msgpack = { ...auth, "content-type": "application/msgpack" };
  const asks: [string, string, RequestInit][] = [
    ["/healthz", "get", {}],
    ["/openapi.json", "get", {}],
    ["/v1/info", "get", {}],
    ["/v1/info", "get", { headers: auth }],
    ["/metrics", "get", {}],
    ["/metrics", "get", { headers: auth }],
    ["/v1/prune", "post", { method: "POST" }],
    ["/v1/prune", "post", { method: "POST", headers: { ...auth, "content-type": "text/plain" }, body: "x" }],
    ["/v1/prune", "post", { method: "POST", headers: msgpack, body: new Uint8Array([0xc1]) }],
    ["/v1/prune", "post", { method: "POST", headers: msgpack, body: encodeMsgpack({ layers: [] }) }],
    ["/v1/prune", "post", {
      method: "POST",
      headers: msgpack,
      body: encodeMsgpack({
        method: "magnitude",
        sparsity: 0.5,
        layers: [{ name: "l", weight: { dtype: "f32", shape: [1, 2], data: new Uint8Array(8) } }],
      }),
    }],
  ];
  try {
    const doc = await (await app.request("/openapi.json")).json();
    for (const closing of [false, true]) {
      for (const [path, method, init] of asks) {
        draining = closing;
        const res = await app.request(path, init);
        draining = false;
        await res.body?.cancel();
        const what = `${method} ${path} ${res.status}${closing ? " while draining" : ""}`;
        const listed = doc.paths[path][method].responses[String(res.status)];
        assert.ok(listed, `${what}: status not listed`);
        const type = res.headers.get("content-type")!.split(";")[0]!.trim();
        assert.ok(type in (listed.content ?? {}), `${what}: ${type} not listed`);
        const documented = Object.keys(listed.headers ?? {}).map((h) => h.toLowerCase());
        const sent = watched.filter((h) => res.headers.has(h));
        assert.deepEqual(documented.filter((h) => watched.includes(h)).sort(), sent.sort(), what);
      }
    }
  } finally {
    await backend.close();
  }
});

Deno.test("/openapi.json takes a score in f32 only, as API.md's Response says, and answers validate", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const app = createApp({ backend, config: { log: false } });
  try {
    const doc = await (await app.request("/openapi.json")).json();
    const layer = doc.components.schemas.PruneResponse.properties.layers.items.properties;
    assert.deepEqual(layer.score.properties.dtype.enum, ["f32"]);
    assert.deepEqual(layer.weight.properties.dtype.enum, ["f32", "f16", "bf16"], "weights come in the request's dtype");
    // What the server answers for an f16 layer fits the document: a score in f32, the weights in f16.
    const res = await app.request("/v1/prune", {
      method: "POST",
      headers: { "content-type": "application/msgpack" },
      body: encodeMsgpack({
        method: "magnitude",
        sparsity: 0.5,
        return: ["weight", "score"],
        layers: [{ name: "l", weight: { dtype: "f16", shape: [1, 2], data: new Uint8Array(4) } }],
      }),
    });
    const answer = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
    assert.deepEqual([answer.layers[0]!.score!.dtype, answer.layers[0]!.weight!.dtype], ["f32", "f16"]);
  } finally {
    await backend.close();
  }
});

Deno.test("/metrics counts each request under its route, also when auth, the drain or CORS answered it", async () => {
  const backend = createCpuBackend({ threads: 0 });
  let draining = false;
  const app = createApp({
    backend,
    config: { token: "t", log: false, corsOrigins: "https://nb.example" },
    draining: () => draining,
  });
  const ask = async (path: string, init: RequestInit = {}) => {
    const res = await app.request(path, init);
    await res.body?.cancel();
    return res.status;
  };
  try {
    assert.equal(await ask("/v1/prune", { method: "POST" }), 401);
    assert.equal(await ask("/v1/info"), 401);
    assert.equal(await ask("/metrics"), 401);
    const preflight = {
      method: "OPTIONS",
      headers: { origin: "https://nb.example", "access-control-request-method": "POST" },
    };
    assert.equal(await ask("/v1/prune", preflight), 204);
    assert.equal(await ask("/v1/info/"), 401); // auth guards /v1/*, but no route serves this path
    assert.equal(await ask("/nope"), 404);
    draining = true;
    assert.equal(await ask("/healthz"), 503);
    draining = false;
    const text = await (await app.request("/metrics", { headers: { authorization: "Bearer t" } })).text();
    const counts = Object.fromEntries(
      [...text.matchAll(/^zprune_requests_total\{route="([^"]+)",status="(\d+)"\} (\d+)$/gm)]
        .map(([, route, status, n]) => [`${route} ${status}`, Number(n)]),
    );
    assert.deepEqual(counts, {
      "/v1/prune 401": 1,
      "/v1/info 401": 1,
      "/metrics 401": 1,
      "/v1/prune 204": 1,
      "unmatched 401": 1,
      "unmatched 404": 1,
      "/healthz 503": 1,
    });
  } finally {
    await backend.close();
  }
});

Deno.test("CORS: a 401 exposes WWW-Authenticate, so a browser client can read the scheme it asks for", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const app = createApp({ backend, config: { token: "t", log: false, corsOrigins: "https://nb.example" } });
  try {
    const res = await app.request("/v1/info", { headers: { origin: "https://nb.example" } });
    await res.body?.cancel();
    assert.equal(res.status, 401);
    assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer\b/);
    assert.equal(res.headers.get("access-control-allow-origin"), "https://nb.example");
    const exposed = (res.headers.get("access-control-expose-headers") ?? "").toLowerCase().split(/\s*,\s*/);
    assert.ok(exposed.includes("www-authenticate"), `exposed: ${exposed}`);
  } finally {
    await backend.close();
  }
});

Deno.test("/metrics shows the scratch the CPU backend keeps between layers, and none once it lets it go", async () => {
  const backend = createCpuBackend({ threads: 1, parallelMin: 0 }); // the worker pool's path, which keeps scratch
  const server = await startServer({ backend });
  const kept = async () =>
    Number(/^zprune_backend_kept_bytes (\d+)$/m.exec(await (await fetch(`${server.url}/metrics`)).text())?.[1]);
  try {
    assert.equal(await kept(), 0);
    const answer = await prune(server.url, decodeMsgpack(goldenCase("tiny-zpruner-layer-f32").request));
    const [rows, cols] = answer.layers[0]!.shape;
    // The decoded weights and the scores are 4 bytes a weight each, and both go back to the free list.
    assert.ok(await kept() >= 8 * rows! * cols!, `kept ${await kept()} for ${rows}x${cols}`);
    await backend.close();
    assert.equal(await kept(), 0);
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("/metrics reads the backend's count of layers on the exact CPU path each time it renders", async () => {
  const inner = createCpuBackend({ threads: 0 });
  let exact = 0;
  const backend = {
    ...withPrune(inner, (p, l, s) => inner.prune(p, l, s)),
    get exactPathLayers() {
      return exact;
    },
  };
  const server = await startServer({ backend });
  try {
    const read = async () => (await (await fetch(`${server.url}/metrics`)).text());
    assert.match(await read(), /^zprune_exact_path_layers_total 0$/m);
    exact = 3;
    assert.match(await read(), /^zprune_exact_path_layers_total 3$/m);
  } finally {
    await server.close();
    await inner.close();
  }
});

Deno.test("/healthz is 503 unavailable while the backend says it cannot compute, 200 once it can", async () => {
  const inner = createCpuBackend({ threads: 0 });
  let why: string | null = "no WebGPU adapter is available any more", recovers = 0;
  const backend = {
    ...withPrune(inner, (p, l, s) => inner.prune(p, l, s)),
    get unavailable() {
      return why;
    },
    recover: () => void recovers++,
  };
  const server = await startServer({ backend });
  try {
    const down = await fetch(`${server.url}/healthz`);
    assert.equal(down.status, 503);
    assert.equal(down.headers.get("x-zprune-error"), "unavailable");
    assert.ok(down.headers.get("retry-after"), "Retry-After");
    const body = await down.json();
    assert.equal(body.error.code, "unavailable");
    assert.match(body.error.message, /cpu backend cannot compute: no WebGPU adapter is available any more/);
    assert.equal(recovers, 1, "the failing check asked the backend to retry (no layer may come to restart it)");
    why = null;
    const up = await fetch(`${server.url}/healthz`);
    assert.deepEqual([up.status, await up.json()], [200, { status: "ok", backend: "cpu" }]);
    assert.equal(recovers, 1, "a healthy backend is left alone");
  } finally {
    await server.close();
    await inner.close();
  }
});

Deno.test("a layer a GPU backend computed on its exact CPU path carries exactPath (why); others do not", async () => {
  const inner = createCpuBackend({ threads: 0 });
  const backend = withPrune(inner, async (p, l, s) => {
    const out = await inner.prune(p, l, s);
    return l.name === "slow" ? { ...out, exactPath: "a reason" } : out;
  });
  const server = await startServer({ backend });
  try {
    const rand = rng(3);
    const layer = (name: string) => {
      const { weight } = randomLayer(rand, { rows: 4, cols: 8, dtype: "f32" });
      return { name, weight: { dtype: "f32", shape: [4, 8], data: weight } };
    };
    const res = await prune(server.url, {
      method: "magnitude",
      sparsity: 0.5,
      layers: [layer("fast"), layer("slow")],
    });
    assert.deepEqual(res.layers.map((l) => l.exactPath), [undefined, "a reason"]);
    assert.ok(!("exactPath" in res.layers[0]!), "absent, not nil");
    const doc = await (await fetch(`${server.url}/openapi.json`)).json();
    const props = doc.components.schemas.PruneResponse.properties.layers.items.properties;
    assert.match(props.exactPath.description, /exact CPU path/);
  } finally {
    await server.close();
    await inner.close();
  }
});

Deno.test("HEAD states the Content-Length GET would send, with no body, and counts no bytes out", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({ backend, config: { token: "t0ken" } });
  const auth = { authorization: "Bearer t0ken" };
  try {
    // An answer, an error answer (401) and the not-found answer.
    for (const [path, headers] of [["/healthz", {}], ["/v1/info", auth], ["/v1/info", {}], ["/nope", {}]] as const) {
      const get = await fetch(`${server.url}${path}`, { headers });
      const length = (await get.arrayBuffer()).byteLength;
      assert.ok(length > 0, path);
      const head = await fetch(`${server.url}${path}`, { method: "HEAD", headers });
      assert.equal(head.status, get.status, path);
      assert.equal(head.headers.get("content-length"), String(length), path);
      assert.equal((await head.arrayBuffer()).byteLength, 0, path);
    }
    // Each /metrics answer reports the bytes sent before it: the next one adds its own length and the HEAD's 0.
    const metrics = async () => {
      const bytes = new Uint8Array(await (await fetch(`${server.url}/metrics`, { headers: auth })).arrayBuffer());
      return { total: Number(/^zprune_bytes_out_total (\d+)$/m.exec(new TextDecoder().decode(bytes))![1]), bytes };
    };
    const first = await metrics();
    await (await fetch(`${server.url}/healthz`, { method: "HEAD" })).arrayBuffer();
    assert.equal((await metrics()).total, first.total + first.bytes.byteLength);
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("POST /v1/prune answers several layers in request order, with weights, scores and inputs", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({ backend });
  try {
    const rand = rng(42);
    const a = randomLayer(rand, { rows: 5, cols: 12, dtype: "bf16" });
    const b = randomLayer(rand, { rows: 3, cols: 12, dtype: "f16" });
    // inputs: 7 tokens x 12 features; the server sums their squares per feature.
    const tokens = new Float32Array(7 * 12).map(() => rand() - 0.5);
    const sums = new Float64Array(12);
    for (let i = 0; i < tokens.length; i++) sums[i % 12]! += tokens[i]! ** 2;
    const body = await prune(server.url, {
      method: "wanda",
      pattern: "row",
      sparsity: 0.25,
      return: ["mask", "weight", "score"],
      layers: [
        {
          name: "first",
          weight: { dtype: "bf16", shape: [5, 12], data: a.weight },
          actNormSq: { dtype: "f32", shape: [12], data: new Uint8Array(a.actNormSq.buffer) },
        },
        {
          name: "second",
          weight: { dtype: "f16", shape: [3, 12], data: b.weight },
          inputs: { dtype: "f32", shape: [7, 12], data: new Uint8Array(tokens.buffer) },
        },
      ],
    });
    assert.deepEqual(body.layers.map((l) => l.name), ["first", "second"]);
    const expectA = await pruneLayer({
      method: "wanda",
      pattern: { kind: "row", sparsity: 0.25 },
      exponent: 1,
      returnWeight: true,
      returnScore: true,
    }, { name: "first", rows: 5, cols: 12, dtype: "bf16", weight: a.weight, actNormSq: a.actNormSq });
    const expectB = await pruneLayer({
      method: "wanda",
      pattern: { kind: "row", sparsity: 0.25 },
      exponent: 1,
      returnWeight: true,
      returnScore: true,
    }, { name: "second", rows: 3, cols: 12, dtype: "f16", weight: b.weight, actNormSq: sums });
    for (const [got, want, rows] of [[body.layers[0]!, expectA, 5], [body.layers[1]!, expectB, 3]] as const) {
      assert.deepEqual(got.mask, want.mask);
      assert.equal(got.stats.pruned, rows * 3);
      assert.deepEqual(got.stats.rowSparsity, { min: 0.25, max: 0.25, mean: 0.25 });
      assert.equal(got.weight!.dtype, body.layers[0] === got ? "bf16" : "f16");
      assert.deepEqual(got.weight!.data, want.weight);
      assert.equal(got.score!.dtype, "f32");
      assert.deepEqual(new Float32Array(got.score!.data.slice().buffer), want.score);
    }
    // wanda's score is |W| * sqrt(actNormSq): check one weight of the second layer by hand.
    const s = new Float32Array(body.layers[1]!.score!.data.slice().buffer);
    const w0 = new Uint16Array(b.weight.buffer)[0]!;
    const f16 = (h: number) => (h & 0x8000 ? -1 : 1) * 2 ** (((h >> 10) & 31) - 15) * (1 + (h & 1023) / 1024);
    assert.ok(Math.abs(s[0]! - Math.abs(f16(w0)) * Math.sqrt(sums[0]!)) < 1e-6 * s[0]! + 1e-12);
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("inputs whose sums of squares leave float32's range prune as the oracle does, for every method", async () => {
  // Column sums of 1e-50 (zero in float32), 1e-40 (subnormal there) or near 1e37: once these were rounded to
  // float32, tiny inputs scored every weight 0.
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({ backend });
  try {
    const rand = rng(7);
    const rows = 6, cols = 16, tokens = 5;
    for (const scale of [1e-25, 1e-20, 1e17]) {
      const weight = new Float32Array(rows * cols).map(() => rand() - 0.5);
      // Columns of very different activations, so that they, not the weights alone, decide the mask.
      const x = new Float32Array(tokens * cols).map((_, i) => scale * (1 + (i % cols)) * (0.5 + rand()));
      const inputs = oracleDecode(new Uint8Array(x.buffer), "f32");
      const actNormSq = Array.from({ length: cols }, (_, j) => {
        let s = 0;
        for (let t = 0; t < tokens; t++) s += inputs[t * cols + j]! ** 2;
        return s;
      });
      for (const method of ["magnitude", "wanda", "ria", "zpruner"] as const) {
        const body = await prune(server.url, {
          method,
          sparsity: 0.5,
          layers: [{
            name: "l",
            weight: { dtype: "f32", shape: [rows, cols], data: new Uint8Array(weight.buffer) },
            inputs: { dtype: "f32", shape: [tokens, cols], data: new Uint8Array(x.buffer) },
          }],
        });
        const exponent = { magnitude: 1, wanda: 1, ria: 0.5, zpruner: 1.5 }[method];
        const w = oracleDecode(new Uint8Array(weight.buffer), "f32");
        const { scores } = oracleScores(method, w, rows, cols, method === "magnitude" ? null : actNormSq, exponent);
        const sel = oracleSelect(scores, rows, cols, { kind: "layer", sparsity: 0.5 });
        assert.deepEqual(compareWithOracle(body.layers[0]!.mask, scores, sel), [], `${method}, inputs ${scale}`);
      }
    }
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("concurrent requests each get their own answer", async () => {
  const backend = createCpuBackend({ threads: 2, parallelMin: 1 << 12 });
  const server = await startServer({ backend, config: { concurrency: 3 } });
  try {
    const cases = goldenCases();
    const rounds = await Promise.all(
      Array.from({ length: 24 }, async (_, i) => {
        const g = cases[i % cases.length]!;
        const res = await postPrune(server.url, g.request);
        const body = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
        return { g, layer: body.layers[0]! };
      }),
    );
    for (const { g, layer } of rounds) {
      assert.equal(layer.name, g.expected.name);
      assert.deepEqual(goldenProblems(layer.mask, g.expected), [], g.name);
    }
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("an answered request leaves nothing behind: the heap stays flat over 3000 requests", async () => {
  // Until 2026-11-30 each request's AbortSignal.timeout kept its timer, and with it the request's signals, for the
  // whole deadline (ten minutes by default): about 615-680 bytes a request after full collections, in this child.
  // Answered requests now measure 1-30 bytes each (warm-up residue, sometimes below zero).
  const { bytesPerRequest } = await childJson<{ bytesPerRequest: number }>(
    new URL("./_request_heap_child.ts", import.meta.url),
    ["3000"],
    ["--v8-flags=--expose-gc"],
  );
  assert.ok(bytesPerRequest < 200, `the heap grew by ${bytesPerRequest} bytes per answered request`);
});

Deno.test("options.exponent reaches scores: wanda at exponent 2 is |W| * actNormSq, not the default's", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({ backend });
  try {
    const rows = 4, cols = 6;
    const rand = rng(9);
    // Weights away from zero and activations away from 1, so act^1 and act^(1/2) differ in every entry.
    const W = new Float32Array(rows * cols).map(() => (rand() < 0.5 ? -1 : 1) * (0.1 + rand()));
    const act = new Float32Array(cols).map((_, j) => (j % 2 ? 2 + 8 * rand() : 0.05 + 0.45 * rand()));
    const request = (options?: Record<string, unknown>) => ({
      method: "wanda",
      pattern: "layer",
      sparsity: 0.5,
      return: ["score"],
      ...(options ? { options } : {}),
      layers: [{
        name: "e",
        weight: { dtype: "f32", shape: [rows, cols], data: new Uint8Array(W.buffer) },
        actNormSq: { dtype: "f32", shape: [cols], data: new Uint8Array(act.buffer) },
      }],
    });
    const scoresOf = (body: PruneResponse) => new Float32Array(body.layers[0]!.score!.data.slice().buffer);
    const squared = scoresOf(await prune(server.url, request({ exponent: 2 })));
    const plain = scoresOf(await prune(server.url, request()));
    // API.md: act_j = actNormSq_j ^ (exponent / 2); wanda = |W| * act. In float64 from the request's values:
    // exponent 2 gives |W| * actNormSq, the default exponent 1 gives |W| * sqrt(actNormSq).
    const close = (got: number, want: number) => Math.abs(got - want) <= 1e-6 * want;
    for (let i = 0; i < rows * cols; i++) {
      const a = act[i % cols]!, w = Math.abs(W[i]!);
      assert.ok(close(squared[i]!, w * a), `exponent 2, score[${i}]: ${squared[i]} vs ${w * a}`);
      assert.ok(
        close(plain[i]!, w * Math.sqrt(a)),
        `default exponent, score[${i}]: ${plain[i]} vs ${w * Math.sqrt(a)}`,
      );
      assert.ok(!close(squared[i]!, plain[i]!), `score[${i}] is the same with exponent 2 as with the default`);
    }
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("POST /v1/prune takes its media type in any case (RFC 9110 section 8.3.1)", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const app = createApp({ backend, config: { log: false } });
  try {
    const body = encodeMsgpack({
      method: "magnitude",
      sparsity: 0.5,
      layers: [{
        name: "l",
        weight: { dtype: "f32", shape: [1, 2], data: new Uint8Array(new Float32Array([2, 1]).buffer) },
      }],
    });
    for (const type of ["Application/MsgPack", "APPLICATION/X-MSGPACK; Charset=binary"]) {
      const res = await app.request("/v1/prune", { method: "POST", headers: { "content-type": type }, body });
      assert.equal(res.status, 200, `${type}: ${await res.clone().text()}`);
      // |W| = [2, 1]: the 1 at index 1 is pruned.
      assert.deepEqual(
        (decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse).layers[0]!.mask,
        new Uint8Array([0b10]),
      );
    }
  } finally {
    await backend.close();
  }
});

Deno.test("/metrics counts each layer by method and pattern, and the compute seconds", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const app = createApp({ backend, config: { log: false } });
  try {
    const layers = [0, 1].map((i) => f32Layer(`l${i}`, 64, 64, 41 + i));
    const res = await app.request("/v1/prune", {
      method: "POST",
      headers: { "content-type": "application/msgpack" },
      body: encodeMsgpack({ method: "wanda", pattern: "layer", sparsity: 0.5, layers }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    await res.arrayBuffer();
    const text = await (await app.request("/metrics")).text();
    assert.match(text, /^zprune_layers_total\{method="wanda",pattern="layer"\} 2$/m);
    const seconds = Number(/^zprune_compute_seconds_total (\S+)$/m.exec(text)?.[1]);
    assert.ok(seconds > 0 && seconds < 60, `compute seconds ${seconds}`);
  } finally {
    await backend.close();
  }
});

Deno.test("a client gone while its layers compute is answered 499 client_closed_request, not 500", async () => {
  const cpu = createCpuBackend({ threads: 0 });
  let computing!: () => void;
  const started = new Promise<void>((r) => computing = r);
  // The backend holds the layer until the request's signal aborts, as a long layer would.
  const backend = withPrune(cpu, (_p, _l, signal) =>
    new Promise((_, reject) => {
      computing();
      signal?.addEventListener("abort", () => reject(signal.reason), { once: true });
    }));
  const app = createApp({ backend, config: { log: false } });
  try {
    const client = new AbortController();
    const answer = app.request("/v1/prune", {
      method: "POST",
      headers: { "content-type": "application/msgpack" },
      body: encodeMsgpack({ method: "magnitude", sparsity: 0.5, layers: [f32Layer("l", 8, 8, 3)] }),
      signal: client.signal,
    });
    await within(started, "the request reaching the backend");
    client.abort();
    const res = await answer;
    assert.equal(res.status, 499);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, "client_closed_request");
    const text = await (await app.request("/metrics")).text();
    assert.match(text, /^zprune_requests_total\{route="\/v1\/prune",status="499"\} 1$/m);
  } finally {
    await cpu.close();
  }
});

Deno.test("ZPRUNE_CORS_ORIGINS=* allows any origin; HEAD /metrics is answered while draining, as GET is", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const app = createApp({ backend, config: { log: false, corsOrigins: "*" }, draining: () => true });
  try {
    const res = await app.request("/metrics", { headers: { Origin: "https://any.example" } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    await res.body?.cancel();
    const head = await app.request("/metrics", { method: "HEAD" });
    assert.equal(head.status, 200);
    const health = await app.request("/healthz", { method: "HEAD" });
    assert.equal(health.status, 503, "every other route refuses while draining");
  } finally {
    await backend.close();
  }
});

Deno.test("a body stops counting against the budget for waiting bodies once its request computes", async () => {
  // Budget 100,000 bytes. A: a 64x64 f32 layer (a 16.4 kB body; about 66 kB of working memory), held in the backend.
  // B: an 8x8 layer with 2800 tokens of raw inputs (an 89.7 kB body). Counted once, in the queue, A leaves B room to
  // be read: B waits in the queue for A's memory. Were A's body still held as a waiting one, B would not fit beside it
  // (16.4 + 89.7 kB) and be refused 429 busy.
  const cpu = createCpuBackend({ threads: 0 });
  let computing!: () => void, release!: () => void;
  const started = new Promise<void>((r) => computing = r), released = new Promise<void>((r) => release = r);
  const backend = withPrune(cpu, async (p, l, s) => {
    if (l.name === "A") {
      computing();
      await released;
    }
    return cpu.prune(p, l, s);
  });
  const app = createApp({ backend, config: { log: false, memoryBudgetBytes: 100_000 } });
  const post = async (body: unknown) =>
    await app.request("/v1/prune", {
      method: "POST",
      headers: { "content-type": "application/msgpack" },
      body: encodeMsgpack(body),
    });
  try {
    const a = post({ method: "magnitude", sparsity: 0.5, layers: [f32Layer("A", 64, 64, 1)] });
    await within(started, "the request reaching the backend");
    const inputs = new Float32Array(2800 * 8).map((_, i) => Math.sin(i));
    const b = post({
      method: "wanda",
      sparsity: 0.5,
      layers: [{
        name: "B",
        weight: f32Layer("B", 8, 8, 2).weight,
        inputs: { dtype: "f32", shape: [2800, 8], data: new Uint8Array(inputs.buffer) },
      }],
    });
    let answeredEarly: Response | undefined;
    b.then((res) => answeredEarly = res);
    const queued = async () => /^zprune_queue_depth 1$/m.test(await (await app.request("/metrics")).text());
    for (let i = 0; i < 500 && !answeredEarly && !(await queued()); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(answeredEarly?.status, undefined, `B answered before A ended: ${await answeredEarly?.text()}`);
    assert.ok(await queued(), "B waits in the queue");
    release();
    assert.deepEqual([(await a).status, (await b).status], [200, 200]);
  } finally {
    release();
    await cpu.close();
  }
});
