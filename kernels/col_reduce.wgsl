// col_reduce: second level of the column-sum tree: adds the per-block partials of col_stats.wgsl.
//
// Bindings: 0 part: array<f32> (read; 3 per (block, column)), 1 stats: array<f32> (write; 3 per column:
//   [sumSq, sum, sumAbs]), 2 params (uniform).
// Thread: one column, summing its `blocks` partials in block order, in blocks of 8 and groups of 8 blocks
//   (lib/block_sum.wgsl). Dispatch: ceil(cols / 64) workgroups of 64, flattened over x and y (past 65535 workgroups the
//   column index comes from both).
// Numerics: f32; with the first level (at most 16 roundings per block partial) a column's sum of positive terms is off
//   by at most 16 + blockChain(blocks) roundings of 2^-24 relative (gpu/f32_safety.ts: 22 + ceil(rows/2048) up to
//   16,384 rows, 30 + ceil(rows/16384) beyond; 32 for rows = 28672, 178 before the blocks of 2026-11-29; one more for a
//   sum of squares), typically (random rounding) a few. gpu/f32_safety.ts (sumChain) counts on this bound.

struct Params {
  cols: u32,
  blocks: u32, // blocks of 256 rows over the whole matrix
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> part: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let j = (wid.x + wid.y * nwg.x) * 64u + t;
  if (j >= p.cols) { return; }
  var s = BlockSum();
  for (var k = 0u; k < p.blocks; k++) {
    let o = (k * p.cols + j) * 3u;
    block_add(&s, vec4f(part[o], part[o + 1u], part[o + 2u], 0.0));
  }
  let sums = block_total(&s);
  stats[j * 3u] = sums.x;
  stats[j * 3u + 1u] = sums.y;
  stats[j * 3u + 2u] = sums.z;
}
