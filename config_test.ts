import assert from "node:assert/strict";
import { DEFAULT_CONFIG, loadConfig, type ServerConfig } from "./config.ts";
import { memoryLimitBytes } from "./runtime/host_limits.ts";

const from = (vars: Record<string, string>) => (name: string) => vars[name];

Deno.test("loadConfig() gives the defaults for unset and empty variables", () => {
  assert.deepEqual(loadConfig(from({})), DEFAULT_CONFIG);
  // README.md's "a third of the host memory" (the host: the machine, or its cgroup's lower limit).
  assert.equal(DEFAULT_CONFIG.memoryBudgetBytes, Math.floor(memoryLimitBytes() / 3));
  assert.deepEqual(loadConfig(from({ PORT: "", ZPRUNE_MAX_QUEUE: "", ZPRUNE_BACKEND: "" })), DEFAULT_CONFIG);
});

Deno.test("loadConfig() reads every variable README.md documents", () => {
  const c = loadConfig(from({
    PORT: "0",
    HOST: "127.0.0.1",
    ZPRUNE_BACKEND: "cpu",
    ZPRUNE_TOKEN: "t",
    ZPRUNE_MAX_BODY_BYTES: "1024",
    ZPRUNE_MAX_LAYER_ELEMENTS: "4096",
    ZPRUNE_CONCURRENCY: "3",
    ZPRUNE_MAX_QUEUE: "0",
    ZPRUNE_MEMORY_BUDGET_BYTES: "12345",
    ZPRUNE_DEADLINE_MS: "0",
    ZPRUNE_CORS_ORIGINS: "*",
    ZPRUNE_LOG: "0",
  }));
  assert.deepEqual(c, {
    port: 0,
    host: "127.0.0.1",
    backend: "cpu",
    token: "t",
    maxBodyBytes: 1024,
    maxLayerElements: 4096,
    concurrency: 3,
    maxQueue: 0,
    memoryBudgetBytes: 12345,
    deadlineMs: 0,
    corsOrigins: "*",
    log: false,
  });
});

Deno.test("loadConfig() refuses bad values, naming the variable", () => {
  const bad: [string, string][] = [
    ["PORT", "-1"],
    ["ZPRUNE_CONCURRENCY", "0"],
    ["ZPRUNE_MAX_BODY_BYTES", "1.5"],
    ["ZPRUNE_MAX_QUEUE", "many"],
    ["ZPRUNE_DEADLINE_MS", "-5"],
    ["ZPRUNE_BACKEND", "tpu"],
    ["ZPRUNE_MAX_LAYER_ELEMENTS", String(2 ** 32)],
    // Number() takes these; a configuration should not.
    ["PORT", "0x1F90"],
    ["PORT", "8.787e3"],
    ["ZPRUNE_MAX_QUEUE", "0b1"],
    ["PORT", "70000"], // past the last port: Deno.serve would throw a stack trace at startup
    ["ZPRUNE_DEADLINE_MS", String(2 ** 31)], // past the longest timer: it would fire at once
    ["ZPRUNE_LOG", "false"], // anything but 0 once meant on
    ["ZPRUNE_LOG", "off"],
    ["ZPRUNE_BACKEND", "CPU"],
    // A browser's Origin is scheme://host[:port]: none of these could ever match one, so nobody would be allowed.
    ["ZPRUNE_CORS_ORIGINS", "not a url"],
    ["ZPRUNE_CORS_ORIGINS", "https://nb.example/"],
    ["ZPRUNE_CORS_ORIGINS", "https://nb.example, nb.example:8888"],
    ["ZPRUNE_CORS_ORIGINS", "https://nb.example:443"],
    ["ZPRUNE_CORS_ORIGINS", "http://*.nb.example"],
    ["ZPRUNE_CORS_ORIGINS", "null"],
  ];
  for (const [name, value] of bad) {
    assert.throws(
      () => loadConfig(from({ [name]: value })),
      (e: unknown) => e instanceof RangeError && e.message.startsWith(name) && e.message.includes(`"${value}"`),
      `${name}=${value}`,
    );
  }
});

Deno.test("loadConfig() takes each bounded variable's largest value, refused one past it above", () => {
  const c = loadConfig(from({
    PORT: "65535",
    ZPRUNE_MAX_LAYER_ELEMENTS: String(2 ** 32 - 1),
    ZPRUNE_DEADLINE_MS: String(2 ** 31 - 1),
  }));
  assert.deepEqual([c.port, c.maxLayerElements, c.deadlineMs], [65535, 2 ** 32 - 1, 2 ** 31 - 1]);
});

/** Each variable and the field it sets. */
const FIELDS: Record<string, keyof ServerConfig> = {
  PORT: "port",
  HOST: "host",
  ZPRUNE_BACKEND: "backend",
  ZPRUNE_TOKEN: "token",
  ZPRUNE_MAX_BODY_BYTES: "maxBodyBytes",
  ZPRUNE_MAX_LAYER_ELEMENTS: "maxLayerElements",
  ZPRUNE_CONCURRENCY: "concurrency",
  ZPRUNE_MAX_QUEUE: "maxQueue",
  ZPRUNE_MEMORY_BUDGET_BYTES: "memoryBudgetBytes",
  ZPRUNE_DEADLINE_MS: "deadlineMs",
  ZPRUNE_CORS_ORIGINS: "corsOrigins",
  ZPRUNE_LOG: "log",
};

Deno.test("README.md's table of variables matches what loadConfig() reads and defaults to", async () => {
  const readme = await Deno.readTextFile(new URL("./README.md", import.meta.url));
  const rows = [...readme.matchAll(/^\| `([A-Z_]+)` +\| ([^|]+?) +\|/gm)].map((m) => [m[1]!, m[2]!] as const);
  assert.deepEqual(rows.map(([name]) => name).sort(), Object.keys(FIELDS).sort(), "one row per variable");
  const defaults = loadConfig(from({}));
  for (const [name, shown] of rows) {
    const field = FIELDS[name]!;
    // Setting the variable to a valid non-default value changes exactly its field.
    const probe = { ZPRUNE_BACKEND: "cpu", ZPRUNE_LOG: "0", HOST: "::1", ZPRUNE_CORS_ORIGINS: "https://a.example" }[
      name
    ] ?? "7";
    const set = loadConfig(from({ [name]: probe }));
    assert.deepEqual({ ...set, [field]: defaults[field] }, defaults, `${name} sets only ${field}`);
    assert.notEqual(set[field], defaults[field], `${name} is read`);
    const literal = /^`(.*)`$/.exec(shown)?.[1];
    if (literal === undefined) continue; // "(none)" or "a third of the host memory": checked by the defaults test
    const actual = field === "log" ? (defaults.log ? "1" : "0") : String(defaults[field]);
    assert.equal(literal, actual, `${name}'s default in README.md`);
  }
});

Deno.test("loadConfig() takes * or origins as browsers send them for ZPRUNE_CORS_ORIGINS", () => {
  const cors = (v: string) => loadConfig(from({ ZPRUNE_CORS_ORIGINS: v })).corsOrigins;
  assert.equal(cors(" * "), "*");
  assert.equal(cors("https://nb.example, http://127.0.0.1:8888,"), "https://nb.example,http://127.0.0.1:8888");
  assert.equal(cors("https://nb.example,*"), "*"); // a wildcard anywhere allows every origin, as it did
  // Extension and app origins are opaque to URL, and browsers send them as written.
  assert.equal(cors("chrome-extension://abcdef, vscode-webview://x1"), "chrome-extension://abcdef,vscode-webview://x1");
  assert.equal(cors("http://[::1]:8888"), "http://[::1]:8888");
  assert.throws(() => cors("https://NB.example"), /sent by browsers as https:\/\/nb\.example$/);
  assert.throws(
    () => cors("https://nb.example/lab"),
    /"https:\/\/nb\.example\/lab" is not scheme:\/\/host\[:port\]; browsers send https:\/\/nb\.example$/,
  );
  assert.throws(() => cors("http://nb.example:80/"), /; browsers send http:\/\/nb\.example$/);
  assert.throws(() => cors("HTTPS://nb.example"), /; browsers send https:\/\/nb\.example$/);
  // No origin to suggest: not a URL, or a wildcard.
  for (const bad of ["nb.example:8888", "https://*.nb.example/"]) {
    assert.throws(() => cors(bad), (e: Error) => /is not scheme:\/\/host\[:port\]$/.test(e.message), bad);
  }
});

Deno.test("loadConfig() trims values: blank is unset, padded numbers and tokens read as their content", () => {
  // Number(" ") is 0: a blank PORT once meant any port, a blank ZPRUNE_MAX_QUEUE a queue of none.
  assert.deepEqual(loadConfig(from({ PORT: " ", ZPRUNE_MAX_QUEUE: "\t", HOST: " " })), DEFAULT_CONFIG);
  const c = loadConfig(from({ PORT: " 9000 ", ZPRUNE_TOKEN: " s3cret\n", ZPRUNE_BACKEND: " cpu\n", ZPRUNE_LOG: "0 " }));
  assert.equal(c.port, 9000);
  assert.equal(c.backend, "cpu");
  assert.equal(c.log, false);
  assert.equal(c.token, "s3cret"); // a mounted secret's trailing newline once locked every client out
  assert.throws(() => loadConfig(from({ ZPRUNE_TOKEN: "line1\nline2" })), /ZPRUNE_TOKEN must not contain control/);
  assert.throws(() => loadConfig(from({ ZPRUNE_TOKEN: "t\u00f6k" })), /ZPRUNE_TOKEN must be printable ASCII/);
  // Inside a token, spaces are part of it: routes/auth.ts takes everything after "Bearer ".
  assert.equal(
    loadConfig(from({ ZPRUNE_TOKEN: "correct horse battery staple" })).token,
    "correct horse battery staple",
  );
});
