// The real sync server for the test: initialised on the demo museum, served
// on a loopback port, stopped and started again on the same port and database
// to cut and restore the counter's network.
import { execFile, spawn } from "node:child_process";
import net from "node:net";
import { promisify } from "node:util";
import { sleep } from "./webdriver.mjs";

const run = promisify(execFile);

export async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

export class SyncServer {
  constructor({ bin, db, fixtures, env, log }) {
    Object.assign(this, { bin, db, fixtures, env, log });
    this.proc = null;
    this.url = null;
  }

  async cli(args) {
    const { stdout } = await run(this.bin, args, { env: this.env, maxBuffer: 1 << 20 });
    return stdout;
  }

  async init() {
    await this.cli(["init", "--db", this.db, "--fixtures", this.fixtures]);
  }

  /** A one-time enrolment code (the CLI prints it alone on stdout). */
  async enrolCode(role, name) {
    const out = await this.cli(["enrol", "--db", this.db, "--role", role, "--name", name]);
    const code = out.trim().split(/\r?\n/).pop()?.trim();
    if (!code) throw new Error(`tessera-server enrol printed no code: ${JSON.stringify(out)}`);
    return code;
  }

  /** Starts `serve` and resolves once it prints "… listening on http://…". */
  async start(listen) {
    if (this.proc) throw new Error("server already running");
    const proc = spawn(this.bin, ["serve", "--db", this.db, "--listen", listen], {
      env: this.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc = proc;
    proc.stderr.on("data", (d) => this.log?.write(d));
    let out = "";
    this.url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server did not start on ${listen}: ${out}`)), 20000);
      proc.stdout.on("data", (d) => {
        out += d;
        this.log?.write(d);
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      proc.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`server exited (${code}) before listening: ${out}`));
      });
    });
    return this.url;
  }

  /** SIGTERM, then SIGKILL if it lingers; resolves when the process is gone. */
  async stop() {
    const proc = this.proc;
    if (!proc) return;
    this.proc = null;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    const timedOut = await Promise.race([gone.then(() => false), sleep(10000).then(() => true)]);
    if (timedOut) {
      proc.kill("SIGKILL");
      await gone;
    }
  }

  /** Reads the server's database with the sqlite3 CLI (read-only, WAL-safe). */
  async query(sql) {
    const { stdout } = await run("sqlite3", ["-readonly", "-json", this.db, sql]);
    return stdout.trim() ? JSON.parse(stdout) : [];
  }
}
