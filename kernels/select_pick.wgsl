// select_pick: after a select_hist pass, finds the digit holding the want-th lowest key and narrows the state.
//
// State: [prefix, want]: the digits of the threshold key T fixed so far, and the rank (1-based) of the wanted key
//   among the keys that match the prefix. The host sets [0, k]. After the 4th pass, prefix = T (the k-th lowest
//   key) and want = how many keys equal to T must be pruned (count(< T) = k - want).
// Bindings: 0 hist: array<u32> (read), 1 state: array<u32> (read_write), 2 params (uniform).
// Thread: one digit. Dispatch: exactly one workgroup of 256.
// Numerics: exact; an inclusive Hillis-Steele scan of the 256 bin counts.

struct Params {
  pass_index: u32,
  shift: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> hist: array<u32>;
@group(0) @binding(1) var<storage, read_write> state: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> scan: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  let want = state[1];
  let h = hist[p.pass_index * 256u + t];
  scan[t] = h;
  for (var off = 1u; off < 256u; off <<= 1u) {
    workgroupBarrier();
    var add = 0u;
    if (t >= off) { add = scan[t - off]; }
    workgroupBarrier();
    scan[t] += add;
  }
  workgroupBarrier();
  let incl = scan[t];
  let excl = incl - h;
  // Exactly one digit satisfies this when 1 <= want <= matching keys; every thread read `want` above, before
  // the barriers, so the single writer cannot race a reader.
  if (excl < want && want <= incl) {
    state[0] = state[0] | (t << p.shift);
    state[1] = want - excl;
  }
}
