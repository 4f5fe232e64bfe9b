// select_hist: one digit pass of the layer-wide radix select: a 256-bin histogram of key digit
// (key >> shift) & 255 over the keys whose higher digits equal the prefix found so far.
//
// Keys are the f32 score bit patterns read as u32: scores are >= 0 (and -0 was folded to +0), so u32 order is
// value order. The host runs 4 passes (shift 24, 16, 8, 0), each followed by select_pick.wgsl.
// Bindings: 0 keys: array<u32> (read; one row-tile of scores), 1 state: array<u32> (read; [prefix, want] from
//   select_pick), 2 hist: array<atomic<u32>> (read_write; 256 bins per pass at offset pass*256, zeroed by the
//   host), 3 params (uniform).
// Thread: 16 keys of a block of 4096, strided by 256 so that neighbours read neighbours. The workgroup keeps 8
//   copies of the histogram (thread t adds to copy t % 8): scores of a layer share few high digits, and 8 copies
//   cut the same-address atomic contention 8-fold.
// Dispatch: ceil(count / 4096) workgroups of 256, flattened over x and y.
// Numerics: exact integer counts (u32; a layer has fewer than 2^32 elements).

struct Params {
  count: u32, // keys in this tile
  shift: u32, // bit position of this pass's digit
  hi_mask: u32, // bits above the digit, which must equal the prefix
  pass_index: u32,
}

@group(0) @binding(0) var<storage, read> keys: array<u32>;
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read_write> hist: array<atomic<u32>>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> local_hist: array<atomic<u32>, 2048>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let block = wid.x + wid.y * nwg.x;
  for (var c = 0u; c < 8u; c++) { atomicStore(&local_hist[c * 256u + t], 0u); }
  workgroupBarrier();
  let copy = (t & 7u) * 256u;
  let prefix = state[0] & p.hi_mask;
  let start = block * 4096u;
  for (var i = 0u; i < 16u; i++) {
    let e = start + i * 256u + t;
    if (e < p.count) {
      let k = keys[e];
      if ((k & p.hi_mask) == prefix) {
        atomicAdd(&local_hist[copy + ((k >> p.shift) & 255u)], 1u);
      }
    }
  }
  workgroupBarrier();
  var total = 0u;
  for (var c = 0u; c < 8u; c++) { total += atomicLoad(&local_hist[c * 256u + t]); }
  if (total != 0u) { atomicAdd(&hist[p.pass_index * 256u + t], total); }
}
