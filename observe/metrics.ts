/**
 * Prometheus metrics in text exposition format 0.0.4: counters, gauges and histograms with labels, kept in
 * memory and rendered on `GET /metrics`. Small on purpose: the server needs a handful of series, not a client
 * library with process collectors that differ between Deno and Bun.
 */

type Labels = Record<string, string>;

/** A label value as the text format writes it: backslash, double quote and line feed escaped. */
function escapeLabel(value: string): string {
  return value.replace(/[\\"\n]/g, (ch) => (ch === "\n" ? "\\n" : `\\${ch}`));
}

/**
 * The series' `{name="value",...}` in sorted label order, so that the order given never makes another series. With
 * `metric` and its sorted label names `expected` (joined by commas), throws unless `labels` names exactly those: a
 * sample under other labels would be a series of another shape.
 */
function labelKey(labels: Labels, metric?: string, expected?: string): string {
  const names = Object.keys(labels).sort();
  if (metric !== undefined && names.join() !== expected) {
    throw new Error(`${metric} takes labels ${expected?.replaceAll(",", ", ") || "none"}, got ${names.join(", ")}`);
  }
  const parts = names.map((k) => `${k}="${escapeLabel(String(labels[k]))}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

/** A monotonically increasing counter per label set. */
export class Counter {
  #values = new Map<string, number>();
  readonly #expected: string;
  /** `labelNames`: the labels every series has; none for a single unlabelled series. */
  constructor(readonly name: string, readonly help: string, readonly labelNames: readonly string[] = []) {
    this.#expected = [...labelNames].sort().join();
  }
  /** Adds `by` (default 1) to the series with `labels`, which name exactly the counter's `labelNames`. */
  inc(labels: Labels = {}, by = 1): void {
    const k = labelKey(labels, this.name, this.#expected);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }
  /** The current value of a series. */
  get(labels: Labels = {}): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    // An unlabelled counter starts at 0. A labelled family has no series until its first sample: a `0` without labels
    // would be a series that vanishes at that sample, which scrapers read as a reset.
    if (this.#values.size === 0 && this.labelNames.length === 0) lines.push(`${this.name} 0`);
    for (const [k, v] of this.#values) lines.push(`${this.name}${k} ${v}`);
    return lines.join("\n");
  }
}

/** A value read from a callback at render time: a gauge, or a counter that its owner keeps (it never goes down). */
export class Observed {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly read: () => number,
    readonly type: "gauge" | "counter",
  ) {}
  render(): string {
    return [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`, `${this.name} ${this.read()}`]
      .join("\n");
  }
}

/** A cumulative histogram with fixed bucket bounds, per label set. */
export class Histogram {
  #series = new Map<string, { counts: number[]; sum: number; count: number; labels: Labels }>();
  readonly #expected: string;
  /** `labelNames`: the labels every series has (as Counter's). */
  constructor(
    readonly name: string,
    readonly help: string,
    readonly bounds: number[],
    readonly labelNames: readonly string[] = [],
  ) {
    this.#expected = [...labelNames].sort().join();
  }
  /** Records one observation in the series with `labels`, which name exactly the histogram's `labelNames`. */
  observe(value: number, labels: Labels = {}): void {
    const k = labelKey(labels, this.name, this.#expected);
    let s = this.#series.get(k);
    if (!s) this.#series.set(k, s = { counts: this.bounds.map(() => 0), sum: 0, count: 0, labels });
    for (let i = 0; i < this.bounds.length; i++) if (value <= this.bounds[i]!) s.counts[i]!++;
    s.sum += value;
    s.count++;
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const s of this.#series.values()) {
      this.bounds.forEach((b, i) =>
        lines.push(`${this.name}_bucket${labelKey({ ...s.labels, le: String(b) })} ${s.counts[i]}`)
      );
      lines.push(`${this.name}_bucket${labelKey({ ...s.labels, le: "+Inf" })} ${s.count}`);
      lines.push(`${this.name}_sum${labelKey(s.labels)} ${s.sum}`);
      lines.push(`${this.name}_count${labelKey(s.labels)} ${s.count}`);
    }
    return lines.join("\n");
  }
}

/** The server's metrics: its own counters and histograms, plus the gauges and counters its owners register. */
export class Metrics {
  readonly requests = new Counter(
    "zprune_requests_total",
    'HTTP requests by route ("unmatched" where no route serves the path) and status.',
    ["route", "status"],
  );
  readonly latency = new Histogram(
    "zprune_request_duration_seconds",
    "Request latency by route and status (a quick refusal is not averaged with a slow prune).",
    // Up to the default deadline (600 s): a slow prune lands in a bucket of its own, not in +Inf alone.
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    ["route", "status"],
  );
  readonly bytesIn = new Counter(
    "zprune_bytes_in_total",
    "Request body bytes read whole (a body refused or abandoned part way adds nothing).",
  );
  readonly bytesOut = new Counter(
    "zprune_bytes_out_total",
    "Response body bytes answered (a client that leaves or stops reading may not receive them all).",
  );
  readonly computeSeconds = new Counter("zprune_compute_seconds_total", "Seconds spent in the compute backend.");
  readonly layers = new Counter("zprune_layers_total", "Layers pruned, by method and pattern.", ["method", "pattern"]);
  #observed: Observed[] = [];

  /** Adds a gauge read at render time (queue depth, in-flight requests). */
  gauge(name: string, help: string, read: () => number): void {
    this.#observed.push(new Observed(name, help, read, "gauge"));
  }

  /** Adds a counter that its owner keeps and `read` returns at render time (e.g. a backend's restarts). */
  counterOf(name: string, help: string, read: () => number): void {
    this.#observed.push(new Observed(name, help, read, "counter"));
  }

  /** The whole exposition, as `GET /metrics` serves it. */
  render(): string {
    const parts = [
      this.requests,
      this.latency,
      this.bytesIn,
      this.bytesOut,
      this.computeSeconds,
      this.layers,
    ];
    return [...parts, ...this.#observed].map((m) => m.render()).join("\n") + "\n";
  }
}
