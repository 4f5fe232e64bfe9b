// select_nm: N:M selection: in every group of M consecutive columns, the N lowest keys are pruned (ties by index).
//
// Bindings: 0 keys: array<u32> (read; one row-tile of scores as u32 bit patterns, see select_hist.wgsl),
//   1 mask: array<atomic<u32>> (read_write; global bit-packed mask, zeroed by the host), 2 params (uniform).
// Thread: one group. Since cols is a multiple of M, group g of the tile covers keys [g*M, g*M+M) in row-major
//   order. A key is pruned when fewer than N keys of its group come before it in (key, index) order; bits are
//   gathered per 32-bit mask word and ORed into the global mask.
// Dispatch: ceil(groups / 256) workgroups of 256, flattened over x and y.
// Numerics: exact integer logic; O(M^2) comparisons per group (16 for 2:4, 64 for 4:8).

struct Params {
  groups: u32, // groups in this tile
  m: u32,
  n: u32,
  base: u32, // global row-major index of the tile's first key
}

@group(0) @binding(0) var<storage, read> keys: array<u32>;
@group(0) @binding(1) var<storage, read_write> mask: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let g = (wid.x + wid.y * nwg.x) * 256u + t;
  if (g >= p.groups) { return; }
  let start = g * p.m;
  var word = (p.base + start) >> 5u;
  var bits = 0u;
  for (var j = 0u; j < p.m; j++) {
    let kj = keys[start + j];
    var rank = 0u;
    for (var l = 0u; l < p.m && rank < p.n; l++) {
      let kl = keys[start + l];
      if (kl < kj || (kl == kj && l < j)) { rank++; }
    }
    let gi = p.base + start + j;
    if ((gi >> 5u) != word) {
      if (bits != 0u) { atomicOr(&mask[word], bits); }
      word = gi >> 5u;
      bits = 0u;
    }
    if (rank < p.n) { bits |= 1u << (gi & 31u); }
  }
  if (bits != 0u) { atomicOr(&mask[word], bits); }
}
