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
