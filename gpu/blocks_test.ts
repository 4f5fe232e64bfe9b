import assert from "node:assert/strict";
import { CENTRED_BLOCK, COL_BLOCK_ROWS, KEY_BLOCK } from "./blocks.ts";

/** A kernel's source, as the descriptors import it. */
const wgsl = (name: string) => Deno.readTextFileSync(new URL(`../kernels/${name}.wgsl`, import.meta.url));

Deno.test("the kernels' block sizes are the ones the layer plan numbers and sizes its partials by", () => {
  // Each kernel finds its block's first element, and leaves its padding workgroups, by the block size as a literal.
  const uses: [string, number, string[]][] = [
    ["tie_count", KEY_BLOCK, [`block * ${KEY_BLOCK}u`, `p.count / ${KEY_BLOCK}u`]],
    ["mask_layer", KEY_BLOCK, [`block * ${KEY_BLOCK}u`, `p.count / ${KEY_BLOCK}u`]],
    ["centred", CENTRED_BLOCK, [`block * ${CENTRED_BLOCK}u`, `p.count / ${CENTRED_BLOCK}u`]],
    ["col_stats", COL_BLOCK_ROWS, [`wid.y * ${COL_BLOCK_ROWS}u`]],
  ];
  for (const [name, size, needles] of uses) {
    const source = wgsl(name);
    for (const n of needles) assert.ok(source.includes(n), `${name}.wgsl does not use its block of ${size}: "${n}"`);
  }
  // A thread's share times the workgroup's 256 threads makes the block: 32 keys, 64 elements, 64 rows a quarter.
  assert.ok(wgsl("tie_count").includes("t * 32u") && KEY_BLOCK === 256 * 32);
  assert.ok(wgsl("centred").includes("i < 64u") && CENTRED_BLOCK === 256 * 64);
  assert.ok(wgsl("col_stats").includes("quarter * 64u") && COL_BLOCK_ROWS === 4 * 64);
});
