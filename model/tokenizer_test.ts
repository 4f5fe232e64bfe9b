import assert from "node:assert/strict";
import { loadTokenizer, parseConversation, tokenizeConversations, tokenizeCorpus } from "./tokenizer.ts";
import { readU16 } from "./windows.ts";

const root = (p: string) => new URL(`../${p}`, import.meta.url).pathname;

Deno.test("tokenizeCorpus(calib.txt) reproduces the shipped calib_ids.u16, <s> = 0 opening each document", async () => {
  const tok = await loadTokenizer(root("models/zp-llama-9m"));
  const shipped = await readU16(root("data/corpus/calib_ids.u16"));
  const ours = tokenizeCorpus(tok, await Deno.readTextFile(root("data/corpus/calib.txt")));
  assert.equal(ours.length, shipped.length);
  const first = ours.findIndex((id, i) => id !== shipped[i]);
  assert.equal(first, -1, `first difference at token ${first}`);
  assert.equal(ours[0], 0);
  assert.equal(ours.filter((id) => id === 0).length, 1409); // one <s> per document
});

Deno.test("tokenizeCorpus() reads a CRLF file as its LF twin: the same documents, no carriage returns", async () => {
  const tok = await loadTokenizer(root("models/zp-llama-9m"));
  const text = (await Deno.readTextFile(root("data/corpus/test.txt"))).slice(0, 20_000);
  const lf = tokenizeCorpus(tok, text);
  assert.ok(lf.filter((id) => id === 0).length > 5, "several documents in the sample");
  assert.deepEqual(tokenizeCorpus(tok, text.replaceAll("\n", "\r\n")), lf);
});

Deno.test("tokenizeCorpus(): runs of blank lines, and blank lines at either end, make no empty documents", async () => {
  const tok = await loadTokenizer(root("models/zp-llama-9m"));
  // Each document alone, with its special tokens: <s> and its text, nothing for what lies between.
  const want = [...tok.tokenizer.encode("Call me Ishmael.").ids, ...tok.tokenizer.encode("Some years ago.").ids];
  for (const text of ["Call me Ishmael.\n\nSome years ago.", "Call me Ishmael.\n\n\n\nSome years ago.\n\n"]) {
    assert.deepEqual(Array.from(tokenizeCorpus(tok, text)), want, JSON.stringify(text));
  }
  assert.deepEqual(Array.from(tokenizeCorpus(tok, "\n\nCall me Ishmael.\r\n\r\nSome years ago.\n\n\n\n")), want);
  assert.equal(want.filter((id) => id === 0).length, 2);
});

Deno.test("tokenizeConversations() renders JSONL conversations with the chat template when there is one", async () => {
  const tok = await loadTokenizer(root("models/zp-llama-9m"));
  const jsonl = '{"messages":[{"role":"user","content":"Call me Ishmael."},{"role":"assistant","content":"Aye."}]}\n';
  // The bundled model has no template: one document of "role: content" lines, opened by <s>.
  assert.equal(tok.chatTemplate, undefined);
  const plain = tokenizeConversations(tok, jsonl);
  assert.deepEqual(Array.from(plain), tok.tokenizer.encode("user: Call me Ishmael.\nassistant: Aye.").ids);
  assert.equal(plain[0], 0);
  // With a template the rendered text is encoded as is (the template writes bos_token itself).
  const templated = tokenizeConversations(
    { ...tok, chatTemplate: "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}" },
    jsonl,
  );
  const expected = tok.tokenizer.encode("<s><|user|>Call me Ishmael.\n<|assistant|>Aye.\n", {
    add_special_tokens: false,
  });
  assert.deepEqual(Array.from(templated), expected.ids);
  assert.equal(templated[0], 0);
});

/** Llama-2-chat's template (meta-llama/Llama-2-7b-chat-hf, tokenizer_config.json), which insists on user/assistant. */
const LLAMA2_TEMPLATE = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}" +
  "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}" +
  "{% set system_message = false %}{% endif %}{% for message in loop_messages %}" +
  "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{% if loop.index0 == 0 and system_message != false %}" +
  "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}" +
  "{% else %}{% set content = message['content'] %}{% endif %}" +
  "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

Deno.test("tokenizeConversations() maps ShareGPT's human/gpt to user/assistant, as chat templates expect", async () => {
  const tok = { ...(await loadTokenizer(root("models/zp-llama-9m"))), chatTemplate: LLAMA2_TEMPLATE };
  const sharegpt = JSON.stringify({
    conversations: [
      { from: "system", value: "Be brief." },
      { from: "human", value: "Call me Ishmael." },
      { from: "gpt", value: "Aye." },
    ],
  });
  assert.deepEqual(parseConversation(sharegpt), [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Call me Ishmael." },
    { role: "assistant", content: "Aye." },
  ]);
  // What Llama-2-chat's template makes of it, written out by hand.
  const text = "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nCall me Ishmael. [/INST] Aye. </s>";
  const expected = tok.tokenizer.encode(text, { add_special_tokens: false }).ids;
  assert.deepEqual(Array.from(tokenizeConversations(tok, sharegpt + "\n")), expected);
  // A template's raise_exception() reaches the caller as an error that names the template and the line.
  const bad = '{"conversations":[{"from":"gpt","value":"Aye."}]}';
  assert.throws(() => tokenizeConversations(tok, bad), /chat template failed on line 1: .*must alternate/);
  // A template that does not parse is the model's file's fault, and said so before any line is read.
  const broken = { ...tok, chatTemplate: "{% for m in messages %}{{ m.content }" };
  assert.throws(
    () => tokenizeConversations(broken, bad),
    /^TypeError: the model's chat template \(tokenizer_config\.json's chat_template\) does not parse: /,
  );
});

Deno.test("loadTokenizer() finds the chat template as transformers does: .jinja, config, 'default'", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.symlink(root("models/zp-llama-9m/tokenizer.json"), `${dir}/tokenizer.json`);
    const config = (chatTemplate: unknown) =>
      Deno.writeTextFile(
        `${dir}/tokenizer_config.json`,
        JSON.stringify({ bos_token: "<s>", chat_template: chatTemplate }),
      );
    const jsonl = '{"messages":[{"role":"user","content":"Call me Ishmael."}]}\n';
    // transformers 4.47 and later read chat_template.jinja in preference to the config's field.
    await config("{{ 'inline' }}");
    await Deno.writeTextFile(
      `${dir}/chat_template.jinja`,
      "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}",
    );
    let tok = await loadTokenizer(dir);
    assert.equal(tok.chatTemplateSource, "chat_template.jinja");
    const want = tok.tokenizer.encode("<s>[user]Call me Ishmael.", { add_special_tokens: false }).ids;
    assert.deepEqual(Array.from(tokenizeConversations(tok, jsonl)), want);
    await Deno.remove(`${dir}/chat_template.jinja`);
    tok = await loadTokenizer(dir);
    assert.deepEqual([tok.chatTemplate, tok.chatTemplateSource], [
      "{{ 'inline' }}",
      "tokenizer_config.json's chat_template",
    ]);
    // A list of named templates: the one named "default".
    await config([{ name: "tool_use", template: "T" }, { name: "default", template: "D" }]);
    tok = await loadTokenizer(dir);
    assert.deepEqual([tok.chatTemplate, tok.chatTemplateNames], ["D", undefined]);
    // None named "default": no template is the model's, and rendering conversations says so, as transformers does.
    await config([{ name: "tool_use", template: "T" }, { name: "rag", template: "R" }]);
    tok = await loadTokenizer(dir);
    assert.deepEqual([tok.chatTemplate, tok.chatTemplateNames], [undefined, ["rag", "tool_use"]]);
    assert.throws(
      () => tokenizeConversations(tok, jsonl),
      /chat templates \["rag","tool_use"\] and none is the default/,
    );
    // Named templates saved as additional_chat_templates/NAME.jinja, with no default beside them: the same.
    await config(undefined);
    await Deno.mkdir(`${dir}/additional_chat_templates`);
    await Deno.writeTextFile(`${dir}/additional_chat_templates/tool_use.jinja`, "T");
    tok = await loadTokenizer(dir);
    assert.deepEqual([tok.chatTemplate, tok.chatTemplateNames], [undefined, ["tool_use"]]);
    assert.throws(() => tokenizeConversations(tok, jsonl), /chat templates \["tool_use"\] and none is the default/);
    // With chat_template.jinja beside them, that one is the default.
    await Deno.writeTextFile(`${dir}/chat_template.jinja`, "J");
    tok = await loadTokenizer(dir);
    assert.deepEqual([tok.chatTemplate, tok.chatTemplateNames], ["J", undefined]);
    // Text calibration does not need a template: the same tokenizer still tokenizes a corpus.
    assert.equal(tokenizeCorpus(tok, "Call me Ishmael.")[0], 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadTokenizer() names tokenizer.json or tokenizer_config.json when they make no tokenizer", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cases: [string, string, string, RegExp][] = [
      ["null", "{}", "tokenizer.json", /must be a valid object/],
      ["{}", "{}", "tokenizer.json", /must contain a "model" property/],
      ['{"model": {"type": "BPE", "vocab": {}, "merges": []}}', "{}", "tokenizer.json", /decoder/],
      [
        await Deno.readTextFile(root("models/zp-llama-9m/tokenizer.json")),
        "null",
        "tokenizer_config.json",
        /it is not a JSON object/,
      ],
    ];
    for (const [tokenizer, config, file, want] of cases) {
      await Deno.writeTextFile(`${dir}/tokenizer.json`, tokenizer);
      await Deno.writeTextFile(`${dir}/tokenizer_config.json`, config);
      await assert.rejects(
        loadTokenizer(dir),
        (e: Error) => e.message.startsWith(`${dir}/${file}: `) && want.test(e.message),
        `${file}: ${tokenizer.slice(0, 40)} / ${config}`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadTokenizer() reads AddedToken special tokens, and names files it cannot read", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.symlink(root("models/zp-llama-9m/tokenizer.json"), `${dir}/tokenizer.json`);
    // Older transformers write special tokens as serialized AddedTokens, not strings.
    const added = (content: string) => ({ __type: "AddedToken", content, lstrip: false, rstrip: false });
    await Deno.writeTextFile(
      `${dir}/tokenizer_config.json`,
      JSON.stringify({ bos_token: added("<s>"), eos_token: "</s>" }),
    );
    const tok = await loadTokenizer(dir);
    assert.deepEqual([tok.bosToken, tok.eosToken], ["<s>", "</s>"]);
    // A template reading bos_token gets "<s>", which encodes as <s> = 0.
    const withTemplate = { ...tok, chatTemplate: "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}" };
    assert.equal(tokenizeConversations(withTemplate, '[{"role": "user", "content": "Aye."}]')[0], 0);
    // A file there that cannot be read as what it should be is named, not taken for an absent one.
    const rejects = async (want: RegExp, what: string) =>
      await assert.rejects(loadTokenizer(dir), (e: Error) => want.test(e.message), what);
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, "[]");
    await rejects(/tokenizer_config\.json: it is not a JSON object/, "a list");
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, '{"bos_token": ');
    await rejects(new RegExp(`^${dir}/tokenizer_config\\.json: `), "broken JSON");
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, "{}");
    await Deno.mkdir(`${dir}/chat_template.jinja`);
    await rejects(new RegExp(`^${dir}/chat_template\\.jinja: `), "a folder named chat_template.jinja");
    await Deno.remove(`${dir}/chat_template.jinja`);
    await Deno.writeTextFile(`${dir}/additional_chat_templates`, "");
    await rejects(new RegExp(`^${dir}/additional_chat_templates: `), "a file named as the templates' folder");
    await Deno.remove(`${dir}/additional_chat_templates`);
    // In the templates' folder, only files are templates.
    await Deno.mkdir(`${dir}/additional_chat_templates/old.jinja`, { recursive: true });
    await Deno.writeTextFile(`${dir}/additional_chat_templates/rag.jinja`, "R");
    assert.deepEqual((await loadTokenizer(dir)).chatTemplateNames, ["rag"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokenizeConversations(): a list of messages, CRLF lines, no generation prompt, errors by line", async () => {
  const tok = await loadTokenizer(root("models/zp-llama-9m"));
  // A bare list is a conversation too.
  assert.deepEqual(parseConversation('[{"role": "user", "content": "Aye."}]'), [{ role: "user", content: "Aye." }]);
  const template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}" +
    "{% if add_generation_prompt %}[assistant]{% endif %}";
  const t = { ...tok, chatTemplate: template };
  // A file saved with CRLF line ends, a blank line between: the same as its LF twin, the blank line skipped. The
  // conversation is whole: no prompt for a reply is added after it.
  const lines = ['{"messages": [{"role": "user", "content": "Hi."}]}', '[{"role": "user", "content": "Bye."}]'];
  const concatenated = [
    ...tok.tokenizer.encode("[user]Hi.", { add_special_tokens: false }).ids,
    ...tok.tokenizer.encode("[user]Bye.", { add_special_tokens: false }).ids,
  ];
  assert.deepEqual(Array.from(tokenizeConversations(t, lines.join("\n"))), concatenated);
  assert.deepEqual(Array.from(tokenizeConversations(t, lines.join("\r\n\r\n") + "\r\n  \r\n")), concatenated);
  // An error names its line, counted from 1, blank lines included.
  assert.throws(() => tokenizeConversations(t, `${lines[0]}\n\n{"role"`), /^TypeError: line 3: /);
  assert.throws(() => tokenizeConversations(t, `${lines[0]}\n{"x": 1}`), /^TypeError: line 2: expected \{messages/);
});

Deno.test("tokenizeConversations(): {% generation %} tags render nothing; their dashes strip whitespace", async () => {
  const tok = await loadTokenizer(root("models/zp-llama-9m"));
  const line = '[{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Aye."}]';
  // transformers' chat templates mark the assistant's tokens with these tags; its Jinja extension renders them as
  // nothing, and the dashes strip the whitespace beside them as around any Jinja tag.
  const body = (tags: string) => `{% for m in messages %}[{{ m.role }}]${tags}{% endfor %}`;
  const cases: [string, string][] = [
    [body("  {%- generation -%}  {{ m.content }}  {%- endgeneration -%}  |"), "[user]Hi.|[assistant]Aye.|"],
    [body(" {% generation %} {{ m.content }} {% endgeneration %} |"), "[user]  Hi.  |[assistant]  Aye.  |"],
  ];
  for (const [chatTemplate, rendered] of cases) {
    const want = tok.tokenizer.encode(rendered, { add_special_tokens: false }).ids;
    assert.deepEqual(Array.from(tokenizeConversations({ ...tok, chatTemplate }, line)), want, chatTemplate);
  }
});

Deno.test("parseConversation() refuses null, scalars and null messages with its own messages", () => {
  for (const line of ["null", "7", '"text"', "{}"]) {
    assert.throws(() => parseConversation(line), /^TypeError: expected \{messages: \[\.\.\.\]\}/, line);
  }
  for (const line of ["[null]", '{"messages": [3]}', '[{"role": "user"}]']) {
    assert.throws(() => parseConversation(line), /^TypeError: a message lacks role or content$/, line);
  }
});
