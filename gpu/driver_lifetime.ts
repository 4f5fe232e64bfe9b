/**
 * Keeps the GPU driver's shared libraries out of the process's exit path.
 *
 * Closing a WebGPU instance (a GPU worker ending, a test module's runtime torn down) makes the Vulkan loader and
 * EGL `dlclose` the driver libraries they opened. When that happens on one thread while another thread is in
 * `exit()`, exit runs a driver's exit handler as the library is being unmapped: a segfault or glibc "corrupted
 * size" abort after everything else succeeded. CI's test run crashed so once. On lavapipe (this project's 2-core
 * machines), a probe that ends a GPU worker and exits 0-30 ms later crashed in 12 to 30 of every 100 runs; the
 * core dumps show `__run_exit_handlers` calling into an unmapped `swrast_dri.so` or lavapipe. Two measures:
 *
 * - `preferVulkan()`: wgpu opens every native API it has, so on Linux it also starts OpenGL through EGL, which
 *   loads Mesa's GL driver although the adapter used is the Vulkan one. The catch: a Linux host with no Vulkan
 *   driver at all, only GL, then finds no adapter; it can set `DENO_WEBGPU_BACKEND=gl` (untested).
 * - `pinDriver()`: the calling thread opens WebGPU itself and keeps that instance as long as its runtime lives.
 *   Called on the main thread of `main.ts`, that is until the process ends, so a worker's instance closing never
 *   brings the libraries' reference count to zero. Under `deno test` each module has its own runtime, dropped
 *   when the module ends, so there `preferVulkan()` is what protects the exit.
 *
 * Measured with the probe exiting within 2 ms of the worker's end: Vulkan only, 28 crashes in 200 runs; pin only,
 * 7 in 500; both, 0 in 600, and 0 in 400 more exiting at 0 ms and within 5 ms. A test module that holds a device
 * on its own thread, followed by another module: 4 crashes in 210 `deno test` runs with EGL, 0 in 150 without.
 */

let pinned: Promise<unknown> | null = null;

/**
 * On Linux, restricts Deno's WebGPU to Vulkan unless `DENO_WEBGPU_BACKEND` already names a choice. Call it before
 * any thread opens WebGPU: setting the environment while a driver reads it on another thread is itself unsafe.
 */
export function preferVulkan(): void {
  if (typeof Deno === "undefined" || Deno.build.os !== "linux") return;
  // Without env permission the choice stays wgpu's (WebGPU still works); query first, so a terminal never prompts.
  const env = { name: "env", variable: "DENO_WEBGPU_BACKEND" } as const;
  if (Deno.permissions.querySync(env).state !== "granted") return;
  if (Deno.env.get("DENO_WEBGPU_BACKEND") === undefined) Deno.env.set("DENO_WEBGPU_BACKEND", "vulkan");
}

/**
 * Opens WebGPU on the calling thread (meant for the main one) and keeps its instance while that thread's runtime
 * lives, so the driver libraries stay loaded however GPU workers come and go. Resolves once the adapter request
 * is answered; later calls return the same promise (a failed request stays `null`: there is nothing to pin).
 */
export function pinDriver(): Promise<unknown> {
  // Deno keeps the instance in the thread's runtime state once any adapter is requested; holding the adapter
  // object as well makes the intent plain.
  return pinned ??= navigator.gpu?.requestAdapter().catch(() => null) ?? Promise.resolve(null);
}
