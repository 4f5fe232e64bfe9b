// col_stats: partial column sums of W^2, W and |W| over blocks of 256 rows (first level of a 2-level tree;
// col_reduce.wgsl is the second).
//
// Bindings: 0 w: array<f32> (read; one row-tile), 1 part: array<f32> (write; 3 per (global block, column):
//   index ((block0 + by) * cols + j) * 3), 2 params (uniform).
// Workgroup: 64 columns x one block of 256 rows. Thread t owns column (t % 64) of the group and the 64-row quarter
//   t / 64 of the block: each row's 64 neighbouring columns are read by 64 neighbouring threads, and a block keeps
//   4 threads per column busy (a thread per column gave a 4096x4096 layer 256 workgroups, under 2 per SM of an
//   H200). Column groups stride by 64 * num_workgroups.x, so any width fits the 65535 per-dimension limit.
// Dispatch: (min(ceil(cols / 64), 65535), ceil(rows / 256)) workgroups of 256.
// Numerics: f32; each quarter sums at most 64 terms in row order in blocks of 8 (lib/block_sum.wgsl: at most 14
//   roundings, against 63 for one running sum), then (q0 + q1) + (q2 + q3): a block partial of positive terms is off by
//   at most 16 roundings of 2^-24 relative.

struct Params {
  rows: u32, // rows in this tile
  cols: u32,
  block0: u32, // global index of the tile's first block of 256 rows
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> w: array<f32>;
@group(0) @binding(1) var<storage, read_write> part: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> sq: array<f32, 256>;
var<workgroup> sm: array<f32, 256>;
var<workgroup> ab: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let lane = t & 63u;
  let quarter = t >> 6u;
  let r0 = wid.y * 256u + quarter * 64u;
  let r1 = min(r0 + 64u, p.rows);
  // The loop bound is uniform across the workgroup, so the barriers inside are too.
  for (var c0 = wid.x * 64u; c0 < p.cols; c0 += nwg.x * 64u) {
    let j = c0 + lane;
    var s = BlockSum();
    if (j < p.cols) {
      for (var r = r0; r < r1; r++) {
        let v = w[r * p.cols + j];
        block_add(&s, vec4f(v * v, v, abs(v), 0.0));
      }
    }
    let sums = block_total(&s);
    sq[t] = sums.x;
    sm[t] = sums.y;
    ab[t] = sums.z;
    workgroupBarrier();
    if (quarter == 0u && j < p.cols) {
      let o = ((p.block0 + wid.y) * p.cols + j) * 3u;
      part[o] = (sq[t] + sq[t + 64u]) + (sq[t + 128u] + sq[t + 192u]);
      part[o + 1u] = (sm[t] + sm[t + 64u]) + (sm[t + 128u] + sm[t + 192u]);
      part[o + 2u] = (ab[t] + ab[t + 64u]) + (ab[t + 128u] + ab[t + 192u]);
    }
    workgroupBarrier();
  }
}
