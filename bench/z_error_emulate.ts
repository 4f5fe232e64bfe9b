/**
 * bench/z_error_fit.ts with WGSL's least accurate arithmetic emulated: the measurement behind gpu/f32_safety.ts's
 * Z_SHIFT, Z_REL and Z_MEAN_FLOOR, which must hold on any GPU, not only on the adapter at hand (lavapipe divides and
 * takes inverseSqrt nearly exactly).
 *
 *   deno run -A bench/z_error_emulate.ts --div 3 --rsqrt 2 [--quick] [--fallback]
 *   deno run -A bench/z_error_emulate.ts --div 3 --rsqrt 2 --test tests/crafted_sums_test.ts ... [-- deno test flags]
 *
 * With `--test`, the files named run under `deno test` instead, on the same emulated kernels (tests that hold on any
 * adapter: the crafted sums' band at the longest chains, say).
 *
 * WGSL allows x / y 2.5 ULP and inverseSqrt 2 ULP. Each float division and inverseSqrt that Z-Pruner's scores, its z
 * statistics and its error bound's relative term depend on is moved by whole ULPs of its own result after the adapter
 * computes it: `--div 3` by a hashed amount in [-3, 3] per input (x and y for a division: errors that differ from one
 * operation to the next, as a real GPU's do), `--div +3` or `--div -3` by always that many (errors of one sign), `--div
 * 0` not at all. Likewise `--rsqrt`. On an adapter that rounds correctly, a move of d leaves the result within d + 0.5
 * ULP, so 2 stays within WGSL's bound for a division and 3 passes it.
 * The operations sit in kernels/lib/normalised.wgsl (W · inverseSqrt(Σw²), for score, centred and z_means),
 * z_means.wgsl (the means, mean |W|) and z_spread.wgsl (1 / std, alpha, the near weights' share). The other kernels on
 * the path divide only integers, or for other methods; z_spread's cube root of the bound's k (pow) is not emulated.
 * Every kernel on the path is scanned: a float division, inverseSqrt, sqrt or pow that is neither emulated nor listed
 * as kept stops the run with the line named, as does a site or kept operation that is gone. The emulated copies go to a
 * temporary directory, and an import map points the kernels' descriptors at them for one run of z_error_fit.ts (or
 * of the test files); nothing in the repository changes.
 */
import { parseArgs } from "node:util";

const KERNELS = new URL("../kernels/", import.meta.url);

/**
 * The kernels on Z-Pruner's path to its scores: in each, the operations emulated (`sites`: the text and its
 * replacement) and those kept as they are (`keep`: integer divisions, RIA's division, the bound's cube root). Each
 * must occur exactly once in the kernel's code.
 */
const PATH: Record<string, { sites: [string, string][]; keep: string[] }> = {
  "decode.wgsl": { sites: [], keep: [] },
  "row_stats.wgsl": { sites: [], keep: [] },
  "col_stats.wgsl": { sites: [], keep: [] },
  "col_reduce.wgsl": { sites: [], keep: [] },
  "lib/block_sum.wgsl": { sites: [], keep: [] },
  "lib/spread_tree.wgsl": { sites: [], keep: [] },
  "lib/normalised.wgsl": { sites: [["v * inverseSqrt(sq)", "v * emu_rsqrt(sq)"]], keep: [] },
  "z_means.wgsl": {
    sites: [
      ["sum_r[0] / n", "emu_div(sum_r[0], n)"],
      ["sum_c[0] / n", "emu_div(sum_c[0], n)"],
      ["(sum_abs[0] / n)", "emu_div(sum_abs[0], n)"],
    ],
    keep: ["(p.cols + 2047u) / 2048u", "(p.rows + 2047u) / 2048u"],
  },
  "centred.wgsl": { sites: [], keep: ["p.count / 16384u", "e / p.cols"] },
  "z_spread.wgsl": {
    sites: [
      ["inverseSqrt(ss / f32(n - 1u))", "emu_rsqrt(emu_div(ss, f32(n - 1u)))"],
      ["(f32(small[0]) / f32(p.n))", "emu_div(f32(small[0]), f32(p.n))"],
      ["(f32(near[0]) / f32(p.n))", "emu_div(f32(near[0]), f32(p.n))"],
    ],
    keep: ["pow(k3, 1.0 / 3.0)"],
  },
  "score.wgsl": { sites: [], keep: ["x / d", "e / p.cols"] },
};

/** The kernels the scan covers. */
export const PATH_KERNELS = Object.keys(PATH);

/** Files that get the helpers: z_means has them through lib/normalised, which its descriptor appends. */
const HELPERS_IN = new Set(["lib/normalised.wgsl", "z_spread.wgsl"]);

/** What the scan stops at: any division left in code, and the root and power functions. */
const UNCOVERED = /\/|\b(inverseSqrt|sqrt|pow|exp2?|log2?|length|normalize|distance)\s*\(/;

/** An error setting: `3` hashed within ±3 ULP, `+3` or `-3` always that many, `0` none. */
export interface Setting {
  amp: number;
  sign: -1 | 0 | 1;
}

/** Parses `--div` or `--rsqrt`'s value. */
export function parseSetting(flag: string, v: string): Setting {
  const m = /^([+-]?)(\d{1,2})$/.exec(v);
  if (!m) throw new Error(`${flag} takes a count of ULPs (3, +3 or -3), not ${JSON.stringify(v)}`);
  return { amp: Number(m[2]), sign: m[1] === "+" ? 1 : m[1] === "-" ? -1 : 0 };
}

/** The WGSL helpers emu_div and emu_rsqrt: the adapter's result, moved by the setting's ULPs. */
export function helpers(div: Setting, rsqrt: Setting): string {
  return `
// --- emulated division and inverseSqrt (bench/z_error_emulate.ts; measurement only) ---
fn emu_ulps(b: u32, amp: i32, sign: i32) -> i32 {
  if (amp == 0) { return 0; }
  if (sign != 0) { return sign * amp; }
  var h = b * 0x9E3779B1u;
  h ^= h >> 15u;
  h *= 0x85EBCA77u;
  h ^= h >> 13u;
  return i32(h % u32(2 * amp + 1)) - amp;
}
// Zero, infinity and values near f32's largest keep their bits: a move there would change the class, not the
// precision. The results moved here are positive and normal.
fn emu_move(x: f32, d: i32) -> f32 {
  if (x == 0.0 || abs(x) > 3.0e38) { return x; }
  return bitcast<f32>(u32(i32(bitcast<u32>(x)) + d));
}
fn emu_div(x: f32, y: f32) -> f32 {
  return emu_move(x / y, emu_ulps(bitcast<u32>(x) ^ (bitcast<u32>(y) * 0x27D4EB2Fu), ${div.amp}, ${div.sign}));
}
fn emu_rsqrt(x: f32) -> f32 {
  return emu_move(inverseSqrt(x), emu_ulps(bitcast<u32>(x) ^ 0x5bd1e995u, ${rsqrt.amp}, ${rsqrt.sign}));
}
`;
}

/**
 * `source` (the kernel `file`, one of PATH's) with its sites replaced; throws where a site or kept operation is
 * missing or repeated, or where a float division, inverseSqrt, sqrt or pow is left that is neither.
 */
export function emulate(file: string, source: string, extra: string): string {
  const { sites, keep } = PATH[file] ?? {};
  if (!sites || !keep) {
    throw new Error(`kernels/${file} is not on Z-Pruner's path as bench/z_error_emulate.ts lists it`);
  }
  // Code and comment of each line: only code is searched and replaced (comments quote the sites too).
  const lines = source.split("\n").map((line) => {
    const at = line.indexOf("//");
    return at < 0 ? [line, ""] : [line.slice(0, at), line.slice(at)];
  });
  const once = (text: string) => {
    const hits = lines.filter(([code]) => code!.includes(text));
    if (hits.length !== 1 || hits[0]![0]!.indexOf(text) !== hits[0]![0]!.lastIndexOf(text)) {
      throw new Error(`kernels/${file}: expected "${text}" exactly once; update bench/z_error_emulate.ts's PATH`);
    }
    return hits[0]!;
  };
  for (const [from, to] of sites) {
    const hit = once(from);
    hit[0] = hit[0]!.replace(from, to);
  }
  for (const text of keep) once(text);
  const code = lines.map(([c]) => keep.reduce((rest, k) => rest.replace(k, ""), c!));
  const bad = code.findIndex((c) => UNCOVERED.test(c));
  if (bad >= 0) {
    throw new Error(
      `kernels/${file}: "${lines[bad]![0]!.trim()}" is not emulated; update bench/z_error_emulate.ts's PATH`,
    );
  }
  const out = lines.map(([c, comment]) => c! + comment!).join("\n");
  return HELPERS_IN.has(file) ? out + extra : out;
}

/**
 * The command line: the settings, and `deno test`'s arguments (files, then any flags given after `--`) or the fit's.
 * `--test` needs a file: without one `deno test` would run every test under the working directory on these kernels.
 */
export function parseCommand(args: string[]) {
  // deno test's own flags go after `--`: only what comes before it can name a file.
  const cut = args.includes("--") ? args.indexOf("--") : args.length;
  const { values, positionals } = parseArgs({
    args: args.slice(0, cut),
    options: {
      div: { type: "string", default: "3" },
      rsqrt: { type: "string", default: "2" },
      quick: { type: "boolean", default: false },
      fallback: { type: "boolean", default: false },
      test: { type: "boolean", default: false },
    },
    allowPositionals: true,
  });
  const passed = args.slice(cut + 1);
  if (values.test !== positionals.length > 0 || (!values.test && passed.length > 0)) {
    throw new Error("--test takes the test files after it, and files are taken only with --test");
  }
  if (values.test && (values.quick || values.fallback)) {
    throw new Error("--quick and --fallback are the fit's, not --test's");
  }
  const fit = [...(values.quick ? ["--quick"] : []), ...(values.fallback ? ["--fallback"] : [])];
  return {
    div: parseSetting("--div", values.div),
    rsqrt: parseSetting("--rsqrt", values.rsqrt),
    names: { div: values.div, rsqrt: values.rsqrt },
    test: values.test ? [...positionals, ...passed] : null,
    fit,
  };
}

if (import.meta.main) {
  const command = parseCommand(Deno.args);
  const { div, rsqrt } = command;
  const extra = helpers(div, rsqrt);
  const dir = await Deno.makeTempDir({ prefix: "zprune-emulate-" });
  // Interrupted, the run still removes its copies (the child gets the signal too).
  const interrupted = () => {
    Deno.removeSync(dir, { recursive: true });
    Deno.exit(130);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, interrupted);
  try {
    const imports: Record<string, string> = {};
    for (const file of PATH_KERNELS) {
      const from = new URL(file, KERNELS);
      const emulated = emulate(file, await Deno.readTextFile(from), extra); // every kernel is scanned
      if (PATH[file]!.sites.length === 0) continue;
      const to = `${dir}/${file.replace("/", "_")}`;
      await Deno.writeTextFile(to, emulated);
      imports[from.href] = new URL(`file://${to}`).href;
    }
    await Deno.writeTextFile(`${dir}/import_map.json`, JSON.stringify({ imports }));
    console.log(JSON.stringify({ emulation: command.names }));
    const map = `--import-map=${dir}/import_map.json`;
    const args = command.test
      ? ["test", "-A", map, ...command.test]
      : ["run", "-A", map, new URL("z_error_fit.ts", import.meta.url).href, ...command.fit];
    const { code } = await new Deno.Command(Deno.execPath(), { args, stdout: "inherit", stderr: "inherit" }).output();
    Deno.exitCode = code;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
