/**
 * Where a request's time went, so that a deadline's answer says whether retrying can help. Time that depends on
 * the server's load (waiting for a compute slot; anything shared with other requests) may go better next time: 503
 * `unavailable`, retry. Time the same request would spend again is its own: its body's arrival while no other request
 * was at the server (the client's link, then), and its own work (decoding and checking it, summing `inputs`,
 * computing its layers) done with no other request computing. Once that was at least half the deadline: 504
 * `deadline_exceeded`, which clients do not retry.
 */
import { ZpruneError } from "../contract/errors.ts";

/** The `/v1/prune` requests at the server, so that one can tell whether it had the server to itself. */
export class Presence {
  #here = 0;
  #arrivals = 0;

  /**
   * Counts a request in until `leave()`. `alone()` later tells whether no other request was at the server when it
   * came, nor has come since.
   */
  enter(): { leave(): void; alone(): boolean } {
    this.#here++;
    const solo = this.#here === 1, at = ++this.#arrivals;
    let left = false;
    return {
      leave: () => {
        if (!left) this.#here--;
        left = true;
      },
      alone: () => solo && this.#arrivals === at,
    };
  }
}

/** What a request is doing: receiving its body, waiting for a compute slot, or working on its own. */
export type Phase = "arriving" | "waiting" | "working";

/** A request's time, split by phase. */
export class RequestClock {
  #mark: number;
  #phase: Phase = "arriving";
  #arrivedAlone = false;
  arrivingMs = 0;
  waitingMs = 0;
  workingMs = 0;
  /**
   * Whether the request has worked alone all along: no request computing while it decoded and checked its body
   * (WorkQueue.idle()'s probe), and none beside it once it computes (WorkQueue.alone()'s).
   */
  alone: () => boolean = () => true;
  /**
   * Whether no other request was at the server while the body arrived (`Presence`), read once it has arrived: then
   * how long that took was up to the client's link, and would be the same again.
   */
  arrivingAlone: () => boolean = () => false;

  constructor(readonly start = performance.now(), readonly now: () => number = () => performance.now()) {
    this.#mark = start;
  }

  /** From now on the request is in `next`. */
  phase(next: Phase): void {
    const t = this.now(), spent = t - this.#mark;
    if (this.#phase === "arriving") {
      this.arrivingMs += spent;
      if (next !== "arriving") this.#arrivedAlone = this.arrivingAlone();
    } else if (this.#phase === "waiting") this.waitingMs += spent;
    else this.workingMs += spent;
    this.#mark = t;
    this.#phase = next;
  }

  /**
   * The answer for a request of `layers` layers (0: not known yet) whose deadline of `deadlineMs` passed now. Where
   * it computed alongside other requests, or its body came while others were at the server, that time was shared,
   * and a retry may well fit.
   */
  deadlineError(deadlineMs: number, layers: number): ZpruneError {
    this.phase("waiting");
    const alone = this.alone(), arrivedAlone = this.#arrivedAlone;
    const own = (alone ? this.workingMs : 0) + (arrivedAlone ? this.arrivingMs : 0);
    const repeat = own >= deadlineMs / 2;
    const [waited, arrived, worked] = [this.waitingMs, this.arrivingMs, this.workingMs].map(Math.round);
    const spent = `${waited} ms of waiting for a compute slot, ${arrived} ms for its body to arrive` +
      (arrivedAlone ? " with no other request at the server" : " while other requests were at the server") +
      ` and ${worked} ms of this request's own work (decoding, checking${layers ? `, ${layers} layer(s)` : ""})` +
      (alone ? (repeat ? ", computed with no other request" : "") : ", decoded or computed alongside other requests");
    if (repeat) {
      return new ZpruneError(
        "deadline_exceeded",
        `the server's deadline of ${deadlineMs} ms passed after ${spent}; the same request would likely miss it ` +
          "again: send fewer or smaller layers per request",
      );
    }
    // The app's error answer adds the server's Retry-After, as to every 503.
    return new ZpruneError(
      "unavailable",
      `the server's deadline of ${deadlineMs} ms passed after ${spent}; retry shortly`,
    );
  }
}
