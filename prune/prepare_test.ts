import assert from "node:assert/strict";
import { parsePruneRequest } from "../contract/api.ts";
import { ZpruneError } from "../contract/errors.ts";
import { encode } from "../contract/dtype_codec.ts";
import { prepareRequest } from "./prepare.ts";
import { pruneLayer } from "./prune_layer.ts";

/** A request (wanda by default) of one [2, cols] layer whose activations are `inputs` ([tokens, cols] of `dtype`). */
function withInputs(
  values: Float32Array,
  tokens: number,
  cols: number,
  dtype: "f16" | "f32" = "f16",
  method: "wanda" | "magnitude" = "wanda",
) {
  return parsePruneRequest({
    method,
    sparsity: 0.5,
    layers: [{
      name: "l",
      weight: { dtype: "f32", shape: [2, cols], data: encode(new Float32Array(2 * cols).fill(1), "f32") },
      inputs: { dtype, shape: [tokens, cols], data: encode(values, dtype) },
    }],
  });
}

Deno.test("prepareRequest sums inputs per column in float64 a block at a time, pausing between blocks", async () => {
  const tokens = 3000, cols = 70; // 210,000 elements: four blocks of whole rows (a block is at most 65,536)
  const values = new Float32Array(tokens * cols).map((_, i) => ((i * 37) % 101) / 16 - 3); // exact in f16
  let pauses = 0;
  const prepared = await prepareRequest(withInputs(values, tokens, cols), { maxLayerElements: 1 << 20 }, () => {
    pauses++;
    return undefined;
  });
  // The slow, obvious sums: every value of a column, squared, in float64.
  for (let c = 0; c < cols; c++) {
    let want = 0;
    for (let t = 0; t < tokens; t++) want += values[t * cols + c]! ** 2;
    assert.equal(prepared.layers[0]!.actNormSq![c], want, `column ${c}`);
  }
  assert.ok(pauses >= 4, `${pauses} pauses`);
});

Deno.test("prepareRequest keeps sums of inputs below float32's range; refuses them past it", async () => {
  const cols = 4;
  // Per column: 1e-25 (squares 1e-50, zero in float32), 1e19 (sums of 3e38, just within it), 1e-20 (squares
  // 1e-40, a float32 subnormal that would keep a few bits), and 1.
  const column = [1e-25, 1e19, 1e-20, 1];
  const tokens = 3;
  const values = new Float32Array(tokens * cols).map((_, i) => column[i % cols]!);
  const req = withInputs(values, tokens, cols, "f32");
  const sums = (await prepareRequest(req, { maxLayerElements: 1 << 20 })).layers[0]!.actNormSq!;
  for (let c = 0; c < cols; c++) {
    const v = Math.fround(column[c]!); // the value as float32 carries it
    assert.equal(sums[c], v * v + v * v + v * v, `column ${c}`);
  }
  // Squares past float32's largest: refused, as an actNormSq of that size could not be sent.
  const huge = withInputs(new Float32Array([1, 3e19, 1, 1]), 2, 2, "f32");
  await assert.rejects(prepareRequest(huge, { maxLayerElements: 1 << 20 }), (e) => {
    assert.ok(e instanceof ZpruneError && e.code === "non_finite");
    assert.match(e.message, /inputs: the sum of squares of column 1 overflows float32$/);
    return true;
  });
});

Deno.test("prepareRequest: magnitude (|W| alone) takes inputs of any finite size, and drops them", async () => {
  const limits = { maxLayerElements: 1 << 20 };
  // The wanda request of the test above is refused for these; magnitude's scores do not use them.
  const huge = await prepareRequest(withInputs(new Float32Array([1, 3e19, 1, 1]), 2, 2, "f32", "magnitude"), limits);
  assert.equal(huge.layers[0]!.actNormSq, null);
  const plain = await prepareRequest(withInputs(new Float32Array([1, 2, 3, 4]), 2, 2, "f32", "magnitude"), limits);
  assert.equal(plain.layers[0]!.actNormSq, null);
  // Still checked: a NaN or an infinity in them is refused, as API.md says for any activations.
  for (const bad of [NaN, Infinity]) {
    await assert.rejects(
      prepareRequest(withInputs(new Float32Array([1, bad, 1, 1]), 2, 2, "f32", "magnitude"), limits),
      (e) => e instanceof ZpruneError && e.code === "non_finite" && /inputs\[1\] is NaN or infinite$/.test(e.message),
    );
  }
});

Deno.test("prepareRequest names the first non-finite input by its index in the whole tensor", async () => {
  const tokens = 2000, cols = 50; // the bad value sits in the second block
  const values = new Float32Array(tokens * cols).fill(0.5);
  values[70_001] = Infinity;
  values[90_000] = NaN;
  await assert.rejects(prepareRequest(withInputs(values, tokens, cols), { maxLayerElements: 1 << 20 }), (e) => {
    assert.ok(e instanceof ZpruneError);
    assert.equal(e.code, "non_finite");
    assert.match(e.message, /^layers\[0\]\.inputs\[70001\] is NaN or infinite$/);
    return true;
  });
});

Deno.test("prepareRequest stops summing inputs when its pause throws (a deadline or a client gone)", async () => {
  const tokens = 3000, cols = 70;
  const values = new Float32Array(tokens * cols).fill(0.5);
  let blocks = 0;
  const stop = new DOMException("the deadline passed", "TimeoutError");
  await assert.rejects(
    prepareRequest(withInputs(values, tokens, cols), { maxLayerElements: 1 << 20 }, () => {
      if (++blocks === 2) throw stop;
      return undefined;
    }),
    (e) => e === stop,
  );
  assert.equal(blocks, 2, "no block summed after the throw");
});

/** A request of one [1, 4] f32 layer with `actNormSq`. */
function withActNormSq(actNormSq: number[], method = "wanda", options?: Record<string, unknown>) {
  return parsePruneRequest({
    method,
    sparsity: 0.5,
    ...(options ? { options } : {}),
    layers: [{
      name: "l",
      weight: { dtype: "f32", shape: [1, 4], data: encode(new Float32Array([1, 2, 3, 4]), "f32") },
      actNormSq: { dtype: "f32", shape: [4], data: encode(new Float32Array(actNormSq), "f32") },
    }],
  });
}

Deno.test("prepareRequest refuses any negative actNormSq entry, however small, and takes -0", async () => {
  const limits = { maxLayerElements: 1 << 20 };
  await assert.rejects(prepareRequest(withActNormSq([1, -0.5, 3, 4]), limits), (e) => {
    assert.ok(e instanceof ZpruneError && e.code === "invalid_request", String(e));
    assert.match(e.message, /^layers\[0\]\.actNormSq\[1\] is negative \(-0\.5\)/);
    return true;
  });
  // -0 is a sum of squares (of nothing, or of zeros): a valid entry.
  const zero = await prepareRequest(withActNormSq([-0, 1, 1, 1]), limits);
  assert.ok(Object.is(zero.layers[0]!.actNormSq![0], -0));
});

Deno.test("prepareRequest keeps options.exponent 0 (act all ones): wanda then prunes as magnitude", async () => {
  const limits = { maxLayerElements: 1 << 20 };
  // |W| = [1, 2, 3, 4]; actNormSq [100, 1, 1, 0.04]. At exponent 0, act = 1 and the two smallest |W| (indices 0, 1)
  // go; at wanda's default exponent 1, the scores are [10, 2, 3, 0.8] and indices 1 and 3 go.
  const act = [100, 1, 1, 0.04];
  const zero = await prepareRequest(withActNormSq(act, "wanda", { exponent: 0 }), limits);
  assert.equal(zero.params.exponent, 0);
  assert.deepEqual((await pruneLayer(zero.params, zero.layers[0]!)).mask, new Uint8Array([0b0011]));
  const plain = await prepareRequest(withActNormSq(act), limits);
  assert.equal(plain.params.exponent, 1);
  assert.deepEqual((await pruneLayer(plain.params, plain.layers[0]!)).mask, new Uint8Array([0b1010]));
});

/** A request of `layers` (each a map of the wire's layer fields), wanda unless `top` says otherwise. */
function request(layers: Record<string, unknown>[], top: Record<string, unknown> = {}) {
  return parsePruneRequest({ method: "wanda", sparsity: 0.5, ...top, layers });
}

/** An f32 tensor of `values` shaped `shape`. */
function f32(shape: number[], values: number[]) {
  return { dtype: "f32", shape, data: encode(new Float32Array(values), "f32") };
}

/** A valid layer: a [2, 4] weight with actNormSq. */
function goodLayer(name = "g"): Record<string, unknown> {
  return { name, weight: f32([2, 4], [1, 2, 3, 4, 5, 6, 7, 8]), actNormSq: f32([4], [1, 1, 1, 1]) };
}

/** Asserts that preparing `req` fails with `code` and a message matching `message`. */
async function refuses(req: ReturnType<typeof request>, code: string, message: RegExp, maxLayerElements = 1 << 20) {
  await assert.rejects(prepareRequest(req, { maxLayerElements }), (e) => {
    assert.ok(e instanceof ZpruneError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

Deno.test("prepareRequest refuses each malformed layer with API.md's code, naming the field", async () => {
  const w = f32([2, 4], [1, 2, 3, 4, 5, 6, 7, 8]);
  // Weight shape: two sizes, each at least 1 (invalid_request); the bytes must match (shape_mismatch), too few or
  // too many.
  await refuses(
    request([{ name: "a", weight: f32([2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]) }], { method: "magnitude" }),
    "invalid_request",
    /^layers\[0\]\.weight\.shape: expected \[rows, cols\]/,
  );
  await refuses(
    request([{ name: "a", weight: f32([2, 0], []) }], { method: "magnitude" }),
    "invalid_request",
    /^layers\[0\]\.weight\.shape: rows and cols must be at least 1/,
  );
  await refuses(
    request([{ name: "a", weight: f32([2, 2], [1, 2, 3]) }], { method: "magnitude" }),
    "shape_mismatch",
    /^layers\[0\]\.weight\.data: 12 bytes, but shape \[2, 2\] of f32 needs 16$/,
  );
  await refuses(
    request([{ name: "a", weight: f32([2, 2], [1, 2, 3, 4, 5]) }], { method: "magnitude" }),
    "shape_mismatch",
    /^layers\[0\]\.weight\.data: 20 bytes/,
  );
  // N:M: cols must be a multiple of M.
  await refuses(
    request([{ name: "a", weight: f32([1, 6], [1, 2, 3, 4, 5, 6]) }], { method: "magnitude", pattern: "2:4" }),
    "shape_mismatch",
    /^layers\[0\]\.weight\.shape: 6 columns is not a multiple of M = 4/,
  );
  // actNormSq: f32 only, shape [cols], bytes matching, finite.
  const act = (t: unknown) => request([{ name: "a", weight: w, actNormSq: t }]);
  await refuses(
    act({ dtype: "f16", shape: [4], data: encode(new Float32Array(4), "f16") }),
    "invalid_request",
    /^layers\[0\]\.actNormSq\.dtype: must be "f32"$/,
  );
  await refuses(
    act(f32([4, 1], [1, 1, 1, 1])),
    "shape_mismatch",
    /^layers\[0\]\.actNormSq\.shape: \[4, 1\], but the weight has 4 columns$/,
  );
  await refuses(act(f32([3], [1, 1, 1])), "shape_mismatch", /^layers\[0\]\.actNormSq\.shape: \[3\]/);
  await refuses(
    act({ dtype: "f32", shape: [4], data: encode(new Float32Array(3), "f32") }),
    "shape_mismatch",
    /^layers\[0\]\.actNormSq\.data: 12 bytes/,
  );
  await refuses(act(f32([4], [1, 1, NaN, 1])), "non_finite", /^layers\[0\]\.actNormSq\[2\] is NaN or infinite$/);
  // inputs: shape [tokens, cols]; not with actNormSq.
  await refuses(
    request([{ name: "a", weight: w, inputs: f32([2, 5], new Array(10).fill(1)) }]),
    "shape_mismatch",
    /^layers\[0\]\.inputs\.shape: \[2, 5\], expected \[tokens, 4\]$/,
  );
  await refuses(
    request([{ name: "a", weight: w, actNormSq: f32([4], [1, 1, 1, 1]), inputs: f32([1, 4], [1, 1, 1, 1]) }]),
    "invalid_request",
    /^layers\[0\]: give actNormSq or inputs, not both$/,
  );
});

Deno.test("prepareRequest names the failing layer by its index", async () => {
  const bad = { name: "b", weight: f32([2, 4], new Array(8).fill(1)), actNormSq: f32([3], [1, 1, 1]) };
  await refuses(request([goodLayer(), goodLayer(), bad]), "shape_mismatch", /^layers\[2\]\.actNormSq\.shape/);
});

Deno.test("prepareRequest: a layer of exactly maxLayerElements is taken; one more element is too_large", async () => {
  const req = request([goodLayer()]); // 8 elements
  assert.equal((await prepareRequest(req, { maxLayerElements: 8 })).layers.length, 1);
  await refuses(req, "too_large", /^layers\[0\]\.weight: 8 elements, over this server's limit of 7 per layer$/, 7);
});

Deno.test("prepareRequest: activations_required unless dataFree is true; options and return are carried", async () => {
  const bare = { name: "a", weight: f32([2, 4], new Array(8).fill(1)) };
  for (const options of [undefined, { dataFree: false }]) {
    await refuses(request([bare], options ? { options } : {}), "activations_required", /^layers\[0\]: method "wanda"/);
  }
  const free = await prepareRequest(request([bare], { options: { dataFree: true } }), { maxLayerElements: 64 });
  assert.equal(free.layers[0]!.actNormSq, null);
  // API.md's defaults: exponent 1 for wanda, 0.5 for ria, 1.5 for zpruner; return ["mask"].
  const limits = { maxLayerElements: 64 };
  for (const [method, exponent] of [["wanda", 1], ["ria", 0.5], ["zpruner", 1.5]] as const) {
    assert.equal((await prepareRequest(request([goodLayer()], { method }), limits)).params.exponent, exponent);
  }
  const plain = (await prepareRequest(request([goodLayer()]), limits)).params;
  assert.deepEqual([plain.returnWeight, plain.returnScore], [false, false]);
  const weight = (await prepareRequest(request([goodLayer()], { return: ["weight"] }), limits)).params;
  assert.deepEqual([weight.returnWeight, weight.returnScore], [true, false]);
  const score = (await prepareRequest(request([goodLayer()], { return: ["mask", "score"] }), limits)).params;
  assert.deepEqual([score.returnWeight, score.returnScore], [false, true]);
});

Deno.test("prepareRequest takes input sums of exactly float32's largest; one square more is refused", async () => {
  // 2^128 - 2^104 (float32's largest) = the sum of 2^j for j = 104..127, each the square of a power of two (2^(j/2))
  // or of two (2 * 2^(j-1) = 2^((j-1)/2) squared, twice): exact in float64, and an actNormSq that could be sent.
  const column: number[] = [];
  for (let j = 104; j <= 127; j++) {
    if (j % 2 === 0) column.push(2 ** (j / 2));
    else column.push(2 ** ((j - 1) / 2), 2 ** ((j - 1) / 2));
  }
  const F32_MAX = 3.4028234663852886e38;
  assert.equal(column.reduce((a, x) => a + x * x, 0), F32_MAX);
  const limits = { maxLayerElements: 64 };
  const at = (values: number[]) =>
    request([{ name: "a", weight: f32([2, 1], [1, 2]), inputs: f32([values.length, 1], values) }]);
  assert.equal((await prepareRequest(at(column), limits)).layers[0]!.actNormSq![0], F32_MAX);
  await refuses(at([...column, 2 ** 52]), "non_finite", /inputs: the sum of squares of column 0 overflows float32$/);
});

Deno.test("prepareRequest: a NaN weight in layer 0 is named before layer 1's non-finite activations", async () => {
  // The backend checks weights layer by layer after every layer's activations passed: the request's first non-finite
  // value, in request order, is layer 0's weight, so that is what is named.
  const nanWeight = { name: "a", weight: f32([1, 4], [1, NaN, 1, 1]), actNormSq: f32([4], [1, 1, 1, 1]) };
  const nanAct = { name: "b", weight: f32([1, 4], [1, 1, 1, 1]), actNormSq: f32([4], [1, 1, Infinity, 1]) };
  await refuses(request([nanWeight, nanAct]), "non_finite", /weight\[1\]/);
});
