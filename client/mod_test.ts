/**
 * Wire encoding, masks, retries, timeouts and error mapping of the client, against a tiny local server that
 * plays the parts a real server only plays under load (429, 503, slowness). Golden correctness against the
 * real app is in tests/e2e_prune_test.ts.
 */
import assert from "node:assert/strict";
import { Packr } from "msgpackr";
import {
  applyMask,
  decodeMsgpack,
  DEFAULT_TIMEOUT_MS,
  encodeRequest,
  tensor,
  tensorValues,
  ZpruneClient,
  ZpruneError,
} from "./mod.ts";
import type { PruneRequestInput, PruneResponse } from "../contract/api.ts";
import { DEFAULT_CONFIG } from "../config.ts";
import { ERROR_CODE_HEADER } from "../contract/errors.ts";

const OK_BODY: PruneResponse = {
  backend: "cpu",
  device: "stub",
  timings: { decodeMs: 0, computeMs: 0, encodeMs: 0, totalMs: 0 },
  layers: [{
    name: "l0",
    shape: [1, 8],
    mask: new Uint8Array([0b00001111]),
    stats: { pruned: 4, total: 8, sparsity: 0.5, rowSparsity: { min: 0.5, max: 0.5, mean: 0.5 }, nonFinite: 0 },
  }],
};
const REQUEST = {
  sparsity: 0.5,
  layers: [{
    name: "l0",
    weight: { dtype: "f32" as const, shape: [1, 8], data: new Uint8Array(32) },
    actNormSq: { dtype: "f32" as const, shape: [8], data: new Uint8Array(32) },
  }],
};

/** Serves `handler` on an ephemeral port for the duration of `fn`. */
async function withServer(
  handler: (req: Request, attempt: number) => Response | Promise<Response>,
  fn: (url: string) => Promise<void>,
): Promise<void> {
  let attempt = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => handler(req, attempt++));
  try {
    await fn(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
  }
}

const msgpack = (v: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(new Packr({ useRecords: false }).pack(v) as Uint8Array<ArrayBuffer>, {
    status,
    headers: { "content-type": "application/msgpack", ...headers },
  });

Deno.test("encodeRequest() sends typed arrays as bin, never as ext types", () => {
  const act = new Float32Array([1.5, 2, 3]);
  const bytes = encodeRequest({
    sparsity: 0.5,
    layers: [{ name: "x", weight: { dtype: "f32", shape: [1, 3], data: act as unknown as Uint8Array<ArrayBuffer> } }],
  });
  // msgpack ext formats are 0xc7-0xc9 and 0xd4-0xd8; a bin of 12 bytes is 0xc4 0x0c.
  const at = bytes.findIndex((b, i) => b === 0xc4 && bytes[i + 1] === 12);
  assert.ok(at > 0, "a bin8 of 12 bytes is present");
  const decoded = decodeMsgpack(bytes) as { layers: { weight: { data: Uint8Array } }[] };
  const data = decoded.layers[0]!.weight.data;
  assert.ok(data instanceof Uint8Array && !(data instanceof Float32Array));
  assert.deepEqual(Array.from(new Float32Array(new Uint8Array(data).buffer)), [1.5, 2, 3]);
});

Deno.test("applyMask() zeroes exactly the masked f32, f16 and bf16 elements, unaligned too, ignoring tail bits", () => {
  for (const [dtype, size] of [["f32", 4], ["f16", 2], ["bf16", 2]] as const) {
    const backing = new Uint8Array(1 + 10 * size).fill(0x3c);
    const w = backing.subarray(1); // odd offset: no typed-array view could be made on it
    // Elements 0, 7 and 9; bit 12 lies past the 10 elements (a mask's tail) and must be ignored.
    const mask = new Uint8Array([0b10000001, 0b00010010]);
    assert.equal(applyMask(w, dtype, mask), 3);
    for (let i = 0; i < 10; i++) {
      const el = Array.from(w.subarray(i * size, (i + 1) * size));
      assert.deepEqual(el, Array(size).fill([0, 7, 9].includes(i) ? 0 : 0x3c), `${dtype} element ${i}`);
    }
  }
  assert.throws(() => applyMask(new Uint8Array(40), "f32", new Uint8Array(3)), RangeError);
});

Deno.test("tensorValues() reads f32, f16 and bf16 tensors at any byte offset, exactly", () => {
  // Bit patterns with known values: 1, -2, the largest finite f16 and its smallest subnormal (2^-24); for bf16 1, -3
  // and its smallest subnormal (2^-133).
  const halves = {
    f16: [[0x3c00, 1], [0xc000, -2], [0x7bff, 65504], [0x0001, 2 ** -24]],
    bf16: [[0x3f80, 1], [0xc040, -3], [0x0001, 2 ** -133]],
  } as const;
  for (const [dtype, cases] of Object.entries(halves) as [("f16" | "bf16"), readonly (readonly [number, number])[]][]) {
    const buf = new Uint8Array(1 + 2 * cases.length);
    const view = new DataView(buf.buffer);
    cases.forEach(([bits], i) => view.setUint16(1 + 2 * i, bits, true));
    const data = buf.subarray(1); // odd offset: no Uint16Array could view it
    assert.deepEqual([...tensorValues({ dtype, shape: [cases.length], data })], cases.map(([, v]) => v), dtype);
  }
  const buf = new Uint8Array(3 + 8);
  new DataView(buf.buffer).setFloat32(3, -0.1, true);
  new DataView(buf.buffer).setFloat32(7, 3e38, true);
  assert.deepEqual([...tensorValues({ dtype: "f32", shape: [2], data: buf.subarray(3) })], [
    Math.fround(-0.1),
    Math.fround(3e38),
  ]);
  assert.throws(() => tensorValues({ dtype: "f16", shape: [1], data: new Uint8Array(3) }), RangeError);
});

Deno.test("the default timeout outlasts the server's default deadline, so the server's own answer comes first", () => {
  // Both bound the same request; the server's clock starts later (after the connection), hence a margin.
  assert.ok(DEFAULT_TIMEOUT_MS >= DEFAULT_CONFIG.deadlineMs + 30_000, `${DEFAULT_TIMEOUT_MS}`);
});

Deno.test("pruneLayers() retries 429 and 503 after Retry-After (seconds or HTTP date), else backing off", async () => {
  const seen: string[] = [];
  let dateTarget = 0;
  await withServer((req, attempt) => {
    seen.push(req.headers.get("authorization") ?? "");
    if (attempt === 0) {
      return Response.json({ error: { code: "busy", message: "queue full" } }, {
        status: 429,
        headers: { "retry-after": "1" },
      });
    }
    if (attempt === 1) return Response.json({ error: { code: "unavailable", message: "restarting" } }, { status: 503 });
    if (attempt === 2) {
      // A whole second (HTTP dates have no fraction) at least 30 s from now.
      dateTarget = (Math.floor(Date.now() / 1000) + 31) * 1000;
      return Response.json({ error: { code: "unavailable", message: "restarting" } }, {
        status: 503,
        headers: { "retry-after": new Date(dateTarget).toUTCString() },
      });
    }
    return msgpack(OK_BODY);
  }, async (url) => {
    // The waits the client asks for, recorded rather than slept; for the date, also how far off it was then.
    const waits: number[] = [];
    const untilDate: number[] = [];
    const sleep = (ms: number) => {
      waits.push(ms);
      if (waits.length === 3) untilDate.push(dateTarget - Date.now());
      return Promise.resolve();
    };
    // maxBackoffMs over the date's 31 s: Retry-After is honoured up to it (the cap has its own test).
    const client = new ZpruneClient({ url, token: "s3cret", backoffMs: 5, maxBackoffMs: 60_000, sleep });
    const res = await client.pruneLayers(REQUEST);
    assert.equal(res.layers[0]!.stats.pruned, 4);
    assert.deepEqual(Array.from(res.layers[0]!.mask), [0b00001111]);
    assert.equal(waits.length, 3, `one wait per retry: ${waits}`);
    const [seconds, backoff, date] = waits as [number, number, number];
    // Retry-After: 1 is 1000 ms, plus at most half a backoffMs of jitter.
    assert.ok(seconds >= 1000 && seconds <= 1000 + 2.5, `Retry-After: 1 waited ${seconds} ms`);
    // No Retry-After: the second retry's backoff, within [0, backoffMs * 2].
    assert.ok(backoff >= 0 && backoff <= 10, `backoff of ${backoff} ms`);
    // An HTTP date (31 s at most after the answer): until that date, as far off as it still was when the client
    // slept, plus at most the jitter.
    assert.ok(date >= untilDate[0]!, `waited ${date} ms for a date ${untilDate[0]} ms away`);
    assert.ok(date <= 31_000 + 2.5, `Retry-After date waited ${date} ms`);
  });
  assert.deepEqual(seen, ["Bearer s3cret", "Bearer s3cret", "Bearer s3cret", "Bearer s3cret"]);
});

Deno.test("pruneLayers() waits no longer than maxBackoffMs, whatever Retry-After asks", async () => {
  const asks = ["86400", new Date(Date.now() + 10 * 365 * 86_400_000).toUTCString()];
  await withServer((_req, attempt) => {
    if (attempt >= asks.length) return msgpack(OK_BODY);
    const error = { code: "busy", message: "queue full" };
    return Response.json({ error }, { status: 429, headers: { "retry-after": asks[attempt]! } });
  }, async (url) => {
    const waits: number[] = [];
    const sleep = (ms: number) => (waits.push(ms), Promise.resolve());
    const client = new ZpruneClient({ url, backoffMs: 4, maxBackoffMs: 1_000, sleep });
    assert.equal((await client.pruneLayers(REQUEST)).layers[0]!.stats.pruned, 4);
    // A day, and a date ten years ahead: 1000 ms each.
    assert.deepEqual(waits, [1_000, 1_000]);
  });
});

Deno.test("pruneLayers() backs off further while Retry-After stays the same", async () => {
  // zprune answers busy with Retry-After: 1 however long it stays busy. With the jitter at its top (Math.random()
  // 0.999): Retry-After's 1000 ms plus 499.5, or the doubling backoff's 999, 1998, 3996, 7992 ms, whichever is more.
  const random = Math.random;
  Math.random = () => 0.999;
  try {
    await withServer((_req, attempt) => {
      if (attempt >= 4) return msgpack(OK_BODY);
      const error = { code: "busy", message: "queue full" };
      return Response.json({ error }, { status: 429, headers: { "retry-after": "1" } });
    }, async (url) => {
      const waits: number[] = [];
      const sleep = (ms: number) => (waits.push(ms), Promise.resolve());
      const client = new ZpruneClient({ url, backoffMs: 1_000, maxBackoffMs: 1e6, sleep });
      assert.equal((await client.pruneLayers(REQUEST)).layers[0]!.stats.pruned, 4);
      assert.deepEqual(waits.map((w) => Math.round(w * 10) / 10), [1_499.5, 1_998, 3_996, 7_992]);
    });
  } finally {
    Math.random = random;
  }
});

Deno.test("pruneLayers(): an error answer cut short keeps its status; a malformed 200 is reported as 200", async () => {
  const cut = () => {
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode('{"err'));
        setTimeout(() => c.error(new Error("server died mid-answer")), 20);
      },
    });
    return new Response(body, { status: 422, headers: { "content-type": "application/json" } });
  };
  await withServer(cut, async (url) => {
    await assert.rejects(new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST), (e: unknown) => {
      assert.ok(e instanceof ZpruneError, `${e}`);
      assert.deepEqual([e.code, e.status], ["invalid_request", 422]);
      return true;
    });
  });
  // Cut short where the server named its code in X-Zprune-Error too: the header's code, not the status's first.
  const named = () => {
    const res = cut();
    res.headers.set(ERROR_CODE_HEADER, "shape_mismatch");
    return res;
  };
  await withServer(named, async (url) => {
    await assert.rejects(new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST), (e: unknown) => {
      assert.ok(e instanceof ZpruneError, `${e}`);
      assert.deepEqual([e.code, e.status], ["shape_mismatch", 422]);
      return true;
    });
  });
  await withServer(() => msgpack({ layers: "none" }), async (url) => {
    await assert.rejects(new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST), (e: unknown) => {
      assert.ok(e instanceof ZpruneError);
      assert.deepEqual([e.code, e.status], ["invalid_response", 200]);
      assert.match(e.message, /\/v1\/prune answered out of contract: /);
      return true;
    });
  });
});

/** Asserts that `p` rejects with `invalid_response` and a message matching `message`. */
async function rejectsInvalid(p: Promise<unknown>, message: RegExp, status = 200): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ZpruneError, `${e}`);
    assert.deepEqual([e.code, e.status], ["invalid_response", status], e.message);
    assert.match(e.message, message);
    return true;
  });
}

Deno.test("pruneLayers(): an answer not of the request's layers is invalid_response; added fields kept", async () => {
  const two: PruneRequestInput = { ...REQUEST, layers: [REQUEST.layers[0]!, { ...REQUEST.layers[0]!, name: "l1" }] };
  const answered = (over: Record<string, unknown>) =>
    msgpack({ ...OK_BODY, layers: [{ ...OK_BODY.layers[0], ...over }] });
  const cases: [Response, PruneRequestInput, RegExp][] = [
    [msgpack(OK_BODY), two, /1 layer\(s\) answered for the 2 sent/],
    [msgpack({ ...OK_BODY, backend: "tpu" }), REQUEST, /\/v1\/prune answered out of contract: backend: /],
    [
      answered({ stats: { ...OK_BODY.layers[0]!.stats, nonFinite: 1 } }),
      REQUEST,
      /out of contract: layers\.0\.stats\.nonFinite: /,
    ],
    [answered({ name: "other" }), REQUEST, /layer 0 \("other"\) answered as \[1,8\], sent as "l0" \[1,8\]/],
    [answered({ shape: [2, 4] }), REQUEST, /answered as \[2,4\], sent as "l0" \[1,8\]/],
    [answered({ mask: new Uint8Array(2) }), REQUEST, /a mask of 2 bytes for 8 weights/],
    // The stats of another mask: API.md's pruned is the mask's 1 bits, total its weights.
    [answered({ mask: new Uint8Array([0b00000111]) }), REQUEST, /stats say 4 of 8 pruned, the mask 3 of 8/],
    [answered({ stats: { ...OK_BODY.layers[0]!.stats, total: 9 } }), REQUEST, /stats say 4 of 9 pruned, the mask 4/],
    [
      answered({ weight: { dtype: "f32", shape: [1, 8], data: new Uint8Array(16) } }),
      REQUEST,
      /the returned weight is f32 \[1,8\] in 16 bytes/,
    ],
    [
      answered({ score: { dtype: "f32", shape: [8, 1], data: new Uint8Array(32) } }),
      REQUEST,
      /the returned score is f32 \[8,1\]/,
    ],
    // Sizes that agree with their dtype, in a dtype the contract does not answer: f32 weights sent, scores f32.
    [
      answered({ weight: { dtype: "f16", shape: [1, 8], data: new Uint8Array(16) } }),
      REQUEST,
      /the returned weight is f16 \[1,8\] in 16 bytes \(f32 \[1,8\] expected\)/,
    ],
    [
      answered({ score: { dtype: "bf16", shape: [1, 8], data: new Uint8Array(16) } }),
      REQUEST,
      /the returned score is bf16 .*\(f32 \[1,8\] expected\)/,
    ],
    // As many pruned as the mask and stats agree on, but not what the pattern prunes (API.md's Selection).
    [msgpack(OK_BODY), { ...REQUEST, sparsity: 0.75 }, /4 of 8 weights pruned, where layer at 0\.75 prunes 6$/],
    [msgpack(OK_BODY), { ...REQUEST, pattern: "row", sparsity: 0.25 }, /where row at 0\.25 prunes 2$/],
    [msgpack(OK_BODY), { ...REQUEST, pattern: "1:4" }, /4 of 8 weights pruned, where 1:4 prunes 2$/],
    [msgpack(OK_BODY), { ...REQUEST, return: ["mask", "score"] }, /layer 0 \("l0"\): no score, which return asked/],
    [msgpack(OK_BODY), { ...REQUEST, return: ["weight"] }, /no weight, which return asked for/],
  ];
  for (const [answer, request, message] of cases) {
    await withServer(() => answer.clone(), async (url) => {
      await rejectsInvalid(new ZpruneClient({ url, retries: 0 }).pruneLayers(request), message);
    });
  }
  // What the pattern prunes: 2:4 on 1 x 8 is 4 as well; layer 0.7 of 3 x 10 is floor(0.7 * 30) = 21, or 20 read left
  // to right (0.7 * 3 * 10 = 20.999...), and either is taken.
  await withServer(() => msgpack(OK_BODY), async (url) => {
    assert.equal(
      (await new ZpruneClient({ url }).pruneLayers({ ...REQUEST, pattern: "2:4" })).layers[0]!.stats.pruned,
      4,
    );
  });
  const wide = {
    ...REQUEST,
    sparsity: 0.7,
    layers: [{ ...REQUEST.layers[0]!, weight: { ...REQUEST.layers[0]!.weight, shape: [3, 10] } }],
  };
  for (const pruned of [20, 21]) {
    const mask = new Uint8Array(4);
    for (let i = 0; i < pruned; i++) mask[i >> 3]! |= 1 << (i & 7);
    const stats = { ...OK_BODY.layers[0]!.stats, pruned, total: 30 };
    const layer = { ...OK_BODY.layers[0]!, shape: [3, 10], mask, stats };
    await withServer(() => msgpack({ ...OK_BODY, layers: [layer] }), async (url) => {
      assert.equal((await new ZpruneClient({ url }).pruneLayers(wide)).layers[0]!.stats.pruned, pruned);
    });
  }
  // API.md lets the server add fields: they reach the caller.
  const newer = { ...OK_BODY, requestId: "r1", layers: [{ ...OK_BODY.layers[0], newField: 7 }] };
  await withServer(() => msgpack(newer), async (url) => {
    const res = await new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST);
    assert.equal((res as unknown as { requestId: string }).requestId, "r1");
    assert.equal((res.layers[0] as unknown as { newField: number }).newField, 7);
  });
});

Deno.test("pruneLayers(): an answer out of contract keeps its X-Request-Id, as an error answer does", async () => {
  const renamed = { ...OK_BODY, layers: [{ ...OK_BODY.layers[0], name: "other" }] };
  await withServer(() => msgpack(renamed, 200, { "x-request-id": "req-42" }), async (url) => {
    await assert.rejects(new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST), (e: unknown) => {
      assert.ok(e instanceof ZpruneError, String(e));
      assert.deepEqual([e.code, e.headers["X-Request-Id"]], ["invalid_response", "req-42"]);
      return true;
    });
  });
  // Not msgpack at all: the same.
  await withServer(
    () => new Response(new Uint8Array([0xc1]), { headers: { "x-request-id": "req-43" } }),
    async (url) => {
      await assert.rejects(new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST), (e: unknown) => {
        assert.ok(e instanceof ZpruneError, String(e));
        assert.deepEqual([e.code, e.headers["X-Request-Id"]], ["invalid_response", "req-43"]);
        return true;
      });
    },
  );
});

Deno.test("pruneLayers(): a 2xx answer not msgpack is named by its content type, size and first bytes", async () => {
  // A proxy's page, or another service on the port: what came, not msgpack's own words about a request body.
  const page = "<html><body>Welcome to nginx! If you see this page, the web server works.</body></html>";
  await withServer(() => new Response(page, { headers: { "content-type": "text/html" } }), async (url) => {
    await rejectsInvalid(
      new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST),
      // Its first 60 bytes, quoted, then "...".
      /^the answer \(HTTP 200, text\/html, 87 bytes\) is not plain msgpack, it begins "<html><body>.{48}"\.\.\.$/,
    );
  });
  // Labelled msgpack but cut short (a proxy's truncation, say): why it does not decode, not its bytes.
  const cut = (new Packr({ useRecords: false }).pack(OK_BODY) as Uint8Array<ArrayBuffer>).slice(0, 20);
  const truncated = () => new Response(cut, { headers: { "content-type": "application/msgpack" } });
  await withServer(truncated, async (url) => {
    await rejectsInvalid(
      new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST),
      /^the answer \(HTTP 200, application\/msgpack, 20 bytes\) is not plain msgpack: \S/,
    );
  });
  // The label read as HTTP reads media types: case aside, and with parameters or a vendor prefix.
  for (const type of ["Application/MsgPack", "application/x-msgpack; charset=binary"]) {
    await withServer(() => new Response(cut, { headers: { "content-type": type } }), async (url) => {
      await assert.rejects(new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST), (e: unknown) => {
        assert.ok(e instanceof ZpruneError && e.cause instanceof Error, String(e));
        assert.ok(e.message.endsWith(` 20 bytes) is not plain msgpack: ${e.cause.message}`), e.message);
        return true;
      });
    });
  }
  await withServer(() => new Response(null, { status: 204 }), async (url) => {
    await rejectsInvalid(
      new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST),
      /^the answer \(HTTP 204, no content-type, 0 bytes\) is not plain msgpack$/,
      204,
    );
  });
  // Empty though labelled msgpack: no advice meant for a request body.
  await withServer(() => new Response(null, { headers: { "content-type": "application/msgpack" } }), async (url) => {
    await rejectsInvalid(
      new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST),
      /^the answer \(HTTP 200, application\/msgpack, 0 bytes\) is not plain msgpack$/,
    );
  });
  // Exactly 60 bytes of text: quoted whole, with no "..." after.
  const sixty = "x".repeat(60);
  await withServer(() => new Response(sixty, { headers: { "content-type": "text/plain" } }), async (url) => {
    await rejectsInvalid(
      new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST),
      new RegExp(`^the answer \\(HTTP 200, text/plain, 60 bytes\\) is not plain msgpack, it begins "${sixty}"$`),
    );
  });
});

Deno.test("pruneLayers() refuses a layer name UTF-8 cannot carry before sending it", async () => {
  // A lone surrogate travels as U+FFFD: the server would prune the layer, then answer a name other than the one
  // sent, which read as an answer out of contract (invalid_response) after all the work was done.
  let calls = 0;
  const counting: typeof fetch = () => (calls++, Promise.resolve(msgpack(OK_BODY)));
  const client = new ZpruneClient({ url: "http://127.0.0.1:9", retries: 0, fetch: counting });
  for (const name of ["\ud800", "a\udc00b", "\ude00\ud83d"]) {
    const layers = [REQUEST.layers[0]!, { ...REQUEST.layers[0]!, name }];
    await assert.rejects(client.pruneLayers({ ...REQUEST, layers }), (e: unknown) => {
      assert.ok(e instanceof TypeError, String(e));
      assert.match(e.message, /^layers\[1\]\.name .* lone surrogate/);
      return true;
    });
  }
  assert.equal(calls, 0);
  // Pairs are characters like any other.
  const layers = [{ ...REQUEST.layers[0]!, name: "l0" }];
  assert.equal((await client.pruneLayers({ ...REQUEST, layers })).layers[0]!.name, "l0");
  await assert.rejects(client.pruneLayers({ ...REQUEST, layers: [{ ...layers[0]!, name: "é😀" }] }), /"é😀"/);
});

Deno.test("info() and health(): a non-JSON or out-of-contract answer is invalid_response", async () => {
  await withServer(
    () => new Response("<html>login</html>", { headers: { "content-type": "text/html" } }),
    async (url) => {
      const client = new ZpruneClient({ url, retries: 0 });
      await rejectsInvalid(client.info(), /\/v1\/info answered something other than JSON/);
      await rejectsInvalid(client.health(), /\/healthz answered something other than JSON/);
    },
  );
  await withServer(() => Response.json({ status: "ok" }), async (url) => {
    const client = new ZpruneClient({ url, retries: 0 });
    await rejectsInvalid(client.health(), /\/healthz answered out of contract: backend: /);
    await rejectsInvalid(client.info(), /\/v1\/info answered out of contract: /);
  });
  await withServer(() => Response.json({ status: "fine", backend: "cpu" }), async (url) => {
    await rejectsInvalid(
      new ZpruneClient({ url, retries: 0 }).health(),
      /\/healthz answered out of contract: status: /,
    );
  });
  await withServer(() => Response.json({ ...INFO, name: "other" }), async (url) => {
    await rejectsInvalid(new ZpruneClient({ url, retries: 0 }).info(), /\/v1\/info answered out of contract: name: /);
  });
});

/** A `/v1/info` answer of API.md's fields, as a server of this version writes it. */
const INFO = {
  name: "zprune",
  version: "0.1.0",
  apiVersion: 1,
  backend: "cpu",
  device: "stub",
  limits: {
    maxBodyBytes: 1 << 30,
    maxLayerElements: 1 << 28,
    maxQueue: 64,
    memoryBudgetBytes: 1 << 30,
    msgpack: { maxDepth: 32, maxValues: 1 << 20 },
    maxLayers: 4096,
    maxNameLength: 1024,
    maxM: 9999,
    exponent: { min: 0, max: 64 },
    maxShapeDims: 8,
  },
  methods: ["zpruner", "wanda", "ria", "magnitude"],
  patterns: ["layer", "row", "N:M"],
  dtypes: ["f32", "f16", "bf16"],
  returns: ["mask", "weight", "score"],
};

Deno.test("info(): the methods, patterns, dtypes and returns a newer server adds are kept as sent", async () => {
  // A newer server that accepts more in a request: what it lists is answered as sent, new names and fields included.
  const newer = {
    ...INFO,
    methods: [...INFO.methods, "sparsegpt"],
    patterns: [...INFO.patterns, "N:M:K"],
    dtypes: [...INFO.dtypes, "f8e4m3"],
    returns: [...INFO.returns, "grad"],
    features: ["streaming"],
  };
  await withServer(() => Response.json(newer), async (url) => {
    assert.deepEqual(await new ZpruneClient({ url, retries: 0 }).info(), newer);
  });
  // Not a list of names, a list without strings, a list or field missing, a backend the contract does not name.
  const broken: [Record<string, unknown>, RegExp][] = [
    [{ ...INFO, methods: "zpruner" }, /: methods: /],
    [{ ...INFO, dtypes: ["f32", 16] }, /: dtypes\.1: /],
    [{ ...INFO, returns: undefined }, /: returns: /],
    [{ ...INFO, limits: { ...INFO.limits, maxQueue: -1 } }, /: limits\.maxQueue: /],
    [{ ...INFO, backend: "tpu" }, /: backend: /],
  ];
  for (const [body, message] of broken) {
    await withServer(() => Response.json(body), async (url) => {
      await rejectsInvalid(new ZpruneClient({ url, retries: 0 }).info(), message);
    });
  }
});

Deno.test("pruneLayers(): a code the client does not know is kept as the server sent it", async () => {
  const cases = [
    [{ error: { code: "layer_too_big", message: "m" } }, 422, "layer_too_big"],
    [{ error: { code: "quota_exceeded", message: "m" } }, 403, "quota_exceeded"],
    // Not a code's shape: the status's code stands in.
    [{ error: { code: "Not A Code!", message: "m" } }, 422, "invalid_request"],
    [{ error: { code: 7, message: "m" } }, 413, "too_large"],
  ] as const;
  for (const [body, status, code] of cases) {
    await withServer(() => Response.json(body, { status }), async (url) => {
      await assert.rejects(new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST), (e: unknown) => {
        assert.ok(e instanceof ZpruneError, `${e}`);
        assert.deepEqual([e.code, e.status], [code, status]);
        return true;
      });
    });
  }
});

Deno.test("pruneLayers(): a redirect is not followed (a POST would come back a GET) but reported", async () => {
  const seen: string[] = [];
  await withServer((req) => {
    seen.push(`${req.method} ${new URL(req.url).pathname}`);
    return new Response(null, { status: 302, headers: { location: "/moved/v1/prune" } });
  }, async (url) => {
    await rejectsInvalid(
      new ZpruneClient({ url, retries: 2 }).pruneLayers(REQUEST),
      /\/v1\/prune was redirected to \/moved\/v1\/prune \(HTTP 302\): give the server's own URL/,
      302,
    );
  });
  assert.deepEqual(seen, ["POST /v1/prune"]);
});

Deno.test("pruneLayers(): a timeout or abort while an error answer downloads throws its own reason", async () => {
  const stalledError = () =>
    new Response(
      new ReadableStream<Uint8Array>({ start: (c) => c.enqueue(new TextEncoder().encode('{"error": ')) }),
      { status: 422, headers: { "content-type": "application/json" } },
    );
  await withServer(stalledError, async (url) => {
    const client = new ZpruneClient({ url, timeoutMs: 200, retries: 0 });
    await assert.rejects(client.pruneLayers(REQUEST), { name: "TimeoutError" });
    const ac = new AbortController();
    const pending = new ZpruneClient({ url, retries: 0 }).pruneLayers(REQUEST, { signal: ac.signal });
    setTimeout(() => ac.abort(new Error("user stop")), 50);
    await assert.rejects(pending, { message: "user stop" });
  });
});

Deno.test("new ZpruneClient() refuses values a timer cannot keep; Infinity: no timeout, no retry limit", async () => {
  for (
    const [key, value] of [
      ["timeoutMs", 0],
      ["timeoutMs", -1],
      ["timeoutMs", 2 ** 31],
      ["timeoutMs", NaN],
      ["retries", -1],
      ["retries", 2.5],
      ["backoffMs", Infinity],
      ["maxBackoffMs", 2 ** 31],
    ] as const
  ) {
    assert.throws(() => new ZpruneClient({ url: "http://h:1", [key]: value }), RangeError, `${key} ${value}`);
  }
  await withServer(async () => {
    await new Promise((r) => setTimeout(r, 50));
    return msgpack(OK_BODY);
  }, async (url) => {
    const res = await new ZpruneClient({ url, timeoutMs: Infinity, retries: Infinity }).pruneLayers(REQUEST);
    assert.equal(res.layers[0]!.stats.pruned, 4);
  });
});

Deno.test("new ZpruneClient() refuses a URL fetch cannot use, at once", () => {
  for (const url of ["localhost:8787", "ftp://host/", "not a url", ""]) {
    assert.throws(() => new ZpruneClient({ url }), TypeError, url);
  }
  // The paths are appended to the base: a query or fragment would swallow them; credentials would go as Basic auth.
  for (const url of ["http://h/prefix?k=v", "http://h/#frag", "http://h/?", "http://user:pw@h/", "http://u@h:1"]) {
    assert.throws(() => new ZpruneClient({ url }), /takes no query, fragment or user:password/, url);
  }
  assert.equal(new ZpruneClient({ url: "https://host:1/base/" }).url, "https://host:1/base");
});

Deno.test("new ZpruneClient() refuses a token no HTTP header can carry, without quoting it", () => {
  for (const token of ["clé-ψ-secret", "two\nlines"]) {
    assert.throws(() => new ZpruneClient({ url: "http://h:1", token }), (e: unknown) => {
      assert.ok(e instanceof TypeError && /^token: .*cannot carry/.test(e.message), String(e));
      assert.ok(!e.message.includes("secret") && !e.message.includes("lines"), e.message);
      return true;
    });
  }
  // A secret file's trailing newline is dropped by the header itself, as the server would trim it.
  new ZpruneClient({ url: "http://h:1", token: "s3cret\n" });
});

Deno.test("new ZpruneClient() drops a URL's surrounding whitespace, as the Python client does", async () => {
  // A URL read from a file or an environment variable often ends with a newline or a space. new URL() ignores
  // them, but appended to as text they would put the path after them: "h:1 /healthz" is no URL (retried as a
  // network failure, then unreachable), "h:1/\n/healthz" is "h:1//healthz" (a 404).
  const paths: string[] = [];
  const recording: typeof fetch = (input) => {
    paths.push(String(input));
    return Promise.resolve(Response.json({ status: "ok", backend: "cpu" }));
  };
  for (const url of ["http://127.0.0.1:9 ", "http://127.0.0.1:9/\n", " http://127.0.0.1:9/ \t"]) {
    const client = new ZpruneClient({ url, retries: 0, fetch: recording });
    assert.equal(client.url, "http://127.0.0.1:9", JSON.stringify(url));
    assert.deepEqual(await client.health(), { status: "ok", backend: "cpu" }, JSON.stringify(url));
  }
  assert.deepEqual(paths, Array(3).fill("http://127.0.0.1:9/healthz"));
});

Deno.test("pruneLayers() gives up after `retries` and reports the last error's code", async () => {
  let calls = 0;
  await withServer(() => {
    calls++;
    return Response.json({ error: { code: "unavailable", message: "gpu lost" } }, { status: 503 });
  }, async (url) => {
    const client = new ZpruneClient({ url, retries: 2, backoffMs: 1 });
    await assert.rejects(client.pruneLayers(REQUEST), (e: unknown) => {
      assert.ok(e instanceof ZpruneError);
      assert.equal(e.code, "unavailable");
      assert.equal(e.status, 503);
      assert.equal(e.message, "gpu lost");
      return true;
    });
  });
  assert.equal(calls, 3);
});

Deno.test("pruneLayers(): a refused connection is retried, then thrown as unreachable with fetch's cause", async () => {
  // Nothing listens on a port just released by a listener of our own.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const url = `http://127.0.0.1:${(probe.addr as Deno.NetAddr).port}`;
  probe.close();
  let calls = 0;
  const counted: typeof fetch = (input, init) => (calls++, fetch(input, init));
  const client = new ZpruneClient({ url, retries: 2, backoffMs: 1, fetch: counted });
  await assert.rejects(client.pruneLayers(REQUEST), (e: unknown) => {
    assert.ok(e instanceof ZpruneError);
    assert.equal(e.code, "unreachable");
    assert.equal(e.status, 0);
    assert.ok(e.cause instanceof TypeError, String(e.cause));
    assert.ok(e.message.startsWith(`cannot reach ${url}: `), e.message);
    assert.match(e.message, /refused/i);
    return true;
  });
  assert.equal(calls, 3);
});

Deno.test("pruneLayers(): only fetch's network TypeError becomes unreachable; a looping cause chain ends", async () => {
  const url = "http://127.0.0.1:9";
  // Anything else a custom fetch throws is thrown at once, as it is: it is not a network failure, and another try
  // would meet it again.
  const memory = new RangeError("Array buffer allocation failed");
  let tries = 0;
  const fetch = () => (tries++, Promise.reject(memory));
  const failing = new ZpruneClient({ url, retries: 1, backoffMs: 1, fetch });
  await assert.rejects(failing.pruneLayers(REQUEST), (e: unknown) => e === memory);
  assert.equal(tries, 1);
  // a.cause = b, b.cause = a: each message is quoted once, and the call returns.
  const a = new TypeError("fetch failed"), b = new Error("loop");
  a.cause = b;
  b.cause = a;
  const looping = new ZpruneClient({ url, retries: 0, fetch: () => Promise.reject(a) });
  await assert.rejects(looping.health(), (e: unknown) => {
    assert.ok(e instanceof ZpruneError);
    assert.equal(e.message, `cannot reach ${url}: fetch failed: loop`);
    return true;
  });
});

Deno.test("pruneLayers() maps JSON and msgpack error bodies to ZpruneError without retrying", async () => {
  let calls = 0;
  await withServer(
    (_req, attempt) => {
      calls++;
      if (attempt === 0) {
        return Response.json({ error: { code: "shape_mismatch", message: "layers[0].weight: 31 bytes" } }, {
          status: 422,
        });
      }
      // A request that computed past the server's deadline would take as long again: not retried either.
      if (attempt === 2) {
        return Response.json({ error: { code: "deadline_exceeded", message: "took too long" } }, { status: 504 });
      }
      return msgpack({ error: { code: "unauthorized", message: "missing token" } }, 401);
    },
    async (url) => {
      const client = new ZpruneClient({ url, backoffMs: 1 });
      await assert.rejects(client.pruneLayers(REQUEST), { name: "ZpruneError", code: "shape_mismatch", status: 422 });
      await assert.rejects(client.pruneLayers(REQUEST), { name: "ZpruneError", code: "unauthorized", status: 401 });
      await assert.rejects(client.pruneLayers(REQUEST), {
        name: "ZpruneError",
        code: "deadline_exceeded",
        status: 504,
      });
    },
  );
  assert.equal(calls, 3);
});

Deno.test("pruneLayers() with a signal aborted already throws its reason before reading the layers", async () => {
  let fetched = 0;
  const client = new ZpruneClient({
    url: "http://127.0.0.1:9",
    retries: 0,
    fetch: () => (fetched++, Promise.reject(new Error("fetched"))),
  });
  const layer = {
    name: "w",
    get weight(): never {
      throw new Error("the body was built");
    },
  };
  const reason = new Error("stopped before");
  const request = { ...REQUEST, layers: [layer] } as unknown as PruneRequestInput;
  await assert.rejects(client.pruneLayers(request, { signal: AbortSignal.abort(reason) }), (e) => e === reason);
  assert.equal(fetched, 0);
});

Deno.test("pruneLayers(): a custom fetch's own error is thrown at once, not retried as a lost connection", async () => {
  let calls = 0;
  const bug = new RangeError("a bug in the caller's fetch");
  const client = new ZpruneClient({
    url: "http://127.0.0.1:9",
    retries: 3,
    sleep: () => Promise.resolve(),
    fetch: () => (calls++, Promise.reject(bug)),
  });
  await assert.rejects(client.pruneLayers(REQUEST), (e) => e === bug);
  assert.equal(calls, 1);
  // fetch's own TypeError (a refused connection) is retried, then unreachable.
  calls = 0;
  const refused = new ZpruneClient({
    url: "http://127.0.0.1:9",
    retries: 3,
    sleep: () => Promise.resolve(),
    fetch: () => (calls++, Promise.reject(new TypeError("Connection refused"))),
  });
  await assert.rejects(refused.pruneLayers(REQUEST), { name: "ZpruneError", code: "unreachable" });
  assert.equal(calls, 4);
});

/** A client whose every fetch fails with `error`, and the number of tries it made. */
function failingClient(error: unknown, retries = 2): { client: ZpruneClient; calls: () => number } {
  let calls = 0;
  const client = new ZpruneClient({
    url: "http://127.0.0.1:9",
    retries,
    sleep: () => Promise.resolve(),
    fetch: () => (calls++, Promise.reject(error)),
  });
  return { client, calls: () => calls };
}

/** An error with a `code`, as Node's and Bun's network errors carry one. */
const coded = <E extends Error>(e: E, code: string): E => Object.assign(e, { code });
/** fetch's error in Deno: its cause's message says why. */
const inDeno = (why: string) => new TypeError("fetch failed", { cause: new Error(why) });
/** fetch's error in Node (undici): its cause's code says why. */
const inNode = (why: string, code: string) => new TypeError("fetch failed", { cause: coded(new Error(why), code) });
/** Node's error for a connection refused at `address`. */
const refusedAt = (address: string) => coded(new Error(`connect ECONNREFUSED ${address}`), "ECONNREFUSED");
/** fetch's error in Bun: its own code says why. */
const inBun = (why: string, code: string) => coded(new TypeError(why), code);

Deno.test("pruneLayers(): only a connection refused, reset or lost mid-answer is retried, in any runtime", async () => {
  // As each runtime's fetch fails (seen in Deno 2.9, Bun 1 and Node 20): a restarting server, worth another try ...
  const transient: [string, unknown][] = [
    ["Deno, refused", inDeno("client error (Connect): tcp connect error: Connection refused (os error 111)")],
    ["Deno, reset", inDeno("client error (Connect): tcp connect error: Connection reset by peer (os error 104)")],
    ["Deno, closed", inDeno("client error (SendRequest): connection closed before message completed")],
    ["Deno, mid-answer", new TypeError("error reading a body from connection")],
    ["Node, refused", inNode("connect ECONNREFUSED 127.0.0.1:9", "ECONNREFUSED")],
    // Node's happy eyeballs: one error per address, in an AggregateError.
    ["Node, each refused", new TypeError("fetch failed", { cause: new AggregateError([refusedAt("::1:9")]) })],
    [
      "Node, mid-answer",
      new TypeError("terminated", { cause: coded(new Error("other side closed"), "UND_ERR_SOCKET") }),
    ],
    ["Bun, refused", inBun("Unable to connect. Is the computer able to access the url?", "ECONNREFUSED")],
    ["Bun, reset", inBun("The socket connection was closed unexpectedly", "ECONNRESET")],
    [
      "Windows, refused",
      inDeno(
        "client error (Connect): tcp connect error: No connection could be made because the target machine actively " +
          "refused it. (os error 10061)",
      ),
    ],
    [
      "Windows, reset",
      inDeno(
        "client error (SendRequest): An existing connection was forcibly closed by the remote host. (os error 10054)",
      ),
    ],
  ];
  // ... and what another try would meet again: an unknown host, a certificate refused, a peer that does not speak
  // HTTP, a connect timeout that already waited, a browser's error that says nothing.
  const lasting: [string, unknown][] = [
    ["Deno, unknown host", inDeno("dns error: failed to lookup address information: Name or service not known")],
    ["Deno, certificate", inDeno("client error (Connect): invalid peer certificate: UnknownIssuer")],
    ["Deno, TLS to plain HTTP", inDeno("client error (Connect): tls handshake eof")],
    ["Deno, not HTTP", inDeno("client error (SendRequest): invalid HTTP version parsed")],
    ["Deno, connect timeout", inDeno("tcp connect error: Connection timed out (os error 110)")],
    ["Node, unknown host", inNode("getaddrinfo ENOTFOUND h.invalid", "ENOTFOUND")],
    ["Node, certificate", inNode("self-signed certificate", "DEPTH_ZERO_SELF_SIGNED_CERT")],
    ["Node, connect timeout", inNode("Connect Timeout Error", "UND_ERR_CONNECT_TIMEOUT")],
    ["Bun, unknown host", inBun("getaddrinfo ENOTFOUND h.invalid", "ENOTFOUND")],
    ["Bun, certificate", inBun("unable to verify the first certificate", "UNABLE_TO_VERIFY_LEAF_SIGNATURE")],
    ["Bun, not HTTP", inBun("Malformed_HTTP_Response fetching", "Malformed_HTTP_Response")],
    ["a browser", new TypeError("Failed to fetch")],
  ];
  for (const [cases, tries] of [[transient, 3], [lasting, 1]] as const) {
    for (const [what, error] of cases) {
      const { client, calls } = failingClient(error);
      await assert.rejects(client.pruneLayers(REQUEST), (e: unknown) => {
        assert.ok(e instanceof ZpruneError, `${what}: ${e}`);
        assert.deepEqual([e.code, e.status, e.cause], ["unreachable", 0, error], what);
        return true;
      });
      assert.equal(calls(), tries, what);
    }
  }
});

Deno.test("pruneLayers(): an unknown host or a certificate refused is unreachable at once, not retried", async () => {
  let calls = 0;
  const counted: typeof fetch = (input, init) => (calls++, fetch(input, init));
  const fails = async (url: string, message: RegExp) => {
    calls = 0;
    const client = new ZpruneClient({ url, retries: 2, backoffMs: 1, timeoutMs: 30_000, fetch: counted });
    await assert.rejects(client.health(), (e: unknown) => {
      assert.ok(e instanceof ZpruneError, String(e));
      assert.equal(e.code, "unreachable");
      assert.match(e.message, message);
      return true;
    });
    assert.equal(calls, 1, url);
  };
  // .invalid never resolves (RFC 6761), with or without a resolver.
  await fails("http://zprune.invalid:8787", /dns|lookup|resolve|ENOTFOUND/i);
  // A certificate no authority signed (tests/fixtures/tls, made by `openssl req -x509` for localhost and 127.0.0.1).
  const tls = new URL("../tests/fixtures/tls/", import.meta.url);
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
    cert: await Deno.readTextFile(new URL("self_signed.crt", tls)),
    key: await Deno.readTextFile(new URL("self_signed.key", tls)),
  }, () => Response.json({ status: "ok", backend: "cpu" }));
  try {
    await fails(`https://127.0.0.1:${server.addr.port}`, /certificate/i);
  } finally {
    await server.shutdown();
  }
});

Deno.test("pruneLayers() aborts a slow request after timeoutMs", async () => {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  // Should the client never time out, the answer comes after a minute and the test fails instead of hanging.
  const guard = setTimeout(() => open(), 60_000);
  await withServer(async () => {
    // Answers only once the assertion below is done: the TimeoutError can only come from the client's own limit.
    await gate;
    return msgpack(OK_BODY);
  }, async (url) => {
    const client = new ZpruneClient({ url, timeoutMs: 100, retries: 0 });
    try {
      await assert.rejects(client.pruneLayers(REQUEST), { name: "TimeoutError" });
    } finally {
      clearTimeout(guard);
      open(); // shutdown() waits for the handler
    }
  });
});

Deno.test("importing the client leaves msgpackr's own decoding alone (the server's refusals are its own)", async () => {
  const { unpack } = await import("msgpackr");
  const v = { a: "bundled", b: ["strings", "bundled"] };
  assert.deepEqual(unpack(new Packr({ bundleStrings: true }).pack(v)), v);
  assert.deepEqual(unpack(new Uint8Array([0x81, 0xd4, 0x42, 0x05, 0x01])), { 5: 1 });
});

/** A 200 answer whose body sends its first bytes, then `then`: stall until cancelled, or fail the stream. */
function stalledAnswer(then: "stall" | "fail"): Response {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new Uint8Array([0x84, 0xa7]));
      if (then === "fail") timer = setTimeout(() => c.error(new Error("server died mid-answer")), 20);
    },
    cancel() {
      clearTimeout(timer);
    },
  });
  return new Response(body, { headers: { "content-type": "application/msgpack" } });
}

Deno.test("pruneLayers(): a timeout or abort while the answer downloads throws its own reason", async () => {
  await withServer(() => stalledAnswer("stall"), async (url) => {
    const client = new ZpruneClient({ url, timeoutMs: 200, retries: 0 });
    await assert.rejects(client.pruneLayers(REQUEST), { name: "TimeoutError" });
    const ac = new AbortController();
    const pending = client.pruneLayers(REQUEST, { signal: ac.signal });
    setTimeout(() => ac.abort(new Error("user cancelled")), 50);
    await assert.rejects(pending, { message: "user cancelled" });
  });
});

Deno.test("pruneLayers(): a connection lost mid-answer is retried; a proxy's 502 or 504 keeps its status", async () => {
  await withServer((_req, attempt) => attempt === 0 ? stalledAnswer("fail") : msgpack(OK_BODY), async (url) => {
    const client = new ZpruneClient({ url, retries: 1, backoffMs: 1 });
    assert.equal((await client.pruneLayers(REQUEST)).layers[0]!.stats.pruned, 4);
  });
  for (const [status, text] of [[502, "Bad Gateway"], [504, "Gateway Time-out"]] as const) {
    await withServer(() => new Response(`<html>${text}</html>`, { status }), async (url) => {
      const client = new ZpruneClient({ url, retries: 0 });
      await assert.rejects(client.pruneLayers(REQUEST), (e: unknown) => {
        assert.ok(e instanceof ZpruneError);
        assert.equal(e.status, status);
        // Not the server's deadline_exceeded: that code is the server's to say. Nor internal: no server bug is known.
        assert.equal(e.code, `http_${status}`);
        assert.match(e.message, new RegExp(`HTTP ${status}: <html>${text}`));
        return true;
      });
    });
  }
});

/** Runs `fn` with Math.random() at the top of its range, so that every jittered wait is its largest. */
async function withTopJitter(fn: () => Promise<void>): Promise<void> {
  const random = Math.random;
  Math.random = () => 0.999;
  try {
    await fn();
  } finally {
    Math.random = random;
  }
}

Deno.test("pruneLayers(): the doubling backoff is capped (503 without Retry-After, refused connection)", async () => {
  await withTopJitter(async () => {
    const unavailable = () => Response.json({ error: { code: "unavailable", message: "restarting" } }, { status: 503 });
    await withServer((_req, attempt) => attempt < 4 ? unavailable() : msgpack(OK_BODY), async (url) => {
      const waits: number[] = [];
      const sleep = (ms: number) => (waits.push(ms), Promise.resolve());
      const client = new ZpruneClient({ url, backoffMs: 1_000, maxBackoffMs: 2_000, sleep });
      assert.equal((await client.pruneLayers(REQUEST)).layers[0]!.stats.pruned, 4);
      // Uniform in [0, min(2000, 1000 * 2^attempt)]: at the top, 999 ms, then the cap's 1998 ms.
      assert.deepEqual(waits.map((w) => Math.round(w * 10) / 10), [999, 1_998, 1_998, 1_998]);
    });
    // A refused connection backs off the same way between its tries.
    const waits: number[] = [];
    const client = new ZpruneClient({
      url: "http://127.0.0.1:9",
      retries: 2,
      backoffMs: 100,
      sleep: (ms) => (waits.push(ms), Promise.resolve()),
      fetch: () => Promise.reject(inDeno("tcp connect error: Connection refused (os error 111)")),
    });
    await assert.rejects(client.pruneLayers(REQUEST), { name: "ZpruneError", code: "unreachable" });
    assert.deepEqual(waits.map((w) => Math.round(w * 10) / 10), [99.9, 199.8]);
  });
});

Deno.test("new ZpruneClient(): the default backoffMs (200) and maxBackoffMs (10000) set the waits", async () => {
  await withTopJitter(async () => {
    const asks = [undefined, "86400"];
    await withServer((_req, attempt) => {
      if (attempt >= asks.length) return msgpack(OK_BODY);
      const headers: Record<string, string> = asks[attempt] ? { "retry-after": asks[attempt]! } : {};
      return Response.json({ error: { code: "busy", message: "queue full" } }, { status: 429, headers });
    }, async (url) => {
      const waits: number[] = [];
      const client = new ZpruneClient({ url, sleep: (ms) => (waits.push(ms), Promise.resolve()) });
      assert.equal((await client.pruneLayers(REQUEST)).layers[0]!.stats.pruned, 4);
      assert.deepEqual(waits.map((w) => Math.round(w * 10) / 10), [199.8, 10_000]);
    });
  });
});

Deno.test("pruneLayers(): with backoffMs 0, retry 1025 still waits for Retry-After (2^1024: Infinity)", async () => {
  const waits: number[] = [];
  let tries = 0;
  const client = new ZpruneClient({
    url: "http://127.0.0.1:9",
    retries: Infinity,
    backoffMs: 0,
    sleep: (ms) => (waits.push(ms), Promise.resolve()),
    fetch: () => {
      const busy = { error: { code: "busy", message: "queue full" } };
      if (++tries > 1100) return Promise.resolve(msgpack(OK_BODY));
      return Promise.resolve(Response.json(busy, { status: 429, headers: { "retry-after": "1" } }));
    },
  });
  assert.equal((await client.pruneLayers(REQUEST)).layers[0]!.stats.pruned, 4);
  assert.equal(waits.length, 1100);
  const wrong = waits.findIndex((w) => !(w >= 1000 && w <= 10_000));
  assert.equal(wrong, -1, `retry ${wrong} waited ${waits[wrong]} ms, not Retry-After's 1000`);
});

Deno.test("pruneLayers(): timeoutMs bounds the attempt, not a multiple; an abort's TypeError is its own", async () => {
  // The answer comes 150 ms after the request reaches the handler, so after the client's 100 ms timer, which started
  // earlier: both timers are this process's and fire in the order of their deadlines, whatever the load. A client
  // whose timer ran 10 times as long (or none) would get the answer instead.
  await withServer(async () => {
    await new Promise((r) => setTimeout(r, 150));
    return msgpack(OK_BODY);
  }, async (url) => {
    const client = new ZpruneClient({ url, timeoutMs: 100, retries: 0 });
    await assert.rejects(client.pruneLayers(REQUEST), (e: unknown) => {
      assert.equal((e as Error).name, "TimeoutError");
      assert.equal((e as Error).message, "no answer within 100 ms");
      return true;
    });
  });
  // The caller's reason is thrown as it is, a TypeError too, not taken for fetch's network error.
  await withServer(() => stalledAnswer("stall"), async (url) => {
    const client = new ZpruneClient({ url, retries: 2, backoffMs: 1 });
    const ac = new AbortController();
    const reason = new TypeError("stop");
    const pending = client.pruneLayers(REQUEST, { signal: ac.signal });
    setTimeout(() => ac.abort(reason), 50);
    await assert.rejects(pending, (e: unknown) => e === reason);
  });
});

Deno.test("pruneLayers(): an abort during a backoff wait ends the wait at once", async () => {
  let calls = 0;
  await withServer(() => {
    calls++;
    return Response.json({ error: { code: "busy", message: "queue full" } }, {
      status: 429,
      headers: { "retry-after": "600" },
    });
  }, async (url) => {
    // The default sleep, asked for 10 minutes: only the signal can end it in time. The abort follows the 429's
    // arrival, not the clock, so it lands just before the wait or during it, never during the request.
    const ac = new AbortController();
    const reason = new Error("user cancelled");
    const answered: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      setTimeout(() => ac.abort(reason), 10);
      return res;
    };
    const client = new ZpruneClient({ url, maxBackoffMs: 600_000, fetch: answered });
    const pending = client.pruneLayers(REQUEST, { signal: ac.signal });
    let guard: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<string>((r) => guard = setTimeout(() => r("still waiting after 60 s"), 60_000));
    try {
      const outcome = await Promise.race([pending.then(() => "answered", (e) => e), late]);
      assert.equal(outcome, reason);
    } finally {
      clearTimeout(guard);
    }
  });
  assert.equal(calls, 1, "no second try after the abort");
});

Deno.test("pruneLayers(): an error's body code beats its header; Retry-After, msgpack message kept", async () => {
  await withServer((_req, attempt) => {
    if (attempt === 0) {
      return Response.json({ error: { code: "busy", message: "queue full" } }, {
        status: 422,
        headers: { [ERROR_CODE_HEADER]: "shape_mismatch" },
      });
    }
    if (attempt === 1) return msgpack({ error: { code: "non_finite", message: "w: NaN at 3" } }, 422);
    return Response.json({ error: { code: "busy", message: "queue full" } }, {
      status: 429,
      headers: { "retry-after": "7" },
    });
  }, async (url) => {
    const client = new ZpruneClient({ url, retries: 0 });
    await assert.rejects(client.pruneLayers(REQUEST), { name: "ZpruneError", code: "busy", status: 422 });
    // application/msgpack is decoded: the message is the server's, not the body's bytes.
    await assert.rejects(client.pruneLayers(REQUEST), { code: "non_finite", message: "w: NaN at 3" });
    // Out of retries, a 429 is thrown with its Retry-After, for the caller to wait by.
    await assert.rejects(client.pruneLayers(REQUEST), (e: unknown) => {
      assert.ok(e instanceof ZpruneError);
      assert.deepEqual([e.code, e.status, e.headers["Retry-After"]], ["busy", 429, "7"]);
      return true;
    });
  });
});

Deno.test("pruneLayers() sends the bytes of a SharedArrayBuffer's view, and of a subarray only its own", async () => {
  // 256 x 256 f32: 256 KiB, past the size whose pieces are joined, so it goes out as body parts of its own.
  const n = 256 * 256;
  const shared = new Float32Array(new SharedArrayBuffer(n * 4));
  for (let i = 0; i < n; i++) shared[i] = Math.sin(i);
  const plain = new Float32Array(shared);
  const layer = (data: Float32Array) => ({ name: "w", weight: tensor("f32", [256, 256], data) });
  const want = encodeRequest({ sparsity: 0.5, layers: [layer(plain)] });
  let got: Uint8Array | undefined;
  await withServer(async (req) => {
    got = new Uint8Array(await req.arrayBuffer());
    return Response.json({ error: { code: "invalid_request", message: "seen" } }, { status: 400 });
  }, async (url) => {
    const client = new ZpruneClient({ url, retries: 0 });
    await assert.rejects(client.pruneLayers({ sparsity: 0.5, layers: [layer(shared)] }), { message: "seen" });
  });
  assert.deepEqual(got, want);
  // A view into a larger buffer: only the view's bytes, little-endian.
  const t = tensor("f32", [1, 2], new Float32Array([1, 2, 3, 4]).subarray(2));
  assert.deepEqual(Array.from(t.data), Array.from(new Uint8Array(new Float32Array([3, 4]).buffer)));
});

Deno.test("tensor() refuses bytes that are not its shape's in its dtype, before any upload", () => {
  assert.throws(
    () => tensor("f16", [16, 32], new Float32Array(512)),
    { name: "RangeError", message: "2048 bytes, but shape [16, 32] of f16 needs 1024" },
  );
  assert.throws(() => tensor("f32", [2, 3], new Uint8Array(23)), /23 bytes, but shape \[2, 3\] of f32 needs 24/);
  assert.equal(tensor("bf16", [16, 32], new Uint16Array(512)).data.byteLength, 1024);
  assert.equal(tensor("f32", [0, 4], new Float32Array(0)).data.byteLength, 0); // inputs of zero tokens
  // A shape the server refuses anyway is its message to give.
  assert.equal(tensor("f32", [2.5, 2], new Float32Array(5)).data.byteLength, 20);
});

Deno.test("applyMask() refuses bytes that are not a whole number of elements; the URL drops every trailing /", () => {
  assert.throws(() => applyMask(new Uint8Array(3), "f16", new Uint8Array(1)), /3 bytes is not a whole number of f16/);
  assert.throws(() => applyMask(new Uint8Array(6), "f32", new Uint8Array(1)), /6 bytes is not a whole number of f32/);
  assert.equal(new ZpruneClient({ url: "http://127.0.0.1:9//" }).url, "http://127.0.0.1:9");
  assert.equal(new ZpruneClient({ url: "http://127.0.0.1:9/zprune///" }).url, "http://127.0.0.1:9/zprune");
});
