import assert from "node:assert/strict";
import { longLines, MAX_LINE } from "./line_length.ts";

Deno.test("longLines() finds lines over the limit that could be wrapped, by character count", () => {
  const prose = "word ".repeat(30).trim(); // 149 characters
  const fits = "x ".repeat(MAX_LINE / 2).trimEnd(); // 119 characters
  const text = [fits, prose, "https://example.com/" + "a".repeat(200)].join("\n");
  assert.deepEqual(longLines(text, false), [{ line: 2, length: 149 }]);
  // An emoji is two UTF-16 units but one character: 60 of them with spaces are 119 characters, 61 are 121.
  assert.deepEqual(longLines("🙂 ".repeat(60).trimEnd(), false), []);
  assert.deepEqual(longLines("🙂 ".repeat(61).trimEnd(), false), [{ line: 1, length: 121 }]);
});

Deno.test("longLines() lets Markdown tables through, only in Markdown", () => {
  const row = `| ${"cell | ".repeat(30)}`;
  assert.deepEqual(longLines(row, true), []);
  assert.equal(longLines(row, false).length, 1);
});

Deno.test("longLines(): 120 characters pass, 121 do not; indented table rows and URLs are let through", () => {
  const at = (n: number) => "ab ".repeat(n).slice(0, n - 1) + "z"; // n characters, with spaces
  assert.deepEqual(longLines(at(MAX_LINE), false), []);
  assert.deepEqual(longLines(`${at(MAX_LINE)}\n${at(MAX_LINE + 1)}`, false), [{ line: 2, length: MAX_LINE + 1 }]);
  assert.deepEqual(longLines(`   | ${"cell | ".repeat(30)}`, true), [], "a table row in a list item");
  assert.deepEqual(
    longLines(`    // https://example.com/${"a".repeat(200)}`, false).length,
    1,
    "a comment has a space",
  );
  assert.deepEqual(longLines(`    https://example.com/${"a".repeat(200)}`, true), [], "an indented URL");
});

Deno.test("scripts/line_length.ts checks the files git knows under a root, less ignored and skipped ones", async () => {
  const root = await Deno.makeTempDir({ prefix: "zprune-line-length-" });
  try {
    const long = "word ".repeat(30).trim(); // 149 characters
    const files: Record<string, string> = {
      "a.py": `x = 1\n${long}\n`,
      "docs/API.md": long, // the contract's verbatim copy
      "docs/data/x.md": long, // "data/" is skipped at the root only
      "node_modules/m/index.ts": long,
      "ignored/y.ts": long,
      "notes.txt": long, // not a checked ending
      "kernels/k.wgsl": `${long}\n${long}`,
      ".gitignore": "ignored/\n",
    };
    for (const [path, text] of Object.entries(files)) {
      await Deno.mkdir(`${root}/${path}`.replace(/\/[^/]*$/, ""), { recursive: true });
      await Deno.writeTextFile(`${root}/${path}`, text);
    }
    const check = async () => {
      const script = new URL("./line_length.ts", import.meta.url).pathname;
      const { code, stderr } = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-read", "--allow-run=git", script, root],
        stdout: "null",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).output();
      return { code, err: new TextDecoder().decode(stderr) };
    };
    const found = (...lines: string[]) =>
      [...lines.map((l) => `${l}: 149 characters`), `${lines.length} lines over 120 characters`, ""].join("\n");
    // Outside a checkout every file is the project's (nothing says what is ignored), still less the skipped ones.
    assert.deepEqual(
      await check(),
      { code: 1, err: found("a.py:2", "docs/data/x.md:1", "ignored/y.ts:1", "kernels/k.wgsl:1", "kernels/k.wgsl:2") },
    );
    const git = await new Deno.Command("git", { args: ["-C", root, "init", "-q"] }).output();
    assert.ok(git.success, "git init");
    assert.deepEqual(
      await check(),
      { code: 1, err: found("a.py:2", "docs/data/x.md:1", "kernels/k.wgsl:1", "kernels/k.wgsl:2") },
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
