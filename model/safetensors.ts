/**
 * Hugging Face checkpoints on disk: `config.json` plus one `model.safetensors` or shards listed by
 * `model.safetensors.index.json`. Reading keeps every tensor's raw bytes and its shard, so that a pruned
 * checkpoint is written back in exactly the same layout (same shards, tensor order, dtype and metadata).
 *
 * safetensors: u64 little-endian header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}`, then the data; offsets are
 * relative to the end of the header.
 */
import { type DType, DTYPE_BYTES } from "../contract/api.ts";
import { decode } from "../contract/dtype_codec.ts";
import { readJsonFile } from "./json_file.ts";

/** safetensors dtype names we decode, mapped to the contract's dtypes. */
const ST_DTYPES: Record<string, DType> = { F32: "f32", F16: "f16", BF16: "bf16" };
const ST_NAMES: Record<DType, string> = { f32: "F32", f16: "F16", bf16: "BF16" };

/** One tensor of a checkpoint: raw little-endian bytes in its stored dtype. */
export interface StoredTensor {
  name: string;
  dtype: DType;
  shape: number[];
  /** Raw bytes, a view into the shard's buffer; editing it edits what `writeCheckpoint` writes. */
  data: Uint8Array<ArrayBuffer>;
  /** File name of the shard that holds it. */
  shard: string;
}

/** A checkpoint directory as read from disk. */
export interface Checkpoint {
  dir: string;
  /** The parsed `config.json`. */
  config: Record<string, unknown>;
  /** Tensors by name. */
  tensors: Map<string, StoredTensor>;
  /** Shards in file order, each with its tensor names in stored order and its `__metadata__`. */
  shards: { file: string; names: string[]; metadata?: Record<string, string> }[];
  /** The index file's content when the checkpoint is sharded. */
  index?: { metadata?: Record<string, unknown>; weight_map: Record<string, string> };
}

/** Whether `v` is a JSON object (not null, not an array). */
function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Whether `v` is an array of `length` (any length when absent) non-negative integers. */
function isCounts(v: unknown, length?: number): v is number[] {
  return Array.isArray(v) && (length === undefined || v.length === length) &&
    v.every((x) => Number.isSafeInteger(x) && x >= 0);
}

/** The header length a safetensors file's first 8 bytes give (0 where there are fewer). */
function headerLength(bytes: Uint8Array): number {
  if (bytes.byteLength < 8) return 0;
  return Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
}

/**
 * The JSON header at the start of `bytes` (at least the first 8 + header length bytes of a file of `fileSize`
 * bytes), checked to be an object that the file holds whole.
 */
function parseHeader(bytes: Uint8Array, path: string, fileSize: number): Record<string, unknown> {
  if (fileSize < 8) throw new RangeError(`${path}: too short for a safetensors header`);
  const headerLen = headerLength(bytes);
  if (8 + headerLen > fileSize) throw new RangeError(`${path}: header length ${headerLen} exceeds the file`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)));
  } catch (e) {
    throw new SyntaxError(`${path}: its header is not JSON: ${e instanceof Error ? e.message : e}`, { cause: e });
  }
  if (!isObject(header)) throw new TypeError(`${path}: its header is not a JSON object`);
  return header;
}

/**
 * One tensor's header entry, checked: a dtype read, a shape of sizes, and offsets that hold exactly its bytes within
 * the `dataLen` bytes after the header.
 */
function headerEntry(
  name: string,
  entry: unknown,
  path: string,
  dataLen: number,
): { dtype: DType; shape: number[]; begin: number; end: number } {
  const e = (isObject(entry) ? entry : {}) as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  const dtype = typeof e.dtype === "string" && Object.hasOwn(ST_DTYPES, e.dtype) ? ST_DTYPES[e.dtype] : undefined;
  if (!dtype) throw new TypeError(`${path}: tensor ${name} has dtype ${e.dtype}; only F32, F16 and BF16 are read`);
  if (!isCounts(e.shape)) {
    throw new TypeError(`${path}: tensor ${name} has shape ${JSON.stringify(e.shape)}, not a list of sizes`);
  }
  if (!isCounts(e.data_offsets, 2)) {
    throw new TypeError(
      `${path}: tensor ${name} has data_offsets ${JSON.stringify(e.data_offsets)}, not [begin, end] in bytes`,
    );
  }
  const [begin, end] = e.data_offsets as [number, number];
  const n = e.shape.reduce((a, b) => a * b, 1);
  if (end - begin !== n * DTYPE_BYTES[dtype] || end > dataLen) {
    throw new RangeError(`${path}: tensor ${name} offsets [${begin}, ${end}] disagree with shape or file size`);
  }
  return { dtype, shape: e.shape, begin, end };
}

/**
 * Parses one safetensors file's bytes into tensors (views, no copies); `path` names the file in errors. Checks the
 * header as the format's reference reader does: a JSON object whose `__metadata__` maps strings to strings, and
 * whose tensors have a known dtype, a shape of non-negative integers and offsets that hold exactly its bytes, the
 * tensors tiling the data without gaps or overlaps. A tensor whose offsets reached into the header or another
 * tensor would load and run on the wrong bytes, and pruning one of two overlapping tensors would edit the other.
 */
function parseSafetensors(
  bytes: Uint8Array<ArrayBuffer>,
  shard: string,
  path: string,
): { tensors: StoredTensor[]; metadata?: Record<string, string> } {
  const header = parseHeader(bytes, path, bytes.byteLength);
  const base = 8 + headerLength(bytes), dataLen = bytes.byteLength - base;
  const entries: { t: StoredTensor; begin: number; end: number }[] = [];
  let metadata: Record<string, string> | undefined;
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (entry !== null && !(isObject(entry) && Object.values(entry).every((v) => typeof v === "string"))) {
        throw new TypeError(`${path}: its __metadata__ is not an object of strings`);
      }
      metadata = (entry ?? undefined) as Record<string, string> | undefined;
      continue;
    }
    const { dtype, shape, begin, end } = headerEntry(name, entry, path, dataLen);
    entries.push({ t: { name, dtype, shape, data: bytes.subarray(base + begin, base + end), shard }, begin, end });
  }
  // Stored order is data order; the JSON key order may differ, so sort by offset.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const { t, begin, end } of entries) {
    if (begin !== at) {
      throw new RangeError(
        `${path}: tensor ${t.name} starts at byte ${begin} of the data, not ${at}: tensors must follow each other ` +
          `without gaps or overlaps`,
      );
    }
    at = end;
  }
  if (at !== dataLen) throw new RangeError(`${path}: ${dataLen - at} bytes of data follow the last tensor`);
  return { tensors: entries.map((x) => x.t), metadata };
}

/** Reads a checkpoint directory's `config.json`. */
export async function readConfigJson(dir: string): Promise<Record<string, unknown>> {
  const config = await readJsonFile(`${dir}/config.json`);
  if (!isObject(config)) throw new TypeError(`${dir}/config.json: it is not a JSON object`);
  return config;
}

/** A shard's bytes; a missing lone `model.safetensors` says what is read instead of a bare NotFound. */
async function readShard(dir: string, file: string, lone: boolean): Promise<Uint8Array<ArrayBuffer>> {
  try {
    return await Deno.readFile(`${dir}/${file}`);
  } catch (e) {
    if (!(lone && e instanceof Deno.errors.NotFound)) throw e;
    const others: string[] = [];
    for (const f of ["pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt"]) {
      if (await isFile(`${dir}/${f}`).catch(() => false)) others.push(f);
    }
    throw new Deno.errors.NotFound(
      `checkpoint ${dir} has neither model.safetensors nor model.safetensors.index.json` +
        (others.length > 0 ? ` (it has ${others.join(", ")}; only safetensors are read)` : ""),
    );
  }
}

/** Whether `path` is a file (following links), not a directory or nothing. */
async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** A sharded checkpoint's index of which shard holds each tensor. */
const INDEX_FILE = "model.safetensors.index.json";

/** The safetensors files a checkpoint directory's weights are in: those its index lists, else `model.safetensors`. */
async function shardFiles(dir: string): Promise<{ files: string[]; index?: Checkpoint["index"] }> {
  let index: unknown;
  try {
    index = await readJsonFile(`${dir}/${INDEX_FILE}`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    return { files: ["model.safetensors"] };
  }
  // transformers loads a model.safetensors in preference to an index: which of the two is the model is then a guess,
  // and pruning the other would measure and write another model than the one transformers would load.
  if (await isFile(`${dir}/model.safetensors`)) {
    throw new TypeError(
      `checkpoint ${dir} has both model.safetensors and ${INDEX_FILE}: transformers would load model.safetensors ` +
        "and ignore the index's shards; move away the one that is not the model",
    );
  }
  const weightMap = isObject(index) ? index.weight_map : undefined;
  if (!isObject(weightMap)) throw new TypeError(`${dir}/${INDEX_FILE}: it has no weight_map object`);
  for (const [name, file] of Object.entries(weightMap)) {
    // Shards are files of the checkpoint directory, read from it and written under the same name into --out: a
    // path (`../x`, `./x`, `sub/x`) would read outside the one and write outside the other.
    if (typeof file !== "string" || !/^[^/\\]+$/.test(file) || file === "." || file === "..") {
      throw new TypeError(
        `${dir}/${INDEX_FILE}: weight_map gives ${name} the shard ${JSON.stringify(file)}, not a file name in ` +
          "the checkpoint directory",
      );
    }
  }
  const files = [...new Set(Object.values(weightMap as Record<string, string>))].sort();
  return { files, index: index as Checkpoint["index"] };
}

/** The files `writeCheckpoint` writes for the checkpoint in `dir`: its shards, and its index when it has one. */
export async function checkpointWeightFiles(dir: string): Promise<string[]> {
  const { files, index } = await shardFiles(dir);
  return index ? [...files, INDEX_FILE] : files;
}

/**
 * Whether a file holds a model's weights, in the safetensors read or another format: any safetensors, GGUF or ONNX
 * file, and the weights transformers and Meta's releases write in PyTorch, TensorFlow and Flax formats
 * (`pytorch_model*.bin`, `model*.pt`, `tf_model*.h5`, `flax_model*.msgpack`, `consolidated*.pth`), their indexes too.
 * Not a training run's other files (`training_args.bin`, `optimizer.pt`, `rng_state.pth`). `writeCheckpoint` does not
 * copy weights it did not write: they are the dense ones, and a loader may take them before the pruned shards
 * (transformers reads `model.safetensors` before an index, for one).
 */
export function isWeightFile(name: string): boolean {
  return /\.(safetensors|gguf|onnx)(\.index\.json)?$/i.test(name) ||
    /^(pytorch_model|model|tf_model|flax_model|consolidated)\b.*\.(bin|pt|pth|h5|msgpack)(\.index\.json)?$/i.test(name);
}

/**
 * Reads `config.json` and every safetensors shard of a checkpoint directory; `config`, when given, is its
 * `config.json` already read (and checked) by the caller.
 */
export async function loadCheckpoint(dir: string, config?: Record<string, unknown>): Promise<Checkpoint> {
  config ??= await readConfigJson(dir);
  const { files, index } = await shardFiles(dir);
  const tensors = new Map<string, StoredTensor>();
  const shards: Checkpoint["shards"] = [];
  for (const file of files) {
    const parsed = parseSafetensors(await readShard(dir, file, index === undefined), file, `${dir}/${file}`);
    for (const t of parsed.tensors) {
      // Which copy a loader takes is up to its shard order; and both would be written back with the one kept here.
      const other = tensors.get(t.name);
      if (other) throw new TypeError(`checkpoint ${dir}: tensor ${t.name} is in both ${other.shard} and ${file}`);
      tensors.set(t.name, t);
    }
    shards.push({ file, names: parsed.tensors.map((t) => t.name), metadata: parsed.metadata });
  }
  return { dir, config, tensors, shards, index };
}

/**
 * The bytes a checkpoint's tensors take as stored, per byte they would take as float32, read from its shards' headers
 * alone (a few KiB each): 1 for float32 weights, 0.5 for 16-bit ones, between for a mix. Undefined where a shard or
 * header cannot be read or `loadCheckpoint` would refuse an entry: it then says what is wrong.
 */
export async function storedShare(dir: string): Promise<number | undefined> {
  let stored = 0, asF32 = 0;
  try {
    const { files } = await shardFiles(dir);
    for (const file of files) {
      using f = await Deno.open(`${dir}/${file}`);
      const size = (await f.stat()).size;
      const head = new Uint8Array(Math.min(size, 8));
      await readFull(f, head);
      // safetensors' own reader refuses headers over 100 MB; a longer claim is a damaged file for the loader to name.
      const len = headerLength(head);
      if (len > 100_000_000 || 8 + len > size) return undefined;
      const bytes = new Uint8Array(8 + len);
      bytes.set(head);
      await readFull(f, bytes.subarray(8));
      const path = `${dir}/${file}`;
      for (const [name, entry] of Object.entries(parseHeader(bytes, path, size))) {
        if (name === "__metadata__") continue;
        // An entry the loader would refuse (sizes the file does not hold, say) is for it to name, below.
        const { dtype, begin, end } = headerEntry(name, entry, path, size - 8 - len);
        stored += end - begin;
        asF32 += (end - begin) / DTYPE_BYTES[dtype] * 4;
      }
    }
  } catch {
    return undefined;
  }
  return asF32 > 0 ? stored / asF32 : undefined;
}

/** Fills `buf` from `file`'s current position; throws at the end of the file. */
async function readFull(file: Deno.FsFile, buf: Uint8Array): Promise<void> {
  for (let at = 0; at < buf.length;) {
    const n = await file.read(buf.subarray(at));
    if (n === null) throw new RangeError("unexpected end of file");
    at += n;
  }
}

/** Serialises tensors into one safetensors file, in the given order, with 8-byte aligned data. */
function encodeSafetensors(tensors: StoredTensor[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: ST_NAMES[t.dtype], shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
  const pad = (8 - (json.byteLength % 8)) % 8;
  if (pad) json = new TextEncoder().encode(JSON.stringify(header) + " ".repeat(pad));
  const out = new Uint8Array(8 + json.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  let at = 8 + json.byteLength;
  for (const t of tensors) {
    out.set(t.data, at);
    at += t.data.byteLength;
  }
  return out;
}

/**
 * Files of a source checkpoint that describe the model as it was, not as it is written: zprune's measured
 * perplexities (`reference.json`) and the model card (`MODEL_CARD.md`, or `README.md` on the Hugging Face Hub).
 * Copied next to edited (pruned) weights they would pass for the new model's, so `writeCheckpoint` leaves them out.
 */
export const SOURCE_ONLY_FILES: ReadonlySet<string> = new Set(["reference.json", "MODEL_CARD.md", "README.md"]);

/**
 * Folders of a checkpoint whose files are copied too: transformers saves named chat templates beside the default one
 * in `additional_chat_templates/`. Other folders are left (Meta's `original/` holds the dense weights again).
 */
export const FOLDERS_KEPT: readonly string[] = ["additional_chat_templates"];

/**
 * The names of the regular files directly in `dir` (a symbolic link, as in Hugging Face's cache, counted as the file
 * it points to), sorted; none where `dir` does not exist or is a file (a source's file named as a folder it may have).
 */
export async function filesIn(dir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile || (e.isSymlink && (await Deno.stat(`${dir}/${e.name}`).catch(() => null))?.isFile)) {
        names.push(e.name);
      }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory)) throw e;
  }
  return names.sort();
}

/**
 * Writes a checkpoint in the layout it was read with: same shard files and tensor order, the index (when
 * sharded), and every other file of the source directory (config, tokenizer, generation config; a symbolic link, as
 * in Hugging Face's cache, copied as the file it points to) and of its `FOLDERS_KEPT` except `SOURCE_ONLY_FILES` and
 * weight files in other formats (`isWeightFile`). Returns the names of those weight files, left out. `signal` stops
 * it between files and mid-shard: the temporary files are removed and an existing checkpoint in `outDir` is left
 * whole.
 */
export async function writeCheckpoint(ckpt: Checkpoint, outDir: string, signal?: AbortSignal): Promise<string[]> {
  const existed = await Deno.stat(outDir).then(() => true, () => false);
  await Deno.mkdir(outDir, { recursive: true });
  // Every file goes under a temporary name first and all are renamed at the end: a run stopped while writing
  // (minutes for a large model) leaves an existing checkpoint in outDir whole, never old and new shards mixed.
  const written: [string, string][] = [];
  // `name` may be in a folder (FOLDERS_KEPT): its temporary file is beside it there.
  const temp = (name: string) => {
    const slash = name.lastIndexOf("/") + 1;
    const t = `${outDir}/${name.slice(0, slash)}.${name.slice(slash)}.zprune-partial`;
    written.push([t, `${outDir}/${name}`]);
    return t;
  };
  const leftOut: string[] = [];
  const madeFolders: string[] = [];
  try {
    const shards = new Set(ckpt.shards.map((s) => s.file));
    for (const entry of await filesIn(ckpt.dir)) {
      if (shards.has(entry) || entry === INDEX_FILE || SOURCE_ONLY_FILES.has(entry)) continue;
      if (isWeightFile(entry)) {
        leftOut.push(entry);
        continue;
      }
      signal?.throwIfAborted();
      await Deno.copyFile(`${ckpt.dir}/${entry}`, temp(entry));
    }
    for (const folder of FOLDERS_KEPT) {
      const files = await filesIn(`${ckpt.dir}/${folder}`);
      if (files.length === 0) continue;
      if (!(await Deno.stat(`${outDir}/${folder}`).then(() => true, () => false))) {
        await Deno.mkdir(`${outDir}/${folder}`);
        madeFolders.push(`${outDir}/${folder}`);
      }
      for (const name of files) {
        signal?.throwIfAborted();
        await Deno.copyFile(`${ckpt.dir}/${folder}/${name}`, temp(`${folder}/${name}`));
      }
    }
    for (const shard of ckpt.shards) {
      signal?.throwIfAborted();
      const tensors = shard.names.map((n) => ckpt.tensors.get(n)!);
      await Deno.writeFile(temp(shard.file), encodeSafetensors(tensors, shard.metadata), { signal });
    }
    if (ckpt.index) {
      await Deno.writeTextFile(temp(INDEX_FILE), JSON.stringify(ckpt.index, null, 2) + "\n", { signal });
    }
    signal?.throwIfAborted(); // past this point only renames: quick, and not to be left half done
  } catch (e) {
    await Promise.all(written.map(([t]) => Deno.remove(t).catch(() => {})));
    // A directory made for this write goes too (remove refuses it unless empty); its parents made with it stay.
    for (const folder of madeFolders) await Deno.remove(folder).catch(() => {});
    if (!existed) await Deno.remove(outDir).catch(() => {});
    throw e;
  }
  for (const [i, [t, final]] of written.entries()) {
    try {
      await Deno.rename(t, final);
    } catch (e) {
      // Renames cannot be undone: those before this one stand. The temporary files after it are removed, and the
      // error says the directory holds a mix, so that no one takes it for a checkpoint.
      await Promise.all(written.slice(i).map(([rest]) => Deno.remove(rest).catch(() => {})));
      throw new Error(
        `${final}: could not be put in place (${e instanceof Error ? e.message : e}); ${i} of the ${written.length} ` +
          `files were already, so ${outDir} now mixes old and new files: write the checkpoint again`,
        { cause: e },
      );
    }
  }
  return leftOut.sort();
}

/** Decodes raw little-endian bytes of any supported dtype (at any byte offset) into a new Float32Array. */
export function decodeToF32(data: Uint8Array, dtype: DType): Float32Array<ArrayBuffer> {
  return decode(data, dtype).values as Float32Array<ArrayBuffer>;
}
