import assert from "node:assert/strict";
import { f16Bits } from "../contract/dtype_codec.ts";
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { pruneLayer } from "../prune/prune_layer.ts";
import { disallowedDiffs, issuePeer, makeLayer, maskDiffBits, numpyPeer, PATTERNS } from "./cpu_bench.ts";

/** Whether python3 with NumPy is here (the bench's peer needs both). */
const numpy = await new Deno.Command("python3", { args: ["-c", "import numpy"], stdout: "null", stderr: "null" })
  .output().then((o) => o.success, () => false);

/**
 * A 7x64 f16 layer whose scores take 4 values, each many times: rows 0-3 repeat [a, a, a, b] and rows 4-6
 * [c, d, d, d] along the columns, activations all 1, so a score depends only on (row < 4, column % 4). Tied groups of
 * 192, 64, 48 and 144 keys, no union of which is 224 (half the layer): every pattern's cut falls inside a tied group.
 */
function tiedLayer(): LayerJob {
  const [a, b, c, d] = [0.01, -0.03, 0.02, -0.005].map(f16Bits) as [number, number, number, number];
  const rows = 7, cols = 64, w = new Uint16Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) w[r * cols + j] = r < 4 ? (j % 4 === 3 ? b : a) : (j % 4 === 0 ? c : d);
  }
  return {
    name: "tied",
    rows,
    cols,
    dtype: "f16",
    weight: new Uint8Array(w.buffer),
    actNormSq: new Float32Array(cols).fill(1),
  };
}

const params = (pattern: PruneParams["pattern"]): PruneParams => ({
  method: "zpruner",
  pattern,
  exponent: 1.5,
  returnWeight: false,
  returnScore: true,
});

Deno.test({
  name: "the exact NumPy peer's masks and stats are zprune's, bit for bit, where scores tie and where they do not",
  ignore: !numpy,
  fn: async () => {
    const tied = tiedLayer();
    const layers = [tied, makeLayer(64, 256)];
    const peer = await numpyPeer(layers, 1);
    for (const layer of layers) {
      const p = peer[`${layer.rows}x${layer.cols}`]!;
      for (const [label, pattern, name] of PATTERNS) {
        const ours = await pruneLayer(params(pattern), layer);
        if (layer === tied) {
          // The premise: the cut leaves some keys equal to the last pruned one unpruned, so the tie-break decides.
          const s = ours.score!, bits = ours.mask;
          const pruned = (i: number) => (bits[i >>> 3]! >> (i & 7)) & 1;
          const tiedOut = [...s.keys()].some((i) =>
            !pruned(i) && [...s.keys()].some((j) => pruned(j) && s[j] === s[i])
          );
          assert.ok(tiedOut, `${label}: no tie straddles the cut`);
        }
        assert.equal(maskDiffBits(p.masks[name]!, ours.mask), 0, `${layer.name} ${label}: masks differ`);
        assert.equal(p.stats[name]!.pruned, ours.stats.pruned, `${layer.name} ${label}: pruned`);
        assert.deepEqual(
          [p.stats[name]!.rowSparsity.min, p.stats[name]!.rowSparsity.max],
          [ours.stats.rowSparsity.min, ours.stats.rowSparsity.max],
          `${layer.name} ${label}: row sparsity`,
        );
      }
      for (const key of ["decode_ms", "score_ms", "layer_total_ms", "row_total_ms", "2of4_total_ms"]) {
        assert.ok(Number.isFinite(p.times[key]) && p.times[key]! >= 0, key);
      }
    }
  },
});

Deno.test({
  name: "the issue's NumPy peer gives each pattern's total for every shape asked, in the order asked",
  ignore: !numpy,
  fn: async () => {
    const totals = await issuePeer([[8, 16], [4, 32]], 1);
    assert.deepEqual(Object.keys(totals), ["8x16", "4x32"]);
    for (const t of Object.values(totals)) {
      assert.deepEqual(Object.keys(t), PATTERNS.map(([, , p]) => p));
      for (const v of Object.values(t)) assert.ok(Number.isFinite(v) && v > 0, String(v));
    }
  },
});

Deno.test("maskDiffBits counts the differing bits, and every bit of a missing byte", () => {
  assert.equal(maskDiffBits(new Uint8Array([0b1011, 0xff]), new Uint8Array([0b0010, 0xff])), 2);
  assert.equal(maskDiffBits(new Uint8Array([1]), new Uint8Array([1, 0])), 8);
  assert.equal(maskDiffBits(new Uint8Array([1, 0xff]), new Uint8Array([1])), 8);
  assert.equal(maskDiffBits(new Uint8Array(0), new Uint8Array(0)), 0);
});

Deno.test("disallowedDiffs: a key may change sides only against a near-equal score of its layer, row or group", () => {
  // Two rows of four; per row (and per group of 4) zprune prunes the lowest two: keys 0, 1 and 4, 5.
  const score = new Float32Array([1, 2, 2.00001, 3, 5, 6, 8, 7]); // 2.00001 is within 1e-5 (relative) of 2
  const bits = (...keys: number[]) => new Uint8Array([keys.reduce((m, k) => m | (1 << k), 0)]);
  const ours = bits(0, 1, 4, 5);
  for (const pattern of [{ kind: "row", sparsity: 0.5 } as const, { kind: "nm", n: 2, m: 4 } as const]) {
    assert.equal(disallowedDiffs(ours, ours, score, pattern, 4), 0);
    assert.equal(disallowedDiffs(ours, bits(0, 2, 4, 5), score, pattern, 4), 0, pattern.kind); // 2 for 2.00001
    assert.equal(disallowedDiffs(ours, bits(0, 1, 4, 7), score, pattern, 4), 2, pattern.kind); // 7 for 6
    assert.equal(disallowedDiffs(ours, bits(1, 3, 4, 5), score, pattern, 4), 2, pattern.kind); // 3 for 1
    // Near-equal across rows is no excuse: 3 (row 0) for 5 (row 1) changes both rows' counts.
    const across = new Float32Array(score);
    across[3] = 4.99999;
    assert.equal(disallowedDiffs(ours, bits(0, 1, 3, 5), across, pattern, 4), 2, pattern.kind);
  }
  // The layer's lowest 4 are keys 0-3; 3.0 may swap with a kept 3.00002, not with 5.
  const layer = { kind: "layer", sparsity: 0.5 } as const, oursL = bits(0, 1, 2, 3);
  assert.equal(disallowedDiffs(oursL, bits(0, 1, 2, 4), score, layer, 4), 2);
  const near = new Float32Array(score);
  near[4] = 3.00002;
  assert.equal(disallowedDiffs(oursL, bits(0, 1, 2, 4), near, layer, 4), 0);
  // Float32's resolution, not more: 5e-5 apart is a real difference.
  near[4] = 3.00015;
  assert.equal(disallowedDiffs(oursL, bits(0, 1, 2, 4), near, layer, 4), 2);
});

Deno.test("disallowedDiffs: N:M groups are runs of M within a row, not rows", () => {
  // One row of 8, 2:4: groups are keys 0-3 and 4-7, and zprune prunes 0, 1 and 4, 5. Keys 3 and 4 score the same
  // but sit in different groups: swapping them changes both groups' counts, though across the row it would be a tie.
  const score = new Float32Array([1, 2, 3, 3, 3, 3, 8, 9]);
  const bits = (...keys: number[]) => new Uint8Array([keys.reduce((m, k) => m | (1 << k), 0)]);
  assert.equal(disallowedDiffs(bits(0, 1, 4, 5), bits(0, 1, 3, 5), score, { kind: "nm", n: 2, m: 4 }, 8), 2);
  // Per row the same swap is allowed: the row is one unit, and 3 for 3 is a tie.
  assert.equal(disallowedDiffs(bits(0, 1, 2, 3), bits(0, 1, 2, 4), score, { kind: "row", sparsity: 0.5 }, 8), 0);
});

Deno.test("deno task bench refuses a bad count or shape with its usage, before any peer runs", async () => {
  const script = new URL("./cpu_bench.ts", import.meta.url).pathname;
  for (
    const [args, why] of [
      [["--repeat", "0"], "--repeat must be at least 1"],
      [["--workers", "x"], "--workers needs a count, got x"],
      [["0x8"], "0x8: rows and columns must be at least 1"],
      [["4096"], "unknown argument 4096"],
    ] as const
  ) {
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", script, ...args],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    assert.equal(code, 2, args.join(" "));
    assert.equal(new TextDecoder().decode(stdout), "", "nothing measured");
    assert.equal(
      new TextDecoder().decode(stderr),
      `cpu_bench: ${why}\nusage: deno task bench [--repeat N] [--workers N] ` +
        "[ROWSxCOLS ...]   (default 4096x4096 11008x4096, best of 3, one worker per core)\n",
    );
  }
});
