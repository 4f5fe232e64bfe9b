import assert from "node:assert/strict";

/** Runs bench/device_table.py on a device run's two .jsonl files; its markdown output. */
async function table(torch: object[], zprune: object[]): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "zprune-device-table-" });
  try {
    const lines = (rows: object[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
    await Deno.writeTextFile(`${dir}/torch.jsonl`, lines(torch));
    await Deno.writeTextFile(`${dir}/zprune.jsonl`, lines(zprune));
    const out = await new Deno.Command("python3", {
      args: [new URL("./device_table.py", import.meta.url).pathname, dir],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    assert.ok(out.success, "device_table.py failed");
    return new TextDecoder().decode(out.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const case_ = (pattern: string, gpuMs: number, gpuSpanMs?: number) => ({
  shape: [4096, 4096],
  pattern,
  timing: "timestamp",
  weights: "resident",
  stageMs: {},
  gpuMs,
  gpuMsBest: gpuMs,
  ...(gpuSpanMs === undefined ? {} : { gpuSpanMs }),
  requestMs: { best: 50, median: 51 },
});

Deno.test("device_table: torch / zprune by span and by stages, each pattern beside the anchor's own case", async () => {
  const md = await table(
    [{ shape: [4096, 4096], torch_layer_ms: 2, torch_row_ms: 1.8 }],
    [case_("layer", 0.5, 0.8), case_("row", 0.4, 0.5), case_("2:4", 0.25, 0.4)],
  );
  const row = (pattern: string) => md.split("\n").find((l) => l.startsWith(`| 4096x4096 | ${pattern} |`))!.split(" | ");
  // torch ms / zprune ms, the right way round (above 1: zprune faster), by span first: the anchor's wall clock
  // around a back-to-back loop counts its gaps between kernels, as the span does; the sum of stages does not.
  assert.deepEqual(row("layer").slice(7), ["layer sort", "2", "2.50x", "4.00x |"]);
  assert.deepEqual(row("row").slice(7), ["row sort", "1.8", "3.60x", "4.50x |"]);
  // The anchor has no N:M: 2:4 beside its layer-wide sort is no like-for-like ratio, and is not counted.
  assert.deepEqual(row("2:4").slice(7), ["layer sort (no N:M)", "2", "(5.00x)", "(8.00x) |"]);
  assert.match(md, /3x target: 1 of 2 layer and row cases at least 3x faster than the anchor;/);
});

Deno.test("device_table: a run without spans (before gpuSpanMs) counts by the sum of stages and says so", async () => {
  const md = await table(
    [{ shape: [4096, 4096], torch_layer_ms: 1.923, torch_row_ms: 1.756 }],
    [case_("layer", 0.671), case_("row", 0.54), case_("2:4", 0.439)],
  );
  assert.match(md, /\| layer sort \| 1\.923 \| - \| 2\.87x \|/);
  assert.match(md, /\| layer sort \(no N:M\) \| 1\.923 \| - \| \(4\.38x\) \|/);
  assert.match(md, /3x target: 1 of 2 layer and row cases .* \(by the sum of stages where no span was measured/);
});

Deno.test("device_table: exactly 3x counts; per-dispatch runs, exact paths, unanchored shapes stay apart", async () => {
  const perDispatch = {
    ...case_("layer", 0.9, 1),
    timing: "timestamp-per-dispatch",
    stageMs: { "score.score": 0.3, "select.select_pick": 0.2 },
  };
  const md = await table(
    // A line of the anchor's without a shape (its device line) is no case.
    [{ device: "NVIDIA H200" }, { shape: [4096, 4096], torch_layer_ms: 1.5, torch_row_ms: 3 }],
    [
      { ...case_("layer", 0.4, 0.5), gpuMsBest: 0.35 },
      case_("row", 0.9, 1.2),
      perDispatch,
      { shape: [8192, 28672], pattern: "row", exactPath: "statistics outside the f32 bound" },
      { ...case_("layer", 0.1, 0.2), shape: [1024, 1024] },
    ],
  );
  const lines = md.split("\n");
  const ratios = lines.slice(0, lines.indexOf(""));
  // 1.5 / 0.5 is 3.00x and counts; 3 / 1.2 falls short; 1024x1024 has no anchor, so no ratio and no count.
  assert.deepEqual(ratios.find((l) => l.startsWith("| 4096x4096 | layer |"))!.split(" | ").slice(3, 11), [
    "0.5",
    "0.4",
    "0.35",
    "50",
    "layer sort",
    "1.5",
    "3.00x",
    "3.75x |",
  ]);
  assert.ok(ratios.some((l) => l.startsWith("| 4096x4096 | row |") && l.endsWith("| row sort | 3 | 2.50x | 3.33x |")));
  assert.ok(ratios.some((l) => l.startsWith("| 1024x1024 | layer |") && l.endsWith("| layer sort | - | - | - |")));
  assert.ok(
    ratios.includes(
      "| 8192x28672 | row | - | exact CPU path: statistics outside the f32 bound | - | - | - | - | - | - | - |",
    ),
  );
  // The per-dispatch run is not a row of the ratio table (its passes are timed one by one), only of its own.
  assert.equal(ratios.filter((l) => l.startsWith("| 4096x4096 |")).length, 2);
  assert.match(md, /3x target: 1 of 2 layer and row cases at least 3x faster than the anchor;/);
  const detail = lines.slice(lines.findIndex((l) => l.startsWith("Per dispatch")));
  assert.ok(detail.includes("| 4096x4096 | layer | resident | score.score 0.3, select.select_pick 0.2 |"), md);
});
