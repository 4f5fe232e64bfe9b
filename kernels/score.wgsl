// score: the importance score of every weight (API.md, Scores), computed in place over the decoded weights.
//
// Bindings: 0 row_stats: array<f32> (read; [sumSq, sum, sumAbs] per global row), 1 col_stats: array<f32> (read;
//   the same per column), 2 act: array<u32> (read; per column j, act_j = actNormSq_j^(exponent/2) computed by the
//   host in f64 and split as m_j * 2^e_j: [f32 bits of m_j in [1, 2] (or 0, or infinity), e_j as i32 bits]),
//   3 scalars: array<f32> (read; Z-Pruner's [0] mean_r, [1] mean_c, [3] inv_std_r, [4] inv_std_c, [5] alpha from
//   z_means.wgsl and z_spread.wgsl; unused by the other methods), 4 ws: array<f32> (read_write; one row-tile: W in,
//   score out), 5 flags: array<atomic<u32>, 2> (read_write; decode.wgsl's `bad`: [1] is set to 1 when the layer needs
//   the host's exact path), 6 params (uniform).
// Thread: one element. Dispatch: ceil(count / 256) workgroups of 256, flattened over x and y.
// Numerics: f32 per element from f32 norms; W / norm as W * inverseSqrt(sum of squares) (lib/normalised.wgsl).
//   act is split because with a large exponent (up to 64) it can leave f32's range while the score does not: see
//   times(). The whole-matrix scalars (means, 1/std, alpha) are f32, reduced on the GPU from the f32 partial sums.
//   Scores are non-negative; they are stored with -0 folded to +0 so that the selection kernels may order them as u32
//   bit patterns. WGSL lets a GPU flush subnormals to zero, and even where it keeps them they carry fewer bits. So
//   flags[1] is set, and the host computes the layer on the CPU instead (no trained model's layer comes near), when
//   for a nonzero weight (or any weight, for Z-Pruner: a zero weight scores from the means alone) the score before
//   the activation is below 2^-100 and has a subnormal term (one of RIA's
//   quotients; the cube of a nonzero Z-Pruner z-score below 2^-41, times alpha or 1 - alpha); or when a nonzero score
//   before the activation meets a nonzero activation and the score falls below 2^-126. (A subnormal term beside a sum
//   of at least 2^-100 moves it by under 2^-26.) flags[1] is set too for a score of 2^127 or more (past 2^128 every
//   such score would be infinity and tie): the CPU path then decides, and refuses a layer whose f64 scores overflow
//   float32 as non_finite.

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
@group(0) @binding(5) var<storage, read_write> flags: array<atomic<u32>, 2>;
@group(0) @binding(6) var<uniform> p: Params;

const MIN_NORMAL: f32 = 1.17549435e-38; // 2^-126
const Z_FLOOR: f32 = 4.54747351e-13; // 2^-41
const SUM_FLOOR: f32 = 7.88860905e-31; // 2^-100

// x / d, or 0 when d is 0 (RIA: a zero sum gives 0, never NaN).
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
  // x * 2^k is exact up to 2^128 and infinite from there: x in [2^ex, 2^(ex + 1)) gets there when ex + k >= 128.
  // Flagged from 2^127 (ex + k >= 127), where the f64 score the CPU path rounds may lie on the other side of 2^128
  // than this f32 one, and for an infinite x (an activation past f64, whatever k is after the tiny-s scaling).
  // Flagged before it happens: WGSL leaves an overflowed result unspecified.
  let ex = i32((bitcast<u32>(x) >> 23u) & 0xffu);
  if (x != 0.0 && (ex == 255 || ex - 127 + k >= 127)) { atomicOr(&flags[1], 1u); }
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
  var inner = a; // the score before the activation
  var tiny = false; // an intermediate in (or flushed from) f32's subnormal range
  if (p.method == 1u) {
    s = times(a, j);
  } else if (p.method == 2u) {
    let col_abs = col_stats[j * 3u + 2u];
    let row_abs = row_stats[r * 3u + 2u];
    // a / sum is subnormal exactly when a < sum * 2^-126 (when sum < 1 that product is below a normal a anyway).
    inner = safe_div(a, col_abs) + safe_div(a, row_abs);
    tiny = (a < col_abs * MIN_NORMAL || a < row_abs * MIN_NORMAL) && inner < SUM_FLOOR;
    s = times(inner, j);
  } else if (p.method == 3u) {
    let wr = normalised(v, row_stats[r * 3u]);
    let wc = normalised(v, col_stats[j * 3u]);
    let alpha = scalars[5];
    let zr = abs((wr - scalars[0]) * scalars[3]);
    let zc = abs((wc - scalars[1]) * scalars[4]);
    inner = alpha * zr * zr * zr + (1.0 - alpha) * zc * zc * zc;
    tiny = ((zr != 0.0 && zr < Z_FLOOR) || (zc != 0.0 && zc < Z_FLOOR)) && inner < SUM_FLOOR;
    s = times(inner, j);
  }
  // Magnitude's score is the weight itself (decode flags subnormal weights).
  if (p.method != 0u && (a != 0.0 || p.method == 3u)) {
    let act_nonzero = bitcast<f32>(act[2u * j]) != 0.0;
    if (tiny || (inner != 0.0 && act_nonzero && s < MIN_NORMAL)) { atomicOr(&flags[1], 1u); }
  }
  let bits = bitcast<u32>(s);
  ws[e] = bitcast<f32>(select(bits, 0u, bits == 0x80000000u));
}
