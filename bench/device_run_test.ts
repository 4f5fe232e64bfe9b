import assert from "node:assert/strict";

Deno.test("device_run.sh writes at most 8 files to $OUT, as many as the device tool returns", async () => {
  // The device tool brings back 8 files from $OUT and leaves the others out (its README): the 2026-11-30 script
  // wrote 10, so a one-shot GPU run would have lost two of its results. Every file it writes is named "$OUT/NAME".
  const script = await Deno.readTextFile(new URL("./device_run.sh", import.meta.url));
  const names = new Set([...script.matchAll(/"\$OUT\/([^"]+)"/g)].map((m) => m[1]!));
  assert.ok(names.has("full_shape.jsonl") && names.has("stderr.log"), [...names].join(", "));
  assert.ok(names.size <= 8, `${names.size} files: ${[...names].join(", ")}`);
  // Neither folders (the tool returns files two folders down at most) nor names it would refuse.
  for (const name of names) assert.match(name, /^[A-Za-z0-9._-]+$/);
});
