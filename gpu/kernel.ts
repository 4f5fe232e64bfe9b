/**
 * Kernel descriptors: what a WGSL kernel in `kernels/` binds, which uniforms it takes and how it is dispatched.
 * One descriptor per kernel, in `gpu/kernels/NAME.ts` beside `kernels/NAME.wgsl`. Shapes travel as uniforms, so one
 * compiled pipeline serves every shape; the pipeline cache key is the kernel's name.
 */

/** How a binding is used: read-only storage, read-write storage, or the kernel's uniform block (always last). */
export type BindingKind = "read" | "rw" | "uniform";

/** A uniform field: its name and WGSL scalar type. Fields are laid out in order, 4 bytes each. */
export type UniformField<U extends string = string> = readonly [name: U, type: "u32" | "f32"];

/** Workgroups to dispatch: a count (flattened by the runner over x and y) or an explicit [x, y]. */
export type Workgroups = number | readonly [number, number];

/** A compute kernel: its WGSL, bindings in binding order (inputs, outputs, uniforms) and uniform layout. */
export interface KernelDef<U extends string = string> {
  /** Base name of the .wgsl file; also the pipeline cache key and label. */
  readonly name: string;
  /** WGSL source; the entry point is `main`. */
  readonly source: string;
  /** WGSL libraries (kernels/lib/*.wgsl) the source calls, appended to it when compiled (WGSL has no imports). */
  readonly libs?: readonly string[];
  readonly bindings: readonly BindingKind[];
  /** The `Params` struct of the kernel, field by field (padded by the runner to a multiple of 16 bytes). */
  readonly uniforms: readonly UniformField<U>[];
  /** Workgroups for the given uniforms. */
  readonly workgroups: (u: Readonly<Record<U, number>>) => Workgroups;
}

/** Declares a kernel descriptor (identity function that checks the shape at compile time). */
export function defineKernel<U extends string>(def: KernelDef<U>): KernelDef<U> {
  return def;
}

/** The WGSL a kernel compiles from: its source followed by the libraries it uses. */
export function kernelCode(def: KernelDef): string {
  return [def.source, ...(def.libs ?? [])].join("\n");
}

/** Packs uniform values into the kernel's `Params` layout (4 bytes per field, size rounded up to 16). */
export function packUniforms<U extends string>(def: KernelDef<U>, values: Readonly<Record<U, number>>): ArrayBuffer {
  const size = Math.max(16, Math.ceil(def.uniforms.length / 4) * 16);
  const buf = new ArrayBuffer(size);
  const u32 = new Uint32Array(buf);
  const f32 = new Float32Array(buf);
  def.uniforms.forEach(([name, type], i) => {
    const v = values[name];
    if (type === "u32") {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
        throw new RangeError(`${def.name}.${name}: ${v} is not a u32`);
      }
      u32[i] = v;
    } else {
      f32[i] = v;
    }
  });
  return buf;
}

/** Most workgroups per dispatch dimension that every WebGPU adapter allows. */
export const MAX_WORKGROUPS_PER_DIM = 65535;

/** Spreads a workgroup count over x and y so each stays within the per-dimension limit; kernels rebuild the index. */
export function flattenWorkgroups(w: Workgroups): [number, number] {
  if (typeof w !== "number") return [w[0], w[1]];
  if (w <= MAX_WORKGROUPS_PER_DIM) return [w, 1];
  const y = Math.ceil(w / MAX_WORKGROUPS_PER_DIM);
  return [Math.ceil(w / y), y];
}
