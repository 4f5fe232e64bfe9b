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

/** `v` as JSON with every object's keys sorted: equal for equal values, however they were written. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const entries = Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(",")}}`;
  }
  return JSON.stringify(v);
}
