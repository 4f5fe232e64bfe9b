import assert from "node:assert/strict";
import { parsePruneRequest } from "./api.ts";
import { ZpruneError } from "./errors.ts";

const layer = (extra: Record<string, unknown> = {}) => ({
  name: "l",
  weight: { dtype: "f32", shape: [1, 2], data: new Uint8Array(8) },
  ...extra,
});

/** The ZpruneError parsePruneRequest throws for `body` (the test fails when it throws none). */
function refusal(body: unknown): ZpruneError {
  try {
    parsePruneRequest(body);
  } catch (e) {
    assert.ok(e instanceof ZpruneError, String(e));
    return e;
  }
  assert.fail("parsePruneRequest accepted the body");
}

Deno.test("parsePruneRequest() fills API.md's defaults: method zpruner, pattern layer, return [mask]", () => {
  for (const absent of [{}, { method: null, pattern: null, return: null }]) {
    const req = parsePruneRequest({ sparsity: 0.5, layers: [layer()], ...absent });
    assert.equal(req.method, "zpruner");
    assert.equal(req.pattern, "layer");
    assert.deepEqual(req.return, ["mask"]);
    assert.equal(req.sparsity, 0.5);
  }
  const nm = parsePruneRequest({ method: "ria", pattern: "2:4", sparsity: 7, return: ["score"], layers: [layer()] });
  assert.deepEqual([nm.method, nm.pattern, nm.sparsity, nm.return], ["ria", "2:4", undefined, ["score"]]);
});

Deno.test("parsePruneRequest() takes inputs with zero tokens (a [0, cols] shape) and refuses a negative size", () => {
  const inputs = { dtype: "f32", shape: [0, 2], data: new Uint8Array(0) };
  assert.deepEqual(parsePruneRequest({ sparsity: 0, layers: [layer({ inputs })] }).layers[0]!.inputs?.shape, [0, 2]);
  const e = refusal({ sparsity: 0, layers: [layer({ inputs: { ...inputs, shape: [-1, 2] } })] });
  assert.equal(e.code, "invalid_request");
  assert.match(e.message, /layers\[0\]\.inputs\.shape\[0\]/);
});

Deno.test("parsePruneRequest() reports every bad field at once: an unknown method and a missing sparsity", () => {
  const e = refusal({ method: "obs", layers: [layer()] });
  assert.equal(e.code, "invalid_request");
  assert.match(e.message, /method: /);
  assert.match(e.message, /sparsity: required for pattern "layer"/);
  assert.match(refusal({ pattern: "row", layers: [layer()] }).message, /sparsity: required for pattern "row"/);
  assert.match(refusal({ pattern: "row", sparsity: 1, layers: [layer()] }).message, /^sparsity: /);
});

Deno.test("parsePruneRequest() names a value of the wrong type once, not also by the type's own checks", () => {
  // zod also checks the string "mask" against the array's bound of 3 ("Too big: expected string to have <=3 ...").
  assert.equal(
    refusal({ method: "magnitude", sparsity: 0.5, return: "mask", layers: [layer()] }).message,
    "return: Invalid input: expected array, received string",
  );
  // A wrong type beside another field's fault: both named, each once.
  const both = refusal({ method: "magnitude", sparsity: 2, return: "mask", layers: [layer()] }).message;
  assert.match(both, /^(?=.*return: Invalid input: expected array, received string)(?=.*sparsity: )/);
  assert.doesNotMatch(both, /Too big: expected string/);
  // Checks on a value of the right type still speak: four entries where three kinds are allowed.
  assert.match(
    refusal({ sparsity: 0.5, return: ["mask", "mask", "mask", "mask"], layers: [layer()] }).message,
    /^return: /,
  );
});
