import assert from "node:assert/strict";
import { DEFAULTS, parsePruneArgs } from "./_prune_args.ts";

Deno.test("parsePruneArgs() gives the reference run's settings with no flags", () => {
  const a = parsePruneArgs([])!;
  assert.deepEqual(
    [
      a.model,
      a.method,
      a.pattern,
      a.sparsity,
      a.exponent,
      a.layerRule,
      a.seqlen,
      a.evalWindows,
      a.skipDense,
      a.workers,
    ],
    [DEFAULTS.model, "zpruner", "layer", 0.5, undefined, "exact", 256, 64, false, undefined],
  );
  assert.deepEqual(a.calibration, { kind: "windows", ids: DEFAULTS.calibIds, starts: DEFAULTS.calibStarts });
  assert.deepEqual(a.evaluation, { kind: "ids", file: DEFAULTS.evalIds });
  assert.equal(parsePruneArgs(["--help"]), undefined);
  // The defaults are the bundled model and the reference's data (models/zp-llama-9m/reference.json), and exist.
  assert.match(DEFAULTS.model, /\/models\/zp-llama-9m$/);
  assert.match(DEFAULTS.calibIds, /\/data\/corpus\/calib_ids\.u16$/);
  assert.match(DEFAULTS.calibStarts, /\/data\/corpus\/calib_starts_seed0\.i64$/);
  assert.match(DEFAULTS.evalIds, /\/data\/corpus\/test_ids\.u16$/);
  for (const f of [DEFAULTS.calibIds, DEFAULTS.calibStarts, DEFAULTS.evalIds]) assert.ok(Deno.statSync(f).isFile, f);
  assert.ok(Deno.statSync(`${DEFAULTS.model}/config.json`).isFile);
});

Deno.test("parsePruneArgs() reads each calibration source with the flags that apply to it", () => {
  assert.deepEqual(parsePruneArgs(["--calib-text", "c.txt", "--nsamples", "8", "--seed", "4294967295"])!.calibration, {
    kind: "text",
    file: "c.txt",
    nsamples: 8,
    seed: 2 ** 32 - 1,
  });
  assert.deepEqual(parsePruneArgs(["--calib-jsonl", "c.jsonl"])!.calibration, {
    kind: "jsonl",
    file: "c.jsonl",
    nsamples: 64,
    seed: 0,
  });
  // Other starts into the default ids.
  assert.deepEqual(parsePruneArgs(["--calib-starts", "s.i64"])!.calibration, {
    kind: "windows",
    ids: DEFAULTS.calibIds,
    starts: "s.i64",
  });
});

Deno.test("parsePruneArgs() takes N:M without a sparsity, 'all' windows, and the smallest values in range", () => {
  const a = parsePruneArgs([
    ...["--pattern", "2:4", "--method", "wanda", "--exponent", "0", "--eval-windows", "all"],
    ...["--seqlen", "2", "--workers", "1", "--eval-text", "t.txt", "--server", "http://h:1", "--token", "t"],
  ])!;
  assert.deepEqual(
    [a.pattern, a.sparsity, a.method, a.exponent, a.evalWindows, a.seqlen, a.workers, a.evaluation],
    ["2:4", undefined, "wanda", 0, Infinity, 2, 1, { kind: "text", file: "t.txt" }],
  );
  assert.equal(parsePruneArgs(["--sparsity", "0"])!.sparsity, 0);
  // N:M as the reference and report spell it, whatever zeros lead its numbers.
  for (const raw of ["02:04", "0002:4", "2:0004"]) {
    assert.equal(parsePruneArgs(["--pattern", raw])!.pattern, "2:4", raw);
  }
  assert.equal(parsePruneArgs(["--pattern", "row"])!.pattern, "row");
  assert.equal(parsePruneArgs(["--pattern", "row"])!.layerRule, "exact");
  for (const rule of ["exact", "le-kth"]) assert.equal(parsePruneArgs(["--layer-rule", rule])!.layerRule, rule);
  // Decimal notation in all its forms (hexadecimal and the like are refused: cli/prune_test.ts).
  for (const [raw, value] of [[".25", 0.25], ["5e-1", 0.5], [" 0.75 ", 0.75], ["+0.1", 0.1]] as const) {
    assert.equal(parsePruneArgs(["--sparsity", raw])!.sparsity, value, raw);
  }
});

Deno.test("parsePruneArgs() refuses what README's flag rules refuse, each by its own check", () => {
  const refused: [string[], RegExp][] = [
    [["--server", "ftp://h"], /^--server must be an http:\/\/ or https:\/\/ URL, got "ftp:\/\/h"$/],
    [["--server", "localhost:8000"], /^--server must be an http:\/\/ or https:\/\/ URL/],
    [["--calib-jsonl", "c.jsonl", "--calib-ids", "a.u16"], /^--calib-jsonl and --calib-ids are alternatives/],
    // 0 is a value: magnitude would ignore it as any other.
    [["--method", "magnitude", "--exponent", "0"], /^--exponent weights activations, which --method magnitude/],
    // Out of the contract's range, given with "=" (a leading "-" alone is taken by parseArgs for another flag).
    [["--exponent", "65"], /^--exponent 65: /],
    [["--exponent=-1"], /^--exponent -1: /],
    [["--sparsity=-0.1"], /^--sparsity -0\.1: /],
    [["--seed=-1", "--calib-text", "c.txt"], /^--seed must be an integer from 0 to 4294967295/],
    [["--layer-rule", "le_kth"], /^--layer-rule must be exact or le-kth, got "le_kth"$/],
    // Row and N:M masks prune a count per row or group: the rule would change nothing.
    [["--pattern", "row", "--layer-rule", "exact"], /^--layer-rule applies to --pattern layer; --pattern row/],
    [["--pattern", "2:4", "--layer-rule", "le-kth"], /^--layer-rule applies to --pattern layer; --pattern 2:4/],
  ];
  for (const [args, want] of refused) {
    assert.throws(
      () => parsePruneArgs(args),
      (e: unknown) => e instanceof Error && want.test(e.message),
      args.join(" "),
    );
  }
  // Padded as a value read from a file may be.
  assert.equal(parsePruneArgs(["--eval-windows", " all "])!.evalWindows, Infinity);
});
