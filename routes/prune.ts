/**
 * `POST /v1/prune`: parse, validate, queue, compute, encode. Everything domain-specific lives elsewhere; this
 * file only wires the contract's stages together and times them.
 */
import type { Context } from "hono";
import {
  type DType,
  type LayerResponse,
  parsePruneRequest,
  type Pattern,
  type PruneResponse,
  type Timings,
} from "../contract/api.ts";
import { ZpruneError } from "../contract/errors.ts";
import { concatBytes, decodeMsgpack, encodeMsgpack, msgpackPieces } from "../contract/wire.ts";
import type { Backend, LayerOutput } from "../prune/backend.ts";
import { estimateBytes, prepareRequest } from "../prune/prepare.ts";
import type { WorkQueue } from "../prune/queue.ts";
import type { Metrics } from "../observe/metrics.ts";
import { type BodyBudget, type BodyHold, readBody } from "./body.ts";
import type { AppEnv } from "./env.ts";

/** Longest time one request may hold the event loop's thread computing layers before it lets other work run. */
const YIELD_MS = 50;

/**
 * Gives the event loop a turn when a request has held its thread for `ms`. Layers computed inline (small ones on
 * the CPU backend) never yield on their own; an answer from a worker or the GPU lets the loop run anyway, which a
 * zero timer armed after each turn notices, so those layers never wait here. `next()` answers a promise to await,
 * or undefined when no pause is due.
 */
function loopTurns(ms: number): { next(): Promise<void> | undefined; stop(): void } {
  let turned = false;
  let heldSince = performance.now();
  let timer = setTimeout(() => (turned = true), 0);
  return {
    next() {
      if (turned) {
        turned = false;
        heldSince = performance.now();
        timer = setTimeout(() => (turned = true), 0);
        return undefined;
      }
      if (performance.now() - heldSince < ms) return undefined;
      return new Promise((resolve) => setTimeout(resolve, 0)); // the armed timer fires first: the next call resets
    },
    stop: () => clearTimeout(timer),
  };
}

/**
 * `work`'s answer, or the signal's reason as soon as it aborts: a request past its deadline, or whose client left, is
 * answered then, not when the backend gets through the layer in flight (a whole layer on the GPU). The backend's
 * promise settles only once that layer's memory and device are free again, so the request `keep`s it in the work
 * queue meanwhile.
 */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal, keep: (work: Promise<unknown>) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      keep(work);
      reject(signal.reason);
    };
    // Handled either way: a rejection after the abort is that abort, answered already.
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
}

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
}

const MSGPACK_TYPES = new Set(["application/msgpack", "application/x-msgpack"]);

/** The longest msgpack of a `Timings` map: every value a float64 (9 bytes), the longest a number packs to. */
const TIMINGS_MAX_BYTES = encodeMsgpack({ decodeMs: 0.1, computeMs: 0.1, encodeMs: 0.1, totalMs: 0.1 }).byteLength;

/**
 * Encodes the response map straight into its body, `timings` last, so that `timings.encodeMs` can include the
 * layers' cost: the body is allocated with room for the longest timings map and cut to the one written.
 */
function encodeResponse(
  head: Omit<PruneResponse, "layers" | "timings">,
  layers: LayerResponse[],
  t: Omit<Timings, "encodeMs" | "totalMs">,
  start: number,
) {
  const t0 = performance.now();
  // A msgpack map is its header followed by key, value, key, value..., here ending with room for timings' value.
  const body = concatBytes([
    Uint8Array.of(0x84),
    ...msgpackPieces("backend"),
    ...msgpackPieces(head.backend),
    ...msgpackPieces("device"),
    ...msgpackPieces(head.device),
    ...msgpackPieces("layers"),
    ...msgpackPieces(layers),
    ...msgpackPieces("timings"),
    new Uint8Array(TIMINGS_MAX_BYTES),
  ]);
  const o = body.byteLength - TIMINGS_MAX_BYTES;
  const encodeMs = performance.now() - t0;
  const timings: Timings = { ...t, encodeMs, totalMs: performance.now() - start };
  const packed = encodeMsgpack(timings);
  body.set(packed, o);
  return { bytes: body.subarray(0, o + packed.byteLength), timings };
}

function layerResponse(name: string, rows: number, cols: number, dtype: DType, out: LayerOutput): LayerResponse {
  const r: LayerResponse = { name, shape: [rows, cols], mask: out.mask, stats: out.stats };
  if (out.exactPath !== undefined) r.exactPath = out.exactPath;
  if (out.weight) r.weight = { dtype, shape: [rows, cols], data: out.weight };
  if (out.score) {
    const s = out.score;
    r.score = { dtype: "f32", shape: [rows, cols], data: new Uint8Array(s.buffer, s.byteOffset, s.byteLength) };
  }
  return r;
}

/** The handler of `POST /v1/prune`. */
export function pruneHandler(deps: PruneRouteDeps) {
  return async function prune(c: Context<AppEnv>): Promise<Response> {
    const hold = deps.bodies.open();
    try {
      return await handle(c, hold);
    } finally {
      hold.release();
    }
  };

  async function handle(c: Context<AppEnv>, hold: BodyHold): Promise<Response> {
    const start = performance.now();
    const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
    if (!MSGPACK_TYPES.has(type)) {
      throw new ZpruneError(
        "unsupported_media_type",
        // The client's own value, cut short: an error answer must not grow with what was sent.
        `Content-Type "${type.length > 100 ? `${type.slice(0, 100)}...` : type || "(none)"}" is not accepted; ` +
          "send the body as application/msgpack",
      );
    }
    // The deadline runs from the request's start: a body that takes too long to arrive ends with it too.
    const signals = [c.req.raw.signal];
    if (deps.deadlineMs > 0) signals.push(AbortSignal.timeout(deps.deadlineMs));
    const signal = AbortSignal.any(signals);
    const body = await readBody(c.req.raw, deps.maxBodyBytes, hold, signal);
    deps.metrics.bytesIn.inc({}, body.byteLength);
    const request = parsePruneRequest(decodeMsgpack(body));
    // Summing large `inputs` takes a while: other requests and /healthz get their turns meanwhile.
    const prepTurns = loopTurns(YIELD_MS);
    const pause = () => (signal.throwIfAborted(), prepTurns.next()); // a client gone or a deadline ends the sums
    const prepared = await prepareRequest(request, { maxLayerElements: deps.maxLayerElements }, pause)
      .finally(() => prepTurns.stop());
    const { params, layers } = prepared;
    c.set("layers", layers.length);
    c.set("elements", layers.reduce((a, l) => a + l.rows * l.cols, 0));
    const decodeMs = performance.now() - start;

    let computeMs = 0;
    const outputs = await deps.queue.run(
      async (keep) => {
        hold.release(); // the queue's estimate counts the body from here on
        const t0 = performance.now();
        const outs: LayerOutput[] = [];
        const turns = loopTurns(YIELD_MS);
        try {
          // Layers run one after another: each may use the whole machine, and memory stays one layer deep.
          for (const layer of layers) {
            // Awaiting a layer computed inline yields only to microtasks: a request of many small layers lets
            // other requests, /healthz and its own deadline's timer run at least every YIELD_MS.
            const pause = turns.next();
            if (pause) await pause;
            signal.throwIfAborted();
            outs.push(await untilAborted(deps.backend.prune(params, layer, signal), signal, keep));
          }
        } finally {
          turns.stop();
          computeMs = performance.now() - t0;
          deps.metrics.computeSeconds.inc({}, computeMs / 1000);
        }
        return outs;
      },
      signal,
      estimateBytes(prepared, body.byteLength),
    );
    deps.metrics.layers.inc({ method: params.method, pattern: patternLabel(params.pattern) }, layers.length);

    const responseLayers = outputs.map((o, i) => {
      const l = layers[i]!;
      return layerResponse(l.name, l.rows, l.cols, l.dtype, o);
    });
    const { bytes, timings } = encodeResponse(
      { backend: deps.backend.kind, device: deps.backend.device },
      responseLayers,
      { decodeMs, computeMs },
      start,
    );
    c.set("timings", timings);
    return new Response(bytes, {
      status: 200,
      headers: { "content-type": "application/msgpack", "content-length": String(bytes.byteLength) },
    });
  }
}
