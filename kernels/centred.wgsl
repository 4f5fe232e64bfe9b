// centred: second statistics pass of Z-Pruner: centred sums of squares of Wr = W/‖row‖ and Wc = W/‖col‖ (a
// two-pass variance, so a matrix whose normalised entries are all equal gets a std of 0, as numpy does), the
// number of weights with |W| < 0.1 * mean|W| (for alpha), and of those with |W| within z_means's bound of it.
//
// Bindings: 0 w: array<f32> (read; one row-tile), 1 row_stats: array<f32> (read; [sumSq, sum, sumAbs] per global
//   row), 2 col_stats: array<f32> (read; the same per column), 3 scalars: array<f32> (read; [0] mean_r, [1] mean_c,
//   [2] thr, [7] thr_err from z_means.wgsl), 4 part: array<u32> (write; 4 per global workgroup: [f32 bits of
//   Σ(Wr-mean_r)², f32 bits of Σ(Wc-mean_c)², small count, near count]), 5 params (uniform).
// Thread: 64 elements of a block of 16384, strided by 256. Dispatch: ceil(count / 16384) workgroups of 256,
//   flattened over x and y.
// Numerics: a 3-level tree: 64 sequential f32 adds per thread, an 8-level f32 tree per workgroup
//   (lib/spread_tree.wgsl), then z_spread.wgsl adds the per-workgroup partials (at most 14336 of them for
//   8192 x 28672). The count is exact for the f32
//   threshold thr, which z_means.wgsl forms from f32 sums; the CPU backend compares with its f64 one, so only a weight
//   with ||W| - thr| <= thr_err may count otherwise there: those are the near count. Each moves alpha by at most
//   0.21 / n; up to ALPHA_CAP that joins the scores' error, past it the host counts the small weights as the CPU
//   does and takes the exact path if the counts differ (gpu/f32_safety.ts).

struct Params {
  count: u32, // elements in this tile
  cols: u32,
  row0: u32, // global index of the tile's first row
  wg0: u32, // global index of the tile's first workgroup
}

@group(0) @binding(0) var<storage, read> w: array<f32>;
@group(0) @binding(1) var<storage, read> row_stats: array<f32>;
@group(0) @binding(2) var<storage, read> col_stats: array<f32>;
@group(0) @binding(3) var<storage, read> scalars: array<f32>;
@group(0) @binding(4) var<storage, read_write> part: array<u32>;
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let block = wid.x + wid.y * nwg.x;
  // A grid spread over x and y may hold a few padding workgroups past the last block: they own no `part` slot.
  if (block >= p.count / 16384u + u32(p.count % 16384u != 0u)) { return; } // uniform: per workgroup
  let mean_r = scalars[0];
  let mean_c = scalars[1];
  let thr = scalars[2];
  let thr_err = scalars[7];
  var a = 0.0;
  var b = 0.0;
  var c = 0u;
  var d = 0u;
  for (var i = 0u; i < 64u; i++) {
    let e = block * 16384u + i * 256u + t;
    if (e < p.count) {
      let v = w[e];
      let r = p.row0 + e / p.cols;
      let j = e % p.cols;
      let dr = normalised(v, row_stats[r * 3u]) - mean_r;
      let dc = normalised(v, col_stats[j * 3u]) - mean_c;
      a += dr * dr;
      b += dc * dc;
      if (abs(v) < thr) { c++; }
      if (abs(abs(v) - thr) <= thr_err) { d++; }
    }
  }
  spread_tree(t, vec2f(a, b), vec2u(c, d));
  if (t == 0u) {
    let o = (p.wg0 + block) * 4u;
    part[o] = bitcast<u32>(ss_r[0]);
    part[o + 1u] = bitcast<u32>(ss_c[0]);
    part[o + 2u] = small[0];
    part[o + 3u] = near[0];
  }
}
