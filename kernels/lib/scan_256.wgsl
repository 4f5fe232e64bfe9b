// scan_256 (library): a workgroup-wide inclusive prefix sum of one u32 per invocation of a 256-invocation
// workgroup. Appended to the kernels whose descriptor lists it in `libs` (WGSL has no imports).
//
// Declares: `scan: array<u32, 256>` in workgroup memory (1 KiB). After a call, scan[i] holds the sum of the values
//   of invocations 0..i, for every i, readable by every invocation until the next call.
// Call: `scan_inclusive(t, v)` from uniform control flow by all 256 invocations (it holds barriers): t is the local
//   invocation index, v this invocation's value; returns scan[t]. The first write comes before the first barrier, so
//   the caller must have passed a barrier since any invocation last read a slot other than its own.
// Numerics: exact u32 sums (the callers' counts stay far below 2^32). Hillis-Steele: 8 steps of two barriers, and
//   a closing barrier so that any slot may be read afterwards.

var<workgroup> scan: array<u32, 256>;

fn scan_inclusive(t: u32, v: u32) -> u32 {
  scan[t] = v;
  for (var off = 1u; off < 256u; off <<= 1u) {
    workgroupBarrier();
    var add = 0u;
    if (t >= off) { add = scan[t - off]; }
    workgroupBarrier();
    scan[t] += add;
  }
  workgroupBarrier();
  return scan[t];
}
