// normalised (library): W / ‖line‖ for Z-Pruner, shared by score, centred and z_means so that the means, the spreads
// and the scores see the same normalised weights. Appended to the kernels whose descriptor lists it in `libs` (WGSL
// has no imports).
//
// Call: `normalised(v, sq)`: v / sqrt(sq) as v * inverseSqrt(sq), with sq a line's f32 sum of squares; 0 for a zero
//   norm (never NaN), and for a sum below 2^-126, whose inverseSqrt a GPU may flush to infinity (the host sends a
//   layer with such a line of nonzero weights to the exact path: sumsOutOfRange in gpu/f32_safety.ts).
// Numerics: WGSL allows inverseSqrt 2 ULP, then one correctly rounded product; v / sqrt(sq) would add a division of
//   2.5 ULP to sqrt's 1.0 / inverseSqrt. The z-scores' error model (gpu/f32_safety.ts, Z_REL) is measured with this
//   form.

fn normalised(v: f32, sq: f32) -> f32 {
  return select(0.0, v * inverseSqrt(sq), sq >= 1.17549435e-38); // 2^-126
}
