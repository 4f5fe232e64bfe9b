// select_nm: N:M selection: in every group of M consecutive columns, the N lowest keys are pruned (ties by index).
//
// Bindings: 0 keys: array<u32> (read; one row-tile of scores as u32 bit patterns, see select_hist.wgsl),
//   1 mask: array<atomic<u32>> (read_write; global bit-packed mask, zeroed by the host), 2 scalars: array<f32> (read;
//   Z-Pruner's [9] k and [10] rel from z_spread.wgsl), 3 cbrt_act: array<f32> (read; per column, the cube root of
//   act_j, from the host), 4 flags: array<atomic<u32>> (read_write; [1] counts the groups checked unsafe, zeroed by
//   the host), 5 params (uniform). Bindings 2 and 3 are read only when `check` is 1 (Z-Pruner).
// Thread: one group. Since cols is a multiple of M, group g of the tile covers keys [g*M, g*M+M) in row-major
//   order, so neighbouring threads read neighbouring bytes. A key is pruned when fewer than N keys of its group
//   come before it in (key, index) order.
// Workgroup: 256 groups, at most 256 * 64 keys, so at most 513 mask words. Threads OR their bits into a copy of
//   those words in workgroup memory; then each word goes to the global mask with one atomicOr. Threads ORing
//   straight into the global mask made 8 same-word global atomics per word for 2:4 (59M for an 8192x28672 layer);
//   this makes one per word, and only a workgroup's two edge words are shared with a neighbour.
// Dispatch: ceil(groups / 256) workgroups of 256, flattened over x and y. The host sends M > 64 to select_row.
// Numerics: exact integer logic; O(M^2) comparisons per group (16 for 2:4, 64 for 4:8).
// Check (Z-Pruner): f32 z-scores may order a group otherwise than the CPU backend's f64 ones. An entry whose f32 score
//   is s (column j) has an exact score within [(cbrt(s) - k·c_j)³ (1 - rel), (cbrt(s) + k·c_j)³ (1 + rel)], c_j the
//   cube root of act_j (z_spread.wgsl; the host's zSafeThreshold uses the same bound). A group is unsafe when its
//   pruned entries' largest upper bound, less half the contract's 1e-5 band, passes its kept entries' smallest lower
//   bound: then the CPU may prune another entry, outside the band. Unsafe groups are counted, and the host answers
//   such a layer on the exact path. Trained layers (means near 0) have none but in groups of near-equal scores near 0.

struct Params {
  groups: u32, // groups in this tile
  m: u32,
  n: u32,
  base: u32, // global row-major index of the tile's first key
  cols: u32,
  check: u32, // 1: count the groups f32 z-scores may order otherwise (Z-Pruner)
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> keys: array<u32>;
@group(0) @binding(1) var<storage, read_write> mask: array<atomic<u32>>;
@group(0) @binding(2) var<storage, read> scalars: array<f32>;
@group(0) @binding(3) var<storage, read> cbrt_act: array<f32>;
@group(0) @binding(4) var<storage, read_write> flags: array<atomic<u32>>;
@group(0) @binding(5) var<uniform> p: Params;

const HALF_BAND: f32 = 5e-6; // half the contract's 1e-5 ambiguity band (API.md, Selection)

// The cube root of a score (a non-negative f32, possibly infinite).
fn cbrt(x: f32) -> f32 {
  if (x <= 0.0) { return 0.0; }
  if (x > 3.4028235e38) { return x; }
  return pow(x, 1.0 / 3.0);
}

const MAX_WORDS: u32 = 514u; // 256 groups * 64 keys / 32, plus one for a start off a word boundary, rounded up
var<workgroup> words: array<atomic<u32>, MAX_WORDS>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let wg = wid.x + wid.y * nwg.x;
  let g_first = wg * 256u;
  if (g_first >= p.groups) { return; } // uniform: the whole workgroup leaves
  for (var q = t; q < MAX_WORDS; q += 256u) { atomicStore(&words[q], 0u); }
  workgroupBarrier();
  let w0 = (p.base + g_first * p.m) >> 5u; // global index of the workgroup's first mask word
  let g = g_first + t;
  if (g < p.groups) {
    let start = g * p.m;
    var word = (p.base + start) >> 5u;
    var bits = 0u;
    var hi = 0.0; // largest upper bound of a pruned entry's cube root
    var lo = 3.4028235e38; // smallest lower bound of a kept entry's
    let k = select(0.0, scalars[9], p.check == 1u);
    for (var j = 0u; j < p.m; j++) {
      let kj = keys[start + j];
      var rank = 0u;
      for (var l = 0u; l < p.m && rank < p.n; l++) {
        let kl = keys[start + l];
        if (kl < kj || (kl == kj && l < j)) { rank++; }
      }
      let gi = p.base + start + j;
      if ((gi >> 5u) != word) {
        if (bits != 0u) { atomicOr(&words[word - w0], bits); }
        word = gi >> 5u;
        bits = 0u;
      }
      if (rank < p.n) { bits |= 1u << (gi & 31u); }
      if (p.check == 1u) {
        let c = cbrt(bitcast<f32>(kj));
        let d = k * cbrt_act[gi % p.cols];
        if (rank < p.n) { hi = max(hi, c + d); } else { lo = min(lo, max(c - d, 0.0)); }
      }
    }
    if (p.check == 1u) {
      let rel = scalars[10];
      if (hi * hi * hi * (1.0 + rel) * (1.0 - HALF_BAND) > lo * lo * lo * (1.0 - rel)) { atomicAdd(&flags[1], 1u); }
    }
    if (bits != 0u) { atomicOr(&words[word - w0], bits); }
  }
  workgroupBarrier();
  let g_end = min(g_first + 256u, p.groups);
  let w_last = (p.base + g_end * p.m - 1u) >> 5u;
  for (var q = t; q <= w_last - w0; q += 256u) {
    let v = atomicLoad(&words[q]);
    if (v != 0u) { atomicOr(&mask[w0 + q], v); }
  }
}
