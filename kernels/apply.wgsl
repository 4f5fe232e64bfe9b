// apply: the pruned weights in the request's dtype: the raw words with every pruned element zeroed.
//
// Bindings: 0 raw: array<u32> (read; one row-tile of the request's bytes), 1 mask: array<u32> (read; global
//   bit-packed mask), 2 out: array<u32> (write; same layout as raw), 3 params (uniform).
// Thread: one 32-bit word of raw (one f32, or two f16/bf16 halves, low half = lower index).
// Dispatch: ceil(words / 256) workgroups of 256, flattened over x and y.
// Numerics: exact (bit copies); a pruned element becomes +0.

struct Params {
  words: u32, // u32 words in this tile's raw data
  dtype: u32, // 0 f32, 1 f16, 2 bf16
  base: u32, // global row-major index of the tile's first element
  count: u32, // elements in this tile
}

@group(0) @binding(0) var<storage, read> raw: array<u32>;
@group(0) @binding(1) var<storage, read> mask: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

fn pruned(e: u32) -> bool {
  let g = p.base + e;
  return ((mask[g >> 5u] >> (g & 31u)) & 1u) != 0u;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + t;
  if (i >= p.words) { return; }
  var v = raw[i];
  if (p.dtype == 0u) {
    if (pruned(i)) { v = 0u; }
  } else {
    if (pruned(2u * i)) { v &= 0xffff0000u; }
    if (2u * i + 1u < p.count && pruned(2u * i + 1u)) { v &= 0x0000ffffu; }
  }
  out[i] = v;
}
