/**
 * A forward-pass worker: owns one `LlamaRunner` and answers the pool's requests (model/pool.ts) one at a time.
 * Messages are `{id, op, ...}`; answers are `{id, result}` or `{id, error}`.
 */
/// <reference lib="deno.worker" />
import type { LinearName, LlamaConfig, LlamaWeights } from "./config.ts";
import { type BlockStats, emptyStats, LlamaRunner } from "./llama.ts";

/** A request from the pool. */
export type WorkerRequest =
  | { id: number; op: "init"; cfg: LlamaConfig; weights: LlamaWeights; seqLen: number; cacheTokens: number }
  | { id: number; op: "loss"; tokens: Uint16Array | Int32Array; windows: number }
  | { id: number; op: "cacheEmbed"; tokens: Uint16Array | Int32Array; windows: number }
  | { id: number; op: "cacheBlock"; layer: number; collect: boolean }
  | { id: number; op: "maskLinear"; layer: number; name: LinearName; mask: Uint8Array };

let runner: LlamaRunner | undefined;

function handle(msg: WorkerRequest): unknown {
  if (msg.op === "init") {
    runner = new LlamaRunner(msg.cfg, msg.weights, { seqLen: msg.seqLen, cacheTokens: msg.cacheTokens });
    return null;
  }
  if (!runner) throw new Error("worker used before init");
  switch (msg.op) {
    case "loss": {
      const T = runner.T, losses = new Float64Array(msg.windows);
      for (let w = 0; w < msg.windows; w++) losses[w] = runner.windowLoss(msg.tokens.subarray(w * T, (w + 1) * T));
      return losses;
    }
    case "cacheEmbed":
      runner.cacheEmbed(msg.tokens, msg.windows);
      return null;
    case "cacheBlock": {
      const stats: BlockStats | undefined = msg.collect ? emptyStats(runner.cfg) : undefined;
      runner.cacheBlock(msg.layer, stats);
      return stats ?? null;
    }
    case "maskLinear":
      runner.maskLinear(msg.layer, msg.name, msg.mask);
      return null;
  }
}

self.onmessage = (e: MessageEvent<WorkerRequest>) => {
  try {
    self.postMessage({ id: e.data.id, result: handle(e.data) });
  } catch (err) {
    self.postMessage({ id: e.data.id, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
  }
};
