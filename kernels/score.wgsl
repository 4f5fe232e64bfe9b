// score: the importance score of every weight (API.md, Scores), computed in place over the decoded weights.
//
// Bindings: 0 row_stats: array<f32> (read; [sumSq, sum, sumAbs] per global row), 1 col_stats: array<f32> (read;
//   the same per column), 2 act: array<u32> (read; per column j, act_j = actNormSq_j^(exponent/2) computed by the
//   host in f64 and split as m_j * 2^e_j: [f32 bits of m_j in [1, 2] (or 0, or infinity), e_j as i32 bits]),
//   3 scalars: array<f32> (read; Z-Pruner's [0] mean_r, [1] mean_c, [3] inv_std_r, [4] inv_std_c, [5] alpha from
//   z_means.wgsl and z_spread.wgsl; unused by the other methods), 4 ws: array<f32> (read_write; one row-tile: W in,
//   score out), 5 params (uniform).
// Thread: one element. Dispatch: ceil(count / 256) workgroups of 256, flattened over x and y.
// Numerics: f32 per element from f32 norms. act is split because with a large exponent (up to 64) it can leave
//   f32's range while the score does not: see times(). The whole-matrix scalars (means, 1/std, alpha) are f32,
//   reduced on the GPU from the f32 partial sums. Scores are non-negative; they are stored with -0 folded to +0 so
//   that the selection kernels may order them as u32 bit patterns.

struct Params {
  count: u32, // elements in this tile
  cols: u32,
  row0: u32, // global index of the tile's first row
  method: u32, // 0 magnitude, 1 wanda, 2 ria, 3 zpruner
}

@group(0) @binding(0) var<storage, read> row_stats: array<f32>;
@group(0) @binding(1) var<storage, read> col_stats: array<f32>;
@group(0) @binding(2) var<storage, read> act: array<u32>;
@group(0) @binding(3) var<storage, read> scalars: array<f32>;
@group(0) @binding(4) var<storage, read_write> ws: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

// x / d, or 0 when d is 0 (a zero norm or sum gives 0, never NaN).
fn safe_div(x: f32, d: f32) -> f32 {
  return select(0.0, x / d, d != 0.0);
}

// 2^k as f32, for -126 <= k <= 127 (exact).
fn pow2(k: i32) -> f32 {
  return bitcast<f32>(u32(k + 127) << 23u);
}

// s * act_j for s >= 0, where 0 * infinity (an activation that overflowed f64) counts as 0, never NaN.
// act_j = m * 2^e (m in [1, 2]). A tiny s is first scaled up by 2^64 so that (s / 2) * m is a normal f32 (no
// subnormal rounding, nothing for a flush-to-zero GPU to drop); (s / 2) * m cannot overflow (m <= 2) and is rounded
// once; then three exact steps scale by 2^(e + 1), clamped to +-378: enough to reach any result that is not already
// infinite or zero (from a normal f32 within 2^-126..2^128, a nonzero f32 result lies within 2^-149..2^128).
fn times(s: f32, j: u32) -> f32 {
  if (s == 0.0) { return 0.0; }
  var y = s;
  var k = bitcast<i32>(act[2u * j + 1u]) + 1;
  if (y < 1.0e-30) {
    y *= 18446744073709551616.0; // 2^64
    k -= 64;
  }
  var x = (y * 0.5) * bitcast<f32>(act[2u * j]);
  k = clamp(k, -378, 378);
  for (var i = 0; i < 3; i++) {
    let step = clamp(k, -126, 127);
    x *= pow2(step);
    k -= step;
  }
  return x;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let e = (wid.x + wid.y * nwg.x) * 256u + t;
  if (e >= p.count) { return; }
  let r = p.row0 + e / p.cols;
  let j = e % p.cols;
  let v = ws[e];
  let a = abs(v);
  var s = a;
  if (p.method == 1u) {
    s = times(a, j);
  } else if (p.method == 2u) {
    s = times(safe_div(a, col_stats[j * 3u + 2u]) + safe_div(a, row_stats[r * 3u + 2u]), j);
  } else if (p.method == 3u) {
    let wr = safe_div(v, sqrt(row_stats[r * 3u]));
    let wc = safe_div(v, sqrt(col_stats[j * 3u]));
    let alpha = scalars[5];
    let zr = abs((wr - scalars[0]) * scalars[3]);
    let zc = abs((wc - scalars[1]) * scalars[4]);
    s = times(alpha * zr * zr * zr + (1.0 - alpha) * zc * zc * zc, j);
  }
  let bits = bitcast<u32>(s);
  ws[e] = bitcast<f32>(select(bits, 0u, bits == 0x80000000u));
}
