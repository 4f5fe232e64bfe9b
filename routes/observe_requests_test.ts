import assert from "node:assert/strict";
import { cut } from "./observe_requests.ts";

Deno.test("cut() keeps short text, cuts long text to max units and '...', never half a surrogate pair", () => {
  assert.equal(cut("GET", 16), "GET");
  assert.equal(cut("x".repeat(16), 16), "x".repeat(16));
  assert.equal(cut("x".repeat(17), 16), `${"x".repeat(16)}...`);
  // "😀" is two UTF-16 units: a cut between them would leave a lone high surrogate, which is not UTF-8.
  const smiles = "/" + "😀".repeat(200);
  const out = cut(smiles, 256);
  assert.ok(out.endsWith("..."));
  const kept = out.slice(0, -3);
  assert.ok(kept.length === 255 || kept.length === 256, String(kept.length));
  assert.equal(kept, smiles.slice(0, kept.length));
  assert.doesNotThrow(() => encodeURIComponent(kept), "a lone surrogate has no UTF-8 form");
  assert.throws(() => encodeURIComponent(smiles.slice(0, 256)), URIError, "the naive cut splits a pair here");
});
