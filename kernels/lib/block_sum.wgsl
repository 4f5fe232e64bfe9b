// block_sum (library): an invocation's running f32 sums of up to four quantities, added in blocks of 8 terms. Appended
// to the kernels whose descriptor lists it in `libs` (WGSL has no imports).
//
// Declares: `struct BlockSum` (function-scope state; start it as `BlockSum()`, all zero).
// Call: `block_add(&s, v)` for each term v (up to four sums at once, one per component), then `block_total(&s)`.
// Numerics: a sum of k positive terms is off by at most 8 + ceil(k/8) roundings of 2^-24 relative (against k - 1 for
//   one running sum): each block's eight terms in order, each block's sum added to the total. row_stats.wgsl,
//   col_stats.wgsl, col_reduce.wgsl and z_means.wgsl sum so; z_means.wgsl's bound on the small-weight threshold and
//   gpu/f32_safety.ts's chain lengths (sumChain) count on it.

struct BlockSum {
  total: vec4f,
  block: vec4f,
  terms: u32,
}

fn block_add(s: ptr<function, BlockSum>, v: vec4f) {
  (*s).block += v;
  (*s).terms++;
  if ((*s).terms == 8u) {
    (*s).total += (*s).block;
    (*s).block = vec4f(0.0);
    (*s).terms = 0u;
  }
}

fn block_total(s: ptr<function, BlockSum>) -> vec4f {
  return (*s).total + (*s).block;
}
