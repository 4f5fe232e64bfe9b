/**
 * Selection of the weights to prune (API.md, "Selection"), in linear time, writing the bit-packed mask.
 *
 * Scores are non-negative float32, so their bit patterns read as u32 order the same way as the values: every
 * selection works on those integer keys. The k lowest of a range are found by radix select (histogram passes
 * over digits of the key, most significant first, no sort), giving the threshold key T and the count of keys
 * below it; then every key < T is pruned, and of the keys == T the lowest indices first until k are pruned —
 * the contract's tie-breaking by row-major index.
 */

/** Result of a radix select: the k-th lowest key and how many keys are strictly below it. */
export interface SelectResult {
  threshold: number;
  below: number;
}

/**
 * Finds the k-th lowest (1-based, k >= 1) of `keys[start..end)` by radix select with `bits`-wide digits.
 * `hist` is scratch of at least 2^bits entries.
 */
export function radixSelect(
  keys: Uint32Array,
  start: number,
  end: number,
  k: number,
  bits: 8 | 16,
  hist: Uint32Array,
): SelectResult {
  const radix = 1 << bits;
  const digitMask = radix - 1;
  let prefix = 0; // the digits fixed so far, in place
  let prefixMask = 0; // which bits of the key `prefix` fixes
  let below = 0; // keys < the current prefix range
  let need = k; // rank wanted within the current prefix range
  for (let shift = 32 - bits; shift >= 0; shift -= bits) {
    hist.fill(0, 0, radix);
    if (prefixMask === 0) {
      for (let i = start; i < end; i++) hist[keys[i]! >>> shift]!++;
    } else {
      for (let i = start; i < end; i++) {
        const key = keys[i]!;
        if (((key & prefixMask) >>> 0) === prefix) hist[(key >>> shift) & digitMask]!++;
      }
    }
    let d = 0;
    while (hist[d]! < need) {
      need -= hist[d]!;
      below += hist[d]!;
      d++;
    }
    prefix = (prefix | (d << shift)) >>> 0;
    prefixMask = (prefixMask | (digitMask << shift)) >>> 0;
  }
  return { threshold: prefix, below };
}

/** Sets bit i of `mask`. */
function setBit(mask: Uint8Array, i: number): void {
  mask[i >>> 3]! |= 1 << (i & 7);
}

/**
 * Marks in `mask` every key of [start, end) below `t` and returns how many keys equal `t` there. Keys are
 * float32 bits of non-negative scores, so below 2^31: `(key - t) >>> 31` is 1 exactly when key < t, which
 * keeps this hot loop free of unpredictable branches. Whole bytes are written where the range allows; a
 * range that starts or ends inside a byte only ORs bits into it.
 */
export function markBelow(keys: Uint32Array, start: number, end: number, t: number, mask: Uint8Array): number {
  let ties = 0, i = start;
  for (; i < end && (i & 7) !== 0; i++) {
    const key = keys[i]!;
    mask[i >>> 3]! |= ((key - t) >>> 31) << (i & 7);
    ties += key === t ? 1 : 0;
  }
  for (; i + 8 <= end; i += 8) {
    let byte = 0;
    for (let b = 0; b < 8; b++) {
      const key = keys[i + b]!;
      byte |= ((key - t) >>> 31) << b;
      ties += key === t ? 1 : 0;
    }
    mask[i >>> 3] = byte;
  }
  for (; i < end; i++) {
    const key = keys[i]!;
    mask[i >>> 3]! |= ((key - t) >>> 31) << (i & 7);
    ties += key === t ? 1 : 0;
  }
  return ties;
}

/** Marks the first `quota` keys equal to `t` in [start, end), in index order (the contract's tie rule). */
export function markTies(
  keys: Uint32Array,
  start: number,
  end: number,
  t: number,
  quota: number,
  mask: Uint8Array,
): void {
  for (let i = start; i < end && quota > 0; i++) {
    if (keys[i] === t) {
      setBit(mask, i);
      quota--;
    }
  }
}

/**
 * Marks the k lowest keys of [start, end) given their select result, in one pass: keys below the threshold,
 * and keys equal to it while the tie quota lasts (in index order). Branch-free like `markBelow`.
 */
function markLowest(
  keys: Uint32Array,
  start: number,
  end: number,
  k: number,
  sel: SelectResult,
  mask: Uint8Array,
): void {
  const t = sel.threshold;
  let quota = k - sel.below;
  let i = start;
  for (; i < end && (i & 7) !== 0; i++) {
    const key = keys[i]!;
    const take = (key === t ? 1 : 0) & (quota > 0 ? 1 : 0);
    quota -= take;
    mask[i >>> 3]! |= (((key - t) >>> 31) | take) << (i & 7);
  }
  for (; i + 8 <= end; i += 8) {
    let byte = 0;
    for (let b = 0; b < 8; b++) {
      const key = keys[i + b]!;
      const take = (key === t ? 1 : 0) & (quota > 0 ? 1 : 0);
      quota -= take;
      byte |= (((key - t) >>> 31) | take) << b;
    }
    mask[i >>> 3] = byte;
  }
  for (; i < end; i++) {
    const key = keys[i]!;
    const take = (key === t ? 1 : 0) & (quota > 0 ? 1 : 0);
    quota -= take;
    mask[i >>> 3]! |= (((key - t) >>> 31) | take) << (i & 7);
  }
}

/**
 * Marks in `mask` every key of [start, end) whose top 16 bits are below `top`, and copies each key whose top 16 bits
 * equal `top` into `out` as an (index, key) pair, in index order from pair `at`; returns how many it copied. The
 * layer select calls it when the threshold's top-16-bit bucket is small: a branch, not a branch-free compaction
 * (which writes one slot past its last pair, into the next part's), is then almost never taken, so it predicts well.
 * Bytes are written as in `markBelow`.
 */
export function markGather(
  keys: Uint32Array,
  start: number,
  end: number,
  top: number,
  mask: Uint8Array,
  out: Uint32Array,
  at: number,
): number {
  const t = top << 16; // keys are below 2^31, so top < 2^15 and t stays a positive int
  let m = 2 * at, i = start;
  for (; i < end && (i & 7) !== 0; i++) {
    const key = keys[i]!;
    mask[i >>> 3]! |= ((key - t) >>> 31) << (i & 7);
    if (key >>> 16 === top) {
      out[m++] = i;
      out[m++] = key;
    }
  }
  for (; i + 8 <= end; i += 8) {
    let byte = 0;
    for (let b = 0; b < 8; b++) {
      const key = keys[i + b]!;
      byte |= ((key - t) >>> 31) << b;
      if (key >>> 16 === top) {
        out[m++] = i + b;
        out[m++] = key;
      }
    }
    mask[i >>> 3] = byte;
  }
  for (; i < end; i++) {
    const key = keys[i]!;
    mask[i >>> 3]! |= ((key - t) >>> 31) << (i & 7);
    if (key >>> 16 === top) {
      out[m++] = i;
      out[m++] = key;
    }
  }
  return m / 2 - at;
}

/**
 * Of the `count` (index, key) pairs `markGather` copied into `pairs` (every key whose top 16 bits are `top`, in
 * index order), marks the `need` lowest in `mask`, ties taken in index order, and returns the threshold key: the low 16
 * bits come from one histogram of these pairs alone, not from another pass over the layer.
 */
export function markGathered(
  pairs: Uint32Array,
  count: number,
  top: number,
  need: number,
  mask: Uint8Array,
): number {
  const hist = new Uint32Array(1 << 16);
  for (let m = 0; m < count; m++) hist[pairs[2 * m + 1]! & 0xffff]!++;
  let d = 0, quota = need;
  while (hist[d]! < quota) quota -= hist[d++]!;
  const t = ((top << 16) | d) >>> 0;
  for (let m = 0; m < count; m++) {
    const key = pairs[2 * m + 1]!;
    if (key < t || (key === t && quota-- > 0)) setBit(mask, pairs[2 * m]!);
  }
  return t;
}

/** Histogram of the high 16 bits of keys [start, end). */
export function histogramHigh(keys: Uint32Array, start: number, end: number): Uint32Array {
  const hist = new Uint32Array(1 << 16);
  for (let i = start; i < end; i++) hist[keys[i]! >>> 16]!++;
  return hist;
}

/** Histogram of the low 16 bits of the keys in [start, end) whose high 16 bits equal `high`. */
export function histogramLow(keys: Uint32Array, start: number, end: number, high: number): Uint32Array {
  const hist = new Uint32Array(1 << 16);
  for (let i = start; i < end; i++) {
    const key = keys[i]!;
    if (key >>> 16 === high) hist[key & 0xffff]!++;
  }
  return hist;
}

/**
 * Per-row selection over rows [r0, r1): the k lowest keys of every row, in two passes over the row. A histogram of the
 * keys' top 11 bits picks the bucket holding the k-th lowest; `markBucket` marks every key below that bucket and
 * lists the bucket's indices (about a tenth of a row of the bench's scores), and the rest of the select, and the
 * marking of the threshold and its ties, run on that list alone. A bucket of more than four fifths of the row (scores
 * within a quarter of an octave) is compacted and selected instead, and the row marked in one more pass: reading that
 * many members off bits one at a time costs more (measured: about 1.4 times as long for a whole row in the bucket,
 * less at three quarters). `mask` must be zeroed over these rows.
 */
export function selectRows(keys: Uint32Array, cols: number, k: number, mask: Uint8Array, r0: number, r1: number): void {
  if (k <= 0) return;
  const hist = new Uint32Array(2048);
  const idx = new Uint32Array(cols), work = new Uint32Array(cols + 1); // + 1: the compactions write a slot past
  for (let r = r0; r < r1; r++) {
    const start = r * cols, end = start + cols;
    hist.fill(0);
    for (let i = start; i < end; i++) hist[keys[i]! >>> 21]!++;
    let need = k, d = 0;
    while (hist[d]! < need) need -= hist[d++]!;
    if (5 * hist[d]! > 4 * cols) {
      let n = 0;
      for (let i = start; i < end; i++) {
        const key = keys[i]!;
        work[n] = key;
        n += key >>> 21 === d ? 1 : 0; // branch-free compaction
      }
      const sel = selectBucket(work, n, d, need, hist);
      markLowest(keys, start, end, k, { threshold: sel.threshold, below: k - need + sel.below }, mask);
      continue;
    }
    const m = markBucket(keys, start, end, d, mask, idx);
    for (let j = 0; j < m; j++) work[j] = keys[idx[j]!]!;
    const sel = selectBucket(work, m, d, need, hist);
    markListed(keys, idx, m, sel.threshold, need - sel.below, mask);
  }
}

/**
 * Marks in `mask` every key of [start, end) whose top 11 bits are below `d`, and lists in `idx` the indices of the
 * keys whose top 11 bits equal `d`, in order; returns how many it listed. Keys are taken 32 at a time into two words of
 * comparison bits (below the bucket, below the next), which give four mask bytes and the bucket's members, whose
 * indices are read off the set bits: a branch-free compaction, writing every index and advancing on a member, takes
 * about twice as long with its dependency from one key's store to the next.
 */
function markBucket(keys: Uint32Array, start: number, end: number, d: number, mask: Uint8Array, idx: Uint32Array) {
  // hi is 2^31 for the top bucket, wrapping to -2^31; key - hi is then at least 2^31, so every key reads below it.
  const lo = d << 21, hi = (d + 1) << 21;
  let m = 0, i = start;
  for (; i < end && (i & 7) !== 0; i++) {
    const key = keys[i]!;
    mask[i >>> 3]! |= ((key - lo) >>> 31) << (i & 7);
    if (key >>> 21 === d) idx[m++] = i;
  }
  for (; i + 32 <= end; i += 32) {
    let below = 0, under = 0;
    for (let b = 0; b < 32; b += 4) {
      const k0 = keys[i + b]!, k1 = keys[i + b + 1]!, k2 = keys[i + b + 2]!, k3 = keys[i + b + 3]!;
      below |= bitsBelow(k0, k1, k2, k3, lo) << b;
      under |= bitsBelow(k0, k1, k2, k3, hi) << b;
    }
    const j = i >>> 3;
    mask[j] = below;
    mask[j + 1] = below >>> 8;
    mask[j + 2] = below >>> 16;
    mask[j + 3] = below >>> 24;
    for (let c = below ^ under; c !== 0; c &= c - 1) idx[m++] = i + 31 - Math.clz32(c & -c);
  }
  for (; i < end; i++) {
    const key = keys[i]!;
    mask[i >>> 3]! |= ((key - lo) >>> 31) << (i & 7);
    if (key >>> 21 === d) idx[m++] = i;
  }
  return m;
}

/** Bit j set when key j of the four is below `t`, as in `markBelow`. */
function bitsBelow(k0: number, k1: number, k2: number, k3: number, t: number): number {
  return ((k0 - t) >>> 31) | (((k1 - t) >>> 31) << 1) | (((k2 - t) >>> 31) << 2) | (((k3 - t) >>> 31) << 3);
}

/**
 * The `need`-th lowest of the `n` keys in `work` (their top 11 bits all `d`), and how many of them are below it; `work`
 * is overwritten. The low 21 bits are selected in 8-, 8- and 5-bit digits, each compacting `work`: the few hundred
 * keys of a bucket of the bench's scores do not fill 2048 bins worth clearing and scanning (11- and 10-bit digits took
 * 4% longer over the whole select; 10% less where a quarter of every row is one key, whose increments of one bin
 * serialise, three digits then costing more than two).
 */
function selectBucket(work: Uint32Array, n: number, d: number, need: number, hist: Uint32Array): SelectResult {
  let quota = need, t = d << 21;
  for (let shift = 13;; shift = Math.max(shift - 8, 0)) {
    const digitMask = shift === 0 ? 31 : 255;
    hist.fill(0, 0, digitMask + 1);
    for (let j = 0; j < n; j++) hist[(work[j]! >>> shift) & digitMask]!++;
    let e = 0;
    while (hist[e]! < quota) quota -= hist[e++]!;
    t |= e << shift;
    if (shift === 0) break;
    let n2 = 0;
    for (let j = 0; j < n; j++) {
      const key = work[j]!;
      work[n2] = key;
      n2 += ((key >>> shift) & digitMask) === e ? 1 : 0;
    }
    n = n2;
  }
  return { threshold: t >>> 0, below: need - quota };
}

/**
 * Of the `m` keys at `idx` (in index order), marks in `mask` those below `t` and the first `quota` equal to it, the
 * contract's ties in index order; branch-free as `markLowest`.
 */
function markListed(keys: Uint32Array, idx: Uint32Array, m: number, t: number, quota: number, mask: Uint8Array): void {
  for (let j = 0; j < m; j++) {
    const i = idx[j]!, key = keys[i]!;
    const take = (key === t ? 1 : 0) & (quota > 0 ? 1 : 0);
    quota -= take;
    mask[i >>> 3]! |= (((key - t) >>> 31) | take) << (i & 7);
  }
}

/**
 * N:M selection over rows [r0, r1): in every group of m consecutive columns, the n lowest keys (ties by index).
 * Small groups rank each element against the others without branches (rank = keys before it that are <= it,
 * plus keys after it that are < it); large groups radix-select.
 */
export function selectNM(
  keys: Uint32Array,
  cols: number,
  n: number,
  m: number,
  mask: Uint8Array,
  r0: number,
  r1: number,
): void {
  const end = r1 * cols;
  if (m === 4) return selectNof4(keys, n, mask, r0 * cols, end);
  if (m > 32) {
    const hist = new Uint32Array(256);
    for (let g = r0 * cols; g < end; g += m) {
      markLowest(keys, g, g + m, n, radixSelect(keys, g, g + m, n, 8, hist), mask);
    }
    return;
  }
  for (let g = r0 * cols; g < end; g += m) {
    for (let e = 0; e < m; e++) {
      const ke = keys[g + e]!;
      let rank = 0;
      for (let f = 0; f < e; f++) rank += (ke - keys[g + f]!) >>> 31 ^ 1; // keys[f] <= ke
      for (let f = e + 1; f < m; f++) rank += (keys[g + f]! - ke) >>> 31; // keys[f] < ke
      if (rank < n) setBit(mask, g + e);
    }
  }
}

/**
 * N:4 over keys [start, end) (start a multiple of 4), the sparse tensor cores' pattern, unrolled: six
 * comparisons rank the four keys of a group (ties: the lower index ranks first), and two groups fill a mask
 * byte. About seven times faster than the general loop.
 */
function selectNof4(keys: Uint32Array, n: number, mask: Uint8Array, start: number, end: number): void {
  for (let g = start; g < end; g += 4) {
    const k0 = keys[g]!, k1 = keys[g + 1]!, k2 = keys[g + 2]!, k3 = keys[g + 3]!;
    // cAB = 1 when key B < key A, i.e. B ranks before A (A has the lower index).
    const c01 = (k1 - k0) >>> 31, c02 = (k2 - k0) >>> 31, c03 = (k3 - k0) >>> 31;
    const c12 = (k2 - k1) >>> 31, c13 = (k3 - k1) >>> 31, c23 = (k3 - k2) >>> 31;
    const r0 = c01 + c02 + c03;
    const r1 = (c01 ^ 1) + c12 + c13;
    const r2 = (c02 ^ 1) + (c12 ^ 1) + c23;
    const r3 = (c03 ^ 1) + (c13 ^ 1) + (c23 ^ 1);
    const bits = ((r0 - n) >>> 31) | (((r1 - n) >>> 31) << 1) | (((r2 - n) >>> 31) << 2) | (((r3 - n) >>> 31) << 3);
    mask[g >>> 3]! |= bits << (g & 7);
  }
}
