// col_stats: partial column sums of W^2, W and |W| over blocks of 256 rows (first level of a 2-level tree;
// col_reduce.wgsl is the second).
//
// Bindings: 0 w: array<f32> (read; one row-tile), 1 part: array<f32> (write; 3 per (global block, column):
//   index ((block0 + by) * cols + j) * 3), 2 params (uniform).
// Thread: one column j over the rows [by*256, by*256+256) of the tile. Adjacent threads read adjacent columns.
// Dispatch: (ceil(cols / 256), ceil(rows / 256)) workgroups of 256.
// Numerics: f32, at most 256 terms summed in row order per partial.

struct Params {
  rows: u32, // rows in this tile
  cols: u32,
  block0: u32, // global index of the tile's first block of 256 rows
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> w: array<f32>;
@group(0) @binding(1) var<storage, read_write> part: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  if (j >= p.cols) { return; }
  let r0 = gid.y * 256u;
  let r1 = min(r0 + 256u, p.rows);
  var a = 0.0;
  var b = 0.0;
  var c = 0.0;
  for (var r = r0; r < r1; r++) {
    let v = w[r * p.cols + j];
    a += v * v;
    b += v;
    c += abs(v);
  }
  let o = ((p.block0 + gid.y) * p.cols + j) * 3u;
  part[o] = a;
  part[o + 1u] = b;
  part[o + 2u] = c;
}
