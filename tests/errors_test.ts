/**
 * Every row of API.md's error table provoked through a real listener and answered with its status and code;
 * afterwards the server still answers /healthz and a golden request exactly.
 */
import assert from "node:assert/strict";
import type { InfoResponse, PruneResponse } from "../contract/api.ts";
import { Packr } from "msgpackr";
import { decodeMsgpack, encodeMsgpack } from "../contract/wire.ts";
import type { Backend, LayerJob, PruneParams } from "../prune/backend.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { CpuPool } from "../prune/cpu_pool.ts";
import {
  f32Layer,
  goldenCase,
  goldenProblems,
  postPrune,
  startServer,
  type TestServer,
  within,
  withPrune,
  writeAll,
} from "./_server.ts";
import { createApp } from "../routes/app.ts";
import { WorkQueue } from "../prune/queue.ts";
import { listen } from "../runtime/host.ts";
import { rng } from "./_random.ts";

type ErrorBody = { error: { code: string; message: string } };
const f32 = (xs: number[]) => new Uint8Array(new Float32Array(xs).buffer);
const layer = (over: Record<string, unknown> = {}) => ({
  name: "l0",
  weight: { dtype: "f32", shape: [2, 4], data: f32([1, -2, 3, -4, 5, -6, 7, -8]) },
  actNormSq: { dtype: "f32", shape: [4], data: f32([1, 2, 3, 4]) },
  ...over,
});
const request = (over: Record<string, unknown> = {}) => ({
  method: "zpruner",
  pattern: "layer",
  sparsity: 0.5,
  layers: [layer()],
  ...over,
});

async function expectError(res: Response, status: number, code: string, messageIncludes?: string): Promise<string> {
  const text = await res.text();
  assert.equal(res.status, status, `status for ${code}: ${text}`);
  const body = JSON.parse(text) as { error: { code: string; message: string } };
  assert.equal(body.error.code, code, text);
  assert.ok(body.error.message.length > 10, "the message says what is wrong");
  if (messageIncludes) {
    assert.ok(body.error.message.includes(messageIncludes), `"${body.error.message}" names "${messageIncludes}"`);
  }
  return body.error.message;
}

/** Polls `ok` until it holds; fails saying what never happened after `ms` (a bound, not a speed check). */
async function eventually(ok: () => Promise<boolean>, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) assert.fail(`${what}: not after ${ms / 1000} s, giving up`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Reads one HTTP/1.1 answer from `conn`: the head, then the body its Content-Length announces (or up to the
 * connection's end). Rejects after `ms` with a message (the caller closes the connection).
 */
function readAnswer(conn: Deno.Conn, what: string, ms = 60_000): Promise<{ head: string; body: string }> {
  const read = async () => {
    const decoder = new TextDecoder();
    let bytes = new Uint8Array(0);
    const buf = new Uint8Array(4096);
    for (;;) {
      const text = decoder.decode(bytes);
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        const head = text.slice(0, end);
        const length = Number(/^content-length: *(\d+)$/im.exec(head)?.[1] ?? NaN);
        if (Number.isFinite(length) && bytes.byteLength >= end + 4 + length) {
          return { head, body: text.slice(end + 4, end + 4 + length) };
        }
      }
      const n = await conn.read(buf);
      if (n === null) {
        const at = text.indexOf("\r\n\r\n");
        return { head: at >= 0 ? text.slice(0, at) : text, body: at >= 0 ? text.slice(at + 4) : "" };
      }
      const grown = new Uint8Array(bytes.byteLength + n);
      grown.set(bytes);
      grown.set(buf.subarray(0, n), bytes.byteLength);
      bytes = grown;
    }
  };
  return within(read(), what, ms);
}

async function assertStillHealthy(server: TestServer): Promise<void> {
  const h = await fetch(`${server.url}/healthz`);
  assert.deepEqual(await h.json(), { status: "ok", backend: "cpu" });
  const g = goldenCase("zpruner-layer-f16");
  const res = await postPrune(server.url, g.request);
  assert.equal(res.status, 200);
  const body = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
  assert.deepEqual(goldenProblems(body.layers[0]!.mask, g.expected), []);
}

/**
 * Runs `fn` against a server on the CPU backend with a 64 KiB body limit (`post` sends msgpack to /v1/prune), then
 * checks that the errors left it healthy.
 */
async function withErrorServer(
  fn: (
    server: TestServer,
    post: (body: unknown, headers?: Record<string, string>) => Promise<Response>,
  ) => Promise<void>,
): Promise<void> {
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({ backend, config: { maxBodyBytes: 64 * 1024 } });
  const post = (body: unknown, headers?: Record<string, string>) => postPrune(server.url, encodeMsgpack(body), headers);
  try {
    await fn(server, post);
    await assertStillHealthy(server);
  } finally {
    await server.close();
    await backend.close();
  }
}

Deno.test("400 bad_msgpack: garbage, cut or trailing bytes, an empty body, records, bundled strings, not UTF-8", () =>
  withErrorServer(async (server) => {
    await expectError(await postPrune(server.url, new Uint8Array([0xc1, 0x00])), 400, "bad_msgpack");
    const good = encodeMsgpack(request());
    await expectError(await postPrune(server.url, good.subarray(0, good.length - 3)), 400, "bad_msgpack");
    await expectError(await postPrune(server.url, new Uint8Array([...good, 0x01])), 400, "bad_msgpack", "trailing");
    await expectError(await postPrune(server.url, new Uint8Array(0)), 400, "bad_msgpack");
    // A layer name that is not UTF-8 ("l0" as 0xff 0x30): a decoder would answer it as "\ufffd0", another layer's name.
    const named = encodeMsgpack(request());
    const name = named.findIndex((b, i) => b === 0xa2 && named[i + 1] === 0x6c && named[i + 2] === 0x30);
    named[name + 1] = 0xff;
    await expectError(
      await postPrune(server.url, named),
      400,
      "bad_msgpack",
      `string at byte ${name} is not valid UTF-8`,
    );
    // msgpackr's records and bundled strings decode to plain values; API.md: "no ext types, no records".
    for (const options of [{ useRecords: true }, { useRecords: false, bundleStrings: true }]) {
      const packed = new Packr(options).pack(request());
      await expectError(await postPrune(server.url, packed), 400, "bad_msgpack", "extension");
    }
  }));

Deno.test("413 too_large from Content-Length; 415 for other media types and for content codings", () =>
  withErrorServer(async (server) => {
    const good = encodeMsgpack(request());
    // 413 too_large, from Content-Length before reading.
    await expectError(await postPrune(server.url, new Uint8Array(65 * 1024)), 413, "too_large");
    // 415 unsupported_media_type.
    const asJson = await fetch(`${server.url}/v1/prune`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    await expectError(asJson, 415, "unsupported_media_type");
    const untyped = await fetch(`${server.url}/v1/prune`, { method: "POST", body: good });
    await expectError(untyped, 415, "unsupported_media_type");
    // x-msgpack is accepted too.
    assert.equal((await postPrune(server.url, good, { "content-type": "application/x-msgpack" })).status, 200);
    // A compressed body (RFC 9110 allows 415 for a content coding not supported): not read as msgpack, where it
    // would fail as trailing bytes, nor a plain body labelled compressed taken as it is.
    for (const coding of ["gzip", "br", "identity, gzip"]) {
      const res = await postPrune(server.url, good, { "content-encoding": coding });
      const message = await expectError(res, 415, "unsupported_media_type", `Content-Encoding "${coding}"`);
      assert.match(message, /uncompressed/);
    }
    assert.equal((await postPrune(server.url, good, { "content-encoding": "identity" })).status, 200);
  }));

Deno.test("422 invalid_request names the field path; N:M ignores sparsity", () =>
  withErrorServer(async (_server, post) => {
    await expectError(await post({ method: "zpruner" }), 422, "invalid_request", "layers");
    await expectError(await post(request({ sparsity: undefined })), 422, "invalid_request", "sparsity");
    await expectError(await post(request({ sparsity: 1 })), 422, "invalid_request", "sparsity");
    await expectError(await post(request({ pattern: "row", sparsity: "half" })), 422, "invalid_request", "sparsity");
    // API.md: sparsity is "ignored for N:M": any value, or none, gives the same 2:4 answer.
    const masks = [];
    for (const sparsity of [undefined, 0.5, 1.5, "x", null]) {
      const res = await post(request({ pattern: "2:4", sparsity }));
      assert.equal(res.status, 200, `2:4 with sparsity ${sparsity}: ${await res.clone().text()}`);
      masks.push((decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse).layers[0]!.mask);
    }
    for (const m of masks) assert.deepEqual(m, masks[0]);
    await expectError(await post(request({ method: "obs" })), 422, "invalid_request", "method");
    await expectError(await post(request({ pattern: "4:2" })), 422, "invalid_request", "pattern");
    await expectError(await post(request({ layers: [layer({ name: 7 })] })), 422, "invalid_request", "layers[0].name");
    await expectError(
      await post(request({ layers: [layer({ weight: { dtype: "f64", shape: [2, 4], data: f32([]) } })] })),
      422,
      "invalid_request",
      "layers[0].weight.dtype",
    );
    await expectError(
      await post(
        request({ layers: [layer({ weight: { dtype: "f32", shape: [8], data: f32([1, 2, 3, 4, 5, 6, 7, 8]) } })] }),
      ),
      422,
      "invalid_request",
      "layers[0].weight.shape",
    );
    // 422 invalid_request: a negative actNormSq entry.
    await expectError(
      await post(request({ layers: [layer({ actNormSq: { dtype: "f32", shape: [4], data: f32([1, -2, 3, 4]) } })] })),
      422,
      "invalid_request",
      "actNormSq[1]",
    );
  }));

Deno.test("422 shape_mismatch and non_finite name the layer, the field and the first index", () =>
  withErrorServer(async (_server, post) => {
    // 422 shape_mismatch: data length, actNormSq length, cols not a multiple of M.
    await expectError(
      await post(
        request({ layers: [layer({ weight: { dtype: "f16", shape: [2, 4], data: f32([1, 2, 3, 4, 5, 6, 7, 8]) } })] }),
      ),
      422,
      "shape_mismatch",
      "layers[0].weight",
    );
    await expectError(
      await post(request({ layers: [layer({ actNormSq: { dtype: "f32", shape: [3], data: f32([1, 2, 3]) } })] })),
      422,
      "shape_mismatch",
      "actNormSq",
    );
    await expectError(await post(request({ pattern: "2:3" })), 422, "shape_mismatch", "multiple of M");
    // 422 non_finite: the message gives the layer and the first index.
    await expectError(
      await post(
        request({
          layers: [
            layer(),
            layer({
              name: "bad",
              weight: { dtype: "f32", shape: [2, 4], data: f32([1, 2, 3, 4, 5, NaN, 7, Infinity]) },
            }),
          ],
        }),
      ),
      422,
      "non_finite",
      "bad",
    );
    const nan = await expectError(
      await post(
        request({
          layers: [layer({ weight: { dtype: "f32", shape: [2, 4], data: f32([1, 2, 3, 4, 5, NaN, 7, 8]) } })],
        }),
      ),
      422,
      "non_finite",
    );
    assert.ok(nan.includes("weight[5]"), nan);
    await expectError(
      await post(
        request({ layers: [layer({ actNormSq: { dtype: "f32", shape: [4], data: f32([1, Infinity, 3, 4]) } })] }),
      ),
      422,
      "non_finite",
      "actNormSq[1]",
    );
    // Several layers: the first non-finite value in request order is named, a weight before a later layer's
    // activations (activations are checked before any layer is computed, weights as each is).
    const badWeight = layer({
      name: "early",
      weight: { dtype: "f32", shape: [2, 4], data: f32([1, 2, 3, 4, 5, 6, NaN, 8]) },
    });
    const badActs = layer({ name: "late", actNormSq: { dtype: "f32", shape: [4], data: f32([1, 2, NaN, 4]) } });
    const early = await expectError(await post(request({ layers: [layer(), badWeight, badActs] })), 422, "non_finite");
    assert.match(early, /^layer "early": weight\[6\] \(row 1, column 2\) is NaN or infinite/);
    const late = await expectError(await post(request({ layers: [badActs, badWeight] })), 422, "non_finite");
    assert.match(late, /^layers\[0\]\.actNormSq\[2\] is NaN or infinite/);
  }));

Deno.test("422 non_finite for scores past float32's range; just inside, the layer is pruned", () =>
  withErrorServer(async (_server, post) => {
    // Scores past float32's range would all be infinity and tie, losing the order the contract asks for: refused
    // like an infinite activation, naming the first such weight. Wanda's |w| * actNormSq^(1/2): 4e30 * 1e19 at
    // weight[3].
    const huge = f32([1e30, -2e30, 3e30, -4e30, 5e30, -6e30, 7e30, -8e30]);
    const overflow = await expectError(
      await post(
        request({
          method: "wanda",
          layers: [layer({
            weight: { dtype: "f32", shape: [2, 4], data: huge },
            actNormSq: { dtype: "f32", shape: [4], data: f32([1, 1, 1, 1e38]) },
          })],
        }),
      ),
      422,
      "non_finite",
      "weight[3] (row 0, column 3) overflows float32",
    );
    assert.match(overflow, /column 3's activation factor \(its sum of squared activations to the power 1\/2\)/);
    // Z-Pruner at the largest exponent: act = 100^32 for every column, far past float32, and so every score.
    await expectError(
      await post(
        request({
          options: { exponent: 64 },
          layers: [layer({ actNormSq: { dtype: "f32", shape: [4], data: f32([100, 100, 100, 100]) } })],
        }),
      ),
      422,
      "non_finite",
      "weight[0] (row 0, column 0) overflows float32",
    );
    // Just inside: the largest score, 8e30 * 1e15^(1/2) = 2.5e38, is finite, and the layer is pruned.
    const inside = await post(
      request({
        method: "wanda",
        layers: [layer({
          weight: { dtype: "f32", shape: [2, 4], data: huge },
          actNormSq: { dtype: "f32", shape: [4], data: f32([1, 1, 1, 1e15]) },
        })],
      }),
    );
    assert.equal(inside.status, 200, await inside.clone().text());
    await inside.body?.cancel();
  }));

Deno.test("422 activations_required, unless dataFree", () =>
  withErrorServer(async (_server, post) => {
    await expectError(
      await post(request({ layers: [layer({ actNormSq: undefined })] })),
      422,
      "activations_required",
      "dataFree",
    );
    assert.equal(
      (await post(request({ options: { dataFree: true }, layers: [layer({ actNormSq: undefined })] }))).status,
      200,
    );
  }));

Deno.test("404 not_found for unknown routes, with request ids and metrics like any other answer", () =>
  withErrorServer(async (server) => {
    // Unknown route: answered like any other request (request id, metrics), labelled "unmatched".
    const unknown = await fetch(`${server.url}/v2/prune`, { headers: { "x-request-id": "probe-404" } });
    assert.equal(unknown.headers.get("x-request-id"), "probe-404");
    await expectError(unknown, 404, "not_found");
    // A request id the log could not hold unambiguously is replaced by a fresh one, never cut or passed on.
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    for (const sent of ["a b", "x".repeat(129), "caf\u00e9", "tab\there"]) {
      const res = await fetch(`${server.url}/healthz`, { headers: { "x-request-id": sent } });
      await res.body?.cancel();
      assert.match(res.headers.get("x-request-id") ?? "", uuid, JSON.stringify(sent));
    }
    const longest = "~!".repeat(64);
    const kept = await fetch(`${server.url}/healthz`, { headers: { "x-request-id": longest } });
    await kept.body?.cancel();
    assert.equal(kept.headers.get("x-request-id"), longest);
    const unknownPacked = await fetch(`${server.url}/nope`, { headers: { accept: "application/msgpack" } });
    assert.equal(unknownPacked.status, 404);
    assert.equal(
      (decodeMsgpack(new Uint8Array(await unknownPacked.arrayBuffer())) as ErrorBody).error.code,
      "not_found",
    );
    const metricsText = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metricsText, /^zprune_requests_total\{route="unmatched",status="404"\} 2$/m);
  }));

Deno.test("the request bounds /v1/info lists are the ones enforced, at the bound and one past it", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({ backend, config: { maxBodyBytes: 1 << 22 } });
  try {
    const { limits } = await (await fetch(`${server.url}/v1/info`)).json() as InfoResponse;
    const post = (body: unknown) => postPrune(server.url, encodeMsgpack(body));
    const ok = async (res: Response, what: string) => {
      assert.equal(res.status, 200, `${what}: ${await res.text()}`);
    };
    const magnitude = (over: Record<string, unknown>) => request({ method: "magnitude", ...over });
    await ok(await post(magnitude({ options: { exponent: limits.exponent.max } })), "exponent at max");
    await expectError(
      await post(magnitude({ options: { exponent: limits.exponent.max * 1.001 } })),
      422,
      "invalid_request",
      "options.exponent",
    );
    await expectError(
      await post(magnitude({ options: { exponent: limits.exponent.min - 0.5 } })),
      422,
      "invalid_request",
      "options.exponent",
    );
    await ok(await post(magnitude({ layers: [layer({ name: "n".repeat(limits.maxNameLength) })] })), "long name");
    await expectError(
      await post(magnitude({ layers: [layer({ name: "n".repeat(limits.maxNameLength + 1) })] })),
      422,
      "invalid_request",
      "layers[0].name",
    );
    // N:M with M at the bound needs cols = M: one row of maxM columns.
    const wide = (m: number) => ({
      name: "wide",
      weight: { dtype: "f32", shape: [1, m], data: new Uint8Array(4 * m).fill(0x3f) },
    });
    await ok(await post(magnitude({ pattern: `1:${limits.maxM}`, layers: [wide(limits.maxM)] })), "M at max");
    await expectError(
      await post(magnitude({ pattern: `1:${limits.maxM + 1}`, layers: [wide(limits.maxM + 1)] })),
      422,
      "invalid_request",
      "pattern",
    );
    const many = (n: number) => Array.from({ length: n }, (_, i) => layer({ name: `l${i}` }));
    await ok(await post(magnitude({ layers: many(limits.maxLayers) })), "layers at max");
    await expectError(await post(magnitude({ layers: many(limits.maxLayers + 1) })), 422, "invalid_request", "layers");
    // The msgpack scan's bounds: nesting (a list of arrays as an added field) and the number of values.
    const nested = (depth: number): unknown => depth === 1 ? [] : [nested(depth - 1)];
    await ok(await post(magnitude({ extra: nested(limits.msgpack.maxDepth - 1) })), "nesting at max");
    await expectError(
      await post(magnitude({ extra: nested(limits.msgpack.maxDepth) })),
      422,
      "invalid_request",
      "deeper",
    );
    const values = new Array(limits.msgpack.maxValues).fill(0);
    await expectError(await post(magnitude({ extra: values })), 422, "invalid_request", "values");
    await ok(await post(magnitude({ extra: values.slice(0, limits.msgpack.maxValues - 64) })), "values under max");
    // An integer map key is a field name no request uses: ignored like any unknown field. A map key is refused.
    const plain = encodeMsgpack(magnitude({}));
    assert.ok(plain[0]! >= 0x80 && plain[0]! < 0x8f, "a fixmap with room for one more entry");
    const withKey = (key: number[]) => new Uint8Array([plain[0]! + 1, ...plain.subarray(1), ...key, 0xa1, 0x78]);
    await ok(await postPrune(server.url, withKey([0x01])), "an integer key");
    await expectError(await postPrune(server.url, withKey([0x80])), 422, "invalid_request", "map key");
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("413 too_large while streaming a body without Content-Length", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({ backend, config: { maxBodyBytes: 100_000 } });
  try {
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(ctrl) {
        if (sent > 10_000_000) return ctrl.close(); // never reached: the server stops reading at the limit
        sent += 16_384;
        ctrl.enqueue(new Uint8Array(16_384));
      },
    });
    const res = await fetch(`${server.url}/v1/prune`, {
      method: "POST",
      headers: { "content-type": "application/msgpack" },
      body: stream,
      duplex: "half",
    } as RequestInit);
    await expectError(res, 413, "too_large");
    await assertStillHealthy(server);
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("413 too_large from Content-Length alone: answered while not a byte of the body has been sent", async () => {
  const backend = createCpuBackend({ threads: 0 });
  // A server that waited for the body instead would end that wait at its deadline, with 503 rather than 413.
  const server = await startServer({ backend, config: { maxBodyBytes: 64 * 1024, deadlineMs: 10_000 } });
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(server.url).port) });
    try {
      // One byte over the limit; the headers only. The connection stays open: the body could still come.
      const head = "POST /v1/prune HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n" +
        `Content-Length: ${64 * 1024 + 1}\r\n\r\n`;
      await conn.write(new TextEncoder().encode(head));
      const answer = await readAnswer(conn, "the answer to headers declaring a body over the limit");
      assert.match(answer.head, /^HTTP\/1\.1 413 /, answer.head);
      assert.match(answer.head, /^x-zprune-error: too_large$/im, answer.head);
      assert.equal((JSON.parse(answer.body) as ErrorBody).error.code, "too_large");
    } finally {
      conn.close();
    }
    await assertStillHealthy(server);
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("413 too_large for a layer over maxLayerElements, naming it; a layer at the limit is pruned", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({ backend, config: { maxLayerElements: 999 } });
  const magnitude = (name: string, rows: number, cols: number) => ({
    name,
    weight: {
      dtype: "f32",
      shape: [rows, cols],
      data: f32(Array.from({ length: rows * cols }, (_, i) => ((i * 37) % 101) - 50.5)),
    },
  });
  const post = (...layers: unknown[]) =>
    postPrune(server.url, encodeMsgpack({ method: "magnitude", pattern: "layer", sparsity: 0.5, layers }));
  try {
    // 32 x 32 = 1024 elements with the right byte count: too large, alone or as the second layer.
    await expectError(await post(magnitude("over", 32, 32)), 413, "too_large", "layers[0].weight");
    await expectError(
      await post(magnitude("at", 27, 37), magnitude("over", 32, 32)),
      413,
      "too_large",
      "layers[1].weight",
    );
    // 27 x 37 = 999 elements: at the limit, allowed; floor(0.5 * 999) = 499 pruned. (The golden requests are
    // over this server's limit: this is also the check that it still answers after the refusals.)
    const res = await post(magnitude("at", 27, 37));
    assert.equal(res.status, 200, await res.clone().text());
    const body = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
    assert.deepEqual(body.layers[0]!.shape, [27, 37]);
    assert.equal(body.layers[0]!.stats.total, 999);
    assert.equal(body.layers[0]!.stats.pruned, 499);
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("500 internal for an unexpected exception: JSON, error header, counted; next answers are exact", async () => {
  const cpu = createCpuBackend({ threads: 0 });
  let thrown = 0;
  const backend = withPrune(cpu, (params, l, signal) => {
    if (thrown++ === 0) throw new Error("boom"); // the server logs it with its stack: expected in the output
    return cpu.prune(params, l, signal);
  });
  const server = await startServer({ backend });
  try {
    const res = await postPrune(server.url, encodeMsgpack(request()));
    assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
    assert.equal(res.headers.get("x-zprune-error"), "internal");
    const id = res.headers.get("x-request-id");
    assert.ok(id, "the answer carries its request id");
    const message = await expectError(res, 500, "internal", id);
    // The client learns which request to look up in the log, not the exception's message.
    assert.ok(!message.includes("boom"), message);
    assert.equal(thrown, 1, "the backend was called once");
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /^zprune_requests_total\{route="\/v1\/prune",status="500"\} 1$/m);
    await assertStillHealthy(server);
  } finally {
    await server.close();
    await cpu.close();
  }
});

Deno.test("503 with Retry-After when allocation fails or a CPU worker crashes; the server goes on", async () => {
  const cpu = createCpuBackend({ threads: 0 });
  const pool = new CpuPool(1);
  let failures = 0;
  const small = { op: "rows", keys: new Uint32Array(4), cols: 4, k: 1, mask: new Uint8Array(1), r0: 0, r1: 1 };
  const backend = withPrune(cpu, (params, l, signal) => {
    // An ArrayBuffer V8 cannot allocate, first on this thread, then in a worker (a row of scratch for 2^33 columns).
    if (failures === 0) return failures++, new ArrayBuffer(2 ** 45) as never;
    const huge = { op: "rows", keys: new Uint32Array(0), cols: 2 ** 33, k: 1, mask: new Uint8Array(0), r0: 0, r1: 0 };
    if (failures === 1) return failures++, pool.run(0, huge as never);
    // A worker that dies under its task: the pool's own `unavailable`, which names no Retry-After of its own.
    if (failures === 2) return failures++, pool.crash(0), pool.run(0, small as never);
    return cpu.prune(params, l, signal);
  });
  const server = await startServer({ backend });
  try {
    for (const [where, says] of [["inline", "allocate"], ["in a worker", "allocate"], ["crashed", "restarted"]]) {
      const res = await postPrune(server.url, encodeMsgpack(request()));
      assert.equal(res.headers.get("retry-after"), "1", where);
      await expectError(res, 503, "unavailable", says);
    }
    assert.equal(failures, 3);
    await assertStillHealthy(server);
  } finally {
    await server.close();
    pool.close();
    await cpu.close();
  }
});

Deno.test("error answers are msgpack only when Accept names msgpack and not JSON", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({ backend });
  const garbage = new Uint8Array([0xc1]);
  try {
    // A q of 0 refuses a type; a longer name that begins like msgpack is another type.
    const jsonAccepts = ["application/msgpack, application/json", "application/json", "*/*", "application/msgpack;q=0"];
    const alsoJson = [
      "application/msgpack, application/problem+json",
      "Application/JSON; charset=utf-8, application/msgpack",
    ];
    for (
      const accept of [...jsonAccepts, ...alsoJson, "application/msgpackjunk", "application/msgpack; q=0.0, text/plain"]
    ) {
      const res = await postPrune(server.url, garbage, { accept });
      assert.match(res.headers.get("content-type") ?? "", /^application\/json/, accept);
      await expectError(res, 400, "bad_msgpack");
    }
    const msgpackAccepts = ["application/x-msgpack", "application/msgpack", "application/msgpack;q=0.5, text/plain"];
    // Formats whose names begin like JSON's are not JSON: msgpack is the one named.
    const notJson = ["application/msgpack, application/json-seq", "application/msgpack, text/jsonish"];
    for (const accept of [...msgpackAccepts, ...notJson, "application/json;q=0, application/msgpack"]) {
      const res = await postPrune(server.url, garbage, { accept });
      assert.equal(res.status, 400, accept);
      assert.equal(res.headers.get("content-type"), "application/msgpack", accept);
      const body = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as ErrorBody;
      assert.equal(body.error.code, "bad_msgpack", accept);
      assert.ok(body.error.message.length > 10, accept);
    }
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("strings a client sends are cut short in error answers and log lines", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const logged: Record<string, unknown>[] = [];
  const server = await startServer({ backend, log: (e) => logged.push(e) });
  try {
    const type = "application/" + "x".repeat(20_000);
    const res = await postPrune(server.url, encodeMsgpack(request()), { "content-type": type });
    const message = await expectError(res, 415, "unsupported_media_type");
    assert.ok(message.length < 300, `a ${message.length}-character message`);
    assert.match(message, /^Content-Type "application\/x{88}\.\.\." is not accepted/);
    const long = await fetch(`${server.url}/${"p".repeat(10_000)}`);
    await expectError(long, 404, "not_found");
    const entry = logged.find((e) => e.status === 404)!;
    assert.equal(entry.path, `/${"p".repeat(255)}...`);
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("401 unauthorized without the configured bearer token", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({ backend, config: { token: "s3cret-token" } });
  try {
    const body = encodeMsgpack(request());
    // The message says which it is: no header, another scheme, or a token that is not the server's (RFC 6750's
    // invalid_token); never anything of the token itself.
    const none = await postPrune(server.url, body);
    assert.equal(none.headers.get("www-authenticate"), 'Bearer realm="zprune"');
    await expectError(none, 401, "unauthorized", "no Authorization header: send Authorization: Bearer <token>");
    const wrong = await postPrune(server.url, body, { authorization: "Bearer s3cret-tokem" });
    assert.equal(wrong.headers.get("www-authenticate"), 'Bearer realm="zprune", error="invalid_token"');
    assert.doesNotMatch(
      await expectError(wrong, 401, "unauthorized", "the bearer token sent is not this server's"),
      /s3/,
    );
    for (const authorization of ["s3cret-token", "Bearer ", "Basic czNjcmV0"]) {
      const other = await postPrune(server.url, body, { authorization });
      assert.equal(other.headers.get("www-authenticate"), 'Bearer realm="zprune"', authorization);
      const message = await expectError(other, 401, "unauthorized", "the Authorization header is not Bearer <token>");
      assert.doesNotMatch(message, /s3/);
    }
    await expectError(await fetch(`${server.url}/v1/info`), 401, "unauthorized");
    await expectError(await fetch(`${server.url}/metrics`), 401, "unauthorized");
    assert.equal((await postPrune(server.url, body, { authorization: "Bearer s3cret-token" })).status, 200);
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200, "health checks need no token");
    await (await fetch(`${server.url}/healthz`)).body?.cancel();
  } finally {
    await server.close();
    await backend.close();
  }
});

/** A CPU backend whose computations wait at a gate the test opens: makes "the queue is full" deterministic. */
function gated(inner: Backend): { backend: Backend; entered: Promise<void>; open: () => void } {
  let open!: () => void, enter!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const entered = new Promise<void>((r) => (enter = r));
  const backend = withPrune(inner, async (params: PruneParams, l: LayerJob, signal?: AbortSignal) => {
    enter();
    await gate;
    return inner.prune(params, l, signal);
  });
  return { backend, entered, open };
}

Deno.test("429 busy with Retry-After when the work queue is full", async () => {
  const cpu = createCpuBackend({ threads: 0 });
  const { backend, entered, open } = gated(cpu);
  const server = await startServer({ backend, config: { concurrency: 1, maxQueue: 1 } });
  try {
    const body = encodeMsgpack(request());
    const first = postPrune(server.url, body); // computes (held at the gate)
    await within(entered, "the first request reaching the backend");
    const second = postPrune(server.url, body); // waits in the queue
    // Until the second is seen waiting: a third sent before that (a fixed sleep on a loaded machine) would take
    // the queue's one place itself and wait for the gate this test opens only after the third's answer.
    const depth = async () =>
      /^zprune_queue_depth (\d+)$/m.exec(await (await fetch(`${server.url}/metrics`)).text())?.[1];
    await eventually(async () => (await depth()) === "1", "the second request waiting in the queue");
    const third = await postPrune(server.url, body); // no room
    assert.equal(third.headers.get("retry-after"), "1");
    await expectError(third, 429, "busy");
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /^zprune_queue_depth 1$/m);
    open();
    assert.equal((await first).status, 200);
    assert.equal((await second).status, 200);
    await assertStillHealthy(server);
  } finally {
    open();
    await server.close();
    await backend.close();
  }
});

Deno.test("answers clients do not read hold the budget (429) and make an upload's time shared (503)", async () => {
  // As main.ts wires it: the listener's count of answers not yet written counts against the budget with bodies.
  const backend = createCpuBackend({ threads: 0 });
  let answerBytes = () => 0;
  // A 2048x1024 f32 layer needs about 68 MB to compute (admitted alone), and its answer with weights and scores
  // back is about 17 MB, more than loopback's socket buffers take: four left unread hold 68 of the 72 MB budget.
  const app = createApp({
    backend,
    config: { memoryBudgetBytes: 72_000_000, deadlineMs: 5_000 },
    answerBytes: () => answerBytes(),
  });
  const listening = await listen(app.fetch, { port: 0, host: "127.0.0.1" });
  answerBytes = () => listening.answerBytes;
  const url = `http://127.0.0.1:${listening.port}`;
  const pending = async () =>
    Number(/^zprune_answer_bytes_pending (\d+)$/m.exec(await (await fetch(`${url}/metrics`)).text())?.[1]);
  const body = encodeMsgpack({
    sparsity: 0.5,
    return: ["mask", "weight", "score"],
    layers: [f32Layer("unread", 2048, 1024, 4)],
  });
  const post = (declared: number) =>
    new TextEncoder().encode(
      "POST /v1/prune HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n" +
        `Content-Length: ${declared}\r\n\r\n`,
    );
  const conns: Deno.Conn[] = [];
  try {
    for (let i = 1; i <= 4; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: listening.port });
      conns.push(conn);
      await writeAll(conn, new Uint8Array([...post(body.byteLength), ...body]));
      await eventually(async () => (await pending()) > i * 16_000_000, `unread answer ${i} counted`);
    }
    const refused = await postPrune(url, body);
    assert.equal(refused.headers.get("retry-after"), "1");
    await expectError(refused, 429, "busy", "answers its clients have yet to read");
    // An upload that stalls while those answers go out (on the same link, as far as the server knows) has not had
    // the server to itself: its deadline is a 503 to retry, not a 504.
    const stalled = await Deno.connect({ hostname: "127.0.0.1", port: listening.port });
    conns.push(stalled);
    await writeAll(stalled, new Uint8Array([...post(100), 0x81]));
    const answer = await readAnswer(stalled, "the stalled upload's answer");
    assert.match(answer.head, /^HTTP\/1\.1 503 /, answer.head);
    assert.match(answer.body, /for its body to arrive while other requests were at the server/, answer.body);
    // Clients that leave let their answers go, and the budget with them.
    for (const conn of conns.splice(0)) conn.close();
    await eventually(async () => (await pending()) === 0, "the unread answers let go");
    const ok = await postPrune(url, body);
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
  } finally {
    for (const conn of conns) conn.close();
    await listening.shutdown();
    await backend.close();
  }
});

Deno.test("429 busy while bodies yet to compute hold the memory budget; ended or aborted uploads free it", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({
    backend,
    config: { memoryBudgetBytes: 1_000_000, maxBodyBytes: 10_000_000, deadlineMs: 2_000 },
  });
  const held = async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    return Number(/^zprune_body_bytes_held (\d+)$/m.exec(text)?.[1]);
  };
  const until = (what: string, ok: (n: number) => boolean) => eventually(async () => ok(await held()), what, 5_000);
  /** A chunked upload of `bytes` zeros that stays open until `end()`; `abort` cancels it from the client's side. */
  const upload = (bytes: number) => {
    let close!: () => void;
    const closed = new Promise<void>((r) => (close = r));
    let sent = 0;
    const abort = new AbortController();
    const stream = new ReadableStream<Uint8Array>({
      async pull(ctrl) {
        if (sent >= bytes) {
          await closed;
          return ctrl.close();
        }
        const chunk = Math.min(16_384, bytes - sent);
        sent += chunk;
        ctrl.enqueue(new Uint8Array(chunk));
      },
    });
    const res = fetch(`${server.url}/v1/prune`, {
      method: "POST",
      headers: { "content-type": "application/msgpack" },
      body: stream,
      duplex: "half",
      signal: abort.signal,
    } as RequestInit);
    res.catch(() => {}); // a test that fails midway aborts the uploads it did not await
    const stop = () => (close(), abort.abort());
    uploads.push(stop);
    return { res, end: close, abort: () => abort.abort() };
  };
  // Ended and aborted at the end, so that a failed assertion cannot hang close(): an upload the server has answered
  // early (a 413, say) keeps its connection until its stream ends, which the client's abort no longer does.
  const uploads: (() => void)[] = [];
  try {
    const small = encodeMsgpack(request());
    assert.equal((await postPrune(server.url, small)).status, 200);
    assert.equal(await held(), 0);
    // One upload alone may take the whole budget; a second body then waits for it.
    const a = upload(1_000_000);
    await until("the first upload is held", (n) => n === 1_000_000);
    const refused = await postPrune(server.url, small);
    await expectError(refused, 429, "busy", "hold 1000000 of 1000000 bytes");
    assert.equal(refused.headers.get("retry-after"), "1");
    a.end();
    await expectError(await a.res, 400, "bad_msgpack"); // zeros are not one msgpack value
    await until("the ended upload is released", (n) => n === 0);
    assert.equal((await postPrune(server.url, small)).status, 200);
    // One past the whole budget could never compute (the queue counts the body in its cost): 413 by its declared
    // length, alone, before a byte of it is sent.
    const port = Number(new URL(server.url).port);
    const over = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await over.write(new TextEncoder().encode(
        "POST /v1/prune HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\nContent-Length: 1000001\r\n\r\n",
      ));
      const { head, body } = await readAnswer(over, "the answer to a body past the budget", 10_000);
      assert.match(head, /^HTTP\/1\.1 413/);
      assert.match(body, /memory budget of 1000000 bytes by itself \(1000001 bytes declared\)/);
    } finally {
      over.close();
    }
    assert.equal(await held(), 0);
    // Holds count bytes received, not buffer capacity: 300 KB held and a 600 KB chunked body fit 1 MB together.
    const b = upload(300_000);
    await until("the second upload is held", (n) => n === 300_000);
    const c = upload(600_000);
    c.end();
    await expectError(await c.res, 400, "bad_msgpack");
    // A client that gives up mid-upload releases its hold too.
    b.abort();
    await b.res.catch(() => {});
    await until("the aborted upload is released", (n) => n === 0);
    // A client that declares a large body and sends none of it holds nothing, and the deadline ends its wait.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      const head = "POST /v1/prune HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n" +
        "Content-Length: 900000\r\n\r\n";
      await conn.write(new TextEncoder().encode(head));
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await held(), 0);
      assert.equal((await postPrune(server.url, small)).status, 200);
      // The server answers once the 2 s deadline has passed.
      const { head: answer } = await readAnswer(conn, "the answer after the 2 s deadline", 10_000);
      assert.match(answer, /^HTTP\/1\.1 503/);
    } finally {
      conn.close();
    }
    await assertStillHealthy(server);
  } finally {
    for (const stop of uploads) stop();
    await server.close();
    await backend.close();
  }
});

Deno.test("bodies are held to the work queue's budget; an injected queue must have the config's limits", async () => {
  // A 64x64 f32 layer: a 16.4 kB body, under a budget of 10 MB and over one of 10 kB.
  const backend = createCpuBackend({ threads: 0 });
  const big = { name: "w", weight: { dtype: "f32", shape: [64, 64], data: new Uint8Array(64 * 64 * 4) } };
  const body = encodeMsgpack(request({ method: "magnitude", layers: [big] }));
  for (const [budget, status] of [[10_000_000, 200], [10_000, 413]] as const) {
    const queue = new WorkQueue({ concurrency: 1, maxQueue: 4, memoryBudget: budget });
    const server = await startServer({ backend, queue, config: { memoryBudgetBytes: budget, maxQueue: 4 } });
    try {
      const res = await postPrune(server.url, body);
      if (status === 200) assert.equal(res.status, 200, await res.text());
      else await expectError(res, 413, "too_large", `memory budget of ${budget} bytes by itself`);
    } finally {
      await server.close();
    }
  }
  // /v1/info reports the config's limits, which clients plan by: a queue with others would make it say what is not so.
  const other = new WorkQueue({ concurrency: 1, maxQueue: 4, memoryBudget: 10_000_000 });
  assert.throws(
    () => createApp({ backend, queue: other, config: { memoryBudgetBytes: 1000, maxQueue: 4 } }),
    /memoryBudget 10000000 and maxQueue 4 differ from the config's 1000 and 4/,
  );
  const longer = new WorkQueue({ concurrency: 1, maxQueue: 8, memoryBudget: 1000 });
  assert.throws(
    () => createApp({ backend, queue: longer, config: { memoryBudgetBytes: 1000, maxQueue: 4 } }),
    /memoryBudget 1000 and maxQueue 8 differ from the config's 1000 and 4/,
  );
  await backend.close();
});

Deno.test("a client gone mid-upload counts as 499, never 5xx; pattern labels stay few however spelt", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({ backend });
  const metrics = async () => await (await fetch(`${server.url}/metrics`)).text();
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(server.url).port) });
    const head = "POST /v1/prune HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n" +
      "Content-Length: 1000000\r\n\r\n";
    await conn.write(new TextEncoder().encode(head));
    await conn.write(new Uint8Array(1000));
    await new Promise((r) => setTimeout(r, 100));
    conn.close();
    let text = "";
    await eventually(
      async () => /route="\/v1\/prune",status="499"/.test(text = await metrics()),
      "the 499 counted",
      2_000,
    );
    assert.match(text, /zprune_requests_total\{route="\/v1\/prune",status="499"\} 1/);
    assert.doesNotMatch(text, /status="5\d\d"/);
    // "01:2", "1:02" and "001:02" are one pattern; M over 8 shares one label.
    const wide = (cols: number) => ({
      name: "w",
      weight: { dtype: "f32", shape: [1, cols], data: new Uint8Array(4 * cols).fill(0x3f) },
    });
    for (
      const [pattern, cols] of [["1:2", 2], ["01:2", 2], ["1:02", 2], ["001:02", 2], ["2:4", 4], ["1:10", 10], [
        "3:12",
        12,
      ]] as const
    ) {
      const res = await postPrune(server.url, encodeMsgpack({ method: "magnitude", pattern, layers: [wide(cols)] }));
      assert.equal(res.status, 200, `${pattern}: ${await res.text()}`);
    }
    const labels = [...(await metrics()).matchAll(/^zprune_layers_total\{[^}]*pattern="([^"]+)"/gm)].map((m) => m[1]);
    assert.deepEqual(labels.sort(), ["1:2", "2:4", "N:M"]);
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("a deadline met mid-body: 504 with the server to itself, 503 to retry beside another request", async () => {
  const backend = createCpuBackend({ threads: 0 });
  // 1 s: the two uploads below must overlap although opened one after the other, on a machine that may stall.
  const server = await startServer({ backend, config: { deadlineMs: 1000 } });
  const port = Number(new URL(server.url).port);
  const head = "POST /v1/prune HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\nContent-Length: 100\r\n\r\n";
  /** Opens an upload that sends 10 of its 100 bytes and stalls. */
  const stalled = async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new TextEncoder().encode(head));
    await conn.write(new Uint8Array(10).fill(0x81));
    return conn;
  };
  const answerOf = async (conn: Deno.Conn) => {
    const answer = await readAnswer(conn, "the answer to a stalled upload");
    return { status: Number(answer.head.split(" ")[1]), ...(JSON.parse(answer.body) as ErrorBody).error };
  };
  const conns: Deno.Conn[] = [];
  try {
    // Alone: the same body would come as slowly again, so retrying cannot help.
    conns.push(await stalled());
    const alone = await answerOf(conns[0]!);
    assert.deepEqual([alone.status, alone.code], [504, "deadline_exceeded"], alone.message);
    assert.match(alone.message, /ms for its body to arrive with no other request at the server/);
    // Two at once: each shared the server (and perhaps the link) with the other.
    conns.push(await stalled(), await stalled());
    for (const conn of conns.slice(1)) {
      const shared = await answerOf(conn);
      assert.deepEqual([shared.status, shared.code], [503, "unavailable"], shared.message);
      assert.match(shared.message, /ms for its body to arrive while other requests were at the server/);
    }
    await assertStillHealthy(server);
  } finally {
    for (const conn of conns) conn.close();
    await server.close();
    await backend.close();
  }
});

Deno.test("a client that half-closes mid-body receives the 499, naming the length it declared", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const server = await startServer({ backend });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(server.url).port) });
  try {
    const head =
      "POST /v1/prune HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\nContent-Length: 100\r\n\r\n";
    await conn.write(new TextEncoder().encode(head));
    await conn.write(new Uint8Array(10).fill(0x81));
    await conn.closeWrite();
    const answer = await readAnswer(conn, "the answer to a half-closed upload");
    assert.match(answer.head, /^HTTP\/1\.1 499/);
    assert.match(answer.head, /^x-zprune-error: client_closed_request$/im);
    const e = JSON.parse(answer.body) as { error: { code: string; message: string } };
    assert.equal(e.error.code, "client_closed_request");
    assert.match(e.error.message, /before its body \(100 bytes declared\) could be read/);
    await assertStillHealthy(server);
  } finally {
    conn.close();
    await server.close();
    await backend.close();
  }
});

/** An HTTP/2 frame: type, flags, stream and payload after the 9-byte header (RFC 9113 section 4.1). */
function h2Frame(type: number, flags: number, stream: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(9 + payload.length);
  const view = new DataView(f.buffer);
  view.setUint32(0, payload.length << 8);
  view.setUint8(3, type);
  view.setUint8(4, flags);
  view.setUint32(5, stream);
  f.set(payload, 9);
  return f;
}

/** A HEADERS frame (END_HEADERS) of `fields` as HPACK literals without indexing (RFC 7541 section 6.2.2). */
function h2Headers(stream: number, fields: [string, string][]): Uint8Array {
  const enc = new TextEncoder();
  const block = fields.flatMap(([k, v]) => [0, k.length, ...enc.encode(k), v.length, ...enc.encode(v)]);
  return h2Frame(1, 0x4, stream, new Uint8Array(block));
}

Deno.test("an HTTP/2 body of another length than its content-length is 400 bad_msgpack, never a 500", async () => {
  const backend = createCpuBackend({ threads: 0 });
  const logged: Record<string, unknown>[] = [];
  const server = await startServer({ backend, log: (e) => logged.push(e) });
  const port = Number(new URL(server.url).port);
  const head: [string, string][] = [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", "/v1/prune"],
    [":authority", "x"],
    ["content-type", "application/msgpack"],
  ];
  const preface = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  const settings = h2Frame(4, 0, 0, new Uint8Array(0));
  // Deno serves h2c to a client that starts with the preface. Its stream's body fails once the DATA frames disagree
  // with content-length: one byte and END_STREAM where it says 100, or five bytes where it says 1.
  const body = (declared: number, bytes: number): [string, Uint8Array[]] => [
    `${bytes} byte(s) of ${declared} declared`,
    [h2Headers(1, [...head, ["content-length", String(declared)]]), h2Frame(0, 1, 1, new Uint8Array(bytes).fill(0xc0))],
  ];
  const cases = [body(100, 1), body(1, 5)];
  try {
    for (const [what, [headers, ...rest]] of cases) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await writeAll(conn, preface);
        await writeAll(conn, settings);
        await writeAll(conn, headers!);
        const n = logged.length;
        await new Promise((r) => setTimeout(r, 100)); // the handler reads the body before the bad frames come
        for (const frame of rest) await writeAll(conn, frame).catch(() => {}); // the server may reset first
        await eventually(() => Promise.resolve(logged.length > n), `${what}: the request logged`, 5_000);
        assert.deepEqual([logged[n]!.status, logged[n]!.error], [400, "bad_msgpack"], what);
      } finally {
        conn.close();
      }
    }
    const text = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(text, /zprune_requests_total\{route="\/v1\/prune",status="400"\} 2/);
    assert.doesNotMatch(text, /status="5\d\d"/);
    const health = await fetch(`${server.url}/healthz`);
    assert.deepEqual([health.status, await health.json()], [200, { status: "ok", backend: "cpu" }]);
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("deadline: 503 to retry when it passes in the queue, 504 when computing; no backend restart", async () => {
  const cpu = createCpuBackend({ threads: 0 });
  const { backend, entered, open } = gated(cpu);
  const server = await startServer({ backend, config: { concurrency: 1, maxQueue: 4, deadlineMs: 300 } });
  try {
    const body = encodeMsgpack(request());
    const first = postPrune(server.url, body); // computes (held at the gate past its deadline)
    await within(entered, "the first request reaching the backend");
    const second = await postPrune(server.url, body); // waits in the queue until its deadline
    assert.equal(second.headers.get("retry-after"), "1");
    await expectError(second, 503, "unavailable", "deadline");
    // The same request again would compute as long: no Retry-After, and a status the clients do not retry.
    const overdue = await first;
    assert.equal(overdue.headers.get("retry-after"), null);
    await expectError(overdue, 504, "deadline_exceeded", "deadline of 300 ms");
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /^# TYPE zprune_backend_restarts_total counter$/m);
    assert.match(metrics, /^zprune_backend_restarts_total 0$/m);
    open();
  } finally {
    open();
    await server.close();
    await cpu.close();
  }
});

Deno.test("a deadline met after waiting behind another request is a 503 to retry, even mid-compute", async () => {
  // Each layer takes 700 ms of wall time, one request computes at a time, the deadline is 1 s: the second request
  // waits about 700 ms for the first and computes about 300 ms when its deadline passes. That is the server's load,
  // not a request too large for the deadline.
  const cpu = createCpuBackend({ threads: 0 });
  const backend = withPrune(cpu, async (params: PruneParams, l: LayerJob, signal?: AbortSignal) => {
    await new Promise((r) => setTimeout(r, 700));
    return cpu.prune(params, l, signal);
  });
  const server = await startServer({ backend, config: { concurrency: 1, maxQueue: 4, deadlineMs: 1000 } });
  try {
    const body = encodeMsgpack(request());
    // Which of the two the server takes first is not the test's to choose: the other is the one that waits.
    const answers = await Promise.all([postPrune(server.url, body), postPrune(server.url, body)]);
    const late = answers.find((r) => r.status !== 200);
    for (const r of answers) if (r !== late) await r.body?.cancel();
    assert.ok(late, "one of the two misses the deadline");
    assert.equal(late.headers.get("retry-after"), "1");
    const message = await expectError(late, 503, "unavailable", "deadline of 1000 ms");
    const [, waited, worked] = /after (\d+) ms of waiting .* and (\d+) ms of this request's own work/.exec(message)!;
    assert.ok(Number(waited) > Number(worked), message);
  } finally {
    await server.close();
    await cpu.close();
  }
});

Deno.test("a deadline met computing beside another request is a 503 to retry: the time was shared", async () => {
  // The review's case: the default two compute slots, a backend that runs one 300 ms layer at a time, requests of
  // two layers, a 1 s deadline. Alone a request takes about 600 ms; the second of two sent together misses the
  // deadline, having spent it all admitted, but most of it waiting for the first's layers.
  const cpu = createCpuBackend({ threads: 0 });
  let chain = Promise.resolve();
  const backend = withPrune(cpu, (params: PruneParams, l: LayerJob, signal?: AbortSignal) => {
    const turn = chain.then(() => new Promise((r) => setTimeout(r, 300))).then(() => cpu.prune(params, l, signal));
    chain = turn.then(() => {}, () => {});
    return turn;
  });
  const server = await startServer({ backend, config: { concurrency: 2, maxQueue: 4, deadlineMs: 1000 } });
  try {
    const body = encodeMsgpack(request({ layers: [layer({ name: "a" }), layer({ name: "b" })] }));
    const answers = await Promise.all([postPrune(server.url, body), postPrune(server.url, body)]);
    const late = answers.find((r) => r.status !== 200);
    for (const r of answers) if (r !== late) await r.body?.cancel();
    assert.ok(late, "one of the two misses the deadline");
    assert.equal(late.headers.get("retry-after"), "1");
    await expectError(late, 503, "unavailable", "computed alongside other requests");
  } finally {
    await server.close();
    await cpu.close();
  }
});

Deno.test("a deadline met after decoding beside a layer another request left behind is 503: time shared", async () => {
  // One compute slot, a 1 s deadline. The first request's layer outlives its deadline: answered 504, its layer keeps
  // computing and holds the slot. The second decodes its body beside that layer, waits for the slot, then computes
  // alone until its own deadline: most of its time was computing with no other request, but its decoding was not its
  // own (README: own work is work with no other request computing), so 503. Counting the decoding as its own, as
  // before WorkQueue.idle(), makes it a 504 the clients would not retry.
  const cpu = createCpuBackend({ threads: 0 });
  let openLeft!: () => void, enterLeft!: () => void, enterSecond!: () => void;
  const leftGate = new Promise<void>((r) => (openLeft = r));
  const leftEntered = new Promise<void>((r) => (enterLeft = r));
  const secondEntered = new Promise<void>((r) => (enterSecond = r));
  const backend = withPrune(cpu, async (params: PruneParams, l: LayerJob, signal?: AbortSignal) => {
    if (l.name === "left") {
      enterLeft();
      await leftGate;
    } else {
      enterSecond();
      await new Promise((r) => setTimeout(r, 1500)); // past the second request's deadline
    }
    return cpu.prune(params, l, signal);
  });
  const server = await startServer({ backend, config: { concurrency: 1, maxQueue: 4, deadlineMs: 1000 } });
  const metric = async (name: string) =>
    new RegExp(`^${name} (\\d+)$`, "m").exec(await (await fetch(`${server.url}/metrics`)).text())?.[1];
  try {
    const first = postPrune(server.url, encodeMsgpack(request({ layers: [layer({ name: "left" })] })));
    await within(leftEntered, "the first request reaching the backend");
    await expectError(await within(first, "the first answer at its deadline"), 504, "deadline_exceeded");
    assert.equal(await metric("zprune_requests_in_flight"), "1", "the left layer still computes");
    const second = postPrune(server.url, encodeMsgpack(request({ layers: [layer({ name: "b" })] })));
    await eventually(async () => (await metric("zprune_queue_depth")) === "1", "the second request decoded, waiting");
    openLeft();
    await within(secondEntered, "the second request computing once the left layer is through");
    const late = await within(second, "the second answer at its deadline");
    assert.equal(late.headers.get("retry-after"), "1");
    await expectError(late, 503, "unavailable", "decoded or computed alongside other requests");
    await eventually(async () => (await metric("zprune_requests_in_flight")) === "0", "the second layer let go");
  } finally {
    openLeft();
    await server.close();
    await cpu.close();
  }
});

Deno.test("an overdue request is answered at once, its slot kept until the backend lets the layer go", async () => {
  // Whichever backend: the WebGPU one lets a layer in flight go only when the GPU is through with it.
  const cpu = createCpuBackend({ threads: 0 });
  const { backend, entered, open } = gated(cpu);
  const server = await startServer({ backend, config: { concurrency: 1, maxQueue: 4, deadlineMs: 300 } });
  const running = async () =>
    /^zprune_requests_in_flight (\d+)$/m.exec(await (await fetch(`${server.url}/metrics`)).text())?.[1];
  try {
    const body = encodeMsgpack(request());
    const first = postPrune(server.url, body);
    await within(entered, "the request reaching the backend");
    // The gate is still shut, so this answer cannot have waited for the layer.
    await expectError(await within(first, "the answer at the deadline", 10_000), 504, "deadline_exceeded", "deadline");
    assert.equal(await running(), "1", "the layer still holds its slot");
    open();
    await eventually(async () => (await running()) === "0", "the slot freed once the backend let the layer go");
    const res = await postPrune(server.url, body);
    assert.equal(res.status, 200);
    await res.body?.cancel();
  } finally {
    open();
    await server.close();
    await cpu.close();
  }
});

Deno.test("a backend failure mid-request answers 503 and the next request succeeds", async () => {
  const backend = createCpuBackend({ threads: 2, parallelMin: 0 });
  const server = await startServer({ backend });
  try {
    // A layer large enough that the workers are busy when the drill kills one.
    const rows = 512, cols = 1024;
    const w = new Float32Array(rows * cols).map((_, i) => Math.sin(i) * 0.02);
    const big = encodeMsgpack(
      request({
        layers: [
          layer({ weight: { dtype: "f32", shape: [rows, cols], data: new Uint8Array(w.buffer) }, actNormSq: null }),
        ],
        options: { dataFree: true },
      }),
    );
    assert.equal((await postPrune(server.url, big)).status, 200, "warm-up");
    backend.crashWorker(1); // the worker dies while it holds this request's first task
    await expectError(await postPrune(server.url, big), 503, "unavailable", "restarted");
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /^zprune_backend_restarts_total 1$/m, "one worker replaced");
    assert.equal((await postPrune(server.url, big)).status, 200);
    await assertStillHealthy(server);
  } finally {
    await server.close();
    await backend.close();
  }
});

Deno.test("a many-layer request computed on the server's thread leaves /healthz and its deadline a turn", async () => {
  // Layers under the CPU backend's parallel threshold run inline, on the event loop's thread. Each holds the thread
  // for 50 ms of wall time (a busy loop before its real work), so that the request outlasts a 1 s deadline however
  // fast the machine, while its small body arrives well within it however loaded the machine.
  const rows = 64, cols = 64, count = 48, holdMs = 50;
  const rand = rng(7);
  const layers = Array.from({ length: count }, (_, i) => ({
    name: `l${i}`,
    weight: { dtype: "f32", shape: [rows, cols], data: f32(Array.from({ length: rows * cols }, rand)) },
    actNormSq: { dtype: "f32", shape: [cols], data: f32(Array.from({ length: cols }, () => 1 + rand())) },
  }));
  const body = encodeMsgpack(request({ layers }));
  for (const deadlineMs of [0, 1000]) {
    const cpu = createCpuBackend({ threads: 0 });
    let computing!: () => void;
    const entered = new Promise<void>((r) => computing = r);
    const backend = withPrune(cpu, (params, layer, signal) => {
      computing();
      for (const until = performance.now() + holdMs; performance.now() < until;);
      return cpu.prune(params, layer, signal);
    });
    const server = await startServer({ backend, config: { deadlineMs } });
    try {
      let pruneDone = false;
      const prune = postPrune(server.url, body).then((res) => (pruneDone = true, res));
      // The first layer is computing: from here the request holds the thread but for its yields. A request
      // answered before that (its deadline passed while the body was read and decoded) never enters: say so.
      await within(
        Promise.race([
          entered,
          prune.then((res) => {
            throw new Error(`deadline ${deadlineMs}: answered ${res.status} before its first layer computed`);
          }),
        ]),
        `deadline ${deadlineMs}: the first layer reaching the backend`,
      );
      const health = await fetch(`${server.url}/healthz`);
      assert.equal(health.status, 200);
      await health.body?.cancel();
      assert.ok(!pruneDone, `deadline ${deadlineMs}: /healthz was answered only after the ${count}-layer request`);
      const res = await prune;
      if (deadlineMs === 0) {
        assert.equal(res.status, 200);
        const out = decodeMsgpack(new Uint8Array(await res.arrayBuffer())) as PruneResponse;
        assert.deepEqual(out.layers.map((l) => l.name), layers.map((l) => l.name));
      } else {
        await expectError(res, 504, "deadline_exceeded", "deadline");
      }
    } finally {
      await server.close();
      await cpu.close();
    }
  }
});
