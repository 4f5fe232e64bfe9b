/**
 * The WebGPU engine against the CPU backend on full-size LLM layers (by default the issue's largest, 8192x28672, 235M
 * elements: tiling, dispatch limits and 32-bit indexing at scale), on the benchmark's data (bench/llm_layer.ts). Too
 * slow for CI on lavapipe (about 30 s of GPU work per case there), so it is run by hand and by bench/device_run.sh:
 *
 *   ./node_modules/.bin/deno run -A bench/full_shape_parity.ts --fallback
 *
 * Flags: --shapes 8192x28672,4096x4096 --patterns layer,row,2:4 --methods zpruner,wanda,ria,magnitude --dtype f16
 *   --sparsity 0.5 --fallback (accept a software adapter such as lavapipe).
 * Prints one JSON line per case: differing mask bits, how many lie outside API.md's 1e-5 band (none may; for
 * magnitude, whose scores both backends compute exactly, none may differ at all), the widest relative distance of a
 * differing score from its threshold, and both backends' times. Exits 1 when a case differs where it may not, prunes
 * another count, or was answered by the exact CPU path instead of the GPU; 2 without an adapter.
 */
import { parseArgs } from "node:util";
import { DEFAULT_EXPONENT, type DType, type Method, parsePattern } from "../contract/api.ts";
import type { LayerJob, PruneParams } from "../prune/backend.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { GpuEngine } from "../gpu/engine.ts";
import { llmLayer } from "./llm_layer.ts";
import { bandDifferences } from "../tests/_band.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shapes: { type: "string", default: "8192x28672" },
    patterns: { type: "string", default: "layer,row,2:4" },
    methods: { type: "string", default: "zpruner" },
    dtype: { type: "string", default: "f16" },
    sparsity: { type: "string", default: "0.5" },
    fallback: { type: "boolean", default: false },
  },
});

const engine = await GpuEngine.create({ allowFallback: values.fallback });
if (!engine) {
  console.error("no WebGPU adapter (pass --fallback to accept a software one)");
  Deno.exit(2);
}
console.error(`adapter: ${engine.description}${engine.isFallback ? " (fallback)" : ""}`);
await engine.warm();
const cpu = createCpuBackend({});
const copy = (l: LayerJob): LayerJob => ({ ...l, weight: l.weight.slice(), actNormSq: l.actNormSq?.slice() ?? null });
const ms = (t: number) => Math.round(performance.now() - t);

let failed = 0;
for (const shape of values.shapes.split(",")) {
  const [rows, cols] = shape.split("x").map(Number) as [number, number];
  const layer = llmLayer(rows, cols, values.dtype as DType);
  for (const method of values.methods.split(",") as Method[]) {
    for (const patternText of values.patterns.split(",")) {
      const pattern = parsePattern(patternText, Number(values.sparsity));
      const params: PruneParams = {
        method,
        pattern,
        exponent: DEFAULT_EXPONENT[method],
        returnWeight: false,
        returnScore: true,
      };
      const where = { shape, dtype: values.dtype, method, pattern: patternText };
      try {
        let t = performance.now();
        // The GPU's scores are not compared (the masks are): not reading them back saves ~940 MB per large case.
        const { output: got } = await engine.prune({ ...params, returnScore: false }, copy(layer));
        const gpuMs = ms(t);
        t = performance.now();
        const ref = await cpu.prune(params, copy(layer));
        const cpuMs = ms(t);
        const unit = pattern.kind === "layer" ? rows * cols : pattern.kind === "row" ? cols : pattern.m;
        const d = bandDifferences(got.mask, ref.mask, ref.score!, unit);
        // Magnitude scores are |W| on both backends, exactly: there the tie-break by index must match bit for bit.
        const inBand = method === "magnitude" ? d.differing === 0 : d.outside === 0;
        const ok = inBand && got.stats.pruned === ref.stats.pruned && !got.exactPath;
        if (!ok) failed++;
        console.log(JSON.stringify({
          ...where,
          ok,
          differing: d.differing,
          outsideBand: d.outside,
          // Infinity (a unit the CPU pruned nothing of, or a zero threshold) as a string: JSON has no Infinity.
          worstRelDistance: Number.isFinite(d.worst) ? d.worst : String(d.worst),
          pruned: [got.stats.pruned, ref.stats.pruned],
          exactPath: got.exactPath ?? null,
          gpuMs,
          cpuMs,
        }));
      } catch (e) {
        // A failed case is a line of its own; the others still run.
        failed++;
        console.log(JSON.stringify({ ...where, ok: false, error: e instanceof Error ? e.message : String(e) }));
      }
    }
  }
}
engine.destroy();
await cpu.close();
console.error(failed ? `${failed} case(s) failed` : "all cases agree outside the band");
Deno.exit(failed ? 1 : 0);
