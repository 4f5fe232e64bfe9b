import assert from "node:assert/strict";

const SCRIPT = new URL("./reproduce_reference.ts", import.meta.url).pathname;
const REFERENCE = JSON.parse(
  await Deno.readTextFile(new URL("../models/zp-llama-9m/reference.json", import.meta.url)),
) as { ppl: Record<string, unknown> };

/** `deno task reproduce ARGS`' exit code and output (no ZPRUNE_TOKEN of the test's own). */
async function reproduce(...args: string[]) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", SCRIPT, ...args],
    env: { NO_COLOR: "1", ZPRUNE_TOKEN: "" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code, out: new TextDecoder().decode(stdout), err: new TextDecoder().decode(stderr) };
}

Deno.test("deno task reproduce refuses bad flags before any work, with its usage; --help exits 0", async () => {
  const usage = /usage: deno task reproduce .*\n.*--quick/s;
  const help = await reproduce("--help");
  assert.equal(help.code, 0);
  assert.match(help.out, usage);
  assert.equal(help.err, "");

  const keys = ["dense", ...Object.keys(REFERENCE.ppl)];
  const unknown = await reproduce("--only", `${keys[1]}, zpruner/3:4,nope`, "--quick");
  assert.equal(unknown.code, 2);
  // Only the unknown keys are named, then every key reference.json has, in its order.
  assert.ok(
    unknown.err.startsWith(`reproduce: --only: zpruner/3:4, nope not in reference.json (it has ${keys.join(", ")})\n`),
    unknown.err,
  );
  assert.match(unknown.err, usage);
  assert.equal(unknown.out, "", "no table header before the refusal");

  const token = await reproduce("--token", "t", "--only", "dense");
  assert.equal(token.code, 2);
  assert.match(token.err, /^reproduce: --token needs --server/);
  assert.equal(token.out, "");

  const flag = await reproduce("--fast");
  assert.equal(flag.code, 2);
  assert.match(flag.err, /^reproduce: .*--fast/);
  assert.match(flag.err, usage);
});
