// tie_count: per block of 8192 keys, how many equal the threshold key T (first step of the exact tie-break).
//
// Bindings: 0 keys: array<vec4<u32>> (read; one row-tile of scores, 16 bytes at a time), 1 state: array<u32>
//   (read; [T, want, matching] from select_pick), 2 ties: array<u32> (write; one count per global block),
//   3 params (uniform).
// Thread: the 32 contiguous keys [32t, 32t+32) of the block, as in mask_layer.wgsl (vec4 reads past `count` stay
//   inside the 256-byte-rounded buffer and are ignored). Dispatch: ceil(count / 8192) workgroups of 256, flattened.
// Blocks never straddle tiles: a tile's blocks are numbered from block0, so global block order is row-major
//   index order.
// When every key equal to T is pruned (want == matching, the usual case for scores computed in f32) the tie ranks
//   are not needed and the kernel returns at once, sparing a full read of the keys; mask_layer then ignores `ties`.
// Numerics: exact integer counts.

struct Params {
  count: u32, // keys in this tile
  block0: u32, // global index of the tile's first block
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> keys: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read_write> ties: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> local_count: atomic<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  if (state[1] == state[2]) { return; } // uniform: every thread reads the same word of a read-only buffer
  let block = wid.x + wid.y * nwg.x;
  // A grid spread over x and y may hold a few padding workgroups past the last block: they own no `ties` slot.
  if (block >= p.count / 8192u + u32(p.count % 8192u != 0u)) { return; } // uniform: per workgroup
  if (t == 0u) { atomicStore(&local_count, 0u); }
  workgroupBarrier();
  let thr = state[0];
  let start = block * 8192u + t * 32u;
  var c = 0u;
  if (start < p.count) {
    for (var q = 0u; q < 8u; q++) {
      let k4 = keys[start / 4u + q];
      for (var i = 0u; i < 4u; i++) {
        if (start + q * 4u + i < p.count && k4[i] == thr) { c++; }
      }
    }
  }
  if (c != 0u) { atomicAdd(&local_count, c); }
  workgroupBarrier();
  if (t == 0u) { ties[p.block0 + block] = atomicLoad(&local_count); }
}
