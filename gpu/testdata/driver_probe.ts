/**
 * Run by driver_lifetime_test.ts in a fresh process (each case needs its own environment and its own exit):
 * opens WebGPU the way zprune does and prints, as one JSON line, what the process has loaded.
 *
 *   deno run -A gpu/testdata/driver_probe.ts prefer   # preferVulkan(), then request an adapter
 *   deno run -A gpu/testdata/driver_probe.ts close    # open the WebGPU backend, close it, wait for its thread
 */
import { preferVulkan } from "../driver_lifetime.ts";
import { createWebGpuBackend } from "../webgpu_backend.ts";

/** The shared objects mapped into this process. */
function mappedLibraries(): string[] {
  const paths = Deno.readTextFileSync("/proc/self/maps").split("\n").map((line) => line.split(/\s+/)[5] ?? "");
  return [...new Set(paths.filter((p) => /\.so(\.|$)/.test(p)))].sort();
}

/** Whether `lib` is EGL or a Mesa GL (DRI) driver. */
function isGl(lib: string): boolean {
  return /libEGL|\/dri\//.test(lib);
}

/** Names of this process's threads that run Deno workers ("worker-1", ...). */
function workerThreads(): string[] {
  const names: string[] = [];
  for (const t of Deno.readDirSync("/proc/self/task")) {
    try {
      names.push(Deno.readTextFileSync(`/proc/self/task/${t.name}/comm`).trim());
    } catch (err) {
      // The thread ended between listing and reading: exactly what the wait below looks for. Linux answers ENOENT, or
      // for a thread that is exiting ESRCH, which Deno 2.9 throws as a plain Error with no code (seen in CI).
      const gone = err instanceof Deno.errors.NotFound || /No such process \(os error 3\)/.test(String(err));
      if (!gone) throw err;
    }
  }
  return names.filter((name) => name.startsWith("worker-"));
}

const mode = Deno.args[0];
if (mode === "prefer") {
  preferVulkan();
  const chosen = Deno.env.get("DENO_WEBGPU_BACKEND") ?? null;
  // Asked for only when the test wants the adapter opened under that choice.
  const adapter = Deno.args[1] === "open" ? await navigator.gpu.requestAdapter() : null;
  console.log(JSON.stringify({ chosen, adapter: adapter !== null, gl: mappedLibraries().filter(isGl) }));
} else if (mode === "close") {
  // Its confirmation is checked: given longer than a server's 2 s, as the machine may be loaded.
  const backend = await createWebGpuBackend({ allowFallback: true, closeWaitMs: 30_000 });
  if (!backend) throw new Error("no WebGPU adapter");
  const open = mappedLibraries();
  const workerThreadsOpen = workerThreads().length;
  await backend.close();
  // The worker's thread drops its WebGPU instance as it ends; wait for that, or the comparison proves nothing.
  const deadline = Date.now() + 20_000;
  while (workerThreads().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const after = new Set(mappedLibraries());
  console.log(JSON.stringify({
    deviceReleased: backend.deviceReleased,
    // What createWebGpuBackend() itself loaded, so the order of its two measures is checked too.
    glOpen: open.filter(isGl),
    workerThreadsOpen,
    workerThreadsLeft: workerThreads().length,
    unloaded: open.filter((lib) => !after.has(lib)),
  }));
} else {
  throw new Error(`unknown mode ${mode}`);
}
