/**
 * Keeps the GPU driver's shared libraries out of the process's exit path.
 *
 * Closing a WebGPU instance (a GPU worker ending, a test module's runtime torn down) makes the Vulkan loader and
 * EGL `dlclose` the driver libraries they opened. When that happens on one thread while another thread is in
 * `exit()`, exit runs a driver's exit handler as the library is being unmapped: a segfault or glibc "corrupted
 * size" abort after everything else succeeded. CI's test run crashed so once. On lavapipe (2 cores), a process
 * that ends a GPU worker and exits 0-30 ms later crashed in 12 to 30 of every 100 runs; the core dumps show
 * `__run_exit_handlers` calling into an unmapped `swrast_dri.so` or lavapipe. Two measures, measured alone and
 * together on that process (exit within 2 ms of the worker's end, the worst case):
 *
 * - `preferVulkan()`: wgpu opens every native API it has, so on Linux it also starts OpenGL through EGL, which
 *   loads Mesa's GL driver although zprune only uses the Vulkan adapter. Alone: 28 crashes in 200 runs. For a
 *   test module that holds a device on its own thread, it is what matters: 4 crashes in 210 exits with EGL, 0 in
 *   150 without.
 * - `pinDriver()`: the main thread opens WebGPU itself, once, and keeps that instance until the process ends, so
 *   a worker's instance closing never brings the libraries' reference count to zero. Alone: 7 crashes in 500 runs.
 *
 * Both together: 0 crashes in 1000 runs (exits 0-5 ms after the worker's end).
 */

let pinned: Promise<unknown> | null = null;

/**
 * On Linux, restricts Deno's WebGPU to Vulkan unless `DENO_WEBGPU_BACKEND` already names a choice. Call it before
 * any thread opens WebGPU: setting the environment while a driver reads it on another thread is itself unsafe.
 */
export function preferVulkan(): void {
  if (typeof Deno === "undefined" || Deno.build.os !== "linux") return;
  try {
    if (Deno.env.get("DENO_WEBGPU_BACKEND") === undefined) Deno.env.set("DENO_WEBGPU_BACKEND", "vulkan");
  } catch (err) {
    // Without --allow-env the choice stays wgpu's; WebGPU itself still works.
    if (!(err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied)) throw err;
  }
}

/**
 * Opens WebGPU on the calling thread (meant for the main one) and keeps its instance for the process's life, so
 * the driver libraries stay loaded however GPU workers come and go. Resolves once the adapter request is answered;
 * later calls return the same promise.
 */
export function pinDriver(): Promise<unknown> {
  // Deno keeps the instance in the thread's runtime state once any adapter is requested; holding the adapter
  // object as well makes the intent plain.
  return pinned ??= navigator.gpu?.requestAdapter().catch(() => null) ?? Promise.resolve(null);
}
