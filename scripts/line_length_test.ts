import assert from "node:assert/strict";
import { longLines, MAX_LINE } from "./line_length.ts";

Deno.test("longLines() finds lines over the limit that could be wrapped, by character count", () => {
  const prose = "word ".repeat(30).trim(); // 149 characters
  const fits = "x ".repeat(MAX_LINE / 2).trimEnd(); // 119 characters
  const text = [fits, prose, "é ".repeat(60).trimEnd(), "https://example.com/" + "a".repeat(200)].join("\n");
  // "é " * 60 is 119 characters but 119 UTF-16 units too; a line of astral characters counts them once each.
  assert.deepEqual(longLines(text, false), [{ line: 2, length: 149 }]);
  assert.deepEqual(longLines("🙂 ".repeat(61), false), [{ line: 1, length: 122 }]);
});

Deno.test("longLines() lets Markdown tables through, only in Markdown", () => {
  const row = `| ${"cell | ".repeat(30)}`;
  assert.deepEqual(longLines(row, true), []);
  assert.equal(longLines(row, false).length, 1);
});
