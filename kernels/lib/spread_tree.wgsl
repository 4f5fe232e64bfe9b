// spread_tree (library): a 256-invocation workgroup's totals of the centred statistics' four quantities (two f32
// sums of squares, two u32 counts). Appended to the kernels whose descriptor lists it in `libs` (WGSL has no
// imports); centred.wgsl sums its elements' terms with it, z_spread.wgsl the partials of centred's workgroups.
//
// Declares: `ss_r`, `ss_c: array<f32, 256>` and `small`, `near: array<u32, 256>` in workgroup memory (4 KiB).
// Call: `spread_tree(t, ss, counts)` from uniform control flow by all 256 invocations (it holds barriers): t is the
//   local invocation index, ss this invocation's two sums (r, c), counts its two counts (small, near). Afterwards
//   invocation 0 (only) reads the totals at index 0 of the four arrays. The first write comes before the first
//   barrier: the caller must not have read these arrays since its last barrier.
// Numerics: an 8-level tree, at each level slot t adding slot t + off (off = 128, 64, ..., 1): the f32 sums take
//   8 rounding steps; the counts are exact (they stay below 2^32).

var<workgroup> ss_r: array<f32, 256>;
var<workgroup> ss_c: array<f32, 256>;
var<workgroup> small: array<u32, 256>;
var<workgroup> near: array<u32, 256>;

fn spread_tree(t: u32, ss: vec2f, counts: vec2u) {
  ss_r[t] = ss.x;
  ss_c[t] = ss.y;
  small[t] = counts.x;
  near[t] = counts.y;
  for (var off = 128u; off > 0u; off >>= 1u) {
    workgroupBarrier();
    if (t < off) {
      ss_r[t] += ss_r[t + off];
      ss_c[t] += ss_c[t + off];
      small[t] += small[t + off];
      near[t] += near[t + off];
    }
  }
}
