/**
 * select_nm.wgsl on its own, past 65535 workgroups: the H200's 2 GiB bindings send an 8192x28672 2:4 layer through it
 * as one tile of 229,376 workgroups, flattened over x and y, which lavapipe's 128 MiB tiles never reach through the
 * engine. Against a host oracle: in each group the n lowest keys, ties by index.
 */
import assert from "node:assert/strict";
import { flattenWorkgroups } from "../kernel.ts";
import { GpuEngine } from "../engine.ts";
import { dispatchKernel, submitAndRead } from "./_run_kernel.ts";
import { selectNm } from "./select_nm.ts";
import { Z_SCALARS, Z_SCALARS_BYTES } from "./z_means.ts";

const engine = await GpuEngine.create({ allowFallback: true });
globalThis.addEventListener("unload", () => engine?.destroy());

/** Mask bits of a tile of `groups` groups of m keys starting at global index `base`, with spare words after it. */
async function selectOnGpu(keys: Uint32Array<ArrayBuffer>, m: number, n: number, base: number): Promise<Uint32Array> {
  const device = engine!.device, usage = GPUBufferUsage;
  const groups = keys.length / m;
  const kb = device.createBuffer({ label: "keys", size: keys.byteLength, usage: usage.STORAGE | usage.COPY_DST });
  device.queue.writeBuffer(kb, 0, keys);
  // Four words past the last key's: a workgroup past the last group must leave them zero.
  const words = Math.ceil((base + keys.length) / 32) + 4;
  const mask = device.createBuffer({ label: "mask", size: words * 4, usage: usage.STORAGE | usage.COPY_SRC });
  // Z-Pruner's check is off (check 0): its three inputs are never read, the flags never written.
  const unused = device.createBuffer({ label: "unused", size: 256, usage: usage.STORAGE });
  const flags = device.createBuffer({ label: "flags", size: 256, usage: usage.STORAGE });
  const enc = device.createCommandEncoder({ label: "test-select-nm" });
  const u = { groups, m, n, base, cols: m * 4, check: 0, dtype: 0 };
  const ub = dispatchKernel(device, enc, selectNm, [kb, unused, unused, unused, mask, flags], u);
  const out = new Uint32Array(await submitAndRead(device, enc, mask, words * 4));
  for (const b of [kb, mask, unused, flags, ub]) b.destroy();
  return out;
}

Deno.test({
  name: "select_nm past 65535 workgroups (a grid over x and y, a padding workgroup): every group's n lowest keys",
  ignore: !engine,
  async fn() {
    // 2:4-like groups of 2 fill a 128 MiB binding at 65,536 workgroups (the last one part-full); groups of 1 (n = 1:
    // every key pruned, not a contract pattern) reach 65,537, which the grid pads to 65,538.
    for (const [groups, m, n, base] of [[16_777_215, 2, 1, 6], [16_777_217, 1, 1, 5]] as const) {
      const grid = flattenWorkgroups(selectNm.workgroups({ groups } as never));
      assert.ok(grid[1] > 1 && grid[0] * grid[1] >= Math.ceil(groups / 256), `${groups} groups: grid ${grid}`);
      // Keys from 16 values, so that most groups hold ties.
      const keys = new Uint32Array(groups * m).map((_, i) => (Math.imul(i, 2654435761) >>> 28) + 1);
      const mask = await selectOnGpu(keys, m, n, base);
      let wrong = 0, firstWrong = -1;
      const rank = new Array<number>(m);
      for (let g = 0; g < groups; g++) {
        // Pruned: the keys with fewer than n keys of the group before them in (key, index) order.
        for (let j = 0; j < m; j++) {
          rank[j] = 0;
          for (let o = 0; o < m; o++) {
            const a = keys[g * m + o]!, b = keys[g * m + j]!;
            if (a < b || (a === b && o < j)) rank[j]!++;
          }
        }
        for (let j = 0; j < m; j++) {
          const i = base + g * m + j;
          if (((mask[i >>> 5]! >>> (i & 31)) & 1) !== (rank[j]! < n ? 1 : 0)) {
            wrong++;
            if (firstWrong < 0) firstWrong = g;
          }
        }
      }
      assert.equal(wrong, 0, `${m}-groups: ${wrong} wrong bits, first in group ${firstWrong}`);
      const end = base + groups * m;
      assert.equal(mask[end >>> 5]! >>> (end & 31), 0, "no bit after the last key in its word");
      assert.deepEqual([...mask.subarray((end >>> 5) + 1)], [0, 0, 0, 0], "no bit in the words after the last key");
      const lead = mask[base >>> 5]! & ((1 << (base & 31)) - 1);
      assert.equal(lead, 0, "no bit before the tile's first key");
    }
  },
});

/**
 * select_nm with Z-Pruner's check on (check 1) over one group of 1:2 per row: f32 scores `scores` (keys), raw f32
 * weights `weights`, the error model's k (rel 0) and every cube root of act 1. The count of groups checked unsafe.
 */
async function unsafeGroups(groups: [number[], number[]][], k: number): Promise<number> {
  const device = engine!.device, usage = GPUBufferUsage;
  const m = 2;
  const buffer = (label: string, data: Float32Array<ArrayBuffer> | Uint32Array<ArrayBuffer>) => {
    const b = device.createBuffer({
      label,
      size: Math.max(data.byteLength, 16),
      usage: usage.STORAGE | usage.COPY_DST,
    });
    device.queue.writeBuffer(b, 0, data);
    return b;
  };
  const keys = buffer("keys", new Float32Array(groups.flatMap(([s]) => s)));
  const raw = buffer("raw", new Float32Array(groups.flatMap(([, w]) => w)));
  const scalars = new Float32Array(Z_SCALARS_BYTES / 4);
  scalars[Z_SCALARS.k] = k;
  scalars[Z_SCALARS.rel] = 0;
  const sb = buffer("scalars", scalars);
  const cbrtAct = buffer("cbrt-act", new Float32Array(m).fill(1));
  const mask = device.createBuffer({ label: "mask", size: 16, usage: usage.STORAGE });
  const flags = device.createBuffer({ label: "flags", size: 16, usage: usage.STORAGE | usage.COPY_SRC });
  const enc = device.createCommandEncoder({ label: "test-select-nm-check" });
  const u = { groups: groups.length, m, n: 1, base: 0, cols: m, check: 1, dtype: 0 };
  const ub = dispatchKernel(device, enc, selectNm, [keys, sb, cbrtAct, raw, mask, flags], u);
  const out = new Uint32Array(await submitAndRead(device, enc, flags, 16));
  for (const b of [keys, raw, sb, cbrtAct, mask, flags, ub]) b.destroy();
  return out[1]!;
}

Deno.test({
  name: "select_nm's Z-Pruner check compares zero weights with nonzero ones, and bounds a zero score from above",
  ignore: !engine,
  async fn() {
    // Scores 1 and 1 + 1e-6 with k = 1e-3: the bounds (1 ± 1e-3)³ overlap far past half the band, so the pruned entry
    // (score 1) may be the CPU's kept one. Only two zero weights are exempt from each other (their z-scores are
    // |mean| / std on both backends, so act_j and the index order them alike); a zero weight against a nonzero one
    // is compared, whichever of the two is pruned.
    const close = [1, 1 + 1e-6];
    const cases: [string, number[], number][] = [
      ["neither weight zero", [0.5, 0.7], 1],
      ["the pruned weight zero", [0, 0.7], 1],
      ["the kept weight zero", [0.5, 0], 1],
      ["both weights zero", [0, 0], 0],
    ];
    for (const [what, weights, want] of cases) {
      assert.equal(await unsafeGroups([[close, weights]], 1e-3), want, what);
    }
    // A pruned score of 0 beside a kept 1e-12 with k = 1e-4: the exact score behind the 0 may be up to k³ = 1e-12,
    // as large as the kept one's (whose lower bound reaches 0): unsafe.
    assert.equal(await unsafeGroups([[[0, 1e-12], [0.5, 0.7]]], 1e-4), 1, "a zero score's upper bound is k³");
    // Several groups in one dispatch: each is counted on its own (at k = 1e-3 the last group is unsafe too).
    const all: [number[], number[]][] = [[close, [0, 0.7]], [close, [0.5, 0]], [close, [0, 0]], [[0, 1e-12], [1, 1]]];
    assert.equal(await unsafeGroups(all, 1e-3), 3, "three of four groups");
  },
});
