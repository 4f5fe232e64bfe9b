/**
 * `deno task bench:e2e`: wall time of each stage of pruning the bundled model end to end (zpruner/layer 0.5, the
 * reference's 64 x 256 calibration windows, in-process app on the CPU backend), and forward-pass throughput:
 * one window on the calling thread, and 64 evaluation windows on the worker pool. Best of --runs (default 1).
 */
import { parseArgs } from "node:util";
import { cpus } from "node:os";
import { ZpruneClient } from "../client/mod.ts";
import {
  ForwardPool,
  gatherWindows,
  LlamaRunner,
  loadModel,
  perplexity,
  pruneSequential,
  readI64,
  readU16,
} from "../model/mod.ts";
import { DEFAULTS } from "../cli/prune.ts";
import { startLocalServer } from "../cli/_local_server.ts";

const USAGE = `usage: deno task bench:e2e [--runs N] [--workers N]
  --runs N      best of N runs of every stage (default 1)
  --workers N   forward-pass workers (default: one per core, at most 8)`;

let parsed;
try {
  parsed = parseArgs({
    args: Deno.args,
    options: { runs: { type: "string" }, workers: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
} catch (e) {
  console.error(`bench:e2e: ${e instanceof Error ? e.message : e}\n${USAGE}`);
  Deno.exit(2);
}
const { values: v } = parsed;
if (v.help) {
  console.log(USAGE);
  Deno.exit(0);
}
/** A flag's value as a whole number of at least 1, or exit with the usage. */
function count(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < 1) {
    console.error(`bench:e2e: --${flag} must be a whole number of at least 1, got "${value}"\n${USAGE}`);
    Deno.exit(2);
  }
  return Number(value);
}
const runs = count("runs", v.runs, 1);
const T = DEFAULTS.seqlen, N = DEFAULTS.evalWindows;
const testIds = await readU16(DEFAULTS.evalIds);
const starts = await readI64(DEFAULTS.calibStarts);
const calib = gatherWindows(await readU16(DEFAULTS.calibIds), starts, T);

const best: Record<string, number> = {};
const keep = (k: string, ms: number) => (best[k] = Math.min(best[k] ?? Infinity, ms));
const local = await startLocalServer();
const client = new ZpruneClient({ url: local.url });
let workers = 0;
try {
  for (let run = 0; run < runs; run++) {
    let t = performance.now();
    const m = await loadModel(DEFAULTS.model);
    keep("load checkpoint (f16 -> f32)", performance.now() - t);

    // One window on this thread: the kernels without worker overhead.
    const single = new LlamaRunner(m.cfg, m.weights, { seqLen: T });
    single.forward(testIds.subarray(0, T)); // warm-up (JIT, page faults)
    t = performance.now();
    for (let w = 1; w <= 4; w++) single.forward(testIds.subarray(w * T, (w + 1) * T));
    keep("forward, 1 window, 1 thread (per window)", (performance.now() - t) / 4);

    t = performance.now();
    const pool = await ForwardPool.create(m.cfg, m.weights, {
      seqLen: T,
      calibWindows: starts.length,
      workers: v.workers === undefined ? undefined : count("workers", v.workers, 1),
    });
    workers = pool.size;
    keep("start workers", performance.now() - t);
    try {
      const dense = await perplexity(pool, testIds, N);
      keep(`dense eval, ${N} windows`, dense.ms);
      t = performance.now();
      const res = await pruneSequential(
        m.ckpt,
        m.cfg,
        pool,
        client,
        {
          method: "zpruner",
          pattern: "layer",
          sparsity: 0.5,
        },
        calib,
        starts.length,
      );
      keep("sequential pruning, total", performance.now() - t);
      const sum = (f: (b: (typeof res.blocks)[number]) => number) => res.blocks.reduce((a, b) => a + f(b), 0);
      keep("pruning: calibration forwards (collect)", sum((b) => b.collectMs));
      keep("pruning: 6 requests of 7 layers (HTTP round trip)", sum((b) => b.requestMs));
      keep("pruning: server compute within those requests", sum((b) => b.server.computeMs));
      keep("pruning: apply masks", sum((b) => b.applyMs));
      keep("pruning: advance the cached states (pruned blocks)", sum((b) => b.advanceMs ?? 0));
      const pruned = await perplexity(pool, testIds, N);
      keep(`pruned eval, ${N} windows`, pruned.ms);
      console.error(`run ${run + 1}: dense ${dense.ppl.toFixed(4)} pruned ${pruned.ppl.toFixed(4)}`);
    } finally {
      pool.close();
    }
  }
} finally {
  await local.close();
}

const tokS = (ms: number, tokens: number) => Math.round(tokens / (ms / 1000)).toLocaleString("en-US");
console.log(`CPU: ${cpus()[0]?.model?.trim()} (${cpus().length} cores), forward workers: ${workers}, runs: ${runs}`);
console.log("| stage | wall time | throughput |");
console.log("| --- | ---: | ---: |");
for (const [k, ms] of Object.entries(best)) {
  let thr = "";
  if (k.startsWith("forward, 1 window")) thr = `${tokS(ms, T)} tok/s`;
  if (k.includes("eval,")) thr = `${tokS(ms, N * T)} tok/s`;
  console.log(`| ${k} | ${ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : ms.toFixed(1) + " ms"} | ${thr} |`);
}
