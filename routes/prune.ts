/**
 * `POST /v1/prune`: parse, validate, queue, compute, encode. Everything domain-specific lives elsewhere; this
 * file only wires the contract's stages together and times them.
 */
import type { Context } from "hono";
import { parsePruneRequest, type Pattern } from "../contract/api.ts";
import { ZpruneError } from "../contract/errors.ts";
import { encodePruneResponse } from "../contract/prune_response.ts";
import { startTimeout } from "../contract/timeout.ts";
import { decodeMsgpack, isMsgpackType } from "../contract/wire.ts";
import { type Backend, toLayerResponse } from "../prune/backend.ts";
import { loopTurns } from "../prune/loop_turns.ts";
import { estimateBytes, prepareRequest } from "../prune/prepare.ts";
import { isDeadline, type WorkQueue } from "../prune/queue.ts";
import { runLayers } from "../prune/run_layers.ts";
import { Presence, RequestClock } from "./deadline.ts";
import type { Metrics } from "../observe/metrics.ts";
import { answerBody } from "./answer_body.ts";
import { type BodyBudget, type BodyHold, readBody } from "./body.ts";
import type { AppEnv } from "./env.ts";

/** Longest time one request may hold the event loop's thread computing layers before it lets other work run. */
const YIELD_MS = 50;

/**
 * The `pattern` label of the layer counter: "layer", "row", "N:M" written plainly for M up to 8 (2:4, 4:8...), else
 * "N:M". A client picks the pattern, so the raw string ("01:2", "1:9999"...) would let it add series without bound.
 */
function patternLabel(p: Pattern): string {
  if (p.kind !== "nm") return p.kind;
  return p.m <= 8 ? `${p.n}:${p.m}` : "N:M";
}

/** What the prune route needs. */
export interface PruneRouteDeps {
  backend: Backend;
  queue: WorkQueue;
  metrics: Metrics;
  /** Holds bodies from their first byte until they compute (or are answered). */
  bodies: BodyBudget;
  maxBodyBytes: number;
  maxLayerElements: number;
  deadlineMs: number;
  /** Bytes of answers their clients have yet to read (AppDeps.answerBytes): downloads that may share a link. */
  answersPending: () => number;
}

/** The handler of `POST /v1/prune`. */
export function pruneHandler(deps: PruneRouteDeps): (c: Context<AppEnv>) => Promise<Response> {
  const presence = new Presence();
  return async function prune(c: Context<AppEnv>): Promise<Response> {
    const hold = deps.bodies.open();
    const here = presence.enter();
    // Alone while its body arrives: no other request at the server, nor an answer still going out to a client.
    const quiet = deps.answersPending() === 0;
    try {
      return await handle(c, hold, () => quiet && here.alone() && deps.answersPending() === 0);
    } finally {
      here.leave();
      hold.release();
    }
  };

  async function handle(c: Context<AppEnv>, hold: BodyHold, arrivingAlone: () => boolean): Promise<Response> {
    const start = performance.now();
    const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
    if (!isMsgpackType(type)) {
      throw new ZpruneError(
        "unsupported_media_type",
        // The client's own value, cut short: an error answer must not grow with what was sent.
        `Content-Type "${type.length > 100 ? `${type.slice(0, 100)}...` : type || "(none)"}" is not accepted; ` +
          "send the body as application/msgpack",
      );
    }
    // A coded body would be read as msgpack with the coding's bytes in it; zprune decompresses nothing.
    const coding = (c.req.header("content-encoding") ?? "").trim().toLowerCase();
    if (coding !== "" && coding !== "identity") {
      throw new ZpruneError(
        "unsupported_media_type",
        `Content-Encoding "${coding.length > 100 ? `${coding.slice(0, 100)}...` : coding}" is not accepted; send ` +
          "the body uncompressed",
      );
    }
    // The deadline runs from the request's start: a body that takes too long to arrive ends with it too.
    const deadline = deps.deadlineMs > 0
      ? startTimeout(deps.deadlineMs, `the deadline of ${deps.deadlineMs} ms passed`)
      : undefined;
    const signal = AbortSignal.any(deadline ? [c.req.raw.signal, deadline.signal] : [c.req.raw.signal]);
    const clock = new RequestClock(start);
    clock.arrivingAlone = arrivingAlone;
    try {
      return await compute(c, hold, signal, clock);
    } catch (e) {
      throw isDeadline(e) ? clock.deadlineError(deps.deadlineMs, c.get("layers") ?? 0) : e;
    } finally {
      // Work the request leaves behind (a layer in flight past an abort) is kept by the queue, not by this timer.
      deadline?.clear();
    }
  }

  /** Reads, validates and computes the request, telling `clock` whether it waits or works. */
  async function compute(
    c: Context<AppEnv>,
    hold: BodyHold,
    signal: AbortSignal,
    clock: RequestClock,
  ): Promise<Response> {
    const { start } = clock;
    const body = await readBody(c.req.raw, deps.maxBodyBytes, hold, signal);
    clock.phase("working");
    // Decoding and checking share the host with any request computing meanwhile (or a layer one left behind, whose
    // workers still run): then that time was not this request's alone.
    clock.alone = deps.queue.idle();
    deps.metrics.bytesIn.inc({}, body.byteLength);
    const request = parsePruneRequest(decodeMsgpack(body));
    // Summing large `inputs` takes a while: other requests and /healthz get their turns meanwhile.
    const prepTurns = loopTurns(YIELD_MS);
    const pause = () => (signal.throwIfAborted(), prepTurns.next()); // a client gone or a deadline ends the sums
    const prepared = await prepareRequest(request, { maxLayerElements: deps.maxLayerElements }, pause)
      .finally(() => prepTurns.stop());
    const { params, layers } = prepared;
    clock.phase("waiting");
    const preparedAlone = clock.alone(); // read now: the request's own start in the queue would count
    c.set("layers", layers.length);
    c.set("elements", layers.reduce((a, l) => a + l.rows * l.cols, 0));
    const decodeMs = performance.now() - start;

    let computeMs = 0;
    const outputs = await deps.queue.run(
      async (keep) => {
        clock.phase("working");
        const computing = deps.queue.alone();
        clock.alone = () => preparedAlone && computing();
        hold.release(); // the queue's estimate counts the body from here on
        const t0 = performance.now();
        try {
          return await runLayers(deps.backend, params, layers, signal, keep, YIELD_MS);
        } finally {
          computeMs = performance.now() - t0;
          deps.metrics.computeSeconds.inc({}, computeMs / 1000);
        }
      },
      signal,
      estimateBytes(prepared, body.byteLength),
    );
    deps.metrics.layers.inc({ method: params.method, pattern: patternLabel(params.pattern) }, layers.length);

    const { pieces, byteLength, timings } = encodePruneResponse(
      {
        backend: deps.backend.kind,
        device: deps.backend.device,
        layers: outputs.map((o, i) => toLayerResponse(layers[i]!, o)),
      },
      (encodeMs) => ({ decodeMs, computeMs, encodeMs, totalMs: performance.now() - start }),
    );
    c.set("timings", timings);
    return new Response(answerBody(pieces, byteLength), {
      status: 200,
      headers: { "content-type": "application/msgpack", "content-length": String(byteLength) },
    });
  }
}
