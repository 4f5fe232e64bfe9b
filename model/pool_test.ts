import assert from "node:assert/strict";
import { emptyStats, ForwardPool, LlamaRunner, loadModel, runnerArenaSize, storedWeightBytes } from "./mod.ts";
import { cpuLimit } from "../runtime/host_limits.ts";

const MODEL = new URL("../models/zp-llama-9m", import.meta.url).pathname;

Deno.test("ForwardPool.create() starts no more workers than memory holds, and names how many would fit", async () => {
  const m = await loadModel(MODEL);
  const opts = { seqLen: 256, calibWindows: 64 };
  // What n workers hold as they start, by the pool's own account: each its arena (the calibration cache split n
  // ways) and its runtime (48 MiB), and one copy of the weights they all start from. Two fit within `two`, three
  // do not.
  const needs = (n: number) => {
    const weights = storedWeightBytes(m.weights);
    const size = runnerArenaSize(m.cfg, { seqLen: 256, cacheTokens: Math.ceil(64 / n) * 256 }, undefined, weights);
    return n * (size.total + 48 * 2 ** 20) + weights;
  };
  const two = needs(2) + 1;
  assert.ok(needs(3) > two);
  await assert.rejects(
    ForwardPool.create(m.cfg, m.weights, { ...opts, workers: 4, memoryBytes: two }),
    (e: Error) =>
      e instanceof RangeError &&
      /^4 forward workers \(--workers\) need about .* available; 2 would fit$/.test(e.message),
  );
  // Asked for by default: as many as the cores give and the memory holds.
  const cores = Math.min(8, cpuLimit());
  // Memory exactly what two need is enough; a byte less is not (the weights they share counted once).
  const fits = [
    [two, Math.min(2, cores)],
    [needs(2), Math.min(2, cores)],
    [needs(2) - 1, 1],
    [1, 1],
    [Infinity, cores],
  ] as const;
  for (const [memoryBytes, want] of fits) {
    const pool = await ForwardPool.create(m.cfg, m.weights, { ...opts, memoryBytes });
    try {
      assert.equal(pool.size, want, `memory ${memoryBytes}`);
    } finally {
      pool.close();
    }
  }
  // One worker asked for is started whatever the memory says: there is nothing smaller to try.
  const one = await ForwardPool.create(m.cfg, m.weights, { ...opts, workers: 1, memoryBytes: 1 });
  one.close();
});

Deno.test("ForwardPool.create() starts no more workers than the most windows a call hands it", async () => {
  const m = await loadModel(MODEL);
  for (const [workers, mostWindows, want] of [[4, 2, 2], [undefined, 1, 1], [2, 0, 1], [2, 3, 2]] as const) {
    const pool = await ForwardPool.create(m.cfg, m.weights, { seqLen: 16, workers, mostWindows });
    try {
      assert.equal(pool.size, want, `workers ${workers}, windows ${mostWindows}`);
    } finally {
      pool.close();
    }
  }
});

Deno.test("ForwardPool: calibration statistics over any split of the windows sum to one runner's", async () => {
  const m = await loadModel(MODEL);
  const T = 16, windows = 3; // odd: the two workers hold 2 and 1
  const tokens = Int32Array.from({ length: windows * T }, (_, i) => (i * 61 + 9) % m.cfg.vocabSize);
  const runner = new LlamaRunner(m.cfg, m.weights, { seqLen: T, cacheTokens: windows * T });
  runner.cacheEmbed(tokens, windows);
  const want = emptyStats(m.cfg);
  runner.cacheBlock(0, want);
  for (const workers of [1, 2]) {
    const pool = await ForwardPool.create(m.cfg, m.weights, { seqLen: T, workers, calibWindows: windows });
    try {
      assert.equal(pool.size, workers);
      await pool.calibBegin(tokens, windows);
      const got = await pool.calibCollect(0);
      for (const key of Object.keys(want) as (keyof typeof want)[]) {
        // Sums over windows in another grouping: equal to float64's rounding of the order.
        got[key].forEach((v, j) => {
          const w = want[key][j]!;
          assert.ok(Math.abs(v - w) <= 1e-12 * Math.abs(w), `${workers} workers, ${key}[${j}]: ${v} against ${w}`);
        });
      }
    } finally {
      pool.close();
    }
  }
});

Deno.test("ForwardPool: workers holding biases or Qwen3's q/k norms give one runner's losses", async () => {
  const fixtures = new URL("../tests/fixtures/hf_llama/", import.meta.url).pathname;
  const models = [
    ["qwen2-qkv-bias-gqa-tied-bf16", 3, false],
    ["untied-llama-attention-mlp-bias-f16", 7, false],
    ["wide-head-qwen3-qk-norm-tied-f32", 0, true],
  ] as const;
  for (const [name, biases, qkNorm] of models) {
    const m = await loadModel(fixtures + name);
    assert.equal(m.cfg.biases.length, biases, name);
    assert.equal(m.cfg.qkNorm, qkNorm, name);
    const T = 8, windows = 5; // over the pool's batches of 4: both workers answer
    const tokens = Int32Array.from({ length: windows * T }, (_, i) => (i * 37 + 5) % m.cfg.vocabSize);
    const runner = new LlamaRunner(m.cfg, m.weights, { seqLen: T });
    const want = Array.from({ length: windows }, (_, w) => runner.windowLoss(tokens.subarray(w * T, (w + 1) * T)));
    const pool = await ForwardPool.create(m.cfg, m.weights, { seqLen: T, workers: 2 });
    try {
      // The same float32 arithmetic on the same weights, shared into the workers' arenas biases and all.
      const done: number[] = [];
      assert.deepEqual([...await pool.losses(tokens, windows, (n) => done.push(n))], want, name);
      // Progress counts windows done, once a batch: rising to all of them, in the batches of 4 and 1.
      assert.equal(done.length, 2, `${name}: ${done}`);
      assert.ok(done[0]! < done[1]! && done[1] === windows && [1, 4].includes(done[0]!), `${name}: ${done}`);
    } finally {
      pool.close();
    }
  }
});

Deno.test("ForwardPool.losses(): once a worker fails, the others take no more windows nor report any", async () => {
  const m = await loadModel(MODEL);
  const T = 32, windows = 40;
  const pool = await ForwardPool.create(m.cfg, m.weights, { seqLen: T, workers: 2 });
  try {
    const tokens = new Uint16Array(windows * T).map((_, i) => i % m.cfg.vocabSize);
    const bad = new Int32Array(tokens);
    bad[0] = 999_999; // in the first batch: that worker's first call fails
    let reported = 0, rejected = false;
    const losses = pool.losses(bad, windows, () => (rejected ? reported++ : undefined));
    await assert.rejects(losses.finally(() => (rejected = true)), /outside the vocabulary/);
    // The other worker's batch in flight may end after the rejection: give it time, then count what came after.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(reported, 0, `${reported} progress reports after the rejection`);
    // The pool still answers the next call, whole.
    assert.equal((await pool.losses(tokens, 8)).length, 8);
  } finally {
    pool.close();
  }
});
