/**
 * Run by tests/client_upload_test.ts: sends one f32 layer of `MiB` mebibytes (args: url, MiB) through the client to a
 * server that reads the body and answers an error, and prints on stdout how much the process's peak resident memory
 * grew past the weights themselves, in copies of them: `{"copies": ...}` (Linux: /proc/self/status).
 */
import { tensor, ZpruneClient, ZpruneError } from "../client/mod.ts";

const [url, mib] = [Deno.args[0]!, Number(Deno.args[1] ?? 128)];
/** The peak resident set so far, in bytes. */
const peak = () => Number(/VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"))![1]) * 1024;

/** Sends a layer of `weights`, which the server refuses. */
async function send(weights: Float32Array, rows: number): Promise<void> {
  try {
    await new ZpruneClient({ url, retries: 0 }).pruneLayers({
      method: "magnitude",
      sparsity: 0.5,
      layers: [{ name: "w", weight: tensor("f32", [rows, weights.length / rows], weights) }],
    });
    throw new Error("the server was expected to answer an error");
  } catch (e) {
    if (!(e instanceof ZpruneError) || e.code !== "invalid_request") throw e;
  }
}

const bytes = mib * 2 ** 20;
await send(new Float32Array(64), 1); // fetch's own start-up memory is no copy of the weights
const weights = new Float32Array(bytes / 4).fill(0.5); // every page touched: resident before the baseline
const before = peak();
await send(weights, 1024);
console.log(JSON.stringify({ copies: (peak() - before) / bytes }));
