// mask_layer: writes the layer-wide mask bits: every key < T is pruned, and of the keys == T the `want` with the
// lowest row-major indices (the contract's tie-break).
//
// Bindings: 0 keys: array<vec4<u32>> (read; one row-tile of scores as u32 bit patterns, read 16 bytes at a time),
//   1 state: array<u32> (read; [T, want, matching]), 2 ties: array<u32> (read; per global block, the number of keys
//   == T in earlier blocks, from tie_scan; left unwritten, and unread here, when want == matching: every tie is
//   then pruned), 3 mask: array<atomic<u32>> (read_write; bit i = global row-major index i, LSB first; zeroed by
//   the host), 4 params (uniform).
// Thread: owns one mask word of the block: keys [32t, 32t+32) (128 contiguous bytes, no shared atomics). Its ties
//   rank after the block's offset plus the ties of words 0..t-1 (a workgroup scan of popcounts), so it keeps exactly
//   the lowest-index ties wanted. The word is ORed into the global mask, split over two words when the tile does
//   not start on a 32-bit boundary.
// Dispatch: ceil(count / 8192) workgroups of 256, flattened over x and y (the same blocks as tie_count).
// Numerics: exact integer logic. Tile buffers are allocated in multiples of 256 bytes, so the vec4 reads past
//   `count` stay inside the binding; those keys are ignored.
// Uses: lib/scan_256.wgsl (`scan_inclusive`) and lib/lowest_set_bits.wgsl, appended by the descriptor.

struct Params {
  count: u32, // keys in this tile
  base: u32, // global row-major index of the tile's first key
  block0: u32, // global index of the tile's first block
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> keys: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read> ties: array<u32>;
@group(0) @binding(3) var<storage, read_write> mask: array<atomic<u32>>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let block = wid.x + wid.y * nwg.x;
  // A grid spread over x and y may hold a few padding workgroups past the last block: they own no `ties` slot (their
  // keys are all past `count`, so they would write nothing, but they would read `ties` out of range).
  if (block >= p.count / 8192u + u32(p.count % 8192u != 0u)) { return; } // uniform: per workgroup
  let thr = state[0];
  let want = state[1];
  let start = block * 8192u + t * 32u; // first key of this thread's word, tile-local
  var below = 0u;
  var tw = 0u;
  if (start < p.count) {
    for (var q = 0u; q < 8u; q++) {
      let k4 = keys[start / 4u + q];
      for (var c = 0u; c < 4u; c++) {
        let i = q * 4u + c;
        if (start + i < p.count) {
          below |= select(0u, 1u << i, k4[c] < thr);
          tw |= select(0u, 1u << i, k4[c] == thr);
        }
      }
    }
  }
  let tc = countOneBits(tw);
  let incl = scan_inclusive(t, tc);
  var take = tc;
  if (want != state[2]) {
    let rank0 = ties[p.block0 + block] + incl - tc; // ties before this word
    take = select(0u, min(want - rank0, tc), want > rank0);
  }
  let bits = below | lowest_set_bits(tw, take);
  if (bits == 0u) { return; }
  let g = p.base + start;
  let s = g & 31u;
  atomicOr(&mask[g >> 5u], bits << s);
  if (s != 0u) {
    let hi = bits >> (32u - s);
    if (hi != 0u) { atomicOr(&mask[(g >> 5u) + 1u], hi); }
  }
}
