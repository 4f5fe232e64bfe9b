/**
 * Run by tests/routes_test.ts under --expose-gc: answers small `POST /v1/prune` requests in process (createApp's
 * fetch, the CPU backend inline) under the default ten-minute deadline, and prints on stdout the heap's growth per
 * request after full garbage collections: `{"bytesPerRequest": ...}`.
 */
import { createCpuBackend } from "../prune/cpu_backend.ts";
import { createApp } from "../routes/app.ts";
import { goldenCase } from "./_server.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");
const requests = Number(Deno.args[0] ?? 3000);
const backend = createCpuBackend({ threads: 0 });
const app = createApp({ backend, config: { deadlineMs: 600_000 } });
const body = new Uint8Array(goldenCase("tiny-zpruner-layer-f32").request); // a copy typed as BodyInit takes it

/** Answers `n` requests, 8 at a time. */
async function answer(n: number): Promise<void> {
  for (let i = 0; i < n; i += 8) {
    await Promise.all(Array.from({ length: 8 }, async () => {
      const res = await app.fetch(
        new Request("http://zprune/v1/prune", {
          method: "POST",
          headers: { "content-type": "application/msgpack" },
          body,
        }),
      );
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`answered ${res.status}`);
    }));
    // A server's requests arrive in tasks of their own; V8 keeps a WeakRef's target alive to the end of its task.
    await new Promise((r) => setTimeout(r, 0));
  }
}

/** The heap in use after full collections. */
function heapUsed(): number {
  for (let k = 0; k < 3; k++) gc!();
  return Deno.memoryUsage().heapUsed;
}

await answer(2000); // code compiled and optimised, pools and caches filled: what grows after is per request
const before = heapUsed();
await answer(requests);
console.log(JSON.stringify({ bytesPerRequest: (heapUsed() - before) / requests }));
await backend.close();
