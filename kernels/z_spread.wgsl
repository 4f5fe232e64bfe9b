// z_spread: Z-Pruner's spread scalars from the centred.wgsl partials, on the GPU so that scoring needs no host round
// trip: 1/std(Wr) and 1/std(Wc) (unbiased, n - 1; 0 when the std is 0 or n = 1), the small-weight count and
// alpha = 0.7 · (1 − 0.3 · small / n).
//
// Bindings: 0 part: array<u32> (read; per centred workgroup: f32 bits of Σ(Wr − mean)² and of Σ(Wc − mean)²,
//   small count), 1 scalars: array<f32> (read_write; writes [3] inv_std_r, [4] inv_std_c, [5] alpha, [6] small
//   as u32 bits), 2 params (uniform).
// Thread: a strided slice of the partials. Dispatch: exactly one workgroup of 256.
// Numerics: f32 for the sums of squares (at most ceil(partials/256) + 8 rounding steps, 64 for 14,336 partials),
//   exact u32 for the count. The host recomputes alpha in f64 from the count for the response.

struct Params {
  count: u32, // partials
  n: u32, // rows * cols
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> part: array<u32>;
@group(0) @binding(1) var<storage, read_write> scalars: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> ss_r: array<f32, 256>;
var<workgroup> ss_c: array<f32, 256>;
var<workgroup> small: array<u32, 256>;

// 1 / sqrt(ss / (n - 1)), or 0 when that std is 0 or n = 1.
fn inv_std(ss: f32, n: u32) -> f32 {
  if (n < 2u || ss <= 0.0) { return 0.0; }
  return 1.0 / sqrt(ss / f32(n - 1u));
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  var a = 0.0;
  var b = 0.0;
  var c = 0u;
  for (var i = t; i < p.count; i += 256u) {
    a += bitcast<f32>(part[i * 3u]);
    b += bitcast<f32>(part[i * 3u + 1u]);
    c += part[i * 3u + 2u];
  }
  ss_r[t] = a;
  ss_c[t] = b;
  small[t] = c;
  for (var off = 128u; off > 0u; off >>= 1u) {
    workgroupBarrier();
    if (t < off) {
      ss_r[t] += ss_r[t + off];
      ss_c[t] += ss_c[t + off];
      small[t] += small[t + off];
    }
  }
  if (t == 0u) {
    scalars[3] = inv_std(ss_r[0], p.n);
    scalars[4] = inv_std(ss_c[0], p.n);
    scalars[5] = 0.7 * (1.0 - 0.3 * (f32(small[0]) / f32(p.n)));
    scalars[6] = bitcast<f32>(small[0]);
  }
}
