import assert from "node:assert/strict";
import { parseConfig } from "./config.ts";
import { ropeInvFreq, ropeTables } from "./ops.ts";

/** transformers' own snapshot of inverse frequencies (tests/fixtures/rope_inv_freq.json says where from). */
const SNAPSHOT = JSON.parse(
  await Deno.readTextFile(new URL("../tests/fixtures/rope_inv_freq.json", import.meta.url)),
);

/** The snapshot prints 5 significant digits: agree to half a unit of the fifth. */
function assertPrinted(got: Float32Array, printed: number[], what: string): void {
  assert.equal(got.length, printed.length, what);
  printed.forEach((p, i) => assert.ok(Math.abs(got[i]! - p) <= 5e-5 * p, `${what}[${i}]: ${got[i]} vs ${p}`));
}

const BASE = { hidden_size: 4096, num_attention_heads: 32, intermediate_size: 64, num_hidden_layers: 1, vocab_size: 8 };

Deno.test("ropeInvFreq() gives transformers' default and llama3 inverse frequencies", () => {
  const { head_dim, rope_theta } = SNAPSHOT.config;
  assertPrinted(ropeInvFreq(head_dim, rope_theta), SNAPSHOT.default, "default");
  // Through parseConfig, from either place transformers keeps the scaling's fields.
  const scaling = SNAPSHOT.llama3.rope_scaling;
  const older = parseConfig({ ...BASE, rope_theta, rope_scaling: scaling });
  const newer = parseConfig({ ...BASE, rope_parameters: { rope_theta, ...scaling } });
  assert.deepEqual(newer.ropeScaling, older.ropeScaling);
  assertPrinted(ropeInvFreq(older.headDim, older.ropeTheta, older.ropeScaling), SNAPSHOT.llama3.inv_freq, "llama3");
});

Deno.test("ropeInvFreq() llama3: high frequencies as trained, low ones divided by factor, a blend between", () => {
  const plain = ropeInvFreq(128, 500000);
  const cfg = parseConfig({
    ...BASE,
    rope_theta: 500000,
    rope_scaling: {
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
  });
  const scaled = ropeInvFreq(128, 500000, cfg.ropeScaling);
  let kept = 0, divided = 0, blended = 0;
  plain.forEach((x, i) => {
    const wavelen = (2 * Math.PI) / x;
    if (wavelen < 8192 / 4) assert.equal(scaled[i], x, `${i} kept`), kept++;
    else if (wavelen > 8192 / 1) assert.equal(scaled[i], Math.fround(x / 8), `${i} divided`), divided++;
    else {
      assert.ok(scaled[i]! > x / 8 && scaled[i]! < x, `${i} between`);
      blended++;
    }
    // Scaling never raises a frequency, and frequencies stay in order.
    if (i > 0) assert.ok(scaled[i]! < scaled[i - 1]!, `${i} decreasing`);
  });
  assert.ok(kept > 0 && divided > 0 && blended > 0, `${kept} kept, ${divided} divided, ${blended} blended`);
});

Deno.test("ropeTables() with linear scaling turns position p into p / factor", () => {
  const cfg = parseConfig({ ...BASE, rope_scaling: { type: "linear", factor: 4 } });
  const scaled = ropeTables(64, 128, 10000, cfg.ropeScaling), plain = ropeTables(16, 128, 10000);
  assert.deepEqual(ropeInvFreq(128, 10000, cfg.ropeScaling), ropeInvFreq(128, 10000).map((x) => x / 4));
  // Dividing by 4 is exact in binary, so position 4p scaled is position p plain, to the bit.
  for (let p = 0; p < 16; p++) {
    assert.deepEqual(scaled.cos.subarray(4 * p * 64, (4 * p + 1) * 64), plain.cos.subarray(p * 64, (p + 1) * 64));
    assert.deepEqual(scaled.sin.subarray(4 * p * 64, (4 * p + 1) * 64), plain.sin.subarray(p * 64, (p + 1) * 64));
  }
});
