// lowest_set_bits (library): the tie-break inside one mask word. Appended to the kernels whose descriptor lists it
// in `libs` (WGSL has no imports).
//
// Call: `lowest_set_bits(x, n)`: the lowest `n` set bits of `x` (all of them when x has n or fewer), so that of the
//   keys equal to the threshold in one word, those of lowest index are taken.
// Numerics: exact bit logic; at most min(n, popcount(x)) iterations.

fn lowest_set_bits(x: u32, n: u32) -> u32 {
  var rest = x;
  var out = 0u;
  for (var q = 0u; q < n && rest != 0u; q++) {
    let lsb = rest & (~rest + 1u);
    out |= lsb;
    rest ^= lsb;
  }
  return out;
}
