/**
 * The Dockerfile: clean under a linter (dockerfile-utils, a devDependency), and what the image must have — a
 * non-root USER, a HEALTHCHECK on /healthz, the NVIDIA `graphics` capability and libvulkan1 for WebGPU, and
 * COPY sources that exist and that .dockerignore does not exclude, covering every local module the server loads, and a
 * build-time `deno cache` that compiles the workers' entry modules too.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const LINTER = new URL("node_modules/.bin/dockerfile-utils", ROOT).pathname;
const DENO = new URL("node_modules/.bin/deno", ROOT).pathname;

/** Dockerfile instructions with continuation lines joined and comments dropped. */
function instructions(text: string): Array<{ op: string; args: string }> {
  const out: Array<{ op: string; args: string }> = [];
  let cur = "";
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (line.trim().startsWith("#") || (!cur && !line.trim())) continue;
    if (line.endsWith("\\")) {
      cur += line.slice(0, -1) + " ";
      continue;
    }
    const full = (cur + line).trim();
    cur = "";
    const m = /^(\S+)\s*(.*)$/s.exec(full)!;
    out.push({ op: m[1]!.toUpperCase(), args: m[2]!.replace(/\s+/g, " ").trim() });
  }
  return out;
}

const dockerfile = Deno.readTextFileSync(new URL("Dockerfile", ROOT));
const all = instructions(dockerfile);
/** The final stage: the instructions after the last FROM. */
const final = all.slice(all.findLastIndex((i) => i.op === "FROM"));

async function lint(path: string): Promise<{ code: number; out: string }> {
  try {
    await Deno.stat(LINTER);
  } catch {
    assert.fail(
      "dockerfile-utils is not installed: it is a devDependency (npm install -D --save-exact dockerfile-utils@0.16.3)",
    );
  }
  const r = await new Deno.Command(LINTER, { args: ["lint", path], stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

Deno.test("Dockerfile: dockerfile-utils lint finds no problems (and does find them in a broken one)", async () => {
  const r = await lint(new URL("Dockerfile", ROOT).pathname);
  assert.equal(r.out.trim(), "", r.out);
  assert.equal(r.code, 0, r.out);
  // The linter is live: a Dockerfile with an unknown flag and a COPY without a destination fails.
  const broken = await Deno.makeTempFile({ suffix: ".Dockerfile" });
  try {
    await Deno.writeTextFile(broken, "FROM debian:bookworm-slim\nCOPY main.ts\nHEALTHCHECK --bogus=1 CMD true\n");
    const b = await lint(broken);
    assert.notEqual(b.code, 0);
    assert.match(b.out, /COPY requires at least two arguments/);
    assert.match(b.out, /Unknown flag: bogus/);
  } finally {
    await Deno.remove(broken);
  }
});

Deno.test("Dockerfile: the final stage runs as a non-root user it creates", () => {
  const users = final.filter((i) => i.op === "USER");
  assert.ok(users.length > 0, "a USER instruction in the final stage");
  const user = users.at(-1)!.args.split(":")[0]!;
  assert.notEqual(user, "root");
  assert.notEqual(user, "0");
  const userAt = final.lastIndexOf(users.at(-1)!);
  const cmdAt = final.findIndex((i) => i.op === "CMD");
  assert.ok(cmdAt > userAt, "CMD runs after USER");
  assert.ok(
    final.some((i) => i.op === "RUN" && new RegExp(`\\b(useradd|adduser)\\b[^&;]*\\b${user}\\b`).test(i.args)),
    `the user ${user} is created in the final stage`,
  );
});

Deno.test("Dockerfile: HEALTHCHECK on /healthz, NVIDIA graphics capability, libvulkan1", () => {
  const hc = final.filter((i) => i.op === "HEALTHCHECK");
  assert.equal(hc.length, 1);
  assert.match(hc[0]!.args, /\bCMD\b/);
  assert.match(hc[0]!.args, /\/healthz\b/);
  // ENV key=value pairs of the final stage.
  const env = new Map<string, string>();
  for (const i of final.filter((x) => x.op === "ENV")) {
    for (const m of i.args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)/g)) env.set(m[1]!, m[2]!.replace(/"/g, ""));
  }
  const caps = (env.get("NVIDIA_DRIVER_CAPABILITIES") ?? "").split(",").map((c) => c.trim());
  assert.ok(caps.includes("graphics") || caps.includes("all"), `NVIDIA_DRIVER_CAPABILITIES=${caps}`);
  assert.ok(caps.includes("compute") || caps.includes("all"), `NVIDIA_DRIVER_CAPABILITIES=${caps}`);
  assert.ok(
    final.some((i) => i.op === "RUN" && /apt-get install\b.*\blibvulkan1\b/.test(i.args)),
    "libvulkan1 installed in the final stage",
  );
});

/** .dockerignore as Docker reads it: globs relative to the context, `**` across folders, `!` exceptions. */
function dockerignore(): (path: string) => boolean {
  let text = "";
  try {
    text = Deno.readTextFileSync(new URL(".dockerignore", ROOT));
  } catch { /* no file: nothing excluded */ }
  const rules = text.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#")).map((l) => {
    const negate = l.startsWith("!");
    const pat = (negate ? l.slice(1) : l).trim().replace(/^\/+/, "").replace(/^\.\//, "").replace(/\/+$/, "");
    let re = "";
    for (let i = 0; i < pat.length; i++) {
      const ch = pat[i]!;
      if (ch === "*" && pat[i + 1] === "*") {
        re += pat[i + 2] === "/" ? "(?:.*/)?" : ".*";
        i += pat[i + 2] === "/" ? 2 : 1;
      } else if (ch === "*") re += "[^/]*";
      else if (ch === "?") re += "[^/]";
      else re += ch.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    }
    return { negate, re: new RegExp(`^${re}$`) };
  });
  return (path: string) => {
    const parts = path.split("/");
    let excluded = false;
    for (const r of rules) {
      // A pattern that matches a folder excludes everything in it.
      for (let n = 1; n <= parts.length; n++) {
        if (r.re.test(parts.slice(0, n).join("/"))) {
          excluded = !r.negate;
          break;
        }
      }
    }
    return excluded;
  };
}

/** The COPY sources taken from the build context (not from another stage). */
function copySources(): string[] {
  const out: string[] = [];
  for (const i of all.filter((x) => x.op === "COPY" || x.op === "ADD")) {
    const words = i.args.startsWith("[") ? JSON.parse(i.args) as string[] : i.args.split(" ");
    if (words.some((w) => w.startsWith("--from="))) continue;
    const plain = words.filter((w) => !w.startsWith("--"));
    out.push(...plain.slice(0, -1).map((s) => s.replace(/^\.\//, "").replace(/\/+$/, "")));
  }
  return out;
}

Deno.test("Dockerfile: every COPY source exists and is not excluded by .dockerignore", () => {
  const ignored = dockerignore();
  // The matcher itself, on patterns of this repo's kind.
  assert.equal(ignored("node_modules"), true);
  assert.equal(
    ignored("prune/queue_test.ts"),
    /\*\*\/\*_test\.ts/.test(Deno.readTextFileSync(new URL(".dockerignore", ROOT))),
  );
  const sources = copySources();
  assert.ok(sources.includes("main.ts"), `sources: ${sources}`);
  for (const s of sources) {
    const info = Deno.statSync(new URL(s, ROOT)); // throws when it does not exist
    assert.equal(ignored(s), false, `${s} is excluded by .dockerignore`);
    if (info.isDirectory) {
      const kept = [...Deno.readDirSync(new URL(s + "/", ROOT))].filter((e) => !ignored(`${s}/${e.name}`));
      assert.ok(kept.length > 0, `${s}/ has files the build context keeps`);
    }
  }
});

Deno.test("Dockerfile: every local module main.ts and the WebGPU backend load is copied into the image", async () => {
  const ignored = dockerignore();
  const sources = copySources();
  const copied = (rel: string) => sources.some((s) => rel === s || rel.startsWith(s + "/"));
  const root = new URL(".", ROOT).href;
  assert.ok(
    all.some((i) => i.op === "COPY" && /--from=\S+/.test(i.args) && /node_modules/.test(i.args)),
    "node_modules is copied from the deps stage",
  );
  for (const entry of ["main.ts", "gpu/webgpu_backend.ts", "prune/cpu_worker.ts"]) {
    const r = await new Deno.Command(DENO, { args: ["info", "--json", entry], cwd: ROOT.pathname, stdout: "piped" })
      .output();
    assert.equal(r.code, 0, `deno info ${entry}`);
    const graph = JSON.parse(new TextDecoder().decode(r.stdout)) as { modules: Array<{ specifier: string }> };
    const local = graph.modules.map((m) => m.specifier).filter((s) => s.startsWith(root)).map((s) =>
      s.slice(root.length)
    );
    assert.ok(local.length > 5, `${entry} loads ${local.length} local modules`);
    // node_modules comes from the deps stage (npm ci), not from the context.
    for (const rel of local.filter((x) => !x.startsWith("node_modules/"))) {
      assert.ok(copied(rel), `${rel} (loaded by ${entry}) is not copied into the image`);
      assert.equal(ignored(rel), false, `${rel} (loaded by ${entry}) is excluded by .dockerignore`);
    }
  }
});

Deno.test("Dockerfile: the build-time deno cache covers main.ts and every worker entry module", async () => {
  const cache = final.find((i) => i.op === "RUN" && /\bdeno cache\b/.test(i.args));
  assert.ok(cache, "a RUN ... deno cache in the final stage");
  const cached = new Set(cache.args.split(/\bdeno cache\b/)[1]!.trim().split(" ").filter((w) => !w.startsWith("-")));
  assert.ok(cached.has("main.ts"), `deno cache ${[...cached]}`);
  // A worker's entry module is named by no import, so no other module's graph brings it in: one left out is compiled
  // when its worker first starts (the CPU backend's with the first large layer, so by a request).
  const root = new URL(".", ROOT).href;
  const local = new Set<string>();
  for (const entry of ["main.ts", "gpu/webgpu_backend.ts"]) {
    const out = await new Deno.Command(DENO, { args: ["info", "--json", entry], cwd: ROOT.pathname, stdout: "piped" })
      .output();
    assert.equal(out.code, 0, `deno info ${entry}`);
    const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as { modules: Array<{ specifier: string }> };
    for (const m of graph.modules) if (m.specifier.startsWith(root)) local.add(m.specifier.slice(root.length));
  }
  const workers: string[] = [];
  for (const rel of [...local].filter((x) => !x.startsWith("node_modules/") && x.endsWith(".ts"))) {
    const text = Deno.readTextFileSync(new URL(rel, ROOT));
    if (!/new Worker\(/.test(text)) continue;
    for (const m of text.matchAll(/new URL\("(\.\/[^"]+\.ts)", import\.meta\.url\)/g)) {
      workers.push(new URL(m[1]!, new URL(rel, ROOT)).href.slice(root.length));
    }
  }
  assert.ok(workers.length >= 2, `worker entry modules found: ${workers}`);
  for (const w of workers) assert.ok(cached.has(w), `${w} (a worker's entry module) is not in deno cache`);
});
