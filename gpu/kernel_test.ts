import assert from "node:assert/strict";
import {
  defineKernel,
  flattenWorkgroups,
  kernelCode,
  type KernelDef,
  MAX_WORKGROUPS_PER_DIM,
  packUniforms,
} from "./kernel.ts";
import { decode, KERNELS, score, selectHist, selectNm, selectPick, selectRow } from "./kernels/mod.ts";
import { HIST_BINS, LAYER_DIGITS } from "./engine.ts";
import { AMBIGUITY_BAND } from "../contract/api.ts";

Deno.test("packUniforms() lays fields out in order, 4 bytes each, padded to 16", () => {
  const buf = packUniforms(decode, { count: 7, dtype: 2, base: 0xffffffff });
  assert.equal(buf.byteLength, 16);
  assert.deepEqual([...new Uint32Array(buf)], [7, 2, 0xffffffff, 0]);
  // f32 fields (no kernel has one today) are stored as float32 in their slot.
  const mixed = defineKernel({
    name: "probe",
    source: "",
    bindings: ["uniform"],
    uniforms: [["count", "u32"], ["cols", "u32"], ["row0", "u32"], ["method", "u32"], ["a", "f32"], ["b", "f32"]],
    workgroups: () => 1,
  });
  const s = packUniforms(mixed, { count: 1, cols: 2, row0: 3, method: 3, a: 0.7, b: -0.25 });
  assert.equal(s.byteLength, 32);
  assert.deepEqual([...new Uint32Array(s, 0, 4)], [1, 2, 3, 3]);
  assert.deepEqual([...new Float32Array(s, 16, 2)], [Math.fround(0.7), -0.25]);
  assert.equal(packUniforms(score, { count: 1, cols: 2, row0: 3, method: 3 }).byteLength, 16);
});

Deno.test("packUniforms() rejects a value that is not a u32", () => {
  assert.throws(() => packUniforms(decode, { count: -1, dtype: 0, base: 0 }), RangeError);
  assert.throws(() => packUniforms(decode, { count: 2 ** 32, dtype: 0, base: 0 }), RangeError);
  assert.throws(() => packUniforms(decode, { count: 1.5, dtype: 0, base: 0 }), RangeError);
});

Deno.test("flattenWorkgroups() keeps each dimension within the limit and covers the count", () => {
  assert.deepEqual(flattenWorkgroups(10), [10, 1]);
  assert.deepEqual(flattenWorkgroups([3, 4]), [3, 4]);
  for (const n of [MAX_WORKGROUPS_PER_DIM, MAX_WORKGROUPS_PER_DIM + 1, 918_000, 14_680_064]) {
    const [x, y] = flattenWorkgroups(n);
    assert.ok(x <= MAX_WORKGROUPS_PER_DIM && y <= MAX_WORKGROUPS_PER_DIM);
    assert.ok(x * y >= n, `${x} * ${y} < ${n}`);
  }
});

/** Every kernel file's name, from kernels/ (libraries under kernels/lib are not kernels). */
const KERNEL_NAMES = [...Deno.readDirSync(new URL("../kernels/", import.meta.url))]
  .filter((e) => e.isFile && e.name.endsWith(".wgsl"))
  .map((e) => e.name.slice(0, -".wgsl".length))
  .sort();

/** The descriptor exported by gpu/kernels/NAME.ts, found by its name (the module may export constants beside it). */
async function descriptorOf(name: string): Promise<KernelDef> {
  const defs = Object.values(await import(`./kernels/${name}.ts`))
    .filter((v): v is KernelDef => typeof v === "object" && v !== null && "source" in v && "bindings" in v);
  assert.deepEqual(defs.map((d) => d.name), [name], `gpu/kernels/${name}.ts exports one descriptor, named ${name}`);
  return defs[0]!;
}

Deno.test("every kernel's descriptor declares the bindings and uniforms its WGSL declares, in order", async () => {
  assert.ok(KERNEL_NAMES.length >= 16, `${KERNEL_NAMES.length} kernels found`);
  const kind = { "storage, read": "read", "storage, read_write": "rw", "uniform": "uniform" } as const;
  for (const name of KERNEL_NAMES) {
    const def = await descriptorOf(name);
    const code = kernelCode(def);
    // Bindings: `@group(0) @binding(i) var<storage, read> ...`, numbered 0.. in order, the uniform block last.
    const bindings = [...code.matchAll(/@group\(0\) @binding\((\d+)\) var<([^>]+)>/g)];
    assert.deepEqual(bindings.map((m) => Number(m[1])), bindings.map((_, i) => i), `${name}: binding numbers`);
    assert.deepEqual(bindings.map((m) => kind[m[2] as keyof typeof kind]), [...def.bindings], `${name}: bindings`);
    // Inputs (read) before outputs (read_write, in-place ones included), the uniform block last: kernel.ts's order.
    const rank = { read: 0, rw: 1, uniform: 2 } as const;
    const ranks = def.bindings.map((b) => rank[b]);
    assert.deepEqual(ranks, [...ranks].sort(), `${name}: inputs, then outputs, then uniforms`);
    assert.equal(ranks.filter((r) => r === 2).length, 1, `${name}: one uniform block`);
    // Uniforms: the fields of `struct Params` in order, then only padding (`_pad...`): packUniforms packs the
    // descriptor's fields without gaps, so a pad between two fields would shift every later one.
    const struct = code.match(/struct Params \{([^}]*)\}/)?.[1] ?? "";
    const fields = [...struct.matchAll(/^\s*(\w+): (u32|f32),/gm)].map((m): [string, string] => [m[1]!, m[2]!]);
    const uniforms = def.uniforms.map(([f, t]) => [f, t]);
    assert.deepEqual(fields.slice(0, uniforms.length), uniforms, `${name}: uniforms`);
    assert.ok(fields.slice(uniforms.length).every(([f]) => f.startsWith("_pad")), `${name}: only padding follows`);
  }
});

Deno.test("KERNELS (what warm() compiles) names every kernel file once, with its own file's descriptor", async () => {
  assert.deepEqual(KERNELS.map((k) => k.name).sort(), KERNEL_NAMES);
  for (const k of KERNELS) assert.equal(k, await descriptorOf(k.name), `${k.name}: not gpu/kernels/${k.name}.ts's`);
});

Deno.test("each WGSL library a kernel calls is appended once, and none it does not call", () => {
  const libs = [...Deno.readDirSync(new URL("../kernels/lib/", import.meta.url))].map((e) => e.name).sort();
  assert.deepEqual(libs, [
    "block_sum.wgsl",
    "lowest_set_bits.wgsl",
    "normalised.wgsl",
    "scan_256.wgsl",
    "spread_tree.wgsl",
  ]);
  const fnsOf = (wgsl: string) => [...wgsl.matchAll(/^fn (\w+)\(/gm)].map((m) => m[1]!);
  return Promise.all(KERNEL_NAMES.map(async (name) => {
    const def = await descriptorOf(name);
    for (const lib of def.libs ?? []) {
      const fns = fnsOf(lib);
      assert.ok(fns.some((f) => new RegExp(`\\b${f}\\(`).test(def.source)), `${name} appends a library it never calls`);
    }
    // Every function called in the kernel is defined exactly once in what it compiles (built-ins aside).
    const defined = fnsOf(kernelCode(def));
    assert.equal(new Set(defined).size, defined.length, `${name}: a function defined twice`);
    for (const lib of libs) {
      const text = Deno.readTextFileSync(new URL(`../kernels/lib/${lib}`, import.meta.url));
      for (const f of fnsOf(text)) {
        if (new RegExp(`\\b${f}\\(`).test(def.source)) {
          assert.ok(defined.includes(f), `${name} calls ${f} of lib/${lib}`);
        }
      }
    }
  })).then(() => undefined);
});

/** The value of `const NAME: T = V;` in a kernel's WGSL. */
function wgslConst(def: KernelDef, name: string): number {
  const m = def.source.match(new RegExp(`^const ${name}: (?:f32|u32) = ([0-9.e+-]+)u?;`, "m"));
  assert.ok(m, `${def.name}.wgsl declares const ${name}`);
  return Number(m[1]);
}

Deno.test("constants WGSL repeats from the host and the contract have the host's values", () => {
  // The N:M kernel's safety test takes half the contract's band.
  assert.equal(wgslConst(selectNm, "HALF_BAND"), AMBIGUITY_BAND / 2);
  // The histogram kernels size their workgroup storage for the widest digit the host asks for.
  const widest = 2 ** Math.max(...LAYER_DIGITS.map(([, bits]) => bits));
  assert.equal(HIST_BINS, widest);
  for (const [def, name] of [[selectHist, "MAX_BINS"], [selectPick, "MAX_BINS"], [selectRow, "BINS"]] as const) {
    assert.equal(wgslConst(def, name), widest, `${def.name}.wgsl ${name}`);
  }
});

Deno.test("packUniforms() packs 0, the smallest u32", () => {
  // Offsets and row starts are often 0: a bound that refused it would fail every first tile.
  assert.deepEqual([...new Uint32Array(packUniforms(decode, { count: 0, dtype: 0, base: 0 }))], [0, 0, 0, 0]);
});

Deno.test("flattenWorkgroups() stays within 65535 per dimension, WebGPU's default limit", () => {
  // maxComputeWorkgroupsPerDimension defaults to 65535 (the WebGPU spec); adapters need not allow more.
  for (const n of [65_535, 65_536, 131_070, 131_071, 4_294_836_225]) {
    const [x, y] = flattenWorkgroups(n);
    assert.ok(x <= 65_535 && y <= 65_535, `${n}: [${x}, ${y}]`);
    assert.ok(x * y >= n && (x - 1) * y < n, `${n}: [${x}, ${y}] does not cover it tightly`);
  }
});

Deno.test("kernelCode() starts each library on a line of its own", () => {
  // A source whose last line is a comment without a newline must not swallow the library's first line.
  const def = defineKernel({
    name: "probe",
    source: "fn main() {}\n// ends here",
    libs: ["fn lib_a() {}", "fn lib_b() {}"],
    bindings: ["uniform"],
    uniforms: [["count", "u32"]],
    workgroups: () => 1,
  });
  const lines = kernelCode(def).split("\n");
  assert.ok(lines.includes("fn lib_a() {}") && lines.includes("fn lib_b() {}"), kernelCode(def));
});
