// select_row: per-row selection: in every row, the k lowest keys are pruned (ties by column index).
//
// Bindings: 0 keys: array<u32> (read; one row-tile of scores as u32 bit patterns, see select_hist.wgsl),
//   1 mask: array<atomic<u32>> (read_write; global bit-packed mask, zeroed by the host), 2 params (uniform).
// Workgroup: one row. It runs a radix select over the row to find the row's k-th lowest key T and how many keys
//   == T to prune: 3 digit passes of 11, 11 and 10 bits as in select_hist.wgsl (one read of the row fewer than
//   four 8-bit passes), each a histogram of 2048 bins in workgroup memory, a Hillis-Steele scan of 256 runs of 8
//   bins, and one thread narrowing [prefix, want] inside its run. One histogram copy (8 KiB) rather than several:
//   a row's keys are fewer than a layer's, and the first digit already spreads them over tens of bins.
//   Then it walks the row in segments of 8192: each thread owns one mask word (32 contiguous keys of the segment,
//   no shared atomics) and keeps the ties whose rank in the row (ties in earlier segments + earlier words of this
//   segment, a workgroup scan of popcounts) is below `want`; words are ORed into the global mask, split when the
//   row does not start on a 32-bit boundary.
// Dispatch: one workgroup of 256 per row of the tile, flattened over x and y. The host skips it when k = 0. Rows
//   of up to ROW_SELECT_MAX_COLS (layer_plan.ts) columns: each thread loops about 0.0206·cols times in all, and
//   lavapipe silently ends an invocation's loops after 65,535 iterations.
// Numerics: exact integer logic.
// Uses: lib/scan_256.wgsl (`scan`, `scan_inclusive`) and lib/lowest_set_bits.wgsl, appended by the descriptor.

struct Params {
  rows: u32, // rows in this tile
  cols: u32,
  base: u32, // global row-major index of the tile's first key
  k: u32, // keys to prune per row, 1 <= k <= cols
}

@group(0) @binding(0) var<storage, read> keys: array<u32>;
@group(0) @binding(1) var<storage, read_write> mask: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> p: Params;

const BINS: u32 = 2048u; // the widest digit: 11 bits
var<workgroup> hist: array<atomic<u32>, BINS>;
var<workgroup> sel: array<u32, 2>; // [prefix, want]
var<workgroup> ties_before: u32;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= p.rows) { return; } // uniform: the whole workgroup leaves
  let row = r * p.cols;
  if (t == 0u) {
    sel[0] = 0u;
    sel[1] = p.k;
    ties_before = 0u;
  }
  for (var step = 0u; step < 3u; step++) {
    let shift = select(select(0u, 10u, step == 1u), 21u, step == 0u);
    let width = select(11u, 10u, step == 2u);
    let bins = 1u << width;
    var hi_mask = 0u; // the bits above this digit, fixed by earlier steps
    if (step > 0u) { hi_mask = ~((1u << (shift + width)) - 1u); }
    for (var b = t; b < BINS; b += 256u) { atomicStore(&hist[b], 0u); }
    workgroupBarrier();
    let prefix = sel[0] & hi_mask;
    for (var j = t; j < p.cols; j += 256u) {
      let k = keys[row + j];
      if ((k & hi_mask) == prefix) { atomicAdd(&hist[(k >> shift) & (bins - 1u)], 1u); }
    }
    workgroupBarrier();
    let per = bins / 256u; // this thread's run of digits [t * per, t * per + per)
    var h = 0u;
    for (var d = 0u; d < per; d++) { h += atomicLoad(&hist[t * per + d]); }
    let want = sel[1];
    let incl = scan_inclusive(t, h);
    var excl = incl - h;
    if (excl < want && want <= incl) {
      for (var d = 0u; d < per; d++) {
        let hd = atomicLoad(&hist[t * per + d]);
        if (want <= excl + hd) {
          sel[0] = sel[0] | ((t * per + d) << shift);
          sel[1] = want - excl;
          break;
        }
        excl += hd;
      }
    }
    workgroupBarrier();
  }
  let thr = sel[0];
  let want = sel[1];
  let segments = (p.cols + 8191u) / 8192u;
  for (var sg = 0u; sg < segments; sg++) {
    let start = sg * 8192u + t * 32u; // first key of this thread's word, row-relative
    var below = 0u;
    var tw = 0u;
    for (var i = 0u; i < 32u && start + i < p.cols; i++) {
      let k = keys[row + start + i];
      below |= select(0u, 1u << i, k < thr);
      tw |= select(0u, 1u << i, k == thr);
    }
    let tc = countOneBits(tw);
    let incl = scan_inclusive(t, tc);
    let rank0 = ties_before + incl - tc;
    var take = 0u;
    if (want > rank0) { take = min(want - rank0, tc); }
    let bits = below | lowest_set_bits(tw, take);
    if (bits != 0u) {
      let g = p.base + row + start;
      let s = g & 31u;
      atomicOr(&mask[g >> 5u], bits << s);
      if (s != 0u) {
        let hi = bits >> (32u - s);
        if (hi != 0u) { atomicOr(&mask[(g >> 5u) + 1u], hi); }
      }
    }
    workgroupBarrier();
    if (t == 0u) { ties_before += scan[255]; }
    workgroupBarrier();
  }
}
