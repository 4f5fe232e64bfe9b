/**
 * `deno task reproduce`: reproduces every entry of models/zp-llama-9m/reference.json with sequential pruning through
 * the endpoint (in-process app on the CPU backend, or --server URL), and prints ours vs the reference with the
 * relative error. Every method/pattern is measured on the first 64 test windows; dense and zpruner/layer also on
 * the whole test set (skip with --quick). --json FILE keeps the figures. --layer-rule le-kth prunes the layer entries
 * as the reference did (model/layer_rule.ts) instead of the contract's exactly k.
 */
import { parseArgs } from "node:util";
import { ZpruneClient } from "../client/mod.ts";
import {
  ForwardPool,
  gatherWindows,
  LAYER_RULES,
  type LayerRule,
  loadModel,
  perplexity,
  type PerplexityResult,
  pruneSequential,
  readI64,
  readU16,
} from "../model/mod.ts";
import { DEFAULTS } from "../cli/prune.ts";
import { startLocalServer } from "../cli/_local_server.ts";

const USAGE = `usage: deno task reproduce [--quick] [--only KEY[,KEY]] [--json FILE] [--layer-rule R]
                           [--server URL [--token T]]
  --quick            only the first 64 test windows (skips dense and zpruner/layer on the whole test set)
  --only KEY[,KEY]   only these entries of reference.json: dense, or method/pattern such as zpruner/2:4
  --json FILE        also write the figures as JSON
  --layer-rule R     the layer entries' masks: exact (default, the server's: exactly k) or le-kth (every score at
                     most the (k+1)-th lowest, as the reference's code pruned)
  --server URL       prune through a running server instead of an in-process one (--token, or $ZPRUNE_TOKEN)`;

let parsed;
try {
  parsed = parseArgs({
    args: Deno.args,
    options: {
      server: { type: "string" },
      token: { type: "string" },
      quick: { type: "boolean" },
      json: { type: "string" },
      only: { type: "string" },
      "layer-rule": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
} catch (e) {
  console.error(`reproduce: ${e instanceof Error ? e.message : e}\n${USAGE}`);
  Deno.exit(2);
}
const { values: v } = parsed;
if (v.help) {
  console.log(USAGE);
  Deno.exit(0);
}
const refPath = `${DEFAULTS.model}/reference.json`;
const ref = JSON.parse(await Deno.readTextFile(refPath)) as {
  seq: number;
  eval_windows: number;
  sparsity: number;
  dense_ppl: [number, number];
  ppl: Record<string, [number, number]>;
};
// Refused before the long run starts, as the prune CLI refuses them: a key the reference does not have would print an
// empty table, and a token without a server would be sent nowhere.
const refuse = (why: string): never => {
  console.error(`reproduce: ${why}\n${USAGE}`);
  Deno.exit(2);
};
const known = ["dense", ...Object.keys(ref.ppl)];
const only = v.only?.split(",").map((k) => k.trim());
const unknown = only?.filter((k) => !known.includes(k)) ?? [];
if (unknown.length) refuse(`--only: ${unknown.join(", ")} not in reference.json (it has ${known.join(", ")})`);
if (v.token !== undefined && v.server === undefined) refuse("--token needs --server (the in-process server has none)");
const layerRule = (v["layer-rule"] ?? "exact") as LayerRule;
if (!LAYER_RULES.includes(layerRule)) refuse(`--layer-rule: ${layerRule} is not ${LAYER_RULES.join(" or ")}`);
const T = ref.seq, N = ref.eval_windows;
const testIds = await readU16(DEFAULTS.evalIds);
const starts = await readI64(DEFAULTS.calibStarts);
const calib = gatherWindows(await readU16(DEFAULTS.calibIds), starts, T);
const local = v.server === undefined ? await startLocalServer() : undefined;
const client = new ZpruneClient({ url: local?.url ?? v.server!, token: v.token ?? Deno.env.get("ZPRUNE_TOKEN") });

/** ppl of the first n windows of a full evaluation. */
const firstN = (r: PerplexityResult, n: number) => {
  let s = 0;
  for (let i = 0; i < n; i++) s += r.losses[i]!;
  return Math.exp(s / (n * (T - 1)));
};

interface Row {
  key: string;
  /** The layer entries' rule. */
  layerRule?: LayerRule;
  ours: [number | null, number];
  ref: [number, number];
  pruneMs?: number;
}
const rows: Row[] = [];
const print = (r: Row) => {
  const rel = (a: number | null, b: number) => a === null ? "" : `${((a / b - 1) * 100).toFixed(3)}%`;
  console.log(
    `| ${r.key.padEnd(16)} | ${r.ours[1].toFixed(3).padStart(8)} | ${r.ref[1].toFixed(3).padStart(8)} | ${
      rel(r.ours[1], r.ref[1]).padStart(8)
    } | ${(r.ours[0]?.toFixed(3) ?? "-").padStart(8)} | ${r.ref[0].toFixed(3).padStart(8)} | ${
      rel(r.ours[0], r.ref[0]).padStart(8)
    } |`,
  );
};
// Each cell as wide as the figures below it, whatever the digits of N.
const head = ["ours@" + N, "ref@" + N, "rel. err", "ours@all", "ref@all", "rel. err"].map((h) => h.padStart(8));
if (layerRule !== "exact") console.log(`layer entries under --layer-rule ${layerRule}`);
console.log(`| method/pattern   | ${head.join(" | ")} |`);
console.log("| ---------------- | -------: | -------: | -------: | -------: | -------: | -------: |");

try {
  const keys = known.filter((k) => only === undefined || only.includes(k));
  for (const key of keys) {
    const full = !v.quick && (key === "dense" || key === "zpruner/layer");
    const m = await loadModel(DEFAULTS.model);
    const pool = await ForwardPool.create(m.cfg, m.weights, { seqLen: T, calibWindows: starts.length });
    try {
      let pruneMs: number | undefined;
      if (key !== "dense") {
        const [method, pattern] = key.split("/") as ["zpruner", string];
        const t0 = performance.now();
        await pruneSequential(
          m.ckpt,
          m.cfg,
          pool,
          client,
          {
            method,
            pattern,
            sparsity: /:/.test(pattern) ? undefined : ref.sparsity,
            layerRule: pattern === "layer" ? layerRule : undefined,
          },
          calib,
          starts.length,
        );
        pruneMs = performance.now() - t0;
      }
      const r = await perplexity(pool, testIds, full ? Infinity : N);
      const row: Row = {
        key,
        ours: [full ? r.ppl : null, firstN(r, N)],
        ref: key === "dense" ? ref.dense_ppl : ref.ppl[key]!,
        ...(key.endsWith("/layer") ? { layerRule } : {}),
        pruneMs,
      };
      rows.push(row);
      print(row);
    } finally {
      pool.close();
    }
  }
} finally {
  await local?.close();
}
if (v.json) await Deno.writeTextFile(v.json, JSON.stringify(rows, null, 2) + "\n");
