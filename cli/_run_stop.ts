/**
 * What SIGINT and SIGTERM do to a `deno task prune` run, which takes minutes to hours and which a batch system stops
 * with SIGTERM: the run says where it was and what it keeps, its report keeps what was measured, and the process exits
 * 130 or 143, as a shell reports the signal.
 */
import type { PerplexityResult } from "../model/mod.ts";
import { onShutdownSignal } from "../runtime/host.ts";

/** The exit status a shell reports for a process ended by the signal. */
const SIGNAL_STATUS: Readonly<Record<string, number>> = { SIGINT: 130, SIGTERM: 143 };

/** A run ended by SIGINT or SIGTERM: the process exits 130 or 143. */
export class StoppedBy extends Error {
  readonly exitCode: number;
  constructor(signal: string, message: string) {
    super(message);
    this.exitCode = SIGNAL_STATUS[signal] ?? 1;
  }
}

/** A measured perplexity, as the report keeps it. */
export type Measured = Pick<PerplexityResult, "ppl" | "windows" | "ms">;

/**
 * Listens for SIGINT and SIGTERM while a run goes on. At the first, `report` writes what was measured (as after a
 * failure), a line on stderr says where the run was and what it keeps, and the process exits 130 or 143. While a
 * `stoppable` write goes on (--out) its signal is aborted instead, so that the write removes its temporary files and
 * throws `StoppedBy`. Once the run calls `finishing()` its outputs are being put in place and are whole: a signal then
 * waits for them, and the run ends with its status after them (`late`). A second signal (not a parent's copy of the
 * first) exits at once.
 */
export class RunStop implements Disposable {
  /** What the run is doing, for "SIGINT while <phase>". */
  phase = "loading";
  /** The dense evaluation, once measured. */
  dense?: Measured;
  /** The model's blocks, once loaded. */
  blocks?: number;
  /** With --resume: the blocks kept in DIR, this run's and earlier ones'. */
  kept?: number;
  /** The blocks this run has pruned. */
  pruned = 0;
  /** A signal that came while the outputs were put in place: the run ends with it once they are. */
  late?: string;
  readonly #resume: string | undefined;
  readonly #report: (why: Error) => Promise<void>;
  #write?: AbortController;
  #finishing = false;
  readonly #remove: () => void;

  /** Starts listening; `resume` is --resume's DIR, `report` writes the failure report (never throws). */
  constructor(resume: string | undefined, report: (why: Error) => Promise<void>) {
    this.#resume = resume;
    this.#report = report;
    this.#remove = onShutdownSignal((s) => this.#first(s), (s) => Deno.exit(SIGNAL_STATUS[s] ?? 1));
  }

  /** Runs `work` as `phase`; a signal meanwhile aborts its signal with a `StoppedBy` naming the phase. */
  async stoppable<T>(phase: string, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    this.phase = phase;
    this.#write = new AbortController();
    try {
      return await work(this.#write.signal);
    } finally {
      this.#write = undefined;
    }
  }

  /** From here on the outputs are put in place: a signal waits for them (see `late`). */
  finishing(): void {
    this.#finishing = true;
  }

  /** Stops listening. */
  [Symbol.dispose](): void {
    this.#remove();
  }

  #first(signal: string): void {
    if (this.#write || this.#finishing) {
      this.late = signal;
      this.#write?.abort(new StoppedBy(signal, `${signal} while ${this.phase}; its temporary files were removed`));
      return;
    }
    const why = `${signal} while ${this.phase}`;
    this.#report(new Error(why)).finally(() => {
      console.error(`prune: ${why}${this.#keptLine()}`);
      Deno.exit(SIGNAL_STATUS[signal] ?? 1);
    });
  }

  /** What the run leaves for the next, as the stop's line ends. */
  #keptLine(): string {
    if (this.kept !== undefined && this.blocks !== undefined) {
      return `; ${keptMessage(this.kept, this.blocks, this.#resume!)}`;
    }
    if (this.pruned > 0 && this.blocks !== undefined) return `; ${prunedMessage(this.pruned, this.blocks)}`;
    return "";
  }
}

/** What a run stopped while pruning has kept in --resume `dir`, and how to go on. */
export function keptMessage(kept: number, blocks: number, dir: string): string {
  const which = kept === 0 ? "no block is" : kept === 1 ? "block 0 is" : `blocks 0 to ${kept - 1} are`;
  return `${which} pruned and kept (of ${blocks}) in --resume ${dir}: the same command continues from there`;
}

/** What a run without --resume stopped while pruning loses. */
export function prunedMessage(pruned: number, blocks: number): string {
  return `${pruned} of ${blocks} blocks were pruned; with --resume DIR a run keeps them`;
}
