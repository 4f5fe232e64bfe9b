/**
 * bench/z_error_emulate.ts: its substitutions still find every float division and inverseSqrt on Z-Pruner's path in
 * the kernels as they are, and its WGSL helpers move a result by the ULPs asked for, on the adapter at hand.
 */
import assert from "node:assert/strict";
import { GpuEngine } from "../gpu/engine.ts";
import { defineKernel } from "../gpu/kernel.ts";
import { dispatchKernel, submitAndRead } from "../gpu/kernels/_run_kernel.ts";
import { emulate, helpers, parseCommand, parseSetting, PATH_KERNELS, type Setting } from "./z_error_emulate.ts";

const kernel = (file: string) => Deno.readTextFile(new URL(`../kernels/${file}`, import.meta.url));

Deno.test("z_error_emulate: the kernels on Z-Pruner's path as they are pass its scan", async () => {
  // A kernel that gains a float division or a root, or loses a site, must fail here before a fit runs without it.
  const extra = helpers({ amp: 3, sign: 0 }, { amp: 2, sign: 0 });
  for (const file of PATH_KERNELS) emulate(file, await kernel(file), extra);
});

Deno.test("z_error_emulate: a float operation it does not emulate, or a site missing, is refused", async () => {
  const src = await kernel("z_means.wgsl");
  const spellings = [
    "return a / b;",
    "return a/b;",
    "return a /b;",
    "x /= b;",
    "return a /\n  b;",
    "return a * 2.0 / 3.0;",
    "return inverseSqrt (a);",
    "return 1.0 / sqrt(a);",
    "return sqrt(a);",
    "return pow(a, -0.5);",
    "return exp(a);",
    "return exp2(a);",
    "return log(a);",
    "return log2(a);",
    "return length(vec2(a, b));",
    "return normalize(vec2(a, b)).x;",
    "return distance(a, b);",
  ];
  for (const body of spellings) {
    assert.throws(() => emulate("z_means.wgsl", `${src}\nfn f(a: f32, b: f32) -> f32 { ${body} }\n`, ""), {
      message: /^kernels\/z_means\.wgsl: ".*" is not emulated/,
    }, body);
  }
  assert.throws(() => emulate("z_means.wgsl", src.replace("sum_c[0] / n", "sum_c[0] * m"), ""), {
    message: /z_means\.wgsl: expected "sum_c\[0\] \/ n" exactly once/,
  });
  // A site twice, or a kept integer division gone, means PATH no longer describes the kernel.
  assert.throws(() => emulate("z_means.wgsl", `${src}\nfn f() -> f32 { return sum_r[0] / n; }\n`, ""), {
    message: /z_means\.wgsl: expected "sum_r\[0\] \/ n" exactly once/,
  });
  assert.throws(() => emulate("z_means.wgsl", src.replace("(p.rows + 2047u) / 2048u", "(p.rows + 2047u) >> 11u"), ""), {
    message: /z_means\.wgsl: expected "\(p\.rows \+ 2047u\) \/ 2048u" exactly once/,
  });
  assert.throws(() => emulate("select_nm.wgsl", "", ""), { message: /not on Z-Pruner's path/ });
  // A site quoted in a comment is neither a site nor a division.
  assert.doesNotThrow(() => emulate("z_means.wgsl", `${src}\n// sum_r[0] / n, x / sqrt(y)\n`, ""));
});

Deno.test("z_error_emulate: --div and --rsqrt take 3, +3 or -3", () => {
  assert.deepEqual(parseSetting("--div", "3"), { amp: 3, sign: 0 });
  assert.deepEqual(parseSetting("--div", "+2"), { amp: 2, sign: 1 });
  assert.deepEqual(parseSetting("--rsqrt", "-5"), { amp: 5, sign: -1 });
  for (const bad of ["", "x", "3.5", "+-3", "100"]) {
    assert.throws(() => parseSetting("--div", bad), { message: /--div takes a count of ULPs/ });
  }
});

Deno.test("z_error_emulate: --test needs a file, and files and test flags go only with --test", () => {
  const ok = parseCommand(["--div", "+3", "--test", "tests/a_test.ts", "--", "--filter", "x"]);
  assert.deepEqual(ok.test, ["tests/a_test.ts", "--filter", "x"]);
  assert.deepEqual(ok.div, { amp: 3, sign: 1 });
  assert.deepEqual(parseCommand(["--quick", "--fallback"]).fit, ["--quick", "--fallback"]);
  const plain = parseCommand([]);
  assert.equal(plain.test, null);
  // The defaults are the bounds the fit is documented with: division ±3 ULP, inverseSqrt ±2, hashed.
  assert.deepEqual([plain.div, plain.rsqrt, plain.fit], [{ amp: 3, sign: 0 }, { amp: 2, sign: 0 }, []]);
  const misuse = /--test takes the test files after it/;
  const wrong = [["--test"], ["--test", "--", "--filter", "x"], ["--test", "--", "a_test.ts"], ["a_test.ts"], [
    "--",
    "x",
  ]];
  for (const args of wrong) {
    assert.throws(() => parseCommand(args), { message: misuse }, args.join(" "));
  }
  for (const flag of ["--quick", "--fallback"]) {
    assert.throws(() => parseCommand(["--test", "a_test.ts", flag]), { message: /the fit's, not --test's/ }, flag);
  }
});

const engine = await GpuEngine.create({ allowFallback: true });
globalThis.addEventListener("unload", () => engine?.destroy());

/** Per input pair (a, x): [a / x, emu_div(a, x), inverseSqrt(x), emu_rsqrt(x)] as f32 bits, on the GPU. */
async function probe(
  device: GPUDevice,
  as: Float32Array<ArrayBuffer>,
  xs: Float32Array<ArrayBuffer>,
  div: Setting,
  rsqrt: Setting,
) {
  const def = defineKernel({
    name: "emu-probe",
    source: `
@group(0) @binding(0) var<storage, read> ins: array<vec2f>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
struct Params { count: u32 }
@group(0) @binding(2) var<uniform> p: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x >= p.count) { return; }
  let a = ins[g.x].x;
  let x = ins[g.x].y;
  out[4u * g.x] = a / x;
  out[4u * g.x + 1u] = emu_div(a, x);
  out[4u * g.x + 2u] = inverseSqrt(x);
  out[4u * g.x + 3u] = emu_rsqrt(x);
}`,
    libs: [helpers(div, rsqrt)],
    bindings: ["read", "rw", "uniform"],
    uniforms: [["count", "u32"]],
    workgroups: (u) => Math.ceil(u.count / 64),
  });
  const usage = GPUBufferUsage;
  const ins = new Float32Array(xs.length * 2);
  xs.forEach((x, i) => ins.set([as[i]!, x], 2 * i));
  const inBuf = device.createBuffer({ label: "emu-in", size: ins.byteLength, usage: usage.STORAGE | usage.COPY_DST });
  device.queue.writeBuffer(inBuf, 0, ins);
  const outBuf = device.createBuffer({
    label: "emu-out",
    size: xs.byteLength * 4,
    usage: usage.STORAGE | usage.COPY_SRC,
  });
  const enc = device.createCommandEncoder({ label: "emu" });
  const uni = dispatchKernel(device, enc, def, [inBuf, outBuf], { count: xs.length });
  const out = new Int32Array(await submitAndRead(device, enc, outBuf, xs.byteLength * 4));
  for (const b of [inBuf, outBuf, uni]) b.destroy();
  return out;
}

Deno.test({
  name: "z_error_emulate: the helpers move a / x and inverseSqrt(x) by the ULPs asked for (fixed, hashed or none)",
  ignore: !engine,
  async fn() {
    // Numerators of both signs; the last input's quotient (3.2e38) is past emu_move's guard and stays unmoved.
    const xs = new Float32Array(4096).map((_, i) => 0.37 + i * 1.913);
    const as = new Float32Array(4096).map((_, i) => (i % 2 ? -1 : 1) * (0.5 + i * 0.731));
    [as[4095], xs[4095]] = [3.2e38, 1];
    const guarded = (i: number) => i === 4095;
    // Fixed: exactly that many ULPs of the result, away from zero.
    let got = await probe(engine!.device, as, xs, { amp: 3, sign: 1 }, { amp: 2, sign: -1 });
    for (let i = 0; i < xs.length; i++) {
      assert.equal(got[4 * i + 1]! - got[4 * i]!, guarded(i) ? 0 : 3, `${as[i]} / ${xs[i]}: +3 ULPs`);
      assert.equal(got[4 * i + 3]! - got[4 * i + 2]!, -2, `inverseSqrt(${xs[i]}): -2 ULPs`);
    }
    // Hashed: within ±amp, and over 4096 inputs every move in that range occurs.
    got = await probe(engine!.device, as, xs, { amp: 3, sign: 0 }, { amp: 2, sign: 0 });
    const divMoves = new Set<number>(), rsqrtMoves = new Set<number>();
    for (let i = 0; i < xs.length - 1; i++) {
      divMoves.add(got[4 * i + 1]! - got[4 * i]!);
      rsqrtMoves.add(got[4 * i + 3]! - got[4 * i + 2]!);
    }
    assert.deepEqual([...divMoves].sort((a, b) => a - b), [-3, -2, -1, 0, 1, 2, 3]);
    assert.deepEqual([...rsqrtMoves].sort((a, b) => a - b), [-2, -1, 0, 1, 2]);
    // None: the adapter's own division and inverseSqrt.
    got = await probe(engine!.device, as, xs, { amp: 0, sign: 0 }, { amp: 0, sign: 0 });
    for (let i = 0; i < xs.length; i++) {
      assert.equal(got[4 * i + 1], got[4 * i], `${as[i]} / ${xs[i]}: unmoved`);
      assert.equal(got[4 * i + 3], got[4 * i + 2], `inverseSqrt(${xs[i]}): unmoved`);
    }
  },
});

Deno.test("z_error_emulate: --test runs the files named on the emulated kernels, through the import map", async () => {
  // A test file that passes only where the descriptors compile emulated kernels: run alone it fails, run by the tool
  // it passes, so the tool's import map reaches every descriptor the engine loads.
  const dir = await Deno.makeTempDir({ prefix: "zprune-emulate-test-" });
  try {
    const file = `${dir}/emulated_test.ts`;
    const at = (path: string) => new URL(path, import.meta.url).href;
    await Deno.writeTextFile(
      file,
      `import { type KernelDef, kernelCode } from "${at("../gpu/kernel.ts")}";
import { score } from "${at("../gpu/kernels/score.ts")}";
import { zMeans } from "${at("../gpu/kernels/z_means.ts")}";
import { zSpread } from "${at("../gpu/kernels/z_spread.ts")}";
const calls: [unknown, string][] = [
  [score, "emu_rsqrt(sq)"],
  [zMeans, "emu_div(sum_r[0], n)"],
  [zSpread, "emu_rsqrt(emu_div("],
  [zSpread, "* 0x27D4EB2Fu), 3, 1));"], // --div=+3
  [zSpread, "^ 0x5bd1e995u, 2, -1));"], // --rsqrt=-2
];
Deno.test("emulated", () => {
  for (const [def, call] of calls) {
    const code = kernelCode(def as KernelDef);
    if (!code.includes(call)) throw new Error((def as KernelDef).name + " is not emulated");
  }
  // The helpers once per kernel: z_means gets them through lib/normalised, and a second copy would not compile.
  for (const def of [score, zMeans, zSpread]) {
    const copies = kernelCode(def as KernelDef).split("fn emu_div(").length - 1;
    if (copies !== 1) throw new Error((def as KernelDef).name + " has " + copies + " copies of the helpers");
  }
});
`,
    );
    const run = async (args: string[]) => {
      const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), { args }).output();
      return { code, text: new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr) };
    };
    const alone = await run(["test", "-A", file]);
    assert.notEqual(alone.code, 0, "run alone, the kernels are the repository's");
    assert.match(alone.text, /score is not emulated/);
    const tool = new URL("z_error_emulate.ts", import.meta.url).href;
    const emulated = await run(["run", "-A", tool, "--div=+3", "--rsqrt=-2", "--test", file]);
    assert.equal(emulated.code, 0, `run by the tool: ${emulated.text.slice(-2000)}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
