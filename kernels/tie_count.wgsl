// tie_count: per block of 8192 keys, how many equal the threshold key T (first step of the exact tie-break).
//
// Bindings: 0 keys: array<u32> (read; one row-tile of scores), 1 state: array<u32> (read; [T, want]),
//   2 ties: array<u32> (write; one count per global block), 3 params (uniform).
// Thread: 32 keys of the block, strided by 256. Dispatch: ceil(count / 8192) workgroups of 256, flattened.
// Blocks never straddle tiles: a tile's blocks are numbered from block0, so global block order is row-major
//   index order.
// Numerics: exact integer counts.

struct Params {
  count: u32, // keys in this tile
  block0: u32, // global index of the tile's first block
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> keys: array<u32>;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read_write> ties: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> local_count: atomic<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let block = wid.x + wid.y * nwg.x;
  if (t == 0u) { atomicStore(&local_count, 0u); }
  workgroupBarrier();
  let thr = state[0];
  var c = 0u;
  for (var i = 0u; i < 32u; i++) {
    let e = block * 8192u + i * 256u + t;
    if (e < p.count && keys[e] == thr) { c++; }
  }
  if (c != 0u) { atomicAdd(&local_count, c); }
  workgroupBarrier();
  if (t == 0u) { ties[p.block0 + block] = atomicLoad(&local_count); }
}
