/**
 * Tokenization of calibration and evaluation text: the model's `tokenizer.json` through @huggingface/tokenizers,
 * chat templates through @huggingface/jinja, for two of the CLI's calibration sources (a text file, a JSONL file of
 * conversations). Windows cut from the ids, and id files, are in windows.ts.
 */
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { readJsonFile } from "./json_file.ts";

/** Token ids; u16 files decode to Uint16Array, tokenizer output to Int32Array. */
export type TokenArray = Uint16Array | Int32Array;

/** A model's tokenizer and the bits of `tokenizer_config.json` that calibration needs. */
export interface ModelTokenizer {
  tokenizer: Tokenizer;
  /** The Jinja chat template, when the model has one. */
  chatTemplate?: string;
  /** Where the template came from, for messages: `chat_template.jinja`, or tokenizer_config.json's field. */
  chatTemplateSource?: string;
  /** Names of the model's chat templates when none is the default (none is then used). */
  chatTemplateNames?: string[];
  bosToken?: string;
  eosToken?: string;
}

/** The file transformers (4.47 and later) saves a chat template in, and reads in preference to the config's field. */
const CHAT_TEMPLATE_FILE = "chat_template.jinja";
/** The folder of its other, named templates. */
const ADDITIONAL_TEMPLATES = "additional_chat_templates";

/**
 * The chat template as transformers takes it: `chat_template.jinja` when the checkpoint has one, else
 * tokenizer_config.json's `chat_template`, a string or a list of `{name, template}` of which the one named "default"
 * is used (with none so named, apply_chat_template refuses without a name: the names are kept to say so).
 */
async function chatTemplateOf(
  dir: string,
  field: unknown,
): Promise<Pick<ModelTokenizer, "chatTemplate" | "chatTemplateSource" | "chatTemplateNames">> {
  try {
    return {
      chatTemplate: await Deno.readTextFile(`${dir}/${CHAT_TEMPLATE_FILE}`),
      chatTemplateSource: CHAT_TEMPLATE_FILE,
    };
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw new TypeError(`${dir}/${CHAT_TEMPLATE_FILE}: ${e}`, { cause: e });
  }
  if (typeof field === "string") {
    return { chatTemplate: field, chatTemplateSource: "tokenizer_config.json's chat_template" };
  }
  const named = (Array.isArray(field) ? field : []).filter((t): t is { name: string; template: string } =>
    typeof t?.name === "string" && typeof t?.template === "string"
  );
  const chosen = named.find((t) => t.name === "default");
  if (chosen) {
    return { chatTemplate: chosen.template, chatTemplateSource: 'tokenizer_config.json\'s chat_template "default"' };
  }
  // transformers also saves named templates as additional_chat_templates/NAME.jinja, the default one aside: with
  // those alone there is no default either.
  const names = named.map((t) => t.name);
  try {
    for await (const e of Deno.readDir(`${dir}/${ADDITIONAL_TEMPLATES}`)) {
      if (e.isFile && e.name.endsWith(".jinja")) names.push(e.name.slice(0, -".jinja".length));
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw new TypeError(`${dir}/${ADDITIONAL_TEMPLATES}: ${e}`, { cause: e });
  }
  return names.length > 0 ? { chatTemplateNames: names.sort() } : {};
}

/** Reads `tokenizer.json`, `tokenizer_config.json` and `chat_template.jinja` of a checkpoint directory. */
export async function loadTokenizer(dir: string): Promise<ModelTokenizer> {
  const json = await readJsonFile(`${dir}/tokenizer.json`) as Record<string, unknown>;
  let config: Record<string, unknown> = {};
  try {
    config = await readJsonFile(`${dir}/tokenizer_config.json`) as Record<string, unknown>;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new TypeError(`${dir}/tokenizer_config.json: it is not a JSON object`);
  }
  // The library's own errors ("Tokenizer must contain a \"model\" property") name no file.
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(json, config);
  } catch (e) {
    throw new TypeError(`${dir}/tokenizer.json: ${e instanceof Error ? e.message : e}`, { cause: e });
  }
  const name = (v: unknown) => typeof v === "string" ? v : (v as { content?: string } | undefined)?.content;
  return {
    tokenizer,
    ...await chatTemplateOf(dir, config.chat_template),
    bosToken: name(config.bos_token),
    eosToken: name(config.eos_token),
  };
}

/**
 * Splits a corpus into documents at blank lines (two line breaks in a row), the way the shipped `*_ids.u16` files
 * were made. Windows line breaks (CRLF) count as one: left as they were, a CRLF file would be one document with a
 * carriage return tokenized at every line's end.
 */
function splitDocuments(text: string): string[] {
  return text.replaceAll("\r\n", "\n").split("\n\n").filter((d) => d.length > 0);
}

/** Tokenizes a corpus document by document, each with the tokenizer's special tokens (`<s>` first), concatenated. */
export function tokenizeCorpus(tok: ModelTokenizer, text: string): Int32Array {
  const parts = splitDocuments(text).map((d) => tok.tokenizer.encode(d).ids);
  const out = new Int32Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** One chat message. */
export interface ChatMessage {
  role: string;
  content: string;
}

/** ShareGPT's speakers (`from`) under the role names chat templates test for; others (`system`) pass as they are. */
const SHAREGPT_ROLES: Record<string, string> = { human: "user", gpt: "assistant" };

/**
 * Reads one JSONL line as a conversation: `{messages: [{role, content}]}`, `[{role, content}]` or ShareGPT's
 * `{conversations: [{from, value}]}`, whose `human` and `gpt` become `user` and `assistant`.
 */
export function parseConversation(line: string): ChatMessage[] {
  const v = JSON.parse(line) as unknown;
  // null, a number or a string is no conversation: refused by the message below, not by a property read of null.
  const obj = typeof v === "object" && v !== null ? v as { messages?: unknown[]; conversations?: unknown[] } : {};
  const list = Array.isArray(v) ? v : obj.messages ?? obj.conversations;
  if (!Array.isArray(list)) throw new TypeError("expected {messages: [...]}, {conversations: [...]} or an array");
  return list.map((m) => {
    const o = (typeof m === "object" && m !== null ? m : {}) as {
      role?: string;
      from?: string;
      content?: string;
      value?: string;
    };
    const role = o.role ?? (o.from !== undefined ? SHAREGPT_ROLES[o.from] ?? o.from : undefined);
    const content = o.content ?? o.value;
    if (typeof role !== "string" || typeof content !== "string") throw new TypeError("a message lacks role or content");
    return { role, content };
  });
}

/**
 * Tokenizes conversations: rendered with the model's chat template when it has one (and then encoded without
 * adding special tokens, as transformers' apply_chat_template does), otherwise as `role: content` lines
 * forming one document each.
 */
export function tokenizeConversations(tok: ModelTokenizer, jsonl: string): Int32Array {
  if (tok.chatTemplate === undefined && tok.chatTemplateNames) {
    // transformers' apply_chat_template refuses this too: which template the model was tuned with is not ours to guess.
    throw new TypeError(
      `the model has chat templates ${JSON.stringify(tok.chatTemplateNames)} and none is the default ` +
        '(chat_template.jinja, or one named "default"); render the conversations with one and use --calib-text',
    );
  }
  let template: Template | undefined;
  try {
    template = tok.chatTemplate ? new Template(tok.chatTemplate) : undefined;
  } catch (e) {
    // The model's file is at fault, not the conversations: say so (a caller names the data file around this).
    const source = tok.chatTemplateSource ?? "tokenizer_config.json's chat_template";
    throw new TypeError(
      `the model's chat template (${source}) does not parse: ${e instanceof Error ? e.message : e}`,
      { cause: e },
    );
  }
  const parts: number[][] = [];
  for (const [i, line] of jsonl.split("\n").entries()) {
    if (!line.trim()) continue;
    let messages: ChatMessage[];
    try {
      messages = parseConversation(line);
    } catch (e) {
      throw new TypeError(`line ${i + 1}: ${e instanceof Error ? e.message : e}`, { cause: e });
    }
    if (template) {
      let text: string;
      try {
        text = template.render({
          messages,
          bos_token: tok.bosToken ?? "",
          eos_token: tok.eosToken ?? "",
          add_generation_prompt: false,
        });
      } catch (e) {
        // Templates refuse conversations through raise_exception (Llama-2's: roles that do not alternate
        // user/assistant); say which one.
        throw new TypeError(`chat template failed on line ${i + 1}: ${e instanceof Error ? e.message : e}`, {
          cause: e,
        });
      }
      parts.push(tok.tokenizer.encode(text, { add_special_tokens: false }).ids);
    } else {
      parts.push(tok.tokenizer.encode(messages.map((m) => `${m.role}: ${m.content}`).join("\n")).ids);
    }
  }
  return Int32Array.from(parts.flat());
}
