/**
 * CPU backend benchmark: milliseconds per stage (decode, score, select, stats) of f16 layers for the layer,
 * row and 2:4 patterns, next to the NumPy peer (bench/numpy_peer.py, a copy of ../shared/tools/numpy_peer.py)
 * run in the same invocation on the same shapes, and the ratio of totals (peer / zprune: above 1 is faster).
 *
 *   deno task bench [--repeat N] [ROWSxCOLS ...]     (default 4096x4096 11008x4096, best of 3)
 *
 * Both sides build a mask from f16 weights and f32 activations already in memory; the peer's total for a
 * pattern is decode + score + select + pack, ours is decode + score + select (packing happens while
 * selecting) + stats (pruned counts and row sparsity, which the peer does not compute).
 */
import type { Pattern } from "../contract/api.ts";
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { createPoolExecutor } from "../prune/cpu_backend.ts";
import { f16Bits } from "../contract/dtype_codec.ts";
import { pruneLayerWith, type StageTimes } from "../prune/prune_layer.ts";

const USAGE = "usage: deno task bench [--repeat N] [ROWSxCOLS ...]   (default 4096x4096 11008x4096, best of 3)";

/** The run's settings from the command line; a bad one ends the process with the usage, not a peer's traceback. */
function parseArgs(args: string[]): { repeat: number; shapes: [number, number][] } {
  let repeat = 3;
  const shapes: [number, number][] = [];
  const fail = (why: string): never => {
    console.error(`cpu_bench: ${why}\n${USAGE}`);
    Deno.exit(2);
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--help" || a === "-h") {
      console.log(USAGE);
      Deno.exit(0);
    } else if (a === "--repeat") {
      repeat = /^\d+$/.test(args[i + 1] ?? "") ? Number(args[++i]) : fail(`--repeat needs a count, got ${args[i + 1]}`);
      if (repeat < 1) fail("--repeat must be at least 1");
    } else if (/^\d+x\d+$/.test(a)) {
      const [rows, cols] = a.split("x").map(Number) as [number, number];
      if (rows < 1 || cols < 1) fail(`${a}: rows and columns must be at least 1`);
      shapes.push([rows, cols]);
    } else {
      fail(`unknown argument ${a}`);
    }
  }
  return { repeat, shapes: shapes.length ? shapes : [[4096, 4096], [11008, 4096]] };
}

const { repeat, shapes } = parseArgs(Deno.args);

/** Gaussian(0, 1) by Box-Muller from a seeded LCG: the same distribution as the peer's data. */
function gaussian(seed: number): () => number {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

function makeLayer(rows: number, cols: number): LayerJob {
  const g = gaussian(rows * 31 + cols);
  const w = new Uint16Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = f16Bits(g() * 0.02);
  const act = new Float32Array(cols);
  for (let j = 0; j < cols; j++) act[j] = Math.abs(g() + g()) + 0.5; // gamma-like, positive
  return { name: `bench-${rows}x${cols}`, rows, cols, dtype: "f16", weight: new Uint8Array(w.buffer), actNormSq: act };
}

async function numpyPeer(): Promise<Record<string, Record<string, number>>> {
  const env = { ...Deno.env.toObject() };
  // OpenBLAS workarounds set on some hosts slow a current NumPy: unset both for the peer alone.
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const out = await new Deno.Command("python3", {
    args: [
      new URL("./numpy_peer.py", import.meta.url).pathname,
      "--repeat",
      String(repeat),
      ...shapes.map((s) => s.join("x")),
    ],
    env,
    clearEnv: true,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error("numpy_peer.py failed");
  const rows: Record<string, Record<string, number>> = {};
  for (const line of new TextDecoder().decode(out.stdout).trim().split("\n")) {
    const r = JSON.parse(line);
    rows[r.shape.join("x")] = r;
  }
  return rows;
}

const peer = await numpyPeer();
const exec = createPoolExecutor(navigator.hardwareConcurrency || 2);
const patterns: [string, Pattern, string][] = [
  ["layer", { kind: "layer", sparsity: 0.5 }, "select_layer_ms"],
  ["row", { kind: "row", sparsity: 0.5 }, "select_row_ms"],
  ["2:4", { kind: "nm", n: 2, m: 4 }, "select_2of4_ms"],
];
const table: string[] = [];
try {
  for (const [rows, cols] of shapes) {
    const layer = makeLayer(rows, cols);
    const p = peer[`${rows}x${cols}`]!;
    for (const [label, pattern, peerSelect] of patterns) {
      const params: PruneParams = {
        method: "zpruner",
        pattern,
        exponent: 1.5,
        returnWeight: false,
        returnScore: false,
      };
      let best: StageTimes & { total: number } | null = null;
      for (let i = 0; i < repeat + 1; i++) {
        const st: StageTimes = { decode: 0, score: 0, select: 0, stats: 0 };
        await pruneLayerWith(exec, params, layer, undefined, st);
        const total = st.decode + st.score + st.select + st.stats;
        if (i > 0 && (!best || total < best.total)) best = { ...st, total }; // the first run warms the JIT
      }
      const peerTotal = p.decode_ms! + p.score_ms! + p[peerSelect]! + p.pack_ms!;
      const r = best!;
      const line = {
        shape: [rows, cols],
        pattern: label,
        zprune_ms: {
          decode: +r.decode.toFixed(1),
          score: +r.score.toFixed(1),
          select: +r.select.toFixed(1),
          stats: +r.stats.toFixed(1),
          total: +r.total.toFixed(1),
        },
        numpy_ms: {
          decode: p.decode_ms,
          score: p.score_ms,
          select: p[peerSelect],
          pack: p.pack_ms,
          total: +peerTotal.toFixed(1),
        },
        speedup: +(peerTotal / r.total).toFixed(2),
      };
      console.log(JSON.stringify(line));
      table.push(
        `| ${rows}x${cols} | ${label} | ${r.decode.toFixed(0)} | ${r.score.toFixed(0)} | ${r.select.toFixed(0)} | ${
          r.stats.toFixed(0)
        } | **${r.total.toFixed(0)}** | ${peerTotal.toFixed(0)} | **${line.speedup}x** |`,
      );
    }
  }
} finally {
  exec.close();
}
console.log("\n| shape | pattern | decode | score | select | stats | zprune total ms | NumPy total ms | speed-up |");
console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
console.log(table.join("\n"));
