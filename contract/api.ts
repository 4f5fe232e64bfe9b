/**
 * The wire contract of `POST /v1/prune`, version 1 (API.md): zod schemas for requests and responses and the
 * TypeScript types inferred from them. The server validates with these; the client imports the same types.
 * This module is pure (no runtime APIs) so that Deno, Bun, Node and browsers can all import it.
 */
import { z } from "zod";
import { ZpruneError } from "./errors.ts";
export { ErrorResponseSchema } from "./errors.ts";

/** Contract version served under `/v1`. */
export const API_VERSION = 1;

/** Pruning methods, in the order `/v1/info` lists them. */
export const METHODS = ["zpruner", "wanda", "ria", "magnitude"] as const;
/** A pruning method. */
export type Method = (typeof METHODS)[number];

/** Tensor element types, in the order `/v1/info` lists them. */
export const DTYPES = ["f32", "f16", "bf16"] as const;
/** A tensor element type. */
export type DType = (typeof DTYPES)[number];
/** Each element type's size in bytes. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = { f32: 4, f16: 2, bf16: 2 };

/** The backends a server computes on, as responses and `/v1/info` name them. */
export const BACKEND_KINDS = ["webgpu", "cpu"] as const;
/** A backend kind. */
export type BackendKind = (typeof BACKEND_KINDS)[number];

/** The pattern forms, as `/v1/info` lists them ("N:M" stands for any N:M such as "2:4"). */
export const PATTERN_FORMS = ["layer", "row", "N:M"] as const;

/** What a response may carry per layer. */
export const RETURNS = ["mask", "weight", "score"] as const;

/**
 * API.md, Selection: where a score is within this relative distance of its selection unit's threshold, float32
 * cannot settle its order, and either side is acceptable (the golden files mark such entries `ambiguous`).
 */
export const AMBIGUITY_BAND = 1e-5;

/** The activation exponent each method uses when the request gives none (API.md, Scores). */
export const DEFAULT_EXPONENT: Record<Method, number> = { zpruner: 1.5, wanda: 1, ria: 0.5, magnitude: 1 };

/** Methods that need activations unless `options.dataFree` is true. */
export const NEEDS_ACTIVATIONS: Record<Method, boolean> = { zpruner: true, wanda: true, ria: true, magnitude: false };

/**
 * Bounds a request keeps beyond API.md's own (no real request comes near them); `/v1/info` lists them. The
 * msgpack body's nesting and value count are bounded too, before decoding (contract/msgpack_scan.ts).
 */
export const REQUEST_BOUNDS = {
  maxLayers: 4096,
  maxNameLength: 1024,
  /** Largest M of an "N:M" pattern (four digits). */
  maxM: 9999,
  exponent: { min: 0, max: 64 },
  maxShapeDims: 8,
} as const;

/** Binary data: msgpack `bin` decodes to a Uint8Array (a Buffer under Node and Bun, itself a Uint8Array). */
const bin = z.custom<Uint8Array>((v) => v instanceof Uint8Array, { message: "expected binary data (msgpack bin)" })
  .describe("msgpack bin: little-endian, row-major bytes");

/** A tensor's shape on the wire: any rank up to `maxShapeDims`, each size an integer >= 0. */
const ShapeSchema = z.array(z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)).max(
  REQUEST_BOUNDS.maxShapeDims,
);

/** A tensor on the wire: dtype, shape and little-endian row-major bytes. */
export const TensorSchema = z.object({
  dtype: z.enum(DTYPES),
  shape: ShapeSchema,
  data: bin,
});
/** A tensor on the wire. */
export type Tensor = z.infer<typeof TensorSchema>;

/**
 * A request tensor with the dtypes and the shape a layer's field takes. prepare.ts checks these per layer (its
 * messages name the expected shape, and a shape the bytes do not fill is `shape_mismatch`, as API.md orders); here
 * they are only the OpenAPI document's, so that a client validating against it refuses what the server refuses.
 */
function layerTensor(doc: { dtypes: readonly DType[]; minSizes: readonly number[]; description: string }) {
  return TensorSchema.extend({
    dtype: TensorSchema.shape.dtype.meta({ enum: [...doc.dtypes] }),
    shape: ShapeSchema.meta({
      minItems: doc.minSizes.length,
      maxItems: doc.minSizes.length,
      prefixItems: doc.minSizes.map((minimum) => ({ type: "integer", minimum, maximum: Number.MAX_SAFE_INTEGER })),
    }),
  }).describe(doc.description);
}

/** The pattern grammar: `layer`, `row` or `N:M`, N and M of at most four digits (`REQUEST_BOUNDS.maxM`). */
const PATTERN_RE = /^(layer|row|([0-9]{1,4}):([0-9]{1,4}))$/;

/** One layer of a request. `null` (msgpack nil) counts as absent. */
export const LayerRequestSchema = z.object({
  name: z.string().max(REQUEST_BOUNDS.maxNameLength),
  weight: layerTensor({ dtypes: DTYPES, minSizes: [1, 1], description: "shape [rows, cols], both at least 1" }),
  actNormSq: layerTensor({
    dtypes: ["f32"],
    minSizes: [1],
    description: "f32, shape [cols], entries finite and >= 0; not with inputs",
  }).nullish(),
  inputs: layerTensor({ dtypes: DTYPES, minSizes: [0, 1], description: "shape [tokens, cols]; not with actNormSq" })
    .nullish(),
}).meta({
  // For the OpenAPI document, as prepare.ts refuses it: not both actNormSq and inputs (nil counts as absent).
  not: {
    required: ["actNormSq", "inputs"],
    properties: { actNormSq: { type: "object" }, inputs: { type: "object" } },
  },
});

/** The bounds of `sparsity`, for its schema and for its OpenAPI metadata alike. */
const SPARSITY_BOUNDS = { minimum: 0, exclusiveMaximum: 1 } as const;
/** `sparsity` where it counts: "layer" and "row". */
const SparsitySchema = z.number().min(SPARSITY_BOUNDS.minimum).lt(SPARSITY_BOUNDS.exclusiveMaximum);

/**
 * The OpenAPI document's statement of "required for "layer" and "row"; ignored for N:M": where the pattern is one of
 * those two (or absent or nil, which means "layer"), `sparsity` must be there and in range; for N:M anything goes.
 */
const SPARSITY_RULE = {
  if: { properties: { pattern: { enum: ["layer", "row", null] } } },
  then: { required: ["sparsity"], properties: { sparsity: { type: "number", ...SPARSITY_BOUNDS } } },
};

/** The body of `POST /v1/prune`. */
export const PruneRequestSchema = z.object({
  method: z.enum(METHODS).nullish().meta({ default: "zpruner" }).transform((m) => m ?? "zpruner"),
  pattern: z.string().regex(
    PATTERN_RE,
    `expected "layer", "row" or "N:M" such as "2:4" (M at most ${REQUEST_BOUNDS.maxM})`,
  ).nullish()
    .meta({ default: "layer", description: '"layer", "row" or "N:M" with 0 < N < M, such as "2:4"' })
    .transform((p) => p ?? "layer"),
  // API.md: "required for "layer" and "row"; ignored for N:M", so it is checked (below) only for those two, and
  // the document states that rule on the whole body (SPARSITY_RULE).
  sparsity: z.unknown().optional().meta({
    description: 'a number, 0 <= sparsity < 1: required for "layer" and "row"; ignored for N:M',
  }),
  options: z.object({
    exponent: z.number().finite().min(REQUEST_BOUNDS.exponent.min).max(REQUEST_BOUNDS.exponent.max).nullish()
      .meta({
        description: `activation exponent; default ${
          METHODS.filter((m) => NEEDS_ACTIVATIONS[m]).map((m) => `${DEFAULT_EXPONENT[m]} for ${m}`).join(", ")
        } (magnitude uses none)`,
      }),
    dataFree: z.boolean().nullish().meta({
      default: false,
      description: "true lets a method that wants activations run without them",
    }),
  }).nullish(),
  return: z.array(z.enum(RETURNS)).max(RETURNS.length).nullish().meta({ default: ["mask"] })
    .transform((r) => r ?? ["mask"]),
  layers: z.array(LayerRequestSchema).min(1).max(REQUEST_BOUNDS.maxLayers),
}).meta(SPARSITY_RULE).superRefine((req, ctx) => {
  if (req.pattern === "layer" || req.pattern === "row") {
    if (req.sparsity === undefined || req.sparsity === null) {
      ctx.addIssue({ code: "custom", path: ["sparsity"], message: `required for pattern "${req.pattern}"` });
    } else {
      const r = SparsitySchema.safeParse(req.sparsity);
      for (const issue of r.error?.issues ?? []) {
        ctx.addIssue({ code: "custom", path: ["sparsity"], message: issue.message, input: req.sparsity });
      }
    }
  }
  const nm = PATTERN_RE.exec(req.pattern);
  if (nm?.[2] !== undefined) {
    const n = Number(nm[2]), m = Number(nm[3]);
    if (!(n > 0 && n < m)) ctx.addIssue({ code: "custom", path: ["pattern"], message: "N:M needs 0 < N < M" });
  }
  // Also when another field failed, so that a bad sparsity is reported with the rest (zod skips refinements of an
  // object with issues unless told otherwise).
}, { when: (payload) => typeof payload.value === "object" && payload.value !== null }).transform((
  { sparsity, ...req },
) => ({
  ...req,
  /** The validated sparsity of "layer" and "row"; undefined for N:M, whatever was sent. */
  sparsity: req.pattern === "layer" || req.pattern === "row" ? sparsity as number : undefined,
}));
/** The body of `POST /v1/prune` after defaults are applied. */
export type PruneRequest = z.infer<typeof PruneRequestSchema>;
/** The body of `POST /v1/prune` as a client writes it (defaults optional; sparsity a number where it counts). */
export type PruneRequestInput = Omit<z.input<typeof PruneRequestSchema>, "sparsity"> & { sparsity?: number | null };

/** A selection pattern, parsed. */
export type Pattern =
  | { kind: "layer"; sparsity: number }
  | { kind: "row"; sparsity: number }
  | { kind: "nm"; n: number; m: number };

/** Parses a validated request's `pattern` and `sparsity` into a `Pattern`. */
export function parsePattern(pattern: string, sparsity: number | null | undefined): Pattern {
  if (pattern === "layer" || pattern === "row") return { kind: pattern, sparsity: sparsity ?? 0 };
  const [n, m] = pattern.split(":").map(Number);
  return { kind: "nm", n: n!, m: m! };
}

/**
 * How many weights a pattern prunes in a rows x cols layer, by API.md's Selection: rows * floor(sparsity * cols) for
 * "row", rows * (cols / M) * N for N:M, and for "layer" floor(sparsity * rows * cols), which may read either way: the
 * product first (as the golden files and both backends take it) or left to right, which can be one less. Both are
 * given (once where they agree).
 */
export function prunedCounts(pattern: Pattern, rows: number, cols: number): number[] {
  if (pattern.kind === "nm") return [rows * (cols / pattern.m) * pattern.n];
  if (pattern.kind === "row") return [rows * Math.floor(pattern.sparsity * cols)];
  const product = Math.floor(pattern.sparsity * (rows * cols)), literal = Math.floor(pattern.sparsity * rows * cols);
  return product === literal ? [product] : [product, literal];
}

/** Per-row sparsity summary. */
export const RowSparsitySchema = z.object({ min: z.number(), max: z.number(), mean: z.number() });

/** Statistics of one pruned layer. */
export const LayerStatsSchema = z.object({
  pruned: z.number().int(),
  total: z.number().int(),
  sparsity: z.number(),
  threshold: z.number().optional(),
  alpha: z.number().optional(),
  rowSparsity: RowSparsitySchema,
  nonFinite: z.literal(0),
});
/** Statistics of one pruned layer. */
export type LayerStats = z.infer<typeof LayerStatsSchema>;

/** One layer of a response. */
export const LayerResponseSchema = z.object({
  name: z.string(),
  shape: z.tuple([z.number().int(), z.number().int()]),
  mask: bin,
  weight: TensorSchema.optional(),
  // API.md: "score?: Tensor f32". Stated for the OpenAPI document only, as layerTensor's dtypes are: the client checks
  // the dtype itself, with a message that names what it expected.
  score: TensorSchema.extend({ dtype: TensorSchema.shape.dtype.meta({ enum: ["f32"] }) }).optional(),
  stats: LayerStatsSchema,
  // An addition to API.md (which lets the server add fields): a client can see which layers were slow, and why.
  exactPath: z.string().optional().describe(
    "Present when a WebGPU server computed this layer on its exact CPU path instead (same mask, only slower): why.",
  ),
});
/** One layer of a response. */
export type LayerResponse = z.infer<typeof LayerResponseSchema>;

/** Stage timings of one request, in milliseconds. */
export const TimingsSchema = z.object({
  decodeMs: z.number(),
  computeMs: z.number(),
  encodeMs: z.number(),
  totalMs: z.number(),
});
/** Stage timings of one request, in milliseconds. */
export type Timings = z.infer<typeof TimingsSchema>;

/** The body of a successful `POST /v1/prune` answer. */
export const PruneResponseSchema = z.object({
  backend: z.enum(BACKEND_KINDS),
  device: z.string(),
  timings: TimingsSchema,
  layers: z.array(LayerResponseSchema),
});
/** The body of a successful `POST /v1/prune` answer. */
export type PruneResponse = z.infer<typeof PruneResponseSchema>;

/** `GET /healthz`. */
export const HealthResponseSchema = z.object({ status: z.literal("ok"), backend: z.enum(BACKEND_KINDS) });
/** `GET /healthz`. */
export type HealthResponse = z.infer<typeof HealthResponseSchema>;

/** A count or size in `/v1/info`. */
const count = z.number().int().nonnegative();

/** `GET /v1/info`. */
export const InfoResponseSchema = z.object({
  name: z.literal("zprune"),
  version: z.string(),
  apiVersion: z.number().int(),
  backend: z.enum(BACKEND_KINDS),
  device: z.string(),
  limits: z.object({
    maxBodyBytes: count,
    maxLayerElements: count,
    maxQueue: count,
    memoryBudgetBytes: count.describe(
      "estimated working memory the computing requests may hold together (413 for a request that alone needs more)",
    ),
    msgpack: z.object({ maxDepth: count, maxValues: count }).describe(
      "the msgpack body's bounds, checked before decoding",
    ),
    maxLayers: count,
    maxNameLength: count,
    maxM: count,
    exponent: z.object({ min: z.number(), max: z.number() }),
    maxShapeDims: count,
  }),
  methods: z.array(z.enum(METHODS)).readonly(),
  patterns: z.array(z.string()).readonly(),
  dtypes: z.array(z.enum(DTYPES)).readonly(),
  returns: z.array(z.enum(RETURNS)).readonly(),
});
/** `GET /v1/info`. */
export type InfoResponse = z.infer<typeof InfoResponseSchema>;

/** Formats a zod path as `layers[0].weight.shape`. */
function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : (out ? "." : "") + String(p);
  return out || "(body)";
}

const isMap = (v: unknown) => typeof v === "object" && v !== null && Object.getPrototypeOf(v) === Object.prototype;

/**
 * The path of the first place a map belongs but something else stands, or null. A bin (Uint8Array) or an
 * array is an object too, and zod's object schemas would read one as a map with every field absent.
 */
function notAMap(body: unknown): string | null {
  if (!isMap(body)) return "(body)";
  const b = body as Record<string, unknown>;
  if (b.options != null && !isMap(b.options)) return "options";
  if (!Array.isArray(b.layers)) return null; // zod names it
  for (const [i, l] of b.layers.entries()) {
    if (!isMap(l)) return `layers[${i}]`;
    const layer = l as Record<string, unknown>;
    for (const k of ["weight", "actNormSq", "inputs"]) {
      if (layer[k] != null && !isMap(layer[k])) return `layers[${i}].${k}`;
    }
  }
  return null;
}

/** Validates a decoded body against the request schema; throws `invalid_request` naming the field path. */
export function parsePruneRequest(body: unknown): PruneRequest {
  const where = notAMap(body);
  if (where) throw new ZpruneError("invalid_request", `${where}: expected a map`);
  const r = PruneRequestSchema.safeParse(body);
  if (r.success) return r.data;
  // A value of the wrong type is named once: zod also runs the type's checks on it, which then say nothing useful
  // ("return": "mask" was also "Too big: expected string to have <=3 characters", the array's bound).
  const wrongType = new Set(r.error.issues.filter((i) => i.code === "invalid_type").map((i) => formatPath(i.path)));
  const issues = r.error.issues
    .filter((i) => i.code === "invalid_type" || !wrongType.has(formatPath(i.path)))
    .slice(0, 5)
    .map((i) => `${formatPath(i.path)}: ${i.message}`);
  throw new ZpruneError("invalid_request", issues.join("; "));
}
