/**
 * The CLI's default server: the real app (`createApp` from routes/app.ts) on the CPU backend, served in-process on
 * an ephemeral 127.0.0.1 port, so that `deno task prune` needs no set-up and still goes through HTTP.
 */
import { createApp } from "../routes/app.ts";
import { createCpuBackend } from "../prune/cpu_backend.ts";

/** A running in-process server. */
export interface LocalServer {
  url: string;
  close(): Promise<void>;
}

/** Starts the app on 127.0.0.1 with a port the OS picks. */
export async function startLocalServer(): Promise<LocalServer> {
  const backend = await createCpuBackend();
  const app = createApp({ backend });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    async close() {
      await server.shutdown();
      await backend.close();
    },
  };
}
