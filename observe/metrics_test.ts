import assert from "node:assert/strict";
import { Metrics } from "./metrics.ts";

/** One sample line of the text format 0.0.4: name, labels, value. */
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\})? (\S+)$/;

/** Parses an exposition strictly enough to catch what Prometheus would refuse; returns samples by series. */
function parse(text: string): Map<string, number> {
  assert.ok(text.endsWith("\n"), "the exposition ends with a newline");
  const samples = new Map<string, number>();
  const typed = new Set<string>();
  for (const line of text.slice(0, -1).split("\n")) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      if (meta[1] === "TYPE") {
        assert.ok(!typed.has(meta[2]!), `one TYPE per metric: ${meta[2]}`);
        assert.match(meta[3]!, /^(counter|gauge|histogram)$/);
        typed.add(meta[2]!);
      }
      continue;
    }
    const m = SAMPLE.exec(line);
    assert.ok(m, `not a sample line: ${JSON.stringify(line)}`);
    const value = Number(m[4]);
    assert.ok(!Number.isNaN(value), line);
    const family = m[1]!.replace(/_(bucket|sum|count)$/, "");
    assert.ok(typed.has(m[1]!) || typed.has(family), `a sample before its TYPE: ${line}`);
    assert.ok(!samples.has(`${m[1]}${m[2] ?? ""}`), `a series twice: ${line}`);
    samples.set(`${m[1]}${m[2] ?? ""}`, value);
  }
  return samples;
}

Deno.test("Metrics.render() is a valid exposition whose histograms are cumulative", () => {
  const m = new Metrics();
  let depth = 3;
  m.gauge("zprune_queue_depth", "Requests waiting.", () => depth);
  m.counterOf("zprune_backend_restarts_total", "Restarts.", () => 2);
  m.requests.inc({ route: "/v1/prune", status: "200" });
  m.requests.inc({ status: "200", route: "/v1/prune" }, 2); // label order does not make another series
  m.requests.inc({ route: 'we"ird\\route\n', status: "404" });
  m.bytesIn.inc({}, 1234);
  for (const s of [0.001, 0.02, 0.02, 0.7, 100]) m.latency.observe(s, { route: "/v1/prune", status: "200" });
  m.latency.observe(0.002, { status: "422", route: "/v1/prune" }); // a refusal: a series of its own
  // On a bound exactly: the text format's `le` is "less than or equal", so the 0.25 bucket counts it.
  m.latency.observe(0.25, { route: "/healthz", status: "503" });
  const samples = parse(m.render());
  assert.equal(samples.get('zprune_requests_total{route="/v1/prune",status="200"}'), 3);
  assert.equal(samples.get("zprune_bytes_in_total"), 1234);
  assert.equal(samples.get("zprune_queue_depth"), 3);
  assert.equal(samples.get("zprune_backend_restarts_total"), 2);
  // A label value cannot end the label or the line, whatever a route is called; escaped, it reads back as sent.
  const odd = [...samples.keys()].filter((k) => k.includes('status="404"'));
  assert.equal(odd.length, 1);
  const route = /route="((?:[^"\\]|\\.)*)"/.exec(odd[0]!)![1]!;
  const unescaped = route.replace(/\\(.)/g, (_, ch: string) => (ch === "n" ? "\n" : ch));
  assert.equal(unescaped, 'we"ird\\route\n');
  const series = (le: string) => `{le="${le}",route="/v1/prune",status="200"}`;
  const bucket = (le: string) => samples.get(`zprune_request_duration_seconds_bucket${series(le)}`);
  assert.equal(bucket("0.005"), 1);
  assert.equal(bucket("0.025"), 3);
  assert.equal(bucket("1"), 4);
  assert.equal(bucket("60"), 4);
  assert.equal(bucket("120"), 5); // 100 s: under the default deadline, in a bucket of its own
  assert.equal(bucket("+Inf"), 5);
  assert.equal(samples.get('zprune_request_duration_seconds_count{route="/v1/prune",status="200"}'), 5);
  const sum = samples.get('zprune_request_duration_seconds_sum{route="/v1/prune",status="200"}')!;
  assert.ok(Math.abs(sum - 100.741) < 1e-9);
  assert.equal(samples.get('zprune_request_duration_seconds_bucket{le="0.005",route="/v1/prune",status="422"}'), 1);
  assert.equal(samples.get('zprune_request_duration_seconds_count{route="/v1/prune",status="422"}'), 1);
  const health = (le: string) =>
    samples.get(`zprune_request_duration_seconds_bucket{le="${le}",route="/healthz",status="503"}`);
  assert.deepEqual([health("0.1"), health("0.25"), health("0.5")], [0, 1, 1], "a value equal to le is in that bucket");
  const les = [...samples.keys()].filter((k) =>
    k.startsWith("zprune_request_duration_seconds_bucket{") &&
    k.endsWith('status="200"}')
  );
  const counts = les.map((k) => samples.get(k)!);
  assert.deepEqual(counts, [...counts].sort((a, b) => a - b), "buckets never decrease");
  depth = 0;
  assert.equal(parse(m.render()).get("zprune_queue_depth"), 0, "gauges are read at render time");
});

Deno.test("Metrics: no series vanishes between scrapes; a labelled family waits for its first sample", () => {
  const m = new Metrics();
  const before = parse(m.render());
  // Unlabelled counters start at 0; labelled families have no series yet (an unlabelled 0 would vanish later).
  assert.equal(before.get("zprune_bytes_in_total"), 0);
  assert.equal([...before.keys()].filter((k) => k.startsWith("zprune_requests_total")).length, 0);
  assert.equal([...before.keys()].filter((k) => k.startsWith("zprune_layers_total")).length, 0);
  m.requests.inc({ route: "/healthz", status: "200" });
  m.layers.inc({ method: "wanda", pattern: "row" }, 3);
  m.bytesIn.inc({}, 10);
  const after = parse(m.render());
  for (const [series, value] of before) {
    assert.ok(after.has(series), `${series} vanished`);
    assert.ok(after.get(series)! >= value, `${series} went down`);
  }
  assert.equal(after.get('zprune_layers_total{method="wanda",pattern="row"}'), 3);
  // A sample under other labels than the family's would be a series of another shape.
  assert.throws(() => m.requests.inc({ route: "/healthz" }), /takes labels route, status/);
  assert.throws(() => m.bytesIn.inc({ route: "/x" }), /takes labels none/);
  assert.throws(() => m.latency.observe(1, { route: "/healthz" }), /takes labels route, status/);
});

Deno.test("Metrics: each family's TYPE is its kind; +Inf counts past the last bound, 600 s is a bound", () => {
  const m = new Metrics();
  m.gauge("zprune_queue_depth", "Requests waiting.", () => 0);
  m.counterOf("zprune_backend_restarts_total", "Restarts.", () => 0);
  // A 500 s prune (under the default 600 s deadline) and one past every bound.
  m.latency.observe(500, { route: "/v1/prune", status: "200" });
  m.latency.observe(1000, { route: "/v1/prune", status: "200" });
  const text = m.render();
  const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((t) => [t[1]!, t[2]!]));
  assert.deepEqual(Object.fromEntries(types), {
    zprune_requests_total: "counter",
    zprune_request_duration_seconds: "histogram",
    zprune_bytes_in_total: "counter",
    zprune_bytes_out_total: "counter",
    zprune_compute_seconds_total: "counter",
    zprune_layers_total: "counter",
    zprune_queue_depth: "gauge",
    zprune_backend_restarts_total: "counter",
  });
  const samples = parse(text);
  const bucket = (le: string) =>
    samples.get(`zprune_request_duration_seconds_bucket{le="${le}",route="/v1/prune",status="200"}`);
  assert.deepEqual([bucket("300"), bucket("600"), bucket("+Inf")], [0, 1, 2]);
  // A series never incremented reads 0, as it would render once it is.
  assert.equal(m.requests.get({ route: "/v1/prune", status: "500" }), 0);
  assert.equal(m.bytesOut.get(), 0);
});
