import assert from "node:assert/strict";
import { canonicalJson, readJsonFile } from "./json_file.ts";

Deno.test("canonicalJson() writes keys sorted at every depth, arrays in their order, written out by hand", () => {
  // The run files' digests hash this text: it must be the same text for every spelling of the same value.
  assert.equal(canonicalJson({ b: 1, a: [{ d: null, c: "x" }, 2] }), '{"a":[{"c":"x","d":null},2],"b":1}');
  // Sorted by UTF-16 code unit, as JavaScript compares strings: "B" (0x42) < "_" (0x5f) < "a" (0x61).
  assert.equal(canonicalJson({ a: 3, _: 2, B: 1 }), '{"B":1,"_":2,"a":3}');
  assert.equal(canonicalJson([3, 1, [2, { z: true, y: false }]]), '[3,1,[2,{"y":false,"z":true}]]');
  assert.equal(canonicalJson(null), "null");
  assert.equal(canonicalJson({ n: null, e: [], o: {} }), '{"e":[],"n":null,"o":{}}');
  // Keys that JSON must escape stay JSON: the text parses back to the same value.
  const odd = { 'q"uote': 1, "back\\slash": [2], "": { "\n": "line" } };
  assert.equal(canonicalJson(odd), '{"":{"\\n":"line"},"back\\\\slash":[2],"q\\"uote":1}');
  assert.deepEqual(JSON.parse(canonicalJson(odd)), odd);
});

Deno.test("canonicalJson() is equal for equal values however their keys were ordered, and differs otherwise", () => {
  const a = JSON.parse('{"model": {"type": "BPE", "dropout": null}, "added_tokens": [{"id": 0, "content": "<s>"}]}');
  const b = JSON.parse('{"added_tokens": [{"content": "<s>", "id": 0}], "model": {"dropout": null, "type": "BPE"}}');
  assert.equal(canonicalJson(a), canonicalJson(b));
  // An array's order is part of its value (token ids, merges), unlike an object's key order.
  assert.notEqual(canonicalJson([1, 2]), canonicalJson([2, 1]));
  assert.notEqual(canonicalJson({ a: [1] }), canonicalJson({ a: { 0: 1 } }));
});

Deno.test("readJsonFile() reads UTF-8 JSON (a byte order mark too); a syntax error names the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(
      `${dir}/bom.json`,
      new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode('{"a": [1]}')]),
    );
    assert.deepEqual(await readJsonFile(`${dir}/bom.json`), { a: [1] });
    await Deno.writeTextFile(`${dir}/bad.json`, '{"a": ');
    await assert.rejects(readJsonFile(`${dir}/bad.json`), (e: unknown) => {
      assert.ok(e instanceof SyntaxError);
      assert.ok(e.message.startsWith(`${dir}/bad.json: `), e.message);
      // The parser's own error is kept as the cause.
      assert.ok(e.cause instanceof SyntaxError);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
