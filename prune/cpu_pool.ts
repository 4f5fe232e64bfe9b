/**
 * A fixed pool of CPU workers, one per core, each running `CpuOp`s in the order posted. A worker that dies
 * (out of memory, say) fails its pending tasks with `unavailable` and is replaced, so the pool heals itself.
 */
import { ZpruneError } from "../contract/errors.ts";
import type { CpuOp } from "./cpu_ops.ts";

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
}

/** A pool of `size` workers running CPU operations. */
export class CpuPool {
  readonly size: number;
  #slots: Slot[] = [];
  #nextId = 1;
  #closed = false;
  #crashNext = new Set<number>();
  #restarts = 0;

  constructor(size: number) {
    this.size = Math.max(1, size);
    for (let i = 0; i < this.size; i++) this.#slots.push(this.#spawn());
  }

  #spawn(): Slot {
    const worker = new Worker(new URL("./cpu_worker.ts", import.meta.url).href, { type: "module" });
    const slot: Slot = { worker, pending: new Map() };
    worker.onmessage = (e: MessageEvent<{ id: number; result?: unknown; error?: string; name?: string }>) => {
      const p = slot.pending.get(e.data.id);
      if (!p) return;
      slot.pending.delete(e.data.id);
      if (e.data.error !== undefined) {
        p.reject(e.data.name === "RangeError" ? new RangeError(e.data.error) : new Error(e.data.error));
      } else p.resolve(e.data.result);
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#fail(slot, e.message);
    };
    return slot;
  }

  /** Fails a dead worker's tasks and puts a fresh worker in its place (none once the pool is closed). */
  #fail(slot: Slot, why: string): void {
    const i = this.#slots.indexOf(slot);
    slot.worker.terminate();
    const message = this.#closed
      ? "the CPU backend is shutting down"
      : `a CPU worker failed (${why}); it was restarted, retry the request`;
    for (const p of slot.pending.values()) p.reject(new ZpruneError("unavailable", message));
    slot.pending.clear();
    if (i >= 0 && !this.#closed) {
      this.#slots[i] = this.#spawn();
      this.#restarts++;
    }
  }

  /** Workers replaced after dying. */
  get restarts(): number {
    return this.#restarts;
  }

  /** Runs `task` on worker `index % size`. */
  run<T>(index: number, task: CpuOp): Promise<T> {
    if (this.#closed) return Promise.reject(new ZpruneError("unavailable", "the CPU backend is shutting down"));
    const slot = this.#slots[index % this.size]!;
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      slot.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      try {
        slot.worker.postMessage({ id, task });
      } catch (e) {
        // A task that cannot be cloned (a caller's mistake) fails alone, and leaves no entry for close() to fail again.
        slot.pending.delete(id);
        reject(e);
        return;
      }
      if (this.#crashNext.delete(index % this.size)) this.#fail(slot, "killed by a fault drill");
    });
  }

  /**
   * Runs the tasks `make(i)` for i < count, task i on worker i % size, and waits for all of them to settle before
   * answering, even when one fails: the others may still be writing into the request's shared buffers until then.
   * Of several failures, a worker's death is the one thrown: its caller must not reuse the buffers that worker had.
   */
  async all<T>(count: number, make: (i: number) => CpuOp | null): Promise<T[]> {
    const tasks: Promise<T>[] = [];
    for (let i = 0; i < count; i++) {
      const t = make(i);
      if (t) tasks.push(this.run<T>(i, t));
    }
    const settled = await Promise.allSettled(tasks);
    const reasons = settled.flatMap((s) => (s.status === "rejected" ? [s.reason as unknown] : []));
    if (reasons.length) throw reasons.find((e) => e instanceof ZpruneError && e.code === "unavailable") ?? reasons[0];
    return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
  }

  /**
   * Fault drill: worker `index` dies as a crash would the next time it is handed work, so the task in flight
   * fails with `unavailable` and a fresh worker takes the next one. Deterministic, unlike killing it on a timer.
   */
  crash(index: number): void {
    this.#crashNext.add(index % this.size);
  }

  /** Terminates every worker; pending tasks fail with `unavailable`. */
  close(): void {
    this.#closed = true;
    for (const s of this.#slots) this.#fail(s, "closed");
  }
}
