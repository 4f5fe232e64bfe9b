/** Scratch memory the CPU backend keeps between layers, so that a layer does not first-touch fresh pages. */
import { collectGarbage, IdleTimer, type Timers } from "../runtime/idle_timer.ts";

/** How long kept scratch buffers outlive the last layer that used them: an idle server gives the memory back. */
const SCRATCH_IDLE_MS = 30_000;

/**
 * A free list of SharedArrayBuffers by size. First touches of fresh memory cost about 2.3 µs a page here (about
 * 40 ms for the 64 MiB of a 4096x4096 layer's scores), and an LLM's layers come in a handful of sizes, so buffers
 * are kept for the next layer: at most `maxBytes` in all, the least recently used going first when a new one needs
 * the room, and none once nothing has taken or given one for `idleMs`. A layer gets the smallest kept buffer of at
 * least its size and at most twice it (callers view their length of it), so a request whose layers come in several
 * sizes keeps at most about a third more than its largest layer's scratch, not one set per size (measured in an
 * audit: 672 MiB beyond the largest for f32 layers of 64M, 32M, 16M and 8M elements); and a small layer never
 * takes, and so never makes another request allocate again, a buffer far larger than it needs.
 */
export class ScratchBuffers {
  #free = new Map<number, SharedArrayBuffer[]>();
  /** Kept buffers, least recently given first. */
  #order: SharedArrayBuffer[] = [];
  #kept = 0;
  /** Layers computing now: the idle timer lets the buffers go only when there are none. */
  #active = 0;
  readonly #idle: IdleTimer;

  constructor(readonly maxBytes: number, idleMs = SCRATCH_IDLE_MS, timers?: Timers) {
    this.#idle = new IdleTimer(idleMs, () => {
      if (this.#active > 0) return this.#idle.touch(); // a layer longer than idleMs: not idle
      this.clear();
      collectGarbage();
    }, timers);
  }

  /** Runs `layer`, a layer's computation: the buffers are not idle meanwhile, however long it takes. */
  async during<T>(layer: () => Promise<T>): Promise<T> {
    this.#active++;
    try {
      return await layer();
    } finally {
      this.#active--;
      this.#idle.touch();
    }
  }

  /** A buffer of at least `bytes` and at most twice that (contents undefined). */
  take(bytes: number): SharedArrayBuffer {
    this.#idle.touch();
    let best = 0;
    for (const size of this.#free.keys()) {
      if (size >= bytes && size <= 2 * bytes && (best === 0 || size < best)) best = size;
    }
    if (best === 0) return new SharedArrayBuffer(bytes);
    const list = this.#free.get(best)!;
    const b = list.pop()!;
    if (list.length === 0) this.#free.delete(best);
    this.#order.splice(this.#order.lastIndexOf(b), 1);
    this.#kept -= best;
    return b;
  }

  /** Keeps `b` for reuse, making room by dropping the least recently given ones. */
  give(b: ArrayBufferLike): void {
    this.#idle.touch();
    if (!(b instanceof SharedArrayBuffer) || b.byteLength > this.maxBytes) return;
    while (this.#kept + b.byteLength > this.maxBytes) {
      const old = this.#order.shift()!;
      const list = this.#free.get(old.byteLength)!;
      list.splice(list.indexOf(old), 1);
      if (list.length === 0) this.#free.delete(old.byteLength);
      this.#kept -= old.byteLength;
    }
    const list = this.#free.get(b.byteLength) ?? [];
    list.push(b);
    this.#free.set(b.byteLength, list);
    this.#order.push(b);
    this.#kept += b.byteLength;
  }

  /** Drops every kept buffer (for the garbage collector to return). */
  clear(): void {
    this.#idle.stop();
    this.#free.clear();
    this.#order = [];
    this.#kept = 0;
  }

  /** Bytes kept for reuse. */
  get keptBytes(): number {
    return this.#kept;
  }

  /** Sizes of the kept buffers, least recently given first (for tests). */
  get keptSizes(): number[] {
    return this.#order.map((b) => b.byteLength);
  }
}
