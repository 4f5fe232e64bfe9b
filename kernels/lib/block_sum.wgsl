// block_sum (library): an invocation's running f32 sums of up to four quantities, added in blocks of 8 terms and groups
// of 8 blocks. Appended to the kernels whose descriptor lists it in `libs` (WGSL has no imports).
//
// Declares: `struct BlockSum` (function-scope state; start it as `BlockSum()`, all zero).
// Call: `block_add(&s, v)` for each term v (up to four sums at once, one per component), then `block_total(&s)`.
// Numerics: each block's eight terms in order, each block's sum added to its group's, each group of 8 blocks added to
//   the total, then (total + group) + block. A sum of k positive terms is off by at most blockChain(k) roundings of
//   2^-24 relative (gpu/f32_safety.ts; an add into a zero accumulator is exact): k - 1 up to 8 terms, 6 + ceil(k/8) up
//   to 64 (7 in the first block, one per later block, one for a last partial block), 14 + ceil(k/64) beyond (14 in
//   the first group, one per later group, the last two adds), against k - 1 for one running sum. Up to 64 terms the
//   order, and so every bit, is that of blocks of 8 alone.
//   row_stats.wgsl, col_stats.wgsl, col_reduce.wgsl and z_means.wgsl sum so; gpu/f32_safety.ts's chain lengths
//   (sumChain) and z_means.wgsl's bound on the small-weight threshold count on it.

struct BlockSum {
  total: vec4f,
  group: vec4f,
  block: vec4f,
  terms: u32, // in the block
  blocks: u32, // in the group
}

fn block_add(s: ptr<function, BlockSum>, v: vec4f) {
  (*s).block += v;
  (*s).terms++;
  if ((*s).terms == 8u) {
    (*s).group += (*s).block;
    (*s).block = vec4f(0.0);
    (*s).terms = 0u;
    (*s).blocks++;
    if ((*s).blocks == 8u) {
      (*s).total += (*s).group;
      (*s).group = vec4f(0.0);
      (*s).blocks = 0u;
    }
  }
}

fn block_total(s: ptr<function, BlockSum>) -> vec4f {
  return ((*s).total + (*s).group) + (*s).block;
}
