/**
 * Safetensors files written by hand for tests, independent of model/safetensors.ts's writer: the loader's tests need
 * files that writer would never produce (broken JSON, lengths past the file), and the others must not lean on it.
 */

/** A safetensors file: the header's byte length (u64 LE), `header` (JSON of an object, or raw text), then `data`. */
export function safetensorsBytes(header: unknown, data: Uint8Array = new Uint8Array()): Uint8Array {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** A header and zero-filled data for `tensors` (name to dtype and shape), stored one after another in order. */
export function packedTensors(
  tensors: Record<string, { dtype: "F32" | "F16" | "BF16"; shape: number[] }>,
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let at = 0;
  for (const [name, { dtype, shape }] of Object.entries(tensors)) {
    const bytes = (dtype === "F32" ? 4 : 2) * shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype, shape, data_offsets: [at, at + bytes] };
    at += bytes;
  }
  return safetensorsBytes(header, new Uint8Array(at));
}
