// select_hist: one digit pass of the layer-wide radix select: a histogram of key digit
// (key >> shift) & (bins - 1) over the keys whose higher digits equal the prefix found so far.
//
// Keys are the f32 score bit patterns read as u32: scores are >= 0 (and -0 was folded to +0), so u32 order is
// value order. The host runs 3 passes with digits of 11, 11 and 10 bits (shift 21, 10, 0), each followed by
// select_pick.wgsl: one full read of the keys fewer than four 8-bit passes. The first digit is the exponent and two
// mantissa bits, so a layer's scores (a few octaves) already spread over tens of bins.
// Bindings: 0 keys: array<u32> (read; one row-tile of scores), 1 state: array<u32> (read; [prefix, want, ...]
//   from select_pick), 2 hist: array<atomic<u32>> (read_write; 2048 bins per pass at offset pass*2048, zeroed by
//   the host), 3 params (uniform).
// Thread: 32 keys of a block of 8192, strided by 256 so that neighbours read neighbours. The workgroup keeps 2
//   copies of the histogram (even and odd threads), which halves the same-address atomic contention of the first
//   pass; 2 x 2048 bins x 4 bytes is 16 KiB, WebGPU's guaranteed workgroup storage. 8192 keys per workgroup keep
//   the zeroing and merging of 4096 local bins at half an operation per key.
// Dispatch: ceil(count / 8192) workgroups of 256, flattened over x and y.
// Numerics: exact integer counts (u32; a layer has fewer than 2^32 elements).

struct Params {
  count: u32, // keys in this tile
  shift: u32, // bit position of this pass's digit
  hi_mask: u32, // bits above the digit, which must equal the prefix
  pass_index: u32,
  bins: u32, // 2^(digit width): 2048 or 1024
}

@group(0) @binding(0) var<storage, read> keys: array<u32>;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read_write> hist: array<atomic<u32>>;
@group(0) @binding(3) var<uniform> p: Params;

const MAX_BINS: u32 = 2048u;
var<workgroup> local_hist: array<atomic<u32>, 4096>; // 2 copies of MAX_BINS

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let block = wid.x + wid.y * nwg.x;
  for (var b = t; b < 2u * MAX_BINS; b += 256u) { atomicStore(&local_hist[b], 0u); }
  workgroupBarrier();
  let copy = (t & 1u) * MAX_BINS;
  let digit_mask = p.bins - 1u;
  let prefix = state[0] & p.hi_mask;
  let start = block * 8192u;
  for (var i = 0u; i < 32u; i++) {
    let e = start + i * 256u + t;
    if (e < p.count) {
      let k = keys[e];
      if ((k & p.hi_mask) == prefix) {
        atomicAdd(&local_hist[copy + ((k >> p.shift) & digit_mask)], 1u);
      }
    }
  }
  workgroupBarrier();
  for (var b = t; b < p.bins; b += 256u) {
    let total = atomicLoad(&local_hist[b]) + atomicLoad(&local_hist[MAX_BINS + b]);
    if (total != 0u) { atomicAdd(&hist[p.pass_index * MAX_BINS + b], total); }
  }
}
