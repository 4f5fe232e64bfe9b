import assert from "node:assert/strict";
import { decodeToF32, isWeightFile, loadCheckpoint, storedShare, writeCheckpoint } from "./safetensors.ts";
import { parseConfig } from "./config.ts";
import { packedTensors, safetensorsBytes } from "../tests/_safetensors_bytes.ts";

const MODEL = new URL("../models/zp-llama-9m", import.meta.url).pathname;

Deno.test("loadCheckpoint() reads sharded safetensors with their index", async () => {
  const ck = await loadCheckpoint(MODEL);
  assert.deepEqual(ck.shards.map((s) => s.file), [1, 2, 3].map((i) => `model-0000${i}-of-00003.safetensors`));
  // 6 blocks x 9 tensors + embed, final norm, lm_head.
  assert.equal(ck.tensors.size, 57);
  for (const [name, file] of Object.entries(ck.index!.weight_map)) assert.equal(ck.tensors.get(name)?.shard, file);
  const q = ck.tensors.get("model.layers.0.self_attn.k_proj.weight")!;
  assert.deepEqual([q.dtype, q.shape], ["f16", [128, 256]]);
  let params = 0;
  for (const t of ck.tensors.values()) params += t.shape.reduce((a, b) => a * b, 1);
  assert.equal(params, 8916224); // model.safetensors.index.json's metadata.total_parameters
  const cfg = parseConfig(ck.config);
  assert.deepEqual([cfg.nHeads, cfg.nKvHeads, cfg.headDim, cfg.ropeTheta, cfg.tieEmbeddings], [4, 2, 64, 10000, false]);
});

Deno.test("writeCheckpoint() round-trips the bundled model byte for byte, less what describes the source", async () => {
  const ck = await loadCheckpoint(MODEL);
  const out = await Deno.makeTempDir();
  try {
    await writeCheckpoint(ck, out);
    // The dense model's measured perplexities and its card would pass for the pruned model's.
    const left = ["reference.json", "MODEL_CARD.md"];
    for (const name of left) assert.ok(Deno.statSync(`${MODEL}/${name}`).isFile, `the bundled model has ${name}`);
    const written = [...Deno.readDirSync(out)].map((e) => e.name).sort();
    const expected = [...Deno.readDirSync(MODEL)].map((e) => e.name).filter((n) => !left.includes(n)).sort();
    assert.deepEqual(written, expected);
    for (const entry of Deno.readDirSync(out)) {
      const a = await Deno.readFile(`${MODEL}/${entry.name}`), b = await Deno.readFile(`${out}/${entry.name}`);
      if (entry.name.endsWith(".json")) {
        assert.deepEqual(JSON.parse(new TextDecoder().decode(b)), JSON.parse(new TextDecoder().decode(a)), entry.name);
      } else {
        assert.ok(a.length === b.length && a.every((x, i) => x === b[i]), `${entry.name} differs`);
      }
    }
    const again = await loadCheckpoint(out);
    assert.deepEqual([...again.tensors.keys()].sort(), [...ck.tensors.keys()].sort());
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("isWeightFile() knows weight files in every format, not a training run's other files", () => {
  const weights = [
    "model.safetensors",
    "model-00001-of-00002.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "pytorch_model.bin",
    "pytorch_model-00001-of-00003.bin",
    "pytorch_model.bin.index.json",
    "model.pt",
    "tf_model.h5",
    "flax_model.msgpack",
    "consolidated.00.pth",
    "model-q4_k_m.gguf",
    "model.onnx",
  ];
  const others = [
    "config.json",
    "tokenizer.json",
    "tokenizer.model",
    "generation_config.json",
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    "trainer_state.json",
    "params.json",
  ];
  assert.deepEqual(weights.filter((n) => !isWeightFile(n)), []);
  assert.deepEqual(others.filter((n) => isWeightFile(n)), []);
});

Deno.test("writeCheckpoint(): a file it cannot put in place leaves no temporary file, and it says so", async () => {
  const ck = await loadCheckpoint(MODEL);
  const out = await Deno.makeTempDir();
  try {
    // A non-empty directory where the index goes: no file can be renamed onto it. The index is written last, so
    // every other file is in place by then.
    await Deno.mkdir(`${out}/model.safetensors.index.json/held`, { recursive: true });
    await assert.rejects(writeCheckpoint(ck, out), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.match(e.message, /model\.safetensors\.index\.json: could not be put in place \(/);
      // The bundled model's 8 files, the index last: the 7 before it are in place.
      assert.match(e.message, /; 7 of the 8 files were already, so .* now mixes old and new files/);
      return true;
    });
    const left = [...Deno.readDirSync(out)].map((e) => e.name).filter((n) => n.endsWith(".zprune-partial"));
    assert.deepEqual(left, []);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("writeCheckpoint() copies a cache snapshot's links as files; weights in other formats stay out", async () => {
  // Hugging Face's cache: snapshots/<rev>/ holds symbolic links into ../blobs/. Beside the shards, a dense copy in
  // other formats, as repositories converted by Hugging Face's bot ship.
  const root = await Deno.makeTempDir(), out = await Deno.makeTempDir();
  try {
    const blobs = `${root}/blobs`, snap = `${root}/snapshots/rev`;
    await Deno.mkdir(blobs);
    await Deno.mkdir(snap, { recursive: true });
    const link = async (name: string, bytes: Uint8Array) => {
      await Deno.writeFile(`${blobs}/${name}.blob`, bytes);
      await Deno.symlink(`../../blobs/${name}.blob`, `${snap}/${name}`);
    };
    const source = [...Deno.readDirSync(MODEL)].map((e) => e.name).filter((n) =>
      !["reference.json", "MODEL_CARD.md"].includes(n)
    );
    for (const name of source) await link(name, await Deno.readFile(`${MODEL}/${name}`));
    const dense = ["tf_model.h5", "pytorch_model.bin", "consolidated.00.pth"];
    for (const name of dense) await link(name, new Uint8Array(16));
    const ck = await loadCheckpoint(snap);
    assert.deepEqual(await writeCheckpoint(ck, out), dense.sort());
    const written = [...Deno.readDirSync(out)];
    assert.deepEqual(written.map((e) => e.name).sort(), source.sort());
    assert.ok(written.every((e) => e.isFile), "files, not links");
    for (const name of source.filter((n) => !n.endsWith(".safetensors"))) {
      assert.deepEqual(await Deno.readFile(`${out}/${name}`), await Deno.readFile(`${MODEL}/${name}`), name);
    }
    const again = await loadCheckpoint(out);
    assert.deepEqual([...again.tensors.keys()].sort(), [...ck.tensors.keys()].sort());
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("writeCheckpoint() leaves out a Hub card and dangling links; copies a file named as a folder", async () => {
  const root = await Deno.makeTempDir();
  const src = `${root}/src`;
  try {
    await Deno.mkdir(src);
    const source = [...Deno.readDirSync(MODEL)].map((e) => e.name).filter((n) =>
      !["reference.json", "MODEL_CARD.md"].includes(n)
    );
    for (const name of source) await Deno.symlink(`${MODEL}/${name}`, `${src}/${name}`);
    // The Hub's model card describes the dense model; a link to nothing is no file; a file named as the templates'
    // folder is copied as the file it is.
    await Deno.writeTextFile(`${src}/README.md`, "# the dense model");
    await Deno.symlink(`${root}/missing`, `${src}/x.json`);
    await Deno.writeTextFile(`${src}/additional_chat_templates`, "not a folder");
    const ck = await loadCheckpoint(src);
    await writeCheckpoint(ck, `${root}/out`);
    const written = [...Deno.readDirSync(`${root}/out`)].map((e) => e.name).sort();
    assert.deepEqual(written, [...source, "additional_chat_templates"].sort());
    assert.equal(await Deno.readTextFile(`${root}/out/additional_chat_templates`), "not a folder");
    // A write that fails into an empty directory that was there before leaves the directory.
    await Deno.mkdir(`${root}/empty`);
    const last = ck.shards.length - 1;
    const shards = ck.shards.map((s, i) => (i === last ? { ...s, names: [...s.names, "missing.weight"] } : s));
    await assert.rejects(writeCheckpoint({ ...ck, shards }, `${root}/empty`));
    assert.deepEqual([...Deno.readDirSync(`${root}/empty`)], []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("writeCheckpoint() keeps the named chat templates' folder, not other folders", async () => {
  // transformers saves named templates in additional_chat_templates/; Meta's original/ holds dense weights again.
  const src = await Deno.makeTempDir(), root = await Deno.makeTempDir();
  try {
    for (const e of Deno.readDirSync(MODEL)) await Deno.copyFile(`${MODEL}/${e.name}`, `${src}/${e.name}`);
    await Deno.mkdir(`${src}/additional_chat_templates`);
    await Deno.writeTextFile(`${src}/additional_chat_templates/tool_use.jinja`, "{{ tools }}");
    await Deno.writeTextFile(`${root}/rag.jinja`, "{{ documents }}");
    await Deno.symlink(`${root}/rag.jinja`, `${src}/additional_chat_templates/rag.jinja`);
    await Deno.mkdir(`${src}/original`);
    await Deno.writeFile(`${src}/original/consolidated.00.pth`, new Uint8Array(16));
    const ck = await loadCheckpoint(src);
    const out = `${root}/out`;
    await writeCheckpoint(ck, out);
    assert.throws(() => Deno.statSync(`${out}/original`), Deno.errors.NotFound, "original/ is not copied");
    const kept = [...Deno.readDirSync(`${out}/additional_chat_templates`)];
    assert.deepEqual(kept.map((e) => e.name).sort(), ["rag.jinja", "tool_use.jinja"]);
    assert.ok(kept.every((e) => e.isFile), "files, not links");
    assert.equal(await Deno.readTextFile(`${out}/additional_chat_templates/rag.jinja`), "{{ documents }}");
    assert.equal(await Deno.readTextFile(`${out}/additional_chat_templates/tool_use.jinja`), "{{ tools }}");
    // Failing into a directory it makes, after the templates were copied (shards come after them: the last names a
    // tensor that is not there), the folder it made goes with it.
    const last = ck.shards.length - 1;
    const shards = ck.shards.map((s, i) => (i === last ? { ...s, names: [...s.names, "missing.weight"] } : s));
    await assert.rejects(writeCheckpoint({ ...ck, shards }, `${root}/fresh`));
    assert.equal(await Deno.stat(`${root}/fresh`).then(() => "there", () => "gone"), "gone");
  } finally {
    await Deno.remove(src, { recursive: true });
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("loadCheckpoint() names the file whose JSON is broken: config, index, a shard's header", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const shard = safetensorsBytes('{"x": ');
    const cases: [string, string, Uint8Array | string, RegExp][] = [
      ["config.json", "config.json", "{bad", /config\.json: /],
      ["index", "model.safetensors.index.json", '{"weight_map": ', /model\.safetensors\.index\.json: /],
      ["header", "model.safetensors", shard, /model\.safetensors: its header is not JSON/],
    ];
    for (const [what, file, bytes, want] of cases) {
      for (const e of Deno.readDirSync(dir)) Deno.removeSync(`${dir}/${e.name}`);
      if (file !== "config.json") await Deno.writeTextFile(`${dir}/config.json`, "{}");
      await (typeof bytes === "string"
        ? Deno.writeTextFile(`${dir}/${file}`, bytes)
        : Deno.writeFile(`${dir}/${file}`, bytes));
      await assert.rejects(loadCheckpoint(dir), (e: Error) => e instanceof SyntaxError && want.test(e.message), what);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeCheckpoint() keeps a single-file checkpoint single-file", async () => {
  const ck = await loadCheckpoint(MODEL);
  const dir = await Deno.makeTempDir(), out = await Deno.makeTempDir();
  try {
    // Build a one-shard f32 checkpoint from two tensors of the bundled one.
    const names = ["model.norm.weight", "model.layers.0.input_layernorm.weight"];
    const tensors = names.map((n) => {
      const t = ck.tensors.get(n)!;
      const f = decodeToF32(t.data, t.dtype);
      return { ...t, dtype: "f32" as const, data: new Uint8Array(f.buffer), shard: "model.safetensors" };
    });
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    await writeCheckpoint({
      dir,
      config: {},
      tensors: new Map(tensors.map((t) => [t.name, t])),
      shards: [{ file: "model.safetensors", names }],
    }, out);
    const back = await loadCheckpoint(out);
    assert.deepEqual(back.shards.map((s) => s.file), ["model.safetensors"]);
    assert.equal(back.index, undefined);
    for (const t of tensors) assert.deepEqual(back.tensors.get(t.name)!.data, t.data);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("decodeToF32() decodes f16 and bf16 bit patterns, including subnormals and odd offsets", () => {
  // f16: 1, -2, 65504 (largest), 2^-24 (smallest subnormal), -0; bf16: 1, -2.5, 1e38-ish.
  const f16 = new Uint8Array([0, 0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00, 0x00, 0x80]).subarray(1);
  assert.deepEqual(Array.from(decodeToF32(f16, "f16")), [1, -2, 65504, 2 ** -24, -0]);
  const bf16 = new Uint8Array([0x80, 0x3f, 0x20, 0xc0, 0x96, 0x7e]);
  // 0x7e96: exponent 253, mantissa 0x16 / 128.
  assert.deepEqual(Array.from(decodeToF32(bf16, "bf16")), [1, -2.5, 2 ** 126 * (1 + 22 / 128)]);
});

Deno.test("writeCheckpoint() failing or stopped leaves a prior checkpoint whole and no partial files", async () => {
  const ck = await loadCheckpoint(MODEL);
  const out = await Deno.makeTempDir();
  try {
    await writeCheckpoint(ck, out);
    const before = new Map<string, Uint8Array>();
    for await (const e of Deno.readDir(out)) before.set(e.name, await Deno.readFile(`${out}/${e.name}`));
    assert.ok(ck.shards.length >= 2, "the bundled model is sharded");
    // Its last shard names a tensor that is not there: encoding it throws after the other shards were written.
    const last = ck.shards.length - 1;
    const shards = ck.shards.map((s, i) => (i === last ? { ...s, names: [...s.names, "missing.weight"] } : s));
    const zeroed = new Map([...ck.tensors].map(([n, t]) => [n, { ...t, data: new Uint8Array(t.data.byteLength) }]));
    await assert.rejects(writeCheckpoint({ ...ck, shards, tensors: zeroed }, out));
    await assertUnchanged(out, before);
    // Stopped by its signal (the CLI's SIGINT) as it starts: the same.
    const stop = new AbortController();
    const writing = writeCheckpoint({ ...ck, tensors: zeroed }, out, stop.signal);
    stop.abort(new Error("stopped for the test"));
    await assert.rejects(writing, /stopped for the test/);
    await assertUnchanged(out, before);
    // Into a directory it made: stopped, it leaves nothing behind, the directory included.
    const fresh = `${out}/fresh`;
    const again = new AbortController();
    const into = writeCheckpoint(ck, fresh, again.signal);
    again.abort(new Error("stopped for the test"));
    await assert.rejects(into, /stopped for the test/);
    assert.equal(await Deno.stat(fresh).then(() => "there", () => "gone"), "gone");
    await assertUnchanged(out, before);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

/** Asserts that `dir` holds exactly the files of `before`, byte for byte: no partial file left, none changed. */
async function assertUnchanged(dir: string, before: Map<string, Uint8Array>): Promise<void> {
  const after = new Map<string, Uint8Array>();
  for await (const e of Deno.readDir(dir)) after.set(e.name, await Deno.readFile(`${dir}/${e.name}`));
  assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort(), "no partial file left");
  // Compared by hand: on megabytes that differ, assert's diff would take longer than the test may.
  const same = (a: Uint8Array | undefined, b: Uint8Array) => a?.length === b.length && a.every((x, i) => x === b[i]);
  for (const [name, bytes] of before) assert.ok(same(after.get(name), bytes), `${name} changed`);
}

/** `n` bytes of data, each byte its index (mod 256), so a read from the wrong offset shows. */
function indexed(n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => i);
}

Deno.test("loadCheckpoint() refuses a shard header that would read other bytes than its tensors'", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    const f32 = (shape: unknown, data_offsets: unknown) => ({ dtype: "F32", shape, data_offsets });
    const cases: [string, unknown, number, RegExp][] = [
      // Both read bytes 0..8: pruning one would edit the other.
      ["overlap", { a: f32([2], [0, 8]), b: f32([2], [0, 8]) }, 8, /tensor b starts at byte 0 of the data, not 8/],
      // A negative offset reached back into the header.
      ["negative offset", { a: f32([2], [-8, 0]) }, 0, /tensor a has data_offsets \[-8,0\]/],
      ["string offsets", { a: f32([2], ["0", "8"]) }, 8, /tensor a has data_offsets \["0","8"\]/],
      ["negative dims", { a: f32([-1, -2], [0, 8]) }, 8, /tensor a has shape \[-1,-2\], not a list of sizes/],
      ["fractional dims", { a: f32([0.5, 4], [0, 8]) }, 8, /tensor a has shape \[0.5,4\]/],
      ["no shape", { a: { dtype: "F32", data_offsets: [0, 8] } }, 8, /tensor a has shape undefined/],
      ["gap", { a: f32([2], [0, 8]), b: f32([2], [16, 24]) }, 24, /tensor b starts at byte 16 of the data, not 8/],
      ["trailing bytes", { a: f32([2], [0, 8]) }, 12, /4 bytes of data follow the last tensor/],
      // F64 is no dtype of the wire or of the forward pass; the Python client refuses it with the same message.
      [
        "f64",
        { a: { dtype: "F64", shape: [1], data_offsets: [0, 8] } },
        8,
        /tensor a has dtype F64; only F32, F16 and BF16 are read/,
      ],
      ["header null", "null", 0, /its header is not a JSON object/],
      ["header array", "[1]", 0, /its header is not a JSON object/],
      // Written back as it is, it would make a file other readers refuse.
      ["metadata", { __metadata__: { a: 1 }, a: f32([2], [0, 8]) }, 8, /its __metadata__ is not an object of strings/],
    ];
    for (const [what, header, dataLen, want] of cases) {
      await Deno.writeFile(`${dir}/model.safetensors`, safetensorsBytes(header, indexed(dataLen)));
      await assert.rejects(
        loadCheckpoint(dir),
        (e: Error) => e.message.startsWith(`${dir}/model.safetensors: `) && want.test(e.message),
        what,
      );
    }
    // Out of key order, and a zero-size tensor between two others, are fine.
    const header = { __metadata__: { format: "pt" }, b: f32([1], [8, 12]), e: f32([0], [8, 8]), a: f32([2], [0, 8]) };
    await Deno.writeFile(`${dir}/model.safetensors`, safetensorsBytes(header, indexed(12)));
    const ck = await loadCheckpoint(dir);
    assert.deepEqual(ck.shards[0]!.names, ["a", "e", "b"]);
    assert.deepEqual([...ck.tensors.get("b")!.data], [8, 9, 10, 11]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadCheckpoint() refuses index shards that are paths, read and written outside the folders", async () => {
  const root = await Deno.makeTempDir();
  const dir = `${root}/model`, out = `${root}/a/out`;
  try {
    await Deno.mkdir(dir);
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    const shard = safetensorsBytes({ x: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }, indexed(8));
    await Deno.writeFile(`${root}/shard.safetensors`, shard);
    await Deno.writeFile(`${dir}/shard.safetensors`, shard);
    const index = (file: unknown) => JSON.stringify({ weight_map: { x: file } });
    // `./../x` was read from beside the model, and its temporary file written beside --out's parent.
    for (
      const file of ["../shard.safetensors", "./../shard.safetensors", "./shard.safetensors", `${dir}/x`, 5, "..", "."]
    ) {
      await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, index(file));
      await assert.rejects(
        loadCheckpoint(dir),
        (e: Error) =>
          e.message.startsWith(`${dir}/model.safetensors.index.json: weight_map gives x the shard `) &&
          e.message.endsWith("not a file name in the checkpoint directory"),
        String(file),
      );
    }
    for (const bad of ["null", "[]", "{}", '{"weight_map": ["shard.safetensors"]}']) {
      await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, bad);
      await assert.rejects(loadCheckpoint(dir), /model\.safetensors\.index\.json: it has no weight_map object/, bad);
    }
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, index("shard.safetensors"));
    await writeCheckpoint(await loadCheckpoint(dir), out);
    assert.deepEqual([...Deno.readDirSync(`${root}/a`)].map((e) => e.name), ["out"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("loadCheckpoint() refuses a tensor stored in two shards", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    const x = { dtype: "F32", shape: [2], data_offsets: [0, 8] };
    await Deno.writeFile(`${dir}/a.safetensors`, safetensorsBytes({ x }, indexed(8)));
    await Deno.writeFile(
      `${dir}/b.safetensors`,
      safetensorsBytes({ x, y: { ...x, data_offsets: [8, 16] } }, indexed(16)),
    );
    const weight_map = { x: "a.safetensors", y: "b.safetensors" };
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify({ weight_map }));
    await assert.rejects(loadCheckpoint(dir), /tensor x is in both a\.safetensors and b\.safetensors/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadCheckpoint() refuses model.safetensors beside an index: transformers would load the other", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const e of Deno.readDirSync(MODEL)) await Deno.copyFile(`${MODEL}/${e.name}`, `${dir}/${e.name}`);
    assert.ok((await loadCheckpoint(dir)).tensors.size > 0, "the index alone is read");
    await Deno.writeFile(`${dir}/model.safetensors`, new Uint8Array(16));
    await assert.rejects(
      loadCheckpoint(dir),
      (e: Error) =>
        e instanceof TypeError &&
        e.message.includes("has both model.safetensors and model.safetensors.index.json") &&
        e.message.includes("transformers would load model.safetensors"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadCheckpoint(): a header length past the file is named; an index's missing shard is named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    const bytes = safetensorsBytes({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }, indexed(8));
    // The length field claims 4 bytes more than the file holds after its 8 bytes.
    new DataView(bytes.buffer).setBigUint64(0, BigInt(bytes.length - 4), true);
    await Deno.writeFile(`${dir}/model.safetensors`, bytes);
    await assert.rejects(
      loadCheckpoint(dir),
      (e: Error) =>
        e instanceof RangeError &&
        e.message === `${dir}/model.safetensors: header length ${bytes.length - 4} exceeds the file`,
    );
    // An index's shard that is not there: that shard is what is missing, not model.safetensors.
    await Deno.remove(`${dir}/model.safetensors`);
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ weight_map: { a: "gone.safetensors" } }),
    );
    await assert.rejects(
      loadCheckpoint(dir),
      (e: Error) =>
        e instanceof Deno.errors.NotFound && e.message.includes(`${dir}/gone.safetensors`) &&
        !/neither/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeCheckpoint() pads a shard's header with spaces to a multiple of 8, not when it is one", async () => {
  const root = await Deno.makeTempDir();
  try {
    const lengths = new Set<number>();
    // Names of 1 to 8 characters give headers of 8 consecutive lengths: one of them a multiple of 8.
    for (let n = 1; n <= 8; n++) {
      const dir = `${root}/in${n}`, out = `${root}/out${n}`;
      await Deno.mkdir(dir);
      await Deno.writeTextFile(`${dir}/config.json`, "{}");
      const header = { ["x".repeat(n)]: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
      await Deno.writeFile(`${dir}/model.safetensors`, safetensorsBytes(header, indexed(8)));
      await writeCheckpoint(await loadCheckpoint(dir), out);
      const written = await Deno.readFile(`${out}/model.safetensors`);
      const len = Number(new DataView(written.buffer).getBigUint64(0, true));
      const text = new TextDecoder().decode(written.subarray(8, 8 + len));
      const json = text.trimEnd();
      lengths.add(json.length % 8);
      assert.deepEqual(JSON.parse(json), header);
      assert.equal(len, Math.ceil(json.length / 8) * 8, `${json.length} bytes of JSON`);
      assert.equal(text, json + " ".repeat(len - json.length));
      assert.deepEqual([...written.subarray(8 + len)], [0, 1, 2, 3, 4, 5, 6, 7]);
    }
    assert.equal(lengths.size, 8, "every remainder was tried, 0 among them");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("loadCheckpoint() refuses a file too short for a length, a header not UTF-8, odd entries", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    const refused = async (bytes: Uint8Array, want: RegExp, what: string) => {
      await Deno.writeFile(`${dir}/model.safetensors`, bytes);
      await assert.rejects(
        loadCheckpoint(dir),
        (e: Error) => e.message.startsWith(`${dir}/model.safetensors: `) && want.test(e.message),
        what,
      );
    };
    // Under 8 bytes there is no length to read: the file is said to be too short, not to claim a length.
    for (const n of [0, 5, 7]) await refused(new Uint8Array(n), /: too short for a safetensors header$/, `${n} bytes`);
    // The reference reader (Rust's str::from_utf8) refuses a header that is not UTF-8; a lenient decoder would read
    // U+FFFD and load a tensor under a name no checkpoint has. Here the name is "a" then a lone 0xff byte.
    const json = new TextEncoder().encode('{"a_": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}');
    json[3] = 0xff;
    const file = new Uint8Array(8 + json.length + 8);
    new DataView(file.buffer).setBigUint64(0, BigInt(json.length), true);
    file.set(json, 8);
    file.set(indexed(8), 8 + json.length);
    await refused(file, /its header is not JSON/, "0xff in a name");
    const f32 = (data_offsets: unknown) => ({ dtype: "F32", shape: [2], data_offsets });
    // [begin, end] is two numbers: a third is no offset of the format (and would be dropped unseen).
    await refused(safetensorsBytes({ a: f32([0, 8, 8]) }, indexed(8)), /data_offsets \[0,8,8\], not \[begin/, "three");
    await refused(safetensorsBytes({ a: f32([0]) }, indexed(8)), /data_offsets \[0\], not \[begin/, "one");
    // A dtype named like one of Object.prototype's properties is no dtype either, and is named as such.
    for (const dtype of ["toString", "constructor", "__proto__", "f32"]) {
      const header = `{"a": {"dtype": "${dtype}", "shape": [2], "data_offsets": [0, 8]}}`;
      await refused(
        safetensorsBytes(header, indexed(8)),
        new RegExp(`has dtype ${dtype}; only F32, F16 and BF16`),
        dtype,
      );
    }
    // __metadata__ maps strings to strings, every one of them.
    const mixed = { __metadata__: { format: "pt", step: 1 }, a: f32([0, 8]) };
    await refused(safetensorsBytes(mixed, indexed(8)), /its __metadata__ is not an object of strings/, "mixed");
    // A null __metadata__ is none (the reference reader's Option), and a header without tensors holds no data.
    await Deno.writeFile(
      `${dir}/model.safetensors`,
      safetensorsBytes({ __metadata__: null, a: f32([0, 8]) }, indexed(8)),
    );
    const ck = await loadCheckpoint(dir);
    assert.equal(ck.shards[0]!.metadata, undefined);
    assert.deepEqual([...ck.tensors.get("a")!.data], [0, 1, 2, 3, 4, 5, 6, 7]);
    await Deno.writeFile(`${dir}/model.safetensors`, safetensorsBytes({ __metadata__: { format: "pt" } }));
    const empty = await loadCheckpoint(dir);
    assert.deepEqual([empty.tensors.size, empty.shards[0]!.metadata], [0, { format: "pt" }]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadCheckpoint() reads an index's shards in sorted order, as transformers does", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    const x = { dtype: "F32", shape: [2], data_offsets: [0, 8] };
    for (const s of ["a", "b", "c"]) {
      await Deno.writeFile(`${dir}/${s}.safetensors`, safetensorsBytes({ [s]: x }, indexed(8)));
    }
    // transformers: sorted(set(index["weight_map"].values())).
    const weight_map = { c: "c.safetensors", a: "a.safetensors", b: "b.safetensors" };
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify({ weight_map }));
    const ck = await loadCheckpoint(dir);
    assert.deepEqual(ck.shards.map((s) => s.file), ["a.safetensors", "b.safetensors", "c.safetensors"]);
    // A backslash is a path separator where the written checkpoint may be read: refused like a slash.
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ weight_map: { a: "..\\a.safetensors" } }),
    );
    await assert.rejects(loadCheckpoint(dir), /weight_map gives a the shard "\.\.\\\\a\.safetensors", not a file name/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("storedShare() is stored bytes per float32 byte, from headers; undefined with no tensors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    const write = (tensors: Record<string, { dtype: "F32" | "F16" | "BF16"; shape: number[] }>) =>
      Deno.writeFile(`${dir}/model.safetensors`, packedTensors(tensors, { format: "pt" }));
    // 1000 f32 weights (4000 bytes) and 3000 bf16 ones (6000 bytes, 12000 as float32): 10000 / 16000.
    await write({ a: { dtype: "F32", shape: [10, 100] }, b: { dtype: "BF16", shape: [3000] } });
    assert.equal(await storedShare(dir), 10_000 / 16_000);
    await write({ a: { dtype: "F16", shape: [4, 4] } });
    assert.equal(await storedShare(dir), 0.5);
    await write({ a: { dtype: "F32", shape: [4, 4] } });
    assert.equal(await storedShare(dir), 1);
    // No weights to weigh: no share (not NaN), and the caller falls back to config.json's dtype.
    await write({});
    assert.equal(await storedShare(dir), undefined);
    await write({ a: { dtype: "F16", shape: [0, 4] } });
    assert.equal(await storedShare(dir), undefined);
    // An entry whose end lies past the file's data is the loader's to name: no share from it.
    await Deno.writeFile(
      `${dir}/model.safetensors`,
      safetensorsBytes({ a: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, indexed(12)),
    );
    assert.equal(await storedShare(dir), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
