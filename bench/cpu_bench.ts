/**
 * CPU backend benchmark: milliseconds per stage (decode, score, select, stats) of f16 layers for the layer,
 * row and 2:4 patterns, next to two NumPy peers run in the same invocation on the same shapes, and the ratio of totals
 * (peer / zprune: above 1 is faster):
 * - the issue's peer, `bench/numpy_peer.py`, a copy of `../shared/tools/numpy_peer.py` (the target is set against
 *   it). It draws its own layers, prunes every score equal to the k-th (so not the contract's masks where scores tie)
 *   and packs one mask for all patterns; its total per pattern is decode + score + that pattern's select + pack.
 * - the exact peer, `bench/numpy_exact_peer.py`: the contract's masks and stats, written with few temporaries, on
 *   zprune's own bytes (read from a temporary directory). Its masks are compared with zprune's bit for bit; a
 *   difference the contract does not allow (between scores further apart than float32 resolves) ends the run with
 *   status 1 after the table.
 *
 *   deno task bench [--repeat N] [--workers N] [ROWSxCOLS ...]   (default 4096x4096 11008x4096, best of 3, one
 *   worker per core)
 *
 * Both sides build a mask and its stats from f16 weights and f32 activations already in memory (reading and
 * writing the files is outside the peer's timing), best of N runs after one warm-up, the best run's total. The peer's
 * total for a pattern is decode + score + select + pack + stats, ours decode + score + select (packing happens while
 * selecting) + stats. NumPy runs on one core; zprune on `--workers` (default one per core): the table says how many.
 */
import { fileURLToPath } from "node:url";
import type { Pattern } from "../contract/api.ts";
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { createPoolExecutor } from "../prune/cpu_backend.ts";
import { f16Bits } from "../contract/dtype_codec.ts";
import { pruneLayerWith, type StageTimes } from "../prune/prune_layer.ts";

const USAGE = "usage: deno task bench [--repeat N] [--workers N] [ROWSxCOLS ...]   (default 4096x4096 11008x4096, " +
  "best of 3, one worker per core)";

/** The run's settings from the command line; a bad one ends the process with the usage, not a peer's traceback. */
function parseArgs(args: string[]): { repeat: number; workers: number; shapes: [number, number][] } {
  let repeat = 3, workers = navigator.hardwareConcurrency || 2;
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
    } else if (a === "--repeat" || a === "--workers") {
      const v = /^\d+$/.test(args[i + 1] ?? "") ? Number(args[++i]) : fail(`${a} needs a count, got ${args[i + 1]}`);
      if (v < 1) fail(`${a} must be at least 1`);
      if (a === "--repeat") repeat = v;
      else workers = v;
    } else if (/^\d+x\d+$/.test(a)) {
      const [rows, cols] = a.split("x").map(Number) as [number, number];
      if (rows < 1 || cols < 1) fail(`${a}: rows and columns must be at least 1`);
      shapes.push([rows, cols]);
    } else {
      fail(`unknown argument ${a}`);
    }
  }
  return { repeat, workers, shapes: shapes.length ? shapes : [[4096, 4096], [11008, 4096]] };
}

/** Gaussian(0, 1) by Box-Muller from a seeded LCG. */
function gaussian(seed: number): () => number {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

/** An f16 layer of N(0, 0.02²) weights with positive, gamma-like activations (seeded by its shape). */
export function makeLayer(rows: number, cols: number): LayerJob {
  const g = gaussian(rows * 31 + cols);
  const w = new Uint16Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = f16Bits(g() * 0.02);
  const act = new Float32Array(cols);
  for (let j = 0; j < cols; j++) act[j] = Math.abs(g() + g()) + 0.5;
  return { name: `bench-${rows}x${cols}`, rows, cols, dtype: "f16", weight: new Uint8Array(w.buffer), actNormSq: act };
}

/** The bench's patterns: its label, the pattern, and the peer's name for it. */
export const PATTERNS: [string, Pattern, string][] = [
  ["layer", { kind: "layer", sparsity: 0.5 }, "layer"],
  ["row", { kind: "row", sparsity: 0.5 }, "row"],
  ["2:4", { kind: "nm", n: 2, m: 4 }, "2of4"],
];

/** What the peer printed for one shape (ms per stage and per pattern's total, stats) and its packed masks. */
export interface PeerResult {
  times: Record<string, number>;
  masks: Record<string, Uint8Array>;
  stats: Record<string, { pruned: number; rowSparsity: { min: number; max: number } }>;
}

/** The environment of a NumPy peer: OpenBLAS workarounds set on some hosts slow a current NumPy's import. */
function peerEnv(): Record<string, string> {
  const env = { ...Deno.env.toObject() };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  return env;
}

/**
 * Runs bench/numpy_peer.py (the issue's peer) once on `shapes`, its own layers of them; each pattern's total (decode +
 * score + its select + pack, each the best of `repeat`) by "ROWSxCOLS" and the peer's name for the pattern.
 */
export async function issuePeer(
  shapes: [number, number][],
  repeat: number,
): Promise<Record<string, Record<string, number>>> {
  const out = await new Deno.Command("python3", {
    args: [
      fileURLToPath(new URL("./numpy_peer.py", import.meta.url)),
      "--repeat",
      String(repeat),
      ...shapes.map(([r, c]) => `${r}x${c}`),
    ],
    env: peerEnv(),
    clearEnv: true,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error("numpy_peer.py failed");
  const results: Record<string, Record<string, number>> = {};
  for (const line of new TextDecoder().decode(out.stdout).trim().split("\n")) {
    const t = JSON.parse(line);
    const common = t.decode_ms + t.score_ms + t.pack_ms;
    results[t.shape.join("x")] = Object.fromEntries(
      PATTERNS.map(([, , p]) => [p, common + t[`select_${p}_ms`]]),
    );
  }
  return results;
}

/**
 * Runs bench/numpy_exact_peer.py once on `layers` (f16, Z-Pruner, sparsity 0.5: its only case), reading their bytes
 * from a temporary directory and writing its masks there; results by "ROWSxCOLS".
 */
export async function numpyPeer(layers: LayerJob[], repeat: number): Promise<Record<string, PeerResult>> {
  const dir = await Deno.makeTempDir({ prefix: "zprune-numpy-peer-" });
  try {
    for (const l of layers) {
      await Deno.writeFile(`${dir}/${l.rows}x${l.cols}.w16`, l.weight);
      const act = l.actNormSq!;
      await Deno.writeFile(
        `${dir}/${l.rows}x${l.cols}.act`,
        new Uint8Array(act.buffer, act.byteOffset, act.byteLength),
      );
    }
    const out = await new Deno.Command("python3", {
      args: [
        fileURLToPath(new URL("./numpy_exact_peer.py", import.meta.url)),
        "--repeat",
        String(repeat),
        "--data",
        dir,
        "--masks",
        dir,
        ...layers.map((l) => `${l.rows}x${l.cols}`),
      ],
      env: peerEnv(),
      clearEnv: true,
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error("numpy_exact_peer.py failed");
    const results: Record<string, PeerResult> = {};
    for (const line of new TextDecoder().decode(out.stdout).trim().split("\n")) {
      const { stats, shape, numpy: _v, threads: _t, ...times } = JSON.parse(line);
      const key = shape.join("x");
      const masks: Record<string, Uint8Array> = {};
      for (const [, , p] of PATTERNS) masks[p] = await Deno.readFile(`${dir}/${key}.${p}.mask`);
      results[key] = { times, masks, stats };
    }
    return results;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Number of bits that differ between two packed masks (a length difference counts every missing bit). */
export function maskDiffBits(a: Uint8Array, b: Uint8Array): number {
  let diff = Math.abs(a.length - b.length) * 8;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    let x = a[i]! ^ b[i]!;
    while (x) {
      diff += x & 1;
      x >>>= 1;
    }
  }
  return diff;
}

/**
 * How many of the bits where `peer` differs from `ours` the contract does not allow. Within a selection unit (the
 * layer, a row, a group of M) a key may change sides only where its score is within float32's resolution (relative
 * 1e-5, API.md) of a key on the other side: a pruned one of the largest kept-side score, a kept one of the lowest.
 * `score` is zprune's. The peer's float32 sums round differently from zprune's float64 ones, so on a large layer a
 * few such keys near the cut may swap; any other difference is the peer's error.
 */
export function disallowedDiffs(
  ours: Uint8Array,
  peer: Uint8Array,
  score: Float32Array,
  pattern: Pattern,
  cols: number,
): number {
  const n = score.length;
  const unitOf = pattern.kind === "layer"
    ? () => 0
    : pattern.kind === "row"
    ? (i: number) => Math.floor(i / cols)
    : (i: number) => Math.floor(i / pattern.m);
  const units = unitOf(n - 1) + 1;
  const maxPruned = new Float64Array(units).fill(-Infinity), minKept = new Float64Array(units).fill(Infinity);
  const bit = (m: Uint8Array, i: number) => (m[i >>> 3]! >> (i & 7)) & 1;
  for (let i = 0; i < n; i++) {
    const u = unitOf(i), s = score[i]!;
    if (bit(ours, i)) maxPruned[u] = Math.max(maxPruned[u]!, s);
    else minKept[u] = Math.min(minKept[u]!, s);
  }
  const near = (a: number, b: number) => Math.abs(a - b) <= 1e-5 * Math.max(Math.abs(a), Math.abs(b));
  let bad = 0;
  for (let i = 0; i < n; i++) {
    if (bit(ours, i) === bit(peer, i)) continue;
    const u = unitOf(i), s = score[i]!;
    if (!near(s, bit(ours, i) ? minKept[u]! : maxPruned[u]!)) bad++;
  }
  return bad;
}

async function main(): Promise<void> {
  const { repeat, workers, shapes } = parseArgs(Deno.args);
  const layers = shapes.map(([rows, cols]) => makeLayer(rows, cols));
  const peer = await numpyPeer(layers, repeat);
  const issue = await issuePeer(shapes, repeat);
  const exec = createPoolExecutor(workers);
  const table: string[] = [];
  let mismatches = 0;
  try {
    for (const layer of layers) {
      const { rows, cols } = layer;
      const p = peer[`${rows}x${cols}`]!;
      for (const [label, pattern, peerName] of PATTERNS) {
        const params: PruneParams = {
          method: "zpruner",
          pattern,
          exponent: 1.5,
          returnWeight: false,
          returnScore: false,
        };
        let best: StageTimes & { total: number } | null = null;
        let mask: Uint8Array | null = null;
        for (let i = 0; i < repeat + 1; i++) {
          const st: StageTimes = { decode: 0, score: 0, select: 0, stats: 0 };
          mask = (await pruneLayerWith(exec, params, layer, undefined, st)).mask;
          const total = st.decode + st.score + st.select + st.stats;
          if (i > 0 && (!best || total < best.total)) best = { ...st, total }; // the first run warms the JIT
        }
        const diff = maskDiffBits(mask!, p.masks[peerName]!);
        let disallowed = 0;
        if (diff) {
          // Untimed: zprune's scores, to tell differences the contract allows (near-equal scores) from errors.
          const { score } = await pruneLayerWith(exec, { ...params, returnScore: true }, layer);
          disallowed = disallowedDiffs(mask!, p.masks[peerName]!, score!, pattern, cols);
        }
        mismatches += disallowed;
        const t = (stage: string) => p.times[`${stage}_${peerName}_ms`]!;
        const peerTotal = p.times[`${peerName}_total_ms`]!;
        const issueTotal = issue[`${rows}x${cols}`]![peerName]!;
        const r = best!;
        const line = {
          shape: [rows, cols],
          pattern: label,
          workers,
          zprune_ms: {
            decode: +r.decode.toFixed(1),
            score: +r.score.toFixed(1),
            select: +r.select.toFixed(1),
            stats: +r.stats.toFixed(1),
            total: +r.total.toFixed(1),
          },
          numpy_ms: {
            decode: p.times.decode_ms,
            score: p.times.score_ms,
            select: t("select"),
            pack: t("pack"),
            stats: t("stats"),
            total: +peerTotal.toFixed(1),
          },
          mask_diff_bits: diff,
          mask_diff_disallowed: disallowed,
          speedup: +(peerTotal / r.total).toFixed(2),
          issue_peer_total_ms: +issueTotal.toFixed(1),
          speedup_vs_issue_peer: +(issueTotal / r.total).toFixed(2),
        };
        console.log(JSON.stringify(line));
        table.push(
          `| ${rows}x${cols} | ${label} | ${r.decode.toFixed(0)} | ${r.score.toFixed(0)} | ${r.select.toFixed(0)} | ${
            r.stats.toFixed(0)
          } | **${r.total.toFixed(0)}** | ${issueTotal.toFixed(0)} | **${line.speedup_vs_issue_peer}x** | ${
            peerTotal.toFixed(0)
          } | ${diff} | **${line.speedup}x** |`,
        );
      }
    }
  } finally {
    exec.close();
  }
  console.log(`\nzprune on ${workers} worker${workers === 1 ? "" : "s"}, NumPy on one core; best of ${repeat}.`);
  console.log(
    "| shape | pattern | decode | score | select | stats | zprune total ms | issue's peer ms | speed-up " +
      "| exact peer ms | mask bits differing | speed-up |",
  );
  console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  console.log(table.join("\n"));
  if (mismatches) {
    console.error(
      `cpu_bench: the NumPy peer's masks differ from zprune's in ${mismatches} bits beyond near-equal scores: see ` +
        "mask_diff_disallowed",
    );
    Deno.exit(1);
  }
}

if (import.meta.main) await main();
