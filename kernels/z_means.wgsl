// z_means: Z-Pruner's whole-matrix scalars from the row and column sums, on the GPU so that scoring needs no host
// round trip: mean(Wr) = (1/n) Σ_r rowSum_r / ‖row_r‖, mean(Wc) likewise over columns, and the small-weight bound
// 0.1 · mean|W| = 0.1 · (1/n) Σ_r rowSumAbs_r.
//
// Bindings: 0 row_stats: array<f32> (read; [sumSq, sum, sumAbs] per row), 1 col_stats: array<f32> (read; the same
//   per column), 2 scalars: array<f32> (read_write; writes [0] mean_r, [1] mean_c, [2] thr, [7] thr_err; the layout
//   is gpu/kernels/z_means.ts's), 3 params (uniform).
// Thread: a strided slice of the rows and of the columns. Dispatch: exactly one workgroup of 256.
// Numerics: f32. Each thread adds at most ceil(rows/256) (or cols/256) terms in blocks of 8 and groups of 8 blocks
//   (lib/block_sum.wgsl), then an 8-level tree: at most ceil(rows/2048) + 17 rounding steps (fewer past 16,384
//   rows). A zero norm contributes 0 (never NaN). n is rounded to f32 (relative 6e-8).
//   thr_err bounds |thr - 0.1 · mean|W|| (the exact value, which the CPU backend's f64 approaches to 1e-15): each row's
//   sum of |W| is off by at most (ceil(cols/2048) + 17) roundings of 2^-24 (row_stats.wgsl; positive terms, so
//   relative to the sum), their sum here by (ceil(rows/2048) + 17) more, n, the division (WGSL: 2.5 ULP) and the 0.1
//   by at most 8; doubled. A weight whose |W| lies within thr_err of thr may be counted otherwise by the CPU
//   (centred.wgsl counts those too, and the host bounds what that does to alpha and the scores).

struct Params {
  rows: u32,
  cols: u32,
  n: u32, // rows * cols
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> row_stats: array<f32>;
@group(0) @binding(1) var<storage, read> col_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> scalars: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> sum_r: array<f32, 256>;
var<workgroup> sum_c: array<f32, 256>;
var<workgroup> sum_abs: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  var rs = BlockSum();
  for (var r = t; r < p.rows; r += 256u) {
    block_add(&rs, vec4f(normalised(row_stats[r * 3u + 1u], row_stats[r * 3u]), row_stats[r * 3u + 2u], 0.0, 0.0));
  }
  var cs = BlockSum();
  for (var j = t; j < p.cols; j += 256u) {
    block_add(&cs, vec4f(normalised(col_stats[j * 3u + 1u], col_stats[j * 3u]), 0.0, 0.0, 0.0));
  }
  let row_sums = block_total(&rs);
  let a = row_sums.x;
  let c = row_sums.y;
  let b = block_total(&cs).x;
  sum_r[t] = a;
  sum_c[t] = b;
  sum_abs[t] = c;
  for (var off = 128u; off > 0u; off >>= 1u) {
    workgroupBarrier();
    if (t < off) {
      sum_r[t] += sum_r[t + off];
      sum_c[t] += sum_c[t + off];
      sum_abs[t] += sum_abs[t + off];
    }
  }
  if (t == 0u) {
    let n = f32(p.n);
    scalars[0] = sum_r[0] / n;
    scalars[1] = sum_c[0] / n;
    let thr = 0.1 * (sum_abs[0] / n);
    scalars[2] = thr;
    let steps = f32((p.cols + 2047u) / 2048u + (p.rows + 2047u) / 2048u + 42u);
    scalars[7] = thr * (2.0 * steps * 5.9604645e-8); // 2^-24
  }
}
