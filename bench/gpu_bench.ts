/**
 * GPU benchmark of the WebGPU engine: per case, GPU milliseconds per stage (timestamp queries where the adapter has
 * them, else wall time around each stage's submit) and wall milliseconds per request (upload, all stages, read-back
 * of the mask), best and median of `--repeat` runs after one warm-up. Prints one JSON line per case.
 *
 * Runs the engine in-process (no worker), so it also works as a single-file bundle on a GPU machine:
 *   ./node_modules/.bin/deno bundle bench/gpu_bench.ts -o .gpu-bundle/gpu-bench.js
 *   ./node_modules/.bin/deno run -A .gpu-bundle/gpu-bench.js --shapes 4096x4096
 *
 * Flags: --shapes 4096x4096,4096x11008 (default: the five LLM shapes below) --patterns layer,row,2:4
 *   --method zpruner|wanda|ria|magnitude --dtype f16|bf16|f32 --sparsity 0.5 --repeat 5 --fallback (allow a software
 *   adapter such as lavapipe; use small shapes there) --wall (time stages by wall clock even where timestamp queries
 *   exist) --return-weight --return-score --trace (log every stage, submit, read-back and answer of every run to
 *   stderr, with milliseconds since start: where a run stalls; add --wall to also submit and wait for each stage on its
 *   own)
 *   --resident (time the stages on weights uploaded once, back to back, as the torch anchor times its loop; request
 *   time still includes the upload) --per-dispatch (each dispatch in a timed pass of its own; stageMs per
 *   `stage.kernel`, for finding where a stage's time goes; the extra passes add barriers)
 * Per case: one warm-up, `--repeat` whole requests (request ms), then `--repeat` profiled runs: `gpuMs` sums the
 * per-stage medians, `gpuMsBest` the per-stage minima (a lower bound no single run need have reached), `gpuSpanMs`
 * (with timestamps) the median span from the first pass's start to the last one's end, gaps between passes and the
 * buffer clears recorded between them included: the figure to set beside the torch anchor's wall clock around its
 * back-to-back loop, which counts its own gaps between kernels. A case whose warm-up took the exact CPU path (see
 * docs/GPU.md) prints `exactPath` (why) instead of timings. Progress (adapter,
 * each case's start) goes to stderr; results to stdout.
 */
import { parseArgs } from "node:util";
import { DEFAULT_EXPONENT, type DType, type Method, parsePattern } from "../contract/api.ts";
import type { PruneParams } from "../prune/backend.ts";
import { ExactPathNeeded, GpuEngine, type PruneOptions } from "../gpu/engine.ts";
import { llmLayer } from "./llm_layer.ts";

/** Linear-layer shapes of 7B-70B class models: attention, MLP up/gate and down, and a wide MLP. */
const DEFAULT_SHAPES = ["4096x4096", "4096x11008", "11008x4096", "14336x4096", "8192x28672"];

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shapes: { type: "string", default: DEFAULT_SHAPES.join(",") },
    patterns: { type: "string", default: "layer,row,2:4" },
    method: { type: "string", default: "zpruner" },
    dtype: { type: "string", default: "f16" },
    sparsity: { type: "string", default: "0.5" },
    repeat: { type: "string", default: "5" },
    fallback: { type: "boolean", default: false },
    wall: { type: "boolean", default: false },
    "return-weight": { type: "boolean", default: false },
    "return-score": { type: "boolean", default: false },
    trace: { type: "boolean", default: false },
    resident: { type: "boolean", default: false },
    "per-dispatch": { type: "boolean", default: false },
  },
});

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)]!;
}

const round = (x: number) => Math.round(x * 1000) / 1000;
const t0 = performance.now();
/** A progress line on stderr, stamped with milliseconds since start. */
const progress = (what: string) => console.error(`[${(performance.now() - t0).toFixed(1)} ms] ${what}`);
const trace = values.trace ? progress : undefined;

const engine = await GpuEngine.create({ allowFallback: values.fallback });
if (!engine) {
  console.error("no WebGPU adapter (pass --fallback to accept a software one)");
  Deno.exit(2);
}
progress(`adapter: ${engine.description}${engine.isFallback ? " (fallback)" : ""}`);
await engine.warm();
progress("kernels compiled");
const method = values.method as Method;
const dtype = values.dtype as DType;
const repeat = Math.max(1, Number(values.repeat));

for (const shape of values.shapes.split(",")) {
  const [rows, cols] = shape.split("x").map(Number) as [number, number];
  const layer = llmLayer(rows, cols, dtype);
  progress(`layer ${shape} ${dtype} made`);
  for (const patternText of values.patterns.split(",")) {
    const params: PruneParams = {
      method,
      pattern: parsePattern(patternText, Number(values.sparsity)),
      exponent: DEFAULT_EXPONENT[method],
      returnWeight: values["return-weight"],
      returnScore: values["return-score"],
    };
    progress(`case ${shape} ${patternText}: warm-up`);
    const requestMs: number[] = [];
    const stageRuns: Record<string, number[]> = {};
    const spans: number[] = [];
    let source = "";
    let exactPath: string | null = null;
    /** One call; notes when the exact CPU path answered it (the case then has no GPU time to report). */
    const run = async (opts: PruneOptions) => {
      const r = await engine.prune(params, layer, opts);
      exactPath ??= r.output.exactPath ?? null;
      return r;
    };
    try {
      await run({ trace }); // warm-up: pipelines, pool buffers
      // Request time: whole calls, upload to mask read-back, without profiling (which adds a sync per stage
      // where timestamps are missing).
      for (let i = 0; i < repeat && !exactPath; i++) {
        const t0 = performance.now();
        await run({ trace });
        requestMs.push(performance.now() - t0);
      }
      // GPU time: profiled calls back to back; with --resident on weights uploaded once, as the torch anchor's are.
      const resident = values.resident && !exactPath ? engine.upload(layer) : undefined;
      try {
        if (resident) await run({ resident, trace });
        for (let i = 0; i < repeat && !exactPath; i++) {
          const { stages } = await run({
            profile: values.wall ? "wall" : values["per-dispatch"] ? "per-dispatch" : true,
            trace,
            resident,
          });
          if (!stages) break; // answered on the exact path
          source = stages.source;
          if (stages.spanMs !== undefined) spans.push(stages.spanMs);
          for (const [k, v] of Object.entries(stages.ms)) (stageRuns[k] ??= []).push(v);
        }
      } finally {
        resident?.destroy();
      }
    } catch (e) {
      if (!(e instanceof ExactPathNeeded)) throw e; // resident weights cannot take the exact path
      exactPath ??= e.why;
    }
    if (exactPath) {
      // The CPU answered (f32 could not give its masks, or the layer does not fit): no GPU time to report.
      console.log(
        JSON.stringify({
          device: engine.description,
          shape: [rows, cols],
          dtype,
          method,
          pattern: patternText,
          exactPath,
        }),
      );
      continue;
    }
    const stageMs: Record<string, number> = {};
    let gpuMs = 0, gpuMsBest = 0;
    for (const [k, v] of Object.entries(stageRuns)) {
      stageMs[k] = round(median(v));
      gpuMs += median(v);
      gpuMsBest += Math.min(...v);
    }
    console.log(JSON.stringify({
      device: engine.description,
      shape: [rows, cols],
      dtype,
      method,
      pattern: patternText,
      repeat,
      timing: source,
      weights: values.resident ? "resident" : "uploaded",
      stageMs,
      gpuMs: round(gpuMs),
      gpuMsBest: round(gpuMsBest),
      ...(spans.length ? { gpuSpanMs: round(median(spans)) } : {}),
      requestMs: { best: round(Math.min(...requestMs)), median: round(median(requestMs)) },
    }));
  }
}
engine.destroy();
