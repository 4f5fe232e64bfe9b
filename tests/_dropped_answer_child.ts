/**
 * Run by runtime/host_test.ts under --expose-gc: serves one 32 MiB answer (a stream of one array, as
 * routes/answer_body.ts streams a large tensor) to a client that reads none of it, waits until the answer is dropped
 * (writeStallMs 300), and prints on stdout, after full garbage collections while that client's connection is still
 * open, `{"dropped": n, "alive": n}`: answers dropped, and answer buffers not yet collected.
 */
import { listen } from "../runtime/host.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");
const size = 32 << 20; // far more than the socket buffers hold
let alive = 0;
const buffers = new FinalizationRegistry(() => alive--);
const server = await listen(() => {
  const bytes = new Uint8Array(size).fill(1);
  alive++;
  buffers.register(bytes.buffer, 0);
  // A stream, not the array itself: a Response copies an array body, and the copy is not this buffer.
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(bytes);
      c.close();
    },
  });
  return new Response(body, { headers: { "content-length": String(size) } });
}, { port: 0, host: "127.0.0.1", writeStallMs: 300 });
const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
for (let i = 0; i < 1000 && server.answersDropped === 0; i++) await new Promise((r) => setTimeout(r, 10));
for (let k = 0; k < 10; k++) {
  await new Promise((r) => setTimeout(r, 100));
  gc();
}
console.log(JSON.stringify({ dropped: server.answersDropped, alive }));
conn.close();
await server.shutdown();
