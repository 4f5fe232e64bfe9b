// select_pick: after a select_hist pass, finds the digit holding the want-th lowest key and narrows the state.
//
// State: [prefix, want, matching, 0]: the digits of the threshold key T fixed so far, the rank (1-based) of the
//   wanted key among the keys that match the prefix, and how many keys match it. The host sets [0, k, 0, 0]. After
//   the last pass, prefix = T (the k-th lowest key), want = how many keys equal to T must be pruned
//   (count(< T) = k - want) and matching = how many keys equal T; when want == matching every tie is pruned and
//   tie_count, tie_scan and mask_layer skip the tie ranks.
// Bindings: 0 hist: array<u32> (read), 1 state: array<u32> (read_write), 2 params (uniform).
// Thread: a run of bins / 256 consecutive digits (8 or 4). Dispatch: exactly one workgroup of 256.
// Numerics: exact; an inclusive Hillis-Steele scan of the 256 run totals, then a walk inside the one run that holds
//   the wanted rank.
// Uses: lib/scan_256.wgsl (`scan_inclusive`), appended by the descriptor.

struct Params {
  pass_index: u32,
  shift: u32,
  bins: u32,
  _pad0: u32,
}

@group(0) @binding(0) var<storage, read> hist: array<u32>;
@group(0) @binding(1) var<storage, read_write> state: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

const MAX_BINS: u32 = 2048u;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  let want = state[1];
  let per = p.bins / 256u;
  let d0 = t * per;
  let base = p.pass_index * MAX_BINS;
  var run = 0u;
  for (var d = 0u; d < per; d++) { run += hist[base + d0 + d]; }
  let incl = scan_inclusive(t, run);
  // workgroupBarrier orders only workgroup memory; storageBarrier also completes every thread's read of `state`
  // above before the single writer below stores to it (a compiler may otherwise sink that load past the scan).
  storageBarrier();
  var excl = incl - run;
  // Exactly one run holds the wanted rank when 1 <= want <= matching keys.
  if (excl < want && want <= incl) {
    for (var d = 0u; d < per; d++) {
      let h = hist[base + d0 + d];
      if (want <= excl + h) {
        state[0] = state[0] | ((d0 + d) << p.shift);
        state[1] = want - excl;
        state[2] = h;
        break;
      }
      excl += h;
    }
  }
}
