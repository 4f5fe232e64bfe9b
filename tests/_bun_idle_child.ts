/**
 * Run by tests/bun_serve_test.ts under Bun: runtime/host.ts's listener with a 1 s idle timeout, whose handler takes
 * `?ms=` milliseconds to answer. Prints the port on stdout.
 */
import { listen } from "../runtime/host.ts";

const server = await listen(async (req) => {
  await new Promise((r) => setTimeout(r, Number(new URL(req.url).searchParams.get("ms") ?? 0)));
  return new Response("done");
}, { port: 0, host: "127.0.0.1", bunIdleSeconds: 1 });
console.log(server.port);
