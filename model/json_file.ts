/** Reading the JSON files of a checkpoint directory. */
import { readUtf8Text } from "./text_file.ts";

/** A JSON file's value; a syntax error names the file (Deno's NotFound and permission errors name it already). */
export async function readJsonFile(path: string): Promise<unknown> {
  const text = await readUtf8Text(path);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new SyntaxError(`${path}: ${e instanceof Error ? e.message : e}`, { cause: e });
  }
}
