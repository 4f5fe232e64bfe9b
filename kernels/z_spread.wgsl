// z_spread: Z-Pruner's spread scalars from the centred.wgsl partials, on the GPU so that scoring needs no host round
// trip: 1/std(Wr) and 1/std(Wc) (unbiased, n - 1; 0 when the std is 0 or n = 1), the small-weight count and
// alpha = 0.7 · (1 − 0.3 · small / n); and the bound on the f32 z-scores' error that select_nm.wgsl checks its groups
// against (the host's zSafeThreshold in gpu/f32_safety.ts, whose constants come as uniforms).
//
// Bindings: 0 part: array<u32> (read; per centred workgroup: f32 bits of Σ(Wr − mean)² and of Σ(Wc − mean)², small
//   count, near count), 1 scalars: array<f32> (read_write; reads [0] mean_r, [1] mean_c; writes [3] inv_std_r,
//   [4] inv_std_c, [5] alpha, [6] small and [8] near as u32 bits, [9] k, [10] rel), 2 params (uniform).
// Thread: a strided slice of the partials. Dispatch: exactly one workgroup of 256.
// Numerics: f32 for the sums of squares (at most ceil(partials/256) + 8 rounding steps, 64 for 14,336 partials;
//   the 8 are lib/spread_tree.wgsl's),
//   exact u32 for the counts. The host recomputes alpha in f64 from the count for the response. k = cbrt(alpha dR³ +
//   (1 − alpha) dC³) with d = shift · (|mean| · inv_std + floor) per axis (0 where inv_std is 0): an entry whose score
//   before its activation is s0 has |Δ cbrt(s0)| <= k, beyond a relative error rel = z_rel + alpha_rel · near / n
//   (near weights may each move alpha by 0.21 / n, a score by that over min(alpha, 1 − alpha) >= 0.3 of itself) where
//   near is at most near_cap (so that term is at most ALPHA_CAP; an integer from the host, so that the GPU's
//   approximate division cannot decide otherwise than the host at the edge); above it the host counts the small
//   weights exactly, and the term is 0 if it agrees (else the layer takes the exact path).

struct Params {
  count: u32, // partials
  n: u32, // rows * cols
  shift: f32, // Z_SHIFT · 2^-24
  floor: f32, // Z_MEAN_FLOOR / sqrt(n)
  z_rel: f32, // Z_REL
  alpha_rel: f32, // a score's relative change per unit change of s = small / n
  near_cap: u32, // the most near weights whose alpha_rel · near / n is taken into rel
  _pad0: u32,
}

@group(0) @binding(0) var<storage, read> part: array<u32>;
@group(0) @binding(1) var<storage, read_write> scalars: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

// 1 / sqrt(ss / (n - 1)), or 0 when that std is 0 or n = 1. inverseSqrt (2 ULP) rather than 1.0 / sqrt (a 2.5 ULP
// division on top of sqrt's 1.0 / inverseSqrt).
fn inv_std(ss: f32, n: u32) -> f32 {
  if (n < 2u || ss <= 0.0) { return 0.0; }
  return inverseSqrt(ss / f32(n - 1u));
}

// The shift of one axis's z-scores: 0 where its 1/std is 0 (z = 0 on both backends).
fn shift(mean: f32, inv: f32) -> f32 {
  return select(0.0, p.shift * (abs(mean) * inv + p.floor), inv > 0.0);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  var a = 0.0;
  var b = 0.0;
  var c = 0u;
  var d = 0u;
  for (var i = t; i < p.count; i += 256u) {
    a += bitcast<f32>(part[i * 4u]);
    b += bitcast<f32>(part[i * 4u + 1u]);
    c += part[i * 4u + 2u];
    d += part[i * 4u + 3u];
  }
  spread_tree(t, vec2f(a, b), vec2u(c, d));
  if (t == 0u) {
    let inv_r = inv_std(ss_r[0], p.n);
    let inv_c = inv_std(ss_c[0], p.n);
    let alpha = 0.7 * (1.0 - 0.3 * (f32(small[0]) / f32(p.n)));
    scalars[3] = inv_r;
    scalars[4] = inv_c;
    scalars[5] = alpha;
    scalars[6] = bitcast<f32>(small[0]);
    scalars[8] = bitcast<f32>(near[0]);
    let dr = shift(scalars[0], inv_r);
    let dc = shift(scalars[1], inv_c);
    let k3 = alpha * dr * dr * dr + (1.0 - alpha) * dc * dc * dc;
    scalars[9] = select(0.0, pow(k3, 1.0 / 3.0), k3 > 0.0);
    let ra = p.alpha_rel * (f32(near[0]) / f32(p.n));
    scalars[10] = p.z_rel + select(0.0, ra, near[0] <= p.near_cap);
  }
}
