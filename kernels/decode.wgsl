// decode: raw little-endian weights (f32, f16 or bf16) -> f32, and detection of the first non-finite value.
//
// Bindings (group 0): 0 raw: array<u32> (read; one row-tile of the request's bytes, 16-bit values packed two
//   per word, low half first), 1 w: array<f32> (write; the tile decoded), 2 bad: array<atomic<u32>, 2>
//   (read_write; [0] the lowest global row-major index of a NaN or infinity, preset to 0xffffffff by the host;
//   [1] set to 1 when an f32 or bf16 weight is subnormal, preset to 0), 3 params (uniform).
// Thread: one element. Dispatch: ceil(count / 256) workgroups of 256, flattened over x and y (65535 per axis).
// Numerics: exact. f16 and bf16 are widened bit by bit (no reliance on unpack2x16float's handling of subnormals);
//   a non-finite value decodes to 0 so later passes stay finite while the host reports the error. WGSL lets a GPU
//   flush subnormal f32 operands to zero, so later arithmetic on a subnormal weight may differ from the CPU
//   backend's; the host computes such a layer exactly on the CPU instead (f16 subnormals are f32 normals).

struct Params {
  count: u32, // elements in this tile
  dtype: u32, // 0 f32, 1 f16, 2 bf16
  base: u32, // global row-major index of the tile's first element
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> raw: array<u32>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> bad: array<atomic<u32>, 2>;
@group(0) @binding(3) var<uniform> p: Params;

// f16 bits -> f32 bits, exactly (f16 subnormals become f32 normals).
fn f16_to_f32(h: u32) -> f32 {
  let sign = (h & 0x8000u) << 16u;
  let expo = (h >> 10u) & 0x1fu;
  let mant = h & 0x3ffu;
  if (expo == 0u) {
    let mag = f32(mant) * 5.9604644775390625e-8; // mant * 2^-24, exact
    return select(mag, -mag, sign != 0u);
  }
  return bitcast<f32>(sign | ((expo + 112u) << 23u) | (mant << 13u));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) t: u32) {
  let e = (wid.x + wid.y * nwg.x) * 256u + t;
  if (e >= p.count) { return; }
  var v = 0.0;
  var finite = true;
  var subnormal = false;
  if (p.dtype == 0u) {
    let b = raw[e];
    finite = (b & 0x7f800000u) != 0x7f800000u;
    subnormal = (b & 0x7f800000u) == 0u && (b & 0x007fffffu) != 0u;
    v = bitcast<f32>(b);
  } else {
    let h = (raw[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu;
    if (p.dtype == 1u) {
      finite = (h & 0x7c00u) != 0x7c00u;
      v = f16_to_f32(h);
    } else {
      finite = (h & 0x7f80u) != 0x7f80u;
      subnormal = (h & 0x7f80u) == 0u && (h & 0x007fu) != 0u;
      v = bitcast<f32>(h << 16u);
    }
  }
  if (!finite) {
    atomicMin(&bad[0], p.base + e);
    v = 0.0;
  }
  if (subnormal) { atomicOr(&bad[1], 1u); }
  w[e] = v;
}
