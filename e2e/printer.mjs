// A receipt printer on loopback: accepts ESC/POS over TCP (port 9100 in real
// life) and keeps each connection's bytes, so the test can check what would
// have come out of the printer.
import net from "node:net";
import { sleep } from "./webdriver.mjs";

export async function startPrinter() {
  const jobs = [];
  const sockets = new Set();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    const job = { chunks: [], done: false };
    jobs.push(job);
    socket.on("data", (d) => job.chunks.push(d));
    socket.on("close", () => {
      job.done = true;
      sockets.delete(socket);
    });
    socket.on("error", () => undefined);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  const bytes = (job) => Buffer.concat(job.chunks);
  return {
    port,
    spec: `network:127.0.0.1:${port}`,
    /** Receipts whose bytes arrived so far (a job counts once it has data). */
    receipts: () => jobs.map(bytes).filter((b) => b.length > 0),
    /** Waits until at least `count` receipts held `needle`. */
    async waitForReceipts(count, needle, timeoutMs = 60000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const matching = jobs.map(bytes).filter((b) => b.includes(needle));
        if (matching.length >= count) return matching;
        if (Date.now() > end)
          throw new Error(`printer got ${matching.length} receipt(s) containing "${needle}", expected ${count} (${jobs.length} connection(s))`);
        await sleep(200);
      }
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
