/** A Wanda ScoreContext for tests of the scoring loops, which read only its method, cols and act for Wanda. */
import type { ScoreContext } from "../prune/scores.ts";

/** A Wanda ScoreContext of `act` (one entry per column); the Z-Pruner and RIA fields are left empty. */
export function wandaContext(act: number[]): ScoreContext {
  const empty = new Float64Array(0);
  return {
    method: "wanda",
    cols: act.length,
    act: new Float64Array(act),
    invRow: empty,
    invCol: empty,
    meanR: 0,
    meanC: 0,
    invStdR: 0,
    invStdC: 0,
    alpha: 0,
  };
}
