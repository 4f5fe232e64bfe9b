import assert from "node:assert/strict";
import { ERROR_STATUS, isErrorCode, ZpruneError } from "./errors.ts";

Deno.test("isErrorCode() knows the contract's codes and nothing an object inherits", () => {
  for (const code of Object.keys(ERROR_STATUS)) assert.ok(isErrorCode(code), code);
  for (const code of ["toString", "constructor", "__proto__", "hasOwnProperty", "brand_new", "", 400]) {
    assert.equal(isErrorCode(code), false, String(code));
  }
});

Deno.test("ZpruneError takes its status from the code: the contract's, 500 for an unknown one, or one given", () => {
  assert.equal(new ZpruneError("too_large", "m").status, 413);
  assert.equal(new ZpruneError("busy", "m").status, 429);
  assert.equal(new ZpruneError("constructor", "m").status, 500);
  assert.equal(new ZpruneError("brand_new", "m").status, 500);
  assert.equal(new ZpruneError("brand_new", "m", { status: 418 }).status, 418);
  assert.deepEqual(new ZpruneError("busy", "wait").toBody(), { error: { code: "busy", message: "wait" } });
});
