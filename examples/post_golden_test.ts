import assert from "node:assert/strict";
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { goldenCase, startServer } from "../tests/_server.ts";

const SCRIPT = new URL("./post_golden.ts", import.meta.url).pathname;

/** Runs the example against `url` with `env` (nothing of the test's own ZPRUNE_* leaks in). */
async function postGolden(args: string[], env: Record<string, string> = {}) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", SCRIPT, ...args],
    env: { NO_COLOR: "1", ZPRUNE_URL: "", ZPRUNE_TOKEN: "", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code, out: new TextDecoder().decode(stdout), err: new TextDecoder().decode(stderr) };
}

Deno.test("examples/post_golden.ts prints the golden layer's counts, sending $ZPRUNE_TOKEN", async () => {
  const server = await startServer({ backend: createCpuBackend(), config: { token: "s3cret", log: false } });
  try {
    // The README's example, its default fixture: the golden answer's own counts and alpha.
    const { expected } = goldenCase("zpruner-layer-f16");
    const ok = await postGolden([server.url], { ZPRUNE_TOKEN: "s3cret" });
    assert.equal(ok.code, 0, ok.err);
    const lines = ok.out.trim().split("\n");
    assert.match(lines[0]!, /^backend cpu on .+, \d+\.\d ms$/);
    const [rows, cols] = expected.shape;
    const percent = (100 * expected.pruned / expected.total).toFixed(1);
    const head = `${expected.name} [${rows}x${cols}]: pruned ${expected.pruned}/${expected.total} (${percent}%)`;
    assert.ok(lines[1]!.startsWith(head + ", threshold "), lines[1]);
    assert.ok(lines[1]!.endsWith(`, alpha ${expected.alpha!.toFixed(4)}`), lines[1]);
    assert.equal(lines.length, 2);

    // Another fixture by path: a method without alpha prints none.
    const fixture = new URL("../tests/fixtures/golden/wanda-row-bf16.request.msgpack", import.meta.url).pathname;
    const wanda = goldenCase("wanda-row-bf16").expected;
    const other = await postGolden([server.url, fixture], { ZPRUNE_TOKEN: "s3cret" });
    assert.equal(other.code, 0, other.err);
    const line = other.out.trim().split("\n")[1]!;
    assert.ok(line.startsWith(`${wanda.name} [${wanda.shape.join("x")}]: pruned ${wanda.pruned}/${wanda.total} (`));
    assert.doesNotMatch(line, /alpha/);

    // The URL from $ZPRUNE_URL, no token: the server's 401 is printed with its code, and the example fails.
    const refused = await postGolden([], { ZPRUNE_URL: server.url });
    assert.equal(refused.code, 1);
    assert.match(refused.err, /^401 .*unauthorized/);

    // A URL with a trailing slash names the same server.
    const slash = await postGolden([`${server.url}/`], { ZPRUNE_TOKEN: "s3cret" });
    assert.equal(slash.code, 0, slash.err);
    assert.equal(slash.out.trim().split("\n")[1], lines[1]);
  } finally {
    await server.close();
  }
});

Deno.test("examples/post_golden.ts says in one line that no server answers at the URL", async () => {
  // A port just given back: nothing listens there.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const url = `http://127.0.0.1:${listener.addr.port}`;
  listener.close();
  const { code, out, err } = await postGolden([url]);
  assert.equal(code, 1);
  assert.equal(out, "");
  assert.match(err, new RegExp(`^cannot reach a zprune server at ${url}: .*refused.*\\n$`, "i"));
});

Deno.test("examples/post_golden.ts reads its fixture under a path with a space; a missing one is a line", async () => {
  // A checkout at "zp space/": the default fixture's URL is percent-encoded there (%20), which no file is named.
  const root = await Deno.makeTempDir({ prefix: "zp space " });
  const repo = new URL("..", import.meta.url).pathname;
  try {
    await Deno.mkdir(`${root}/examples`);
    await Deno.copyFile(SCRIPT, `${root}/examples/post_golden.ts`);
    for (const entry of ["contract", "tests", "node_modules", "deno.json", "package.json"]) {
      await Deno.symlink(`${repo}${entry}`, `${root}/${entry}`);
    }
    const server = await startServer({ backend: createCpuBackend(), config: { log: false } });
    try {
      const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--no-check", `${root}/examples/post_golden.ts`, server.url],
        cwd: root,
        env: { NO_COLOR: "1", ZPRUNE_URL: "", ZPRUNE_TOKEN: "" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(code, 0, new TextDecoder().decode(stderr));
      assert.match(new TextDecoder().decode(stdout), /^backend cpu on /);
    } finally {
      await server.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
  // A fixture that is not there: its path and the cause in one line, no stack trace.
  const missing = await postGolden(["http://127.0.0.1:9", "/nonexistent/zprune.msgpack"]);
  assert.equal(missing.code, 1);
  assert.match(missing.err, /^cannot read the request \/nonexistent\/zprune\.msgpack: .*No such file.*\n$/);
});
