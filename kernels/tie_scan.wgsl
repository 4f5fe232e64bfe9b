// tie_scan: exclusive prefix sum, in place, of the per-block tie counts of tie_count.wgsl, so that each block
// knows how many keys equal to T come before it in row-major order.
//
// Bindings: 0 state: array<u32> (read; [T, want, matching]), 1 ties: array<u32> (read_write), 2 params (uniform).
// Returns at once when every tie is pruned (want == matching): tie_count then wrote nothing to `ties`.
// Thread: a contiguous run of ceil(blocks / 256) counts. Dispatch: exactly one workgroup of 256.
// Numerics: exact (u32).
// Uses: lib/scan_256.wgsl (`scan_inclusive`), appended by the descriptor.

struct Params {
  blocks: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read> state: array<u32>;
@group(0) @binding(1) var<storage, read_write> ties: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  if (state[1] == state[2]) { return; }
  let per = (p.blocks + 255u) / 256u;
  let b0 = min(t * per, p.blocks);
  let b1 = min(b0 + per, p.blocks);
  var sum = 0u;
  for (var b = b0; b < b1; b++) { sum += ties[b]; }
  var run = scan_inclusive(t, sum) - sum; // exclusive prefix of this thread's run
  for (var b = b0; b < b1; b++) {
    let c = ties[b];
    ties[b] = run;
    run += c;
  }
}
