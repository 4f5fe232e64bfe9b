// col_reduce: second level of the column-sum tree: adds the per-block partials of col_stats.wgsl.
//
// Bindings: 0 part: array<f32> (read; 3 per (block, column)), 1 stats: array<f32> (write; 3 per column:
//   [sumSq, sum, sumAbs]), 2 params (uniform).
// Thread: one column, summing its `blocks` partials in block order. Dispatch: ceil(cols / 64) workgroups of 64,
//   flattened over x and y (past 65535 workgroups the column index comes from both).
// Numerics: f32; with the first level (64-term sums joined by a 4-way tree per block of 256 rows) at most
//   66 + ceil(rows/256) rounding steps per column (178 for rows = 28672): for these non-negative sums a worst-case
//   relative error of 178 * 2^-24 = 1.1e-5, typically (random rounding) about sqrt(178) * 2^-24 = 8e-7.

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
  var a = 0.0;
  var b = 0.0;
  var c = 0.0;
  for (var k = 0u; k < p.blocks; k++) {
    let o = (k * p.cols + j) * 3u;
    a += part[o];
    b += part[o + 1u];
    c += part[o + 2u];
  }
  stats[j * 3u] = a;
  stats[j * 3u + 1u] = b;
  stats[j * 3u + 2u] = c;
}
