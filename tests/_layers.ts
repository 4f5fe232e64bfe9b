// Layers for tests that hand arrays to a backend, an engine or a worker: those take ownership of (transfer) what
// they are given, so a test that needs a layer again passes a copy.
import type { LayerJob } from "../prune/backend.ts";
import { encode } from "../contract/dtype_codec.ts";
import { rng } from "./_random.ts";

/** A rows x cols f32 layer of varied weights (seeded), with activations. */
export function seededLayer(name: string, rows: number, cols: number, seed = 1): LayerJob {
  const rand = rng(seed);
  const w = Float32Array.from({ length: rows * cols }, () => (rand() * 2 - 1) * 0.05);
  const act = Float32Array.from({ length: cols }, () => rand() * 4 + 0.1);
  return { name, rows, cols, dtype: "f32", weight: encode(w, "f32"), actNormSq: act };
}

/** A copy of a layer whose arrays a callee may take (transfer, detach) while the test still needs them. */
export function copyLayer(l: LayerJob): LayerJob {
  return { ...l, weight: l.weight.slice(), actNormSq: l.actNormSq?.slice() ?? null };
}
