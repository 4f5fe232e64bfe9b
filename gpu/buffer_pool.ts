/**
 * A free list of GPU buffers keyed by (label, size, usage). Buffers go back to the pool once the submit that used
 * them has been queued: WebGPU orders later writes and submits after it, so reuse by a later job is safe. The pool
 * keeps at most `maxIdleBytes` idle; beyond that the oldest idle buffers are destroyed, and all of them once no buffer
 * has been in use for `idleMs` (on a software adapter device memory is the host's; on a GPU others may want it).
 *
 * The label is part of the key because Deno ignores assignments to `GPUBuffer.label`: a reused buffer must keep a
 * truthful name for validation messages. Layers of one model repeat a few shapes, so reuse stays high.
 */

import { IdleTimer, type Timers } from "../runtime/idle_timer.ts";

/** How long idle buffers outlive the last job that used the pool. */
const POOL_IDLE_MS = 30_000;

/** Rounds a byte size up to the pool's granularity (256 bytes), so near-equal sizes share buffers. */
export function poolSize(bytes: number): number {
  return Math.max(256, Math.ceil(bytes / 256) * 256);
}

function key(label: string, usage: number, size: number): string {
  return `${label}|${usage}|${size}`;
}

/** A label-, size- and usage-keyed free list of `GPUBuffer`s. */
export class BufferPool {
  readonly #device: GPUDevice;
  readonly #maxIdleBytes: number;
  readonly #free = new Map<string, GPUBuffer[]>();
  /** Idle buffers in the order they were released (oldest first), for eviction. */
  #idleOrder: GPUBuffer[] = [];
  #idleBytes = 0;
  /** Buffers created by this pool and not yet destroyed. */
  #live = 0;
  readonly #idle: IdleTimer;

  constructor(device: GPUDevice, maxIdleBytes: number, idleMs = POOL_IDLE_MS, timers?: Timers) {
    this.#device = device;
    this.#maxIdleBytes = maxIdleBytes;
    // Idle means no buffer in use: a job longer than idleMs is still one (the engine's out-of-memory retry reads
    // the idle bytes mid-job).
    this.#idle = new IdleTimer(
      idleMs,
      () => this.#live > this.#idleOrder.length ? this.#idle.touch() : this.clear(),
      timers,
    );
  }

  /** Bytes held idle in the pool. */
  get idleBytes(): number {
    return this.#idleBytes;
  }

  /** Buffers created and not yet destroyed (idle or in use). */
  get liveBuffers(): number {
    return this.#live;
  }

  /** A buffer of at least `bytes` bytes with exactly `usage` and `label`, reused when one is idle. */
  acquire(bytes: number, usage: GPUBufferUsageFlags, label: string): GPUBuffer {
    this.#idle.touch();
    const size = poolSize(bytes);
    const list = this.#free.get(key(label, usage, size));
    const reused = list?.pop();
    if (reused) {
      this.#idleOrder = this.#idleOrder.filter((b) => b !== reused);
      this.#idleBytes -= reused.size;
      return reused;
    }
    this.#live++;
    return this.#device.createBuffer({ size, usage, label });
  }

  /** Returns buffers to the pool; call after the submit that uses them has been queued. */
  release(...buffers: GPUBuffer[]): void {
    this.#idle.touch();
    for (const b of buffers) {
      const k = key(b.label, b.usage, b.size);
      let list = this.#free.get(k);
      if (!list) this.#free.set(k, list = []);
      list.push(b);
      this.#idleOrder.push(b);
      this.#idleBytes += b.size;
    }
    while (this.#idleBytes > this.#maxIdleBytes && this.#idleOrder.length > 0) {
      const old = this.#idleOrder.shift()!;
      const list = this.#free.get(key(old.label, old.usage, old.size))!;
      list.splice(list.indexOf(old), 1);
      this.#idleBytes -= old.size;
      this.#live--;
      old.destroy();
    }
  }

  /** Destroys buffers taken from the pool instead of returning them (after an error they may be invalid). */
  discard(...buffers: GPUBuffer[]): void {
    this.#idle.touch();
    for (const b of buffers) b.destroy();
    this.#live -= buffers.length;
  }

  /** Destroys every idle buffer. */
  clear(): void {
    this.#idle.stop();
    for (const b of this.#idleOrder) b.destroy();
    this.#live -= this.#idleOrder.length;
    this.#idleOrder = [];
    this.#free.clear();
    this.#idleBytes = 0;
  }
}
