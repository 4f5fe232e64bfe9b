/**
 * Draining in front of the runtime's server: requests counted from arrival until their answers are written to the last
 * byte, large answers passed on in slices (and dropped when their client stops reading), and a switch that refuses new
 * requests while those in flight finish. Runtime-neutral; runtime/host.ts puts it in front of Deno's or Bun's server.
 */

/** A request handler, as both runtimes' servers call it. */
export type Fetch = (req: Request) => Response | Promise<Response>;

/**
 * Starts draining: every new request is answered `refuse(req)` at once, while those in flight go on. Resolves true
 * once none is in flight, or false after `limitMs` with some still there.
 */
export type Drain = (refuse: Fetch, limitMs: number) => Promise<boolean>;

/**
 * `fetch` with a count of the requests in flight and a switch that refuses new ones. Draining happens here, in
 * front of the runtime's server, because Deno 2.9's `shutdown()` makes the body of every request in flight
 * unreadable (denoland/deno#36809): a client still uploading would get an error instead of its answer. So the
 * listener stays open until the count reaches 0, and only then is the server shut down.
 */
export function drainable(
  fetch: Fetch,
  opts: { untilWritten: boolean; writeStallMs: number },
): { fetch: Fetch; inFlight(): number; answerBytes(): number; answersDropped(): number; drain: Drain } {
  let inFlight = 0;
  let answerBytes = 0;
  let answersDropped = 0;
  let refuse: Fetch | undefined;
  const idle = new Set<() => void>();
  return {
    fetch: async (req) => {
      if (refuse) return refuse(req);
      inFlight++;
      let finished = false;
      const finish = () => {
        if (finished) return;
        finished = true;
        if (--inFlight === 0) { for (const done of idle) done(); }
      };
      try {
        const res = await fetch(req);
        // The client should not send another request on this connection: it would only be refused.
        if (refuse) {
          try {
            res.headers.set("Connection", "close");
          } catch { /* immutable headers (a fetched Response): the client learns on its next request */ }
        }
        // Counted until the answer is written: a drain that ended with the handler would let shutdown cut off a large
        // answer on its way to a slow client, and exit as if it had been delivered.
        const length = Number(res.headers.get("content-length"));
        // A small answer is handed over whole: written at once, and Deno 2.9 stops writing a streamed body at the
        // client's EOF, so a client that shut its sending side after its request would get the headers alone.
        // (The length is read first: under Deno, touching `res.body` turns a known body into a stream, sent in chunks.)
        if (!opts.untilWritten || !(length > WRITE_SLICE) || !res.body) {
          finish();
          return res;
        }
        const tracked = untilWritten(res, (stalled) => {
          if (finished) return;
          answerBytes -= length;
          if (stalled) answersDropped++;
          finish();
        }, opts.writeStallMs);
        answerBytes += length; // after: a body untilWritten could not take is not counted, never to be let go
        return tracked;
      } catch (err) {
        finish();
        throw err;
      }
    },
    inFlight: () => inFlight,
    answerBytes: () => answerBytes,
    answersDropped: () => answersDropped,
    drain(refuseWith, limitMs) {
      refuse = refuseWith;
      if (inFlight === 0) return Promise.resolve(true);
      return new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          idle.delete(done);
          resolve(true);
        };
        // setTimeout fires at once past 2^31-1 ms (about 24.8 days), so a longer limit waits that long instead.
        const timer = setTimeout(() => {
          idle.delete(done);
          resolve(false);
        }, Math.min(limitMs, 2 ** 31 - 1));
        idle.add(done);
      });
    },
  };
}

/**
 * The drain's closing line on stderr once every request was answered: `seconds` since the signal, `openFor` the
 * seconds the connections were then given to close, or null where they closed, and `dropped` how many answers of the
 * drain were dropped unread (each named on stderr as it was): answered, as the request log says, but not delivered.
 */
export function drainedLine(seconds: number, openFor: number | null, dropped: number): string {
  const head = openFor === null
    ? `zprune: drained in ${seconds.toFixed(1)} s`
    : `zprune: connections still open ${openFor.toFixed(1)} s after the last answer, ${seconds.toFixed(1)} s after ` +
      "the signal";
  const unread = dropped > 0
    ? `, ${dropped} of the answers dropped unread (no part of each taken for ${WRITE_STALL_MS / 1000} s)`
    : "";
  return `${head}; every request was answered${unread}; exit 0`;
}

/** What a drain needs of a listening server (runtime/host.ts's `Listening`). */
export interface DrainTarget {
  readonly inFlight: number;
  readonly answersDropped: number;
  drain: Drain;
  shutdown(): Promise<void>;
}

/**
 * Drains `server` after `signal`: new requests get `refuse` while those in flight finish, for at most `limitMs`; then
 * its connections are closed, given what is left of the limit and at least 1 s. Each step is said on `say` (stderr
 * in main.ts), and the answer is the exit status: 0 once every request was answered, 1 past the limit.
 */
export async function drainServer(
  server: DrainTarget,
  refuse: Fetch,
  signal: string,
  limitMs: number,
  say: (line: string) => void,
  now: () => number = Date.now,
): Promise<0 | 1> {
  const start = now();
  say(
    `zprune: ${signal}, draining ${server.inFlight} request(s) for at most ${limitMs / 1000} s; ` +
      "a second signal exits at once",
  );
  // Not server.shutdown() yet: under Deno it would fail every body still uploading (see drainable()).
  const droppedBefore = server.answersDropped;
  if (!await server.drain(refuse, limitMs)) {
    say(`zprune: drain limit of ${limitMs / 1000} s reached, ${server.inFlight} request(s) unfinished; exit 1`);
    return 1;
  }
  // Every answer is written. Closing the connections could still wait on a client that goes on sending a body that
  // was answered already (a 413, say), so it gets what is left of the limit, and at least 1 s.
  const left = Math.max(1_000, limitMs - (now() - start));
  let timer: ReturnType<typeof setTimeout> | undefined;
  const closed = await Promise.race([
    server.shutdown().then(() => true),
    new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), left)),
  ]);
  clearTimeout(timer);
  say(drainedLine((now() - start) / 1000, closed ? null : left / 1000, server.answersDropped - droppedBefore));
  return 0;
}

/** The largest piece `untilWritten` passes on at once, and the largest answer handed over whole. */
const WRITE_SLICE = 64 * 1024;

/** Answers up to this size are handed to the runtime whole, not tracked until written (routes/answer_body.ts). */
export const WHOLE_ANSWER_BYTES = WRITE_SLICE;

/** How long an answer may wait for its client to take the next piece before its connection is dropped. */
export const WRITE_STALL_MS = 60_000;

/**
 * `res` (whose body has a declared length) with its body passed through a stream that calls `finish(false)` once the
 * runtime has read its last piece, or cancelled it (the client left), or `finish(true)` after `stallMs` without the
 * runtime asking for the next piece (a client that stopped reading: the answer is dropped, and its memory with it).
 * Status and headers are kept as they are.
 */
function untilWritten(res: Response, finish: (stalled: boolean) => void, stallMs: number): Response {
  const reader = res.body!.getReader();
  let rest: Uint8Array | null = null; // what is left of the chunk being passed on
  let timer: ReturnType<typeof setTimeout> | undefined;
  let rearm = () => {};
  const done = (stalled = false) => {
    clearTimeout(timer);
    finish(stalled);
  };
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      // Armed until the first piece is asked for, then again after each: a handler's answer that the runtime never
      // reads (its client gone before it was ready) is let go as well.
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          // Said now, with the request id that matches the request's log line (which says 200: the answer was
          // given, not delivered). Deno logs the error that ends a body only when it next writes to the connection,
          // which a client that reads nothing never lets it do, nor one gone before the answer was ready.
          const id = res.headers.get("x-request-id") ?? "(no id)";
          console.error(`zprune: dropped the answer to request ${id}: its client took no part of it for ${stallMs} ms`);
          // What Deno logs if the connection is written to again: one line, no stack, since nothing failed here.
          const stalled = new Error(`zprune: the dropped answer to request ${id} is cut short here`);
          stalled.stack = stalled.message;
          controller.error(stalled);
          reader.cancel().catch(() => {});
          done(true);
        }, stallMs);
      };
      arm();
      rearm = arm;
    },
    async pull(controller) {
      rearm();
      try {
        if (!rest || rest.byteLength === 0) {
          const next = await reader.read();
          if (next.done) {
            controller.close();
            done();
            return;
          }
          rest = next.value;
        }
        // In slices: the runtime reads ahead of what the socket has taken, by a chunk or so, and one chunk can be
        // the whole answer (a Uint8Array body), which would count it as written as soon as its writing began.
        // Copies, not views: the runtime holds the slice it is writing until the socket takes it, and a view would
        // hold the whole array it is cut from (a tensor of up to 2 GiB) for as long as a dropped answer's client keeps
        // its connection open without reading.
        controller.enqueue(rest.slice(0, WRITE_SLICE));
        rest = rest.subarray(WRITE_SLICE);
      } catch (err) {
        controller.error(err);
        done();
      }
    },
    cancel(reason) {
      done();
      return reader.cancel(reason);
    },
  });
  return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
}
