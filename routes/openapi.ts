/** The OpenAPI 3.1 description of the server's routes, built from the contract's zod schemas. */
import { z } from "zod";
import {
  ErrorResponseSchema,
  HealthResponseSchema,
  InfoResponseSchema,
  PruneRequestSchema,
  PruneResponseSchema,
} from "../contract/api.ts";
import { ERROR_STATUS, type ErrorCode } from "../contract/errors.ts";
import { MSGPACK_MEDIA_TYPES } from "../contract/wire.ts";

/** The JSON Schema of `schema`. zod writes `additionalProperties: false` on output objects; API.md lets the server
 * add fields to its answers, so a client validating against this document must not refuse them. */
const json = (schema: z.ZodType, io: "input" | "output") =>
  z.toJSONSchema(schema, {
    unrepresentable: "any",
    io,
    target: "draft-2020-12",
    override: ({ jsonSchema }) => {
      if (jsonSchema.additionalProperties === false) delete jsonSchema.additionalProperties;
    },
  });

/** Codes `POST /v1/prune` never answers: an unknown route. */
const NOT_FROM_PRUNE: ReadonlySet<ErrorCode> = new Set(["not_found"]);
/** What a client should know beyond the code. */
const CODE_NOTES: Partial<Record<ErrorCode, string>> = {
  busy: "busy (see Retry-After)",
  unauthorized: "unauthorized (with WWW-Authenticate: Bearer)",
  // A client that closed its connection whole never reads it.
  client_closed_request: "client_closed_request (received only by a client that closed just its sending side mid-body)",
};

/** The codes `POST /v1/prune` answers, by status, from the contract's code table (contract/errors.ts). */
const codesByStatus = new Map<number, string[]>();
for (const [code, status] of Object.entries(ERROR_STATUS) as [ErrorCode, number][]) {
  if (!NOT_FROM_PRUNE.has(code)) {
    codesByStatus.set(status, [...codesByStatus.get(status) ?? [], CODE_NOTES[code] ?? code]);
  }
}
/** The header every answer carries (routes/observe_requests.ts). */
const requestId = {
  "X-Request-Id": {
    description: "the client's own X-Request-Id (1-128 visible ASCII characters), else a fresh UUID; the log's id",
    schema: { type: "string" },
  },
};
/** The headers every error answer carries: the request's id, and its code repeated (routes/app.ts). */
const errorHeaders = {
  ...requestId,
  "X-Zprune-Error": { description: "the error's code, as in the body", schema: { type: "string" } },
};
/** The header a 429 or 503 answer carries: when to try again, in seconds. */
const retryAfter = {
  "Retry-After": { description: "seconds to wait before trying again", schema: { type: "string" } },
};
/** The header a 401 answer carries (routes/auth.ts; RFC 6750 section 3). */
const wwwAuthenticate = {
  "WWW-Authenticate": {
    description:
      'the scheme wanted: Bearer realm="zprune", with error="invalid_token" where a bearer token was sent and ' +
      "is not the server's",
    schema: { type: "string" },
  },
};
const errorContent = (types: string[]) =>
  Object.fromEntries(types.map((t) => [t, { schema: { $ref: "#/components/schemas/Error" } }]));
const errorResponses = Object.fromEntries(
  [...codesByStatus].map(([status, labels]) => [String(status), {
    description: `Error: ${labels.join(", ")}`,
    headers: {
      ...errorHeaders,
      ...(status === 429 || status === 503 ? retryAfter : {}),
      ...(status === 401 ? wwwAuthenticate : {}),
    },
    content: errorContent(["application/json", "application/msgpack"]),
  }]),
);

/** Every route's answer while the server shuts down but GET /metrics's (routes/app.ts, refuseWhileDraining). */
const draining = {
  description: "Shutting down: unavailable, with Retry-After and Connection: close",
  headers: { ...errorHeaders, ...retryAfter },
  content: errorContent(["application/json", "application/msgpack"]),
};
const jsonOf = (ref: string) => ({ "application/json": { schema: { $ref: `#/components/schemas/${ref}` } } });

/** Builds the document served at `GET /openapi.json`. */
export function openApiDocument(version: string): Record<string, unknown> {
  return {
    openapi: "3.1.0",
    info: {
      title: "zprune",
      version,
      description: "Z-Pruner (and magnitude, Wanda, RIA) masks for LLM linear layers. Contract v1: API.md.",
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: {
        PruneRequest: json(PruneRequestSchema, "input"),
        PruneResponse: json(PruneResponseSchema, "output"),
        Error: json(ErrorResponseSchema, "output"),
        Health: json(HealthResponseSchema, "output"),
        Info: json(InfoResponseSchema, "output"),
      },
    },
    paths: {
      "/v1/prune": {
        post: {
          summary: "Prune one or more linear layers",
          security: [{ bearer: [] }, {}],
          requestBody: {
            required: true,
            // Every type the route reads a body as (contract/wire.ts).
            content: Object.fromEntries(
              MSGPACK_MEDIA_TYPES.map((t) => [t, { schema: { $ref: "#/components/schemas/PruneRequest" } }]),
            ),
          },
          responses: {
            "200": {
              description: "Masks and statistics per layer, in request order",
              headers: requestId,
              content: { "application/msgpack": { schema: { $ref: "#/components/schemas/PruneResponse" } } },
            },
            ...errorResponses,
          },
        },
      },
      "/healthz": {
        get: {
          summary: "Liveness",
          responses: {
            "200": { description: "Alive", headers: requestId, content: jsonOf("Health") },
            "503": {
              ...draining,
              description: "Shutting down (as for every route), or the backend failed and could not restart: " +
                "unavailable, with Retry-After",
            },
          },
        },
      },
      "/v1/info": {
        get: {
          summary: "Version, backend, device, limits, methods, patterns, dtypes",
          security: [{ bearer: [] }, {}],
          responses: {
            "200": { description: "Server information", headers: requestId, content: jsonOf("Info") },
            "401": errorResponses["401"],
            "503": draining,
          },
        },
      },
      "/metrics": {
        get: {
          summary: "Prometheus metrics (text format 0.0.4); still answered while the server drains",
          security: [{ bearer: [] }, {}],
          responses: {
            "200": { description: "Metrics", headers: requestId, content: { "text/plain": {} } },
            "401": errorResponses["401"],
          },
        },
      },
      "/openapi.json": {
        get: {
          summary: "This document",
          responses: {
            "200": { description: "OpenAPI 3.1", headers: requestId, content: { "application/json": {} } },
            "503": draining,
          },
        },
      },
    },
  };
}
