/** Reading the text files a run is given (calibration and evaluation text, conversations, a checkpoint's JSON). */

/**
 * A UTF-8 file's text without its byte order mark; throws a TypeError naming the file where it is not UTF-8 (Latin-1
 * text, say), which a lenient read would turn into U+FFFD characters and the tokenizer into other tokens unnoticed.
 */
export async function readUtf8Text(path: string): Promise<string> {
  const bytes = await Deno.readFile(path);
  try {
    // A leading BOM is dropped (ignoreBOM false): it is no character of the text, and would tokenize as three bytes.
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (e) {
    throw new TypeError(`${path} is not UTF-8 text; save it as UTF-8`, { cause: e });
  }
}
