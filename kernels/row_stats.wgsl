// row_stats: per row, the sum of W^2, of W and of |W| (Z-Pruner's row norms and mean of W/‖row‖; RIA's row sums).
//
// Bindings: 0 w: array<f32> (read; one row-tile), 1 stats: array<f32> (write; 3 per global row:
//   [sumSq, sum, sumAbs]), 2 params (uniform).
// Thread: a strided slice (j = t, t+256, ...) of one row. Dispatch: one workgroup of 256 per row of the tile,
//   flattened over x and y.
// Numerics: f32. Each thread sums its k = ceil(cols/256) terms (112 for cols = 28672) in blocks of 8 and groups of 8
//   blocks (lib/block_sum.wgsl), then an 8-level tree in workgroup memory: a sum of positive terms is off by at most
//   blockChain(k) + 8 roundings of 2^-24 relative (gpu/f32_safety.ts: 14 + ceil(cols/2048) up to 16,384 columns,
//   22 + ceil(cols/16384) beyond; 24 for cols = 28672, against 119 for one running sum; one more for a sum of squares,
//   each square rounded once). z_means.wgsl's bound on the small-weight threshold takes ceil(cols/2048) + 17, more.

struct Params {
  rows: u32, // rows in this tile
  cols: u32,
  row0: u32, // global index of the tile's first row
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> w: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> sq: array<f32, 256>;
var<workgroup> sm: array<f32, 256>;
var<workgroup> ab: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.rows) { return; } // uniform: the whole workgroup leaves
  let start = r * p.cols;
  var s = BlockSum();
  for (var j = t; j < p.cols; j += 256u) {
    let v = w[start + j];
    block_add(&s, vec4f(v * v, v, abs(v), 0.0));
  }
  let sums = block_total(&s);
  sq[t] = sums.x;
  sm[t] = sums.y;
  ab[t] = sums.z;
  for (var off = 128u; off > 0u; off >>= 1u) {
    workgroupBarrier();
    if (t < off) {
      sq[t] += sq[t + off];
      sm[t] += sm[t + off];
      ab[t] += ab[t + off];
    }
  }
  if (t == 0u) {
    let o = (p.row0 + r) * 3u;
    stats[o] = sq[0];
    stats[o + 1u] = sm[0];
    stats[o + 2u] = ab[0];
  }
}
