/**
 * One `prune()`'s GPU resources and command stream (private to gpu/engine.ts): pooled buffers held until the job
 * ends, staging buffers destroyed in `finally`, error scopes over all of its work, and per-stage timing.
 */
import { ZpruneError } from "../contract/errors.ts";
import type { BufferPool } from "./buffer_pool.ts";

/**
 * The device could not allocate what a job needed (a `GPUOutOfMemoryError`). Unlike other device errors it says
 * nothing against the device: the engine frees its idle buffers and tries again, then takes the exact CPU path.
 */
export class GpuOutOfMemory extends ZpruneError {
  override name = "GpuOutOfMemory";
  constructor(message: string) {
    super("unavailable", `WebGPU out-of-memory error: ${message}`);
  }
}

/** GPU milliseconds per stage of one `prune()`, when profiling. */
export interface StageTimes {
  /** "timestamp-per-dispatch": keys are `stage.kernel`, each dispatch in a pass of its own, summed per key. */
  source: "timestamp" | "wall" | "timestamp-per-dispatch";
  ms: Record<string, number>;
  /**
   * With timestamps: from the first timed pass's start to the last one's end, gaps between passes and the commands
   * recorded between them (buffer clears) included, as a back-to-back loop's wall clock would count them; the sum of
   * `ms` leaves those out.
   */
  spanMs?: number;
}

/** Records a stage's dispatches: into the stage's one compute pass, or (per-dispatch profiling) a pass each. */
export interface StageRecorder {
  /** Records one dispatch of the kernel `kernel` (its name, for labels and per-dispatch times). */
  dispatch(kernel: string, pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, x: number, y: number): void;
}

/** How long a failed read-back waits for the queue to tell whether the device was lost. */
const LOSS_POLL_MS = 2000;

/** Timestamp queries per-dispatch profiling can hold (passes beyond 256 in one job run untimed). */
const DETAIL_QUERIES = 512;

/** Stage names, in order; also the compute pass labels and timestamp slots. */
const STAGES = ["decode", "stats", "centred", "score", "select", "apply"] as const;
/** A stage name. */
export type Stage = (typeof STAGES)[number];

const COPY_SRC = GPUBufferUsage.COPY_SRC;
const COPY_DST = GPUBufferUsage.COPY_DST;
const READ = GPUMapMode.READ;

/** How a `Job` times its stages and reports progress. */
export interface JobOptions {
  /** Measure GPU time per stage (`stageTimes()`). */
  profile: boolean;
  /** Time by timestamp queries (the device has them and the caller wants them), else by wall clock. */
  timestamps: boolean;
  /** Told each recorded stage, submit and read-back as it happens. */
  trace?: (event: string) => void;
  /** With timestamps, a timed pass per dispatch instead of one per stage. */
  perDispatch?: boolean;
}

/**
 * The GPU resources and command stream of one `prune()`: pooled buffers (released at the end, after the last submit
 * that used them), staging buffers (destroyed in `finally`), error scopes over every buffer creation, write and
 * recorded command up to each submit, and per-stage timing.
 */
export class Job {
  readonly #device: GPUDevice;
  readonly #pool: BufferPool;
  readonly #held: GPUBuffer[] = [];
  readonly #profile: boolean;
  readonly #querySet: GPUQuerySet | null;
  readonly #wall: Partial<Record<Stage, number>> = {};
  /** Timed passes so far, in order (stages, or `stage.kernel` per dispatch); pass i owns queries 2i and 2i + 1. */
  readonly #used: string[] = [];
  readonly #perDispatch: boolean;
  readonly #trace: ((event: string) => void) | undefined;
  #encoder: GPUCommandEncoder | null = null;
  /** Whether the job's out-of-memory and validation scopes are pushed (at construction, again after each submit). */
  #scoped = false;
  /** Set once any of its scopes caught an error: its buffers may be invalid, so they are destroyed, not pooled. */
  #failed = false;

  constructor(device: GPUDevice, pool: BufferPool, opts: JobOptions) {
    const { profile, timestamps, trace, perDispatch = false } = opts;
    this.#device = device;
    this.#trace = trace;
    this.#pool = pool;
    this.#profile = profile;
    this.#perDispatch = timestamps && perDispatch;
    // Before any resource: a buffer the device cannot allocate fails in `createBuffer`, long before the submit that
    // uses it, and without a scope open there its error would surface only as that submit's validation error.
    this.#openScopes();
    this.#querySet = timestamps
      ? device.createQuerySet({
        label: "stage-timestamps",
        type: "timestamp",
        count: this.#perDispatch ? DETAIL_QUERIES : STAGES.length * 2,
      })
      : null;
  }

  /** The open command encoder (created on demand). */
  get encoder(): GPUCommandEncoder {
    return this.#encoder ??= this.#device.createCommandEncoder({ label: "prune" });
  }

  /** A pooled buffer held until the job ends. */
  buffer(bytes: number, usage: GPUBufferUsageFlags, label: string): GPUBuffer {
    const b = this.#pool.acquire(bytes, usage, label);
    this.#held.push(b);
    return b;
  }

  /**
   * Records one stage as a labelled compute pass (or, profiling per dispatch, a pass per dispatch); when profiling
   * without timestamps, times it by wall clock.
   */
  async stage(name: Stage, record: (rec: StageRecorder) => void): Promise<void> {
    if (this.#perDispatch) {
      record({
        dispatch: (kernel, pipeline, bindGroup, x, y) =>
          this.#timedPass(`${name}.${kernel}`, pipeline, bindGroup, x, y),
      });
    } else {
      const pass = this.encoder.beginComputePass({ label: name, timestampWrites: this.#timestampWrites(name) });
      record({
        dispatch(_kernel, pipeline, bindGroup, x, y) {
          pass.setPipeline(pipeline);
          pass.setBindGroup(0, bindGroup);
          pass.dispatchWorkgroups(x, y);
        },
      });
      pass.end();
    }
    this.#trace?.(`recorded ${name}`);
    if (this.#profile && !this.#querySet) {
      await this.submit();
      const t0 = performance.now();
      await this.#device.queue.onSubmittedWorkDone();
      this.#wall[name] = performance.now() - t0;
      this.#trace?.(`done ${name}`);
    }
  }

  /**
   * The next timestamp slot pair for a pass named `name`, or undefined (no timestamps, or the query set is full).
   * Slots are handed out in recording order so that the written queries are exactly [0, 2 * passes): resolving a
   * query that no pass wrote made the read-back wait forever on the H200 (NVIDIA Vulkan), where lavapipe gives 0.
   */
  #timestampWrites(name: string): GPUComputePassTimestampWrites | undefined {
    if (!this.#querySet || (this.#used.length + 1) * 2 > this.#querySet.count) return undefined;
    const slot = this.#used.length;
    this.#used.push(name);
    return { querySet: this.#querySet, beginningOfPassWriteIndex: slot * 2, endOfPassWriteIndex: slot * 2 + 1 };
  }

  /** One dispatch in a compute pass of its own, timed (per-dispatch profiling). */
  #timedPass(name: string, pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, x: number, y: number): void {
    const pass = this.encoder.beginComputePass({ label: name, timestampWrites: this.#timestampWrites(name) });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y);
    pass.end();
  }

  /** Tells the trace of `prune()` an event of the caller's (a job's own events are told where they happen). */
  traceEvent(event: string): void {
    this.#trace?.(event);
  }

  // Internal errors too: the driver failed an operation for its own reasons, so what the job computed cannot be
  // trusted; uncaught, it would only be an event, and the job would answer.
  #openScopes(): void {
    this.#device.pushErrorScope("internal");
    this.#device.pushErrorScope("out-of-memory");
    this.#device.pushErrorScope("validation");
    this.#scoped = true;
  }

  /** Pops the job's scopes if they are open, marking the job failed when they caught an error; what they caught. */
  async #popScopes(): Promise<{ validation: GPUError | null; oom: GPUError | null; internal: GPUError | null }> {
    if (!this.#scoped) return { validation: null, oom: null, internal: null };
    this.#scoped = false;
    const validation = await this.#device.popErrorScope();
    const oom = await this.#device.popErrorScope();
    const internal = await this.#device.popErrorScope();
    if (oom || validation || internal) this.#failed = true;
    return { validation, oom, internal };
  }

  /**
   * Closes the open scopes; throws `GpuOutOfMemory` when an allocation failed (a validation error is then its
   * consequence: a command used the buffer that could not be made), `ZpruneError("unavailable")` for any other error
   * (validation, or the driver's internal one).
   */
  async #closeScopes(): Promise<void> {
    const { validation, oom, internal } = await this.#popScopes();
    if (oom) throw new GpuOutOfMemory(oom.message);
    if (validation) throw new ZpruneError("unavailable", `WebGPU validation error: ${validation.message}`);
    if (internal) throw new ZpruneError("unavailable", `WebGPU internal error: ${internal.message}`);
  }

  /**
   * Submits the open encoder; throws what the error scopes caught since the last submit (see #closeScopes). The scopes
   * are opened again for what the job records next, unless `last` (nothing more is recorded: see `stageRead`).
   */
  async submit(last = false): Promise<void> {
    if (!this.#encoder) return;
    const enc = this.#encoder;
    this.#encoder = null;
    this.#trace?.("submit");
    this.#device.queue.submit([enc.finish({ label: "prune" })]);
    await this.#closeScopes();
    this.#trace?.("submitted");
    if (!last) this.#openScopes();
  }

  /** Copies `buffers` (first `sizes[i]` bytes of each) to fresh staging buffers, submits, maps and returns copies. */
  async read(buffers: GPUBuffer[], sizes: number[]): Promise<ArrayBuffer[]> {
    const [back] = await mapStaged(this.#device, [await this.stageRead(buffers, sizes)]);
    if (back instanceof Error) throw back;
    return back!;
  }

  /**
   * Copies `buffers` (first `sizes[i]` bytes of each) to fresh staging buffers and submits: the job's last submit,
   * after which its scopes are closed (a later `stageRead` opens them again). `mapStaged` maps what it returns, with
   * other jobs' read-backs: Deno's `mapAsync` waits about 10 ms per await, not per map (docs/GPU.md).
   */
  async stageRead(buffers: GPUBuffer[], sizes: number[]): Promise<StagedRead> {
    if (!this.#scoped) this.#openScopes();
    const staging: GPUBuffer[] = [];
    try {
      this.#device.pushErrorScope("out-of-memory");
      let oom: GPUError | null;
      try {
        buffers.forEach((b, i) => {
          const bytes = Math.ceil(sizes[i]! / 4) * 4;
          const s = this.#device.createBuffer({
            label: `staging:${b.label}`,
            size: Math.max(4, bytes),
            usage: GPUBufferUsage.MAP_READ | COPY_DST,
          });
          staging.push(s);
          if (bytes > 0) this.encoder.copyBufferToBuffer(b, 0, s, 0, bytes);
        });
      } finally {
        // Popped whatever happened above: a scope left pushed would be the one finish() pops instead of the job's.
        oom = await this.#device.popErrorScope();
      }
      if (oom) {
        this.#failed = true;
        throw new GpuOutOfMemory(oom.message);
      }
      await this.submit(true);
    } catch (e) {
      for (const s of staging) s.destroy();
      throw e;
    }
    this.#trace?.(`map ${staging.length} buffer(s)`);
    return {
      staging,
      sizes,
      failed: () => void (this.#failed = true),
      trace: (event) => this.#trace?.(event),
    };
  }

  /** GPU milliseconds per stage that ran. */
  async stageTimes(): Promise<StageTimes> {
    if (!this.#querySet) {
      const ms: Record<string, number> = {};
      for (const s of STAGES) if (this.#wall[s] !== undefined) ms[s] = this.#wall[s]!;
      return { source: "wall", ms };
    }
    const queries = this.#used.length * 2;
    if (queries === 0) return { source: this.#perDispatch ? "timestamp-per-dispatch" : "timestamp", ms: {} };
    if (!this.#scoped) this.#openScopes(); // closed by the layer's read-back, its last submit until now
    const resolve = this.buffer(queries * 8, GPUBufferUsage.QUERY_RESOLVE | COPY_SRC, "timestamps");
    this.encoder.resolveQuerySet(this.#querySet, 0, queries, resolve, 0);
    const [data] = await this.read([resolve], [queries * 8]);
    const t = new BigUint64Array(data!);
    const ms: Record<string, number> = {};
    let first = t[0]!, last = t[1]!;
    this.#used.forEach((s, i) => {
      ms[s] = (ms[s] ?? 0) + Number(t[i * 2 + 1]! - t[i * 2]!) / 1e6;
      if (t[i * 2]! < first) first = t[i * 2]!;
      if (t[i * 2 + 1]! > last) last = t[i * 2 + 1]!;
    });
    return {
      source: this.#perDispatch ? "timestamp-per-dispatch" : "timestamp",
      ms,
      spanMs: Number(last - first) / 1e6,
    };
  }

  /**
   * For a job that failed with an error of its own (not one a scope caught): closes its open scopes and keeps what
   * they caught, so that a buffer that could not be allocated before that error is destroyed by finish(), not pooled.
   */
  async abandon(): Promise<void> {
    await this.#popScopes();
  }

  /**
   * Returns pooled buffers (every submit that used them is queued; after an error they are destroyed instead, as
   * one may be invalid), drops the query set and closes the job's scopes if still open (after a job that answered:
   * nothing but the read-back's mapping ran since its last submit, so what they caught is not needed).
   */
  finish(): void {
    this.#encoder = null;
    if (this.#scoped) {
      this.#scoped = false;
      // Popped at once (the stack is synchronous); their results are not needed.
      for (let i = 0; i < 3; i++) this.#device.popErrorScope().catch(() => {});
    }
    if (this.#failed) this.#pool.discard(...this.#held);
    else this.#pool.release(...this.#held);
    this.#held.length = 0;
    this.#querySet?.destroy();
  }
}

/** A job's read-back, submitted and not yet mapped (`Job.stageRead`). */
export interface StagedRead {
  readonly staging: GPUBuffer[];
  readonly sizes: number[];
  /** Marks the job failed: its buffers are then destroyed rather than pooled. */
  readonly failed: () => void;
  readonly trace: (event: string) => void;
}

/**
 * Maps every staged read-back in one await (Deno's `mapAsync` waits about 10 ms per await, however many maps it
 * covers) and returns each one's copies, or the error that kept it from mapping; staging buffers are destroyed
 * either way. A rejected map gives `unavailable` with its cause: Deno rejects every failed map with "validation
 * error occurred", so the cause is looked for: a lost device first (it explains any other error), then an
 * out-of-memory or validation error caught while the maps ran, else the rejection as it came.
 */
export async function mapStaged(device: GPUDevice, reads: StagedRead[]): Promise<(ArrayBuffer[] | Error)[]> {
  try {
    // Pushed one by one and popped as many, however far the pushes got: a scope left open would be popped by the next
    // job in place of its own.
    const filters = ["internal", "out-of-memory", "validation"] as const;
    let pushed = 0;
    let maps: PromiseSettledResult<void>[][];
    const caught: (GPUError | null)[] = [];
    try {
      for (const f of filters) {
        device.pushErrorScope(f);
        pushed++;
      }
      maps = await Promise.all(reads.map((r) => Promise.allSettled(r.staging.map((s) => s.mapAsync(READ)))));
    } finally {
      // The innermost first: validation, out-of-memory, internal.
      for (; pushed > 0; pushed--) caught.unshift(await device.popErrorScope());
    }
    const [internal, oom, validation] = caught;
    let cause: Error | null | undefined; // looked for once, with the first read-back that failed
    const out: (ArrayBuffer[] | Error)[] = [];
    for (const [i, r] of reads.entries()) {
      const failed = maps[i]!.find((m): m is PromiseRejectedResult => m.status === "rejected");
      if (!failed) {
        r.trace("mapped");
        out.push(
          r.staging.map((s, j) =>
            s.getMappedRange(0, Math.max(4, Math.ceil(r.sizes[j]! / 4) * 4)).slice(0, r.sizes[j]!)
          ),
        );
        continue;
      }
      r.failed();
      if (cause === undefined) {
        const lost = await lostAfterPoll(device);
        if (lost) cause = new ZpruneError("unavailable", `WebGPU device lost: ${lost.message || lost.reason}`);
        else if (oom) cause = new GpuOutOfMemory(oom.message);
        else if (validation) cause = new ZpruneError("unavailable", `WebGPU validation error: ${validation.message}`);
        else if (internal) cause = new ZpruneError("unavailable", `WebGPU internal error: ${internal.message}`);
        else cause = null;
      }
      const why = failed.reason instanceof Error ? failed.reason.message : String(failed.reason);
      out.push(cause ?? new ZpruneError("unavailable", `WebGPU could not map the read-back: ${why}`));
    }
    return out;
  } finally {
    for (const r of reads) for (const s of r.staging) s.destroy();
  }
}

/**
 * The device's loss, if polling the queue reveals one, else null. On lavapipe, under an address-space limit, a
 * device was lost after every allocation had succeeded; `lost` resolved only after the queue was polled and a turn
 * of the event loop had passed (the same after `destroy()`). The poll is bounded: a broken device that never
 * answers it must not hold the request (the backend's watchdog would end it, but only after a minute).
 */
async function lostAfterPoll(device: GPUDevice): Promise<GPUDeviceLostInfo | null> {
  const lost = device.lost.then((info) => info);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, LOSS_POLL_MS);
  });
  await Promise.race([device.queue.onSubmittedWorkDone().catch(() => {}), limit, lost]);
  clearTimeout(timer);
  await new Promise((resolve) => setTimeout(resolve, 0));
  // Listed first, `lost` wins the race if it has resolved by now.
  return await Promise.race([lost, Promise.resolve(null)]);
}
