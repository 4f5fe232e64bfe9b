// select_nm: N:M selection: in every group of M consecutive columns, the N lowest keys are pruned (ties by index).
//
// Bindings: 0 keys: array<u32> (read; one row-tile of scores as u32 bit patterns, see select_hist.wgsl),
//   1 scalars: array<f32> (read; Z-Pruner's [9] k and [10] rel from z_spread.wgsl), 2 cbrt_act: array<f32> (read;
//   per column, the cube root of act_j, from the host), 3 raw: array<u32> (read; the tile's weights as uploaded, to
//   tell zero weights), 4 mask: array<atomic<u32>> (read_write; global bit-packed mask, zeroed by the host),
//   5 flags: array<atomic<u32>> (read_write; [1] counts the groups checked unsafe, zeroed by the host), 6 params
//   (uniform). Bindings 1, 2 and 3 are read only when `check` is 1 (Z-Pruner).
// Thread: one group. Since cols is a multiple of M, group g of the tile covers keys [g*M, g*M+M) in row-major
//   order, so neighbouring threads read neighbouring bytes. A key is pruned when fewer than N keys of its group
//   come before it in (key, index) order.
// Workgroup: 256 groups, at most 256 * 64 keys, so at most 513 mask words. Threads OR their bits into a copy of
//   those words in workgroup memory; then each word goes to the global mask with one atomicOr. Threads ORing
//   straight into the global mask made 8 same-word global atomics per word for 2:4 (59M for an 8192x28672 layer);
//   this makes one per word, and only a workgroup's two edge words are shared with a neighbour.
// Dispatch: ceil(groups / 256) workgroups of 256, flattened over x and y. The host sends M > 64 to select_row.
// Numerics: exact integer logic; O(M^2) comparisons per group (16 for 2:4, 64 for 4:8).
// Check (Z-Pruner): f32 z-scores may order a group otherwise than the CPU backend's f64 ones. By the engine's error
//   model (gpu/f32_safety.ts: fitted, not a worst case), an entry whose f32 score is s (column j) has an exact score
//   within [s (1 - x)³ (1 - rel), s (1 + x)³ (1 + rel)], x = k·c_j / cbrt(s), c_j the cube root of act_j (the same
//   model as the host's zSafeThreshold; for s = 0 the upper bound is (k·c_j)³ (1 + rel)). A group is unsafe when a
//   pruned entry's upper bound, less half the contract's 1e-5 band, passes a kept entry's lower bound: the CPU might
//   prune another entry, outside the band. Zero weights are exempt against each other: their z-scores are the same
//   on each backend (|mean| / std on both axes), so their order is act_j's and the index's on both. Unsafe groups are
//   counted, and the host answers such a layer on the exact path. cbrt is pow's, good to a few 1e-6 relative: enough
//   for x, which only widens bounds, never for s itself. Trained layers (means near 0) rarely have an unsafe group.

struct Params {
  groups: u32, // groups in this tile
  m: u32,
  n: u32,
  base: u32, // global row-major index of the tile's first key
  cols: u32,
  check: u32, // 1: count the groups f32 z-scores may order otherwise (Z-Pruner)
  dtype: u32, // of `raw`: 0 f32, 1 f16, 2 bf16
  _pad0: u32,
}

@group(0) @binding(0) var<storage, read> keys: array<u32>;
@group(0) @binding(1) var<storage, read> scalars: array<f32>;
@group(0) @binding(2) var<storage, read> cbrt_act: array<f32>;
@group(0) @binding(3) var<storage, read> raw: array<u32>;
@group(0) @binding(4) var<storage, read_write> mask: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> flags: array<atomic<u32>>;
@group(0) @binding(6) var<uniform> p: Params;

const HALF_BAND: f32 = 5e-6; // half the contract's 1e-5 ambiguity band (API.md, Selection)

// The cube root of a positive finite f32, to a few 1e-6 relative.
fn cbrt(x: f32) -> f32 {
  return pow(x, 1.0 / 3.0);
}

// The exact score's upper and lower bounds for an f32 score s >= 0 whose z-scores may shift by d = k·c_j in cube-root
// terms, before the relative error rel. An infinite s or d gives infinite bounds (the group is then unsafe).
fn upper(s: f32, d: f32) -> f32 {
  if (s == 0.0) { return d * d * d; }
  let y = 1.0 + d / cbrt(s);
  return s * (y * y * y);
}
fn lower(s: f32, d: f32) -> f32 {
  if (s == 0.0) { return 0.0; }
  let y = max(1.0 - d / cbrt(s), 0.0);
  return s * (y * y * y);
}

// Whether element i of the tile is a zero weight (either sign) as uploaded.
fn zero_weight(i: u32) -> bool {
  if (p.dtype == 0u) { return (raw[i] & 0x7fffffffu) == 0u; }
  return ((raw[i >> 1u] >> ((i & 1u) * 16u)) & 0x7fffu) == 0u;
}

// Whether a pruned entry with upper bound `hi` may be the CPU's kept one against a kept entry with lower bound `lo`.
fn conflict(hi: f32, lo: f32, rel: f32) -> bool {
  return hi * (1.0 + rel) * (1.0 - HALF_BAND) > lo * (1.0 - rel);
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
    // Largest upper bound of a pruned entry, and smallest lower bound of a kept one, for nonzero and zero weights.
    var hi = vec2f(0.0, 0.0);
    var lo = vec2f(3.4028235e38, 3.4028235e38);
    var k = 0.0;
    if (p.check == 1u) { k = scalars[9]; } // other methods bind a stand-in buffer here
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
        let s = bitcast<f32>(kj);
        let d = k * cbrt_act[gi % p.cols];
        let z = u32(zero_weight(start + j));
        if (rank < p.n) { hi[z] = max(hi[z], upper(s, d)); } else { lo[z] = min(lo[z], lower(s, d)); }
      }
    }
    if (p.check == 1u) {
      let rel = scalars[10];
      // Every pair but two zero weights: nonzero against nonzero, nonzero pruned against zero kept, and the reverse.
      if (conflict(hi[0], lo[0], rel) || conflict(hi[0], lo[1], rel) || conflict(hi[1], lo[0], rel)) {
        atomicAdd(&flags[1], 1u);
      }
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
