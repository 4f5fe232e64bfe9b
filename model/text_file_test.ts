import assert from "node:assert/strict";
import { readUtf8Text } from "./text_file.ts";

/** Writes `bytes` to a temporary file and returns what readUtf8Text answers (or throws). */
async function read(bytes: number[]): Promise<string> {
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeFile(path, new Uint8Array(bytes));
    return await readUtf8Text(path);
  } finally {
    await Deno.remove(path);
  }
}

Deno.test("readUtf8Text() drops a leading byte order mark only, and keeps line ends and other characters", async () => {
  const cafe = [0x63, 0x61, 0x66, 0xc3, 0xa9]; // "café"
  assert.equal(await read([0xef, 0xbb, 0xbf, ...cafe, 0x0d, 0x0a]), "caf\u00e9\r\n");
  assert.equal(await read([...cafe]), "caf\u00e9");
  // A BOM inside the text is a character of it (U+FEFF), kept.
  assert.equal(await read([0x61, 0xef, 0xbb, 0xbf]), "a\ufeff");
});

Deno.test("readUtf8Text() refuses text that is not UTF-8, naming the file, rather than reading U+FFFD", async () => {
  // "café" in Latin-1: 0xe9 alone is no UTF-8 sequence.
  await assert.rejects(read([0x63, 0x61, 0x66, 0xe9]), (e: unknown) => {
    assert.ok(e instanceof TypeError);
    assert.match(e.message, /^\/.+ is not UTF-8 text; save it as UTF-8$/);
    return true;
  });
});

Deno.test("readUtf8Text() keeps the decoder's error as the cause; an empty file, a lone BOM: empty text", async () => {
  await assert.rejects(read([0xff]), (e: unknown) => {
    assert.ok(e instanceof TypeError);
    // The decoder's own error, for a caller that wants to know which bytes.
    assert.ok(e.cause instanceof TypeError && e.cause !== e);
    return true;
  });
  assert.equal(await read([]), "");
  assert.equal(await read([0xef, 0xbb, 0xbf]), "");
});
