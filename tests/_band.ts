/**
 * How a mask differs from the CPU backend's within API.md's ambiguity band: entries whose score lies within relative
 * 1e-5 of their selection unit's threshold (the layer, a row or an N:M group) may fall either way; no other may.
 */
import { AMBIGUITY_BAND } from "../contract/api.ts";

/** Bit i of a packed mask (LSB first). */
export function maskBit(mask: Uint8Array, i: number): number {
  return (mask[i >>> 3]! >> (i & 7)) & 1;
}

/** What `bandDifferences` found. */
export interface BandDifferences {
  /** Entries pruned by one mask and kept by the other. */
  differing: number;
  /** Those whose reference score lies outside the band (any is a contract violation). */
  outside: number;
  /** The first entry outside the band, or -1. */
  firstOutside: number;
  /**
   * The largest |score − threshold| / threshold among the differing entries: 0 when none differ, Infinity for one in a
   * unit the reference pruned nothing of, or beside a zero threshold.
   */
  worst: number;
}

/**
 * Compares `got` with the reference mask `ref`, whose scores are `score`, unit by unit (`unit` consecutive entries:
 * the whole layer, a row's columns or M). A unit's threshold is its largest pruned reference score.
 */
export function bandDifferences(got: Uint8Array, ref: Uint8Array, score: ArrayLike<number>, unit: number) {
  const out: BandDifferences = { differing: 0, outside: 0, firstOutside: -1, worst: 0 };
  const n = score.length;
  if (!(unit >= 1)) throw new RangeError(`unit must be at least 1, not ${unit}`);
  for (let u0 = 0; u0 < n; u0 += unit) {
    const end = Math.min(n, u0 + unit);
    let differs = false;
    for (let i = u0; i < end && !differs; i++) differs = maskBit(got, i) !== maskBit(ref, i);
    if (!differs) continue;
    let thr = -1;
    for (let i = u0; i < end; i++) if (maskBit(ref, i) && score[i]! > thr) thr = score[i]!;
    for (let i = u0; i < end; i++) {
      if (maskBit(got, i) === maskBit(ref, i)) continue;
      out.differing++;
      // No pruned entry in the reference unit: nothing is ambiguous there. A zero threshold's band is zero alone.
      const gap = thr < 0 ? Infinity : Math.abs(score[i]! - thr);
      out.worst = Math.max(out.worst, gap === 0 ? 0 : thr > 0 ? gap / thr : Infinity);
      if (!(gap <= AMBIGUITY_BAND * thr)) {
        out.outside++;
        if (out.firstOutside < 0) out.firstOutside = i;
      }
    }
  }
  return out;
}
