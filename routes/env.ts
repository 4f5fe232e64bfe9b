/** The Hono environment shared by the app's routes: per-request values the logger reads. */
import type { Timings } from "../contract/api.ts";

/** Per-request variables set by handlers and read by the request logger. */
export interface AppEnv {
  Variables: {
    requestId: string;
    layers?: number;
    elements?: number;
    timings?: Timings;
  };
}
