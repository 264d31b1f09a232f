// End-to-end test of the counter app: the real built app (tauri-driver →
// WebKitWebDriver) against a real tessera-server on loopback and a TCP
// listener standing in for the receipt printer. Run it through scripts/e2e,
// which builds everything and provides the X display.
//
//   node e2e/run.mjs [--docs] [--skip-gate]
//     --docs       also write the sell/gate/supervisor screenshots to docs/screenshots/
//     --skip-gate  leave out step 4 (for an engine without gate scanning yet)
//   TESSERA_E2E_DRIVER_PORT / TESSERA_E2E_NATIVE_PORT  tauri-driver's and
//     WebKitWebDriver's ports (default 4444 and the next one)
//   TESSERA_E2E_WAIT_SCALE  stretch every wait (a very slow machine)
//
// Every step saves a screenshot (target/e2e/screenshots); a missing element
// fails the run; the WebDriver session is deleted whatever happens.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { testClock } from "./clock.mjs";
import { startPrinter } from "./printer.mjs";
import { freePort, SyncServer } from "./server.mjs";
import { KEY, sleep, WebDriver } from "./webdriver.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const TARGET = process.env.CARGO_TARGET_DIR ?? path.join(ROOT, "target");
const APP = process.env.TESSERA_E2E_APP ?? path.join(TARGET, "debug", "tessera-counter");
const SERVER_BIN = process.env.TESSERA_E2E_SERVER ?? path.join(TARGET, "debug", "tessera-server");
const OUT = path.join(TARGET, "e2e");
const SHOTS = path.join(OUT, "screenshots");
const DOCS_SHOTS = path.join(ROOT, "docs", "screenshots");
const WRITE_DOCS = process.argv.includes("--docs") || process.env.TESSERA_E2E_DOCS === "1";
const SKIP_GATE = process.argv.includes("--skip-gate");
const DRIVER_PORT = Number(process.env.TESSERA_E2E_DRIVER_PORT ?? 4444);
// WebKitWebDriver's own port; set both to run two end-to-end tests at once.
const NATIVE_PORT = Number(process.env.TESSERA_E2E_NATIVE_PORT ?? DRIVER_PORT + 1);
const TAURI_DRIVER = process.env.TAURI_DRIVER ?? path.join(os.homedir(), ".cargo", "bin", "tauri-driver");

const log = (...a) => console.log(`[e2e ${new Date().toISOString().slice(11, 19)}]`, ...a);
const sel = (testid) => `[data-testid="${testid}"]`;

// Waits are for states, never fixed sleeps, and generous: on a busy machine
// (a build on every core) the app can take many times longer than on a quiet
// one. TESSERA_E2E_WAIT_SCALE stretches them further.
const SCALE = Math.max(1, Number(process.env.TESSERA_E2E_WAIT_SCALE ?? 1) || 1);
const WAIT = 60000 * SCALE;
const LONG_WAIT = 180000 * SCALE;

class Ui {
  constructor(wd) {
    this.wd = wd;
    this.step = 0;
  }

  /** The first element matching `css` for which `check` holds, or a failure
   * naming what was expected. */
  async waitFor(css, { timeoutMs = WAIT, check, what } = {}) {
    const end = Date.now() + timeoutMs;
    let last = "not found";
    for (;;) {
      for (const el of await this.wd.findAll(css)) {
        if (!check) return el;
        try {
          if (await check(el)) return el;
          last = `present, but ${what ?? "check failed"}: text ${JSON.stringify(await this.wd.text(el))}`;
        } catch (e) {
          // The screen re-rendered between find and read: look again.
          last = e.message;
        }
      }
      if (Date.now() > end) throw new Error(`expected ${css} ${what ?? ""} within ${timeoutMs} ms; ${last}`);
      await sleep(150);
    }
  }

  async waitText(testid, expected, opts = {}) {
    return this.waitFor(sel(testid), {
      ...opts,
      what: `to read ${JSON.stringify(expected)}`,
      check: async (el) => (await this.wd.text(el)).trim() === expected,
    });
  }

  async waitAttr(testid, name, expected, opts = {}) {
    return this.waitFor(sel(testid), {
      ...opts,
      what: `to have ${name}=${JSON.stringify(expected)}`,
      check: async (el) => (await this.wd.attribute(el, name)) === expected,
    });
  }

  async click(testid) {
    await this.wd.click(await this.waitFor(sel(testid)));
  }

  /** Types into a field and reads the value back before pressing Enter: a
   * field that re-rendered or lost focus under the typing is typed again,
   * and a value that never sticks fails the step by name. */
  async type(testid, text, { enter = false, clear = true } = {}) {
    let last = "";
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        const el = await this.waitFor(sel(testid));
        const before = clear ? "" : String((await this.wd.property(el, "value")) ?? "");
        if (clear) await this.wd.clear(el);
        await this.wd.sendKeys(el, text);
        const value = String((await this.wd.property(el, "value")) ?? "");
        if (value === before + text) {
          if (enter) await this.wd.sendKeys(el, KEY.ENTER);
          return;
        }
        last = `reads ${JSON.stringify(value)}`;
      } catch (e) {
        // The element was replaced between find and type: find it again.
        last = e.message;
      }
      log(`typing into ${testid} did not stick (attempt ${attempt}): ${last}`);
    }
    throw new Error(`could not type ${JSON.stringify(text)} into ${sel(testid)}: ${last}`);
  }

  /** The app shell has its state: set up or not, and the engine's status. */
  async ready(timeoutMs = LONG_WAIT) {
    await this.waitAttr("app", "data-ready", "true", { timeoutMs });
  }

  async text(testid) {
    return (await this.wd.text(await this.waitFor(sel(testid)))).trim();
  }

  /** Two animation frames first: a screenshot right after a change can show
   * the frame before it. */
  async shot(name, { docs = false } = {}) {
    await this.wd.executeAsync("const done = arguments[arguments.length - 1]; requestAnimationFrame(() => requestAnimationFrame(() => done()));");
    const png = await this.wd.screenshotPng();
    const file = path.join(SHOTS, `${String(++this.step).padStart(2, "0")}-${name}.png`);
    fs.writeFileSync(file, png);
    if (docs && WRITE_DOCS) fs.writeFileSync(path.join(DOCS_SHOTS, `${name}.png`), png);
    log(`screenshot ${path.relative(ROOT, file)}`);
  }
}

async function startDriver(env) {
  const driverLog = fs.createWriteStream(path.join(OUT, "tauri-driver.log"));
  const proc = spawn(TAURI_DRIVER, ["--port", String(DRIVER_PORT), "--native-port", String(NATIVE_PORT)], { env, stdio: ["ignore", "pipe", "pipe"] });
  proc.stdout.pipe(driverLog);
  proc.stderr.pipe(driverLog);
  proc.once("exit", (code, signal) => log(`tauri-driver exited (${code ?? signal})`));
  return proc;
}

async function main() {
  for (const [what, file] of [["app", APP], ["server", SERVER_BIN], ["tauri-driver", TAURI_DRIVER]]) {
    if (!fs.existsSync(file)) throw new Error(`${what} not found at ${file} (scripts/e2e builds it)`);
  }
  if (!process.env.DISPLAY) throw new Error("no DISPLAY: run under Xvfb (scripts/e2e does)");
  fs.rmSync(SHOTS, { recursive: true, force: true });
  fs.mkdirSync(SHOTS, { recursive: true });
  if (WRITE_DOCS) fs.mkdirSync(DOCS_SHOTS, { recursive: true });

  const work = fs.mkdtempSync(path.join(os.tmpdir(), "tessera-e2e-"));
  const clock = testClock();
  log(`standing on ${clock.date} 11:05 Europe/Paris (offset ${clock.offsetSecs} s); work dir ${work}`);
  const env = {
    ...process.env,
    TESSERA_CLOCK_OFFSET_SECS: String(clock.offsetSecs),
    TESSERA_DATA_DIR: path.join(work, "counter"),
    TESSERA_LOG: process.env.TESSERA_LOG ?? "info",
  };

  const cleanups = [];
  const cleanup = async () => {
    for (const f of cleanups.reverse()) {
      try {
        await f();
      } catch (e) {
        log(`cleanup: ${e.message}`);
      }
    }
  };
  try {
    const printer = await startPrinter();
    cleanups.push(() => printer.close());
    log(`printer listening on 127.0.0.1:${printer.port}`);

    const server = new SyncServer({
      bin: SERVER_BIN,
      db: path.join(work, "server.db"),
      fixtures: path.join(ROOT, "fixtures", "demo-museum.toml"),
      env,
      log: fs.createWriteStream(path.join(OUT, "server.log")),
    });
    await server.init();
    const listen = `127.0.0.1:${await freePort()}`;
    const serverUrl = await server.start(listen);
    cleanups.push(() => server.stop());
    log(`server at ${serverUrl}`);
    const code = await server.enrolCode("counter", "Counter 1");

    const driver = await startDriver(env);
    cleanups.push(async () => {
      if (driver.exitCode === null) driver.kill("SIGTERM");
    });
    const wd = new WebDriver(`http://127.0.0.1:${DRIVER_PORT}`);
    await wd.waitUntilReady();
    await wd.newSession({ "tauri:options": { application: APP } });
    cleanups.push(() => wd.deleteSession());
    const ui = new Ui(wd);

    try {
      await scenario({ ui, wd, server, serverUrl, listen, code, printer });
    } catch (e) {
      try {
        await ui.shot("FAILED");
        fs.writeFileSync(path.join(OUT, "failed-page.html"), String(await wd.pageSource()));
      } catch {
        // The app may be gone; the error below says why.
      }
      throw e;
    }
  } finally {
    await cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

async function scenario({ ui, wd, server, serverUrl, listen, code, printer }) {
  // 1. Enrol, log in, open a shift with a float.
  log("step 1: enrol, log in, open shift");
  // The app starts slowly on a busy machine: type only once it is ready
  // (its setup defaults loaded), and check each field took what was typed.
  await ui.ready();
  await ui.waitAttr("setup-form", "data-ready", "true", { timeoutMs: LONG_WAIT });
  await ui.type("setup-server", serverUrl);
  await ui.type("setup-code", code);
  await ui.type("setup-name", "Counter 1");
  await ui.type("setup-printer", printer.spec);
  for (const [testid, expected] of [["setup-server", serverUrl], ["setup-code", code], ["setup-name", "Counter 1"], ["setup-printer", printer.spec]]) {
    const value = await wd.property(await ui.waitFor(sel(testid)), "value");
    if (value !== expected) throw new Error(`${testid} reads ${JSON.stringify(value)} before enrolling, not ${JSON.stringify(expected)}`);
  }
  await ui.shot("setup");
  await ui.click("enrol-submit");
  await ui.waitFor(sel("login-form"), { timeoutMs: LONG_WAIT });
  await ui.ready();
  await ui.waitText("net-status", "Online", { timeoutMs: LONG_WAIT });
  await ui.type("pin-input", "1111", { enter: true });
  await ui.waitFor(sel("open-shift-form"));
  await ui.type("float-input", "150", { enter: true });
  await ui.waitFor(sel("sell-screen"));
  await ui.shot("shift-open");

  // 2. Sell 2 adult + 1 child, cash with a 50 note: 30.00, change 20.00.
  log("step 2: sell 2 adult + 1 child for cash");
  await ui.waitFor(`${sel("slot")}[aria-checked="true"]`, { what: "(a slot selected)" });
  await ui.click("product-adult");
  await ui.click("product-adult");
  await ui.click("product-child");
  await ui.waitAttr("cart-total", "data-cents", "3000");
  await ui.type("tendered", "50");
  await ui.waitText("change-due", "20.00 €");
  await ui.shot("sell", { docs: true });
  await ui.click("complete-sale");
  const sale1 = await ui.waitAttr("last-sale", "data-seq", "1");
  const sale1Id = await wd.attribute(sale1, "data-sale-id");
  await ui.waitText("last-sale-change", "20.00 €");
  await ui.waitAttr("print-status", "data-status", "printed");
  const receipts = await printer.waitForReceipts(1, "Mus");
  log(`printer received ${receipts[0].length} bytes`);
  const codes = [];
  for (const el of await wd.findAll(sel("ticket-code"))) codes.push(await wd.attribute(el, "data-code"));
  if (codes.length !== 3 || codes.some((c) => !c)) throw new Error(`expected 3 ticket codes, got ${JSON.stringify(codes)}`);
  await ui.shot("sold");
  await waitServerSales(server, [sale1Id]);
  await ui.waitText("pending-sales", "0");

  // 2b. An online order for the selected time shows on the counter by
  // itself: the server pushes it, the engine syncs, the screen follows.
  await onlineOrderShows(ui, wd, server, serverUrl);

  // 3. Server down: offline, a sale still completes and waits; back up: drains.
  log("step 3: stop the server, sell offline");
  await server.stop();
  await ui.waitText("net-status", "Offline", { timeoutMs: LONG_WAIT });
  await ui.click("product-adult");
  await ui.waitAttr("cart-total", "data-cents", "1500");
  await ui.type("tendered", "20", { enter: true });
  const sale2 = await ui.waitAttr("last-sale", "data-seq", "2");
  const sale2Id = await wd.attribute(sale2, "data-sale-id");
  await ui.waitText("last-sale-change", "5.00 €");
  await ui.waitText("pending-sales", "1");
  await ui.shot("offline-sale");

  log("step 3: start the server again on the same port");
  await server.start(listen);
  await ui.waitText("pending-sales", "0", { timeoutMs: LONG_WAIT });
  await ui.waitText("net-status", "Online");
  await waitServerSales(server, [sale1Id, sale2Id]);
  const all = await server.query("SELECT sale_id, terminal_seq FROM sales ORDER BY terminal_seq");
  if (all.length !== 2 || all[0].sale_id !== sale1Id || all[1].sale_id !== sale2Id)
    throw new Error(`server should hold exactly the two sales once each, holds ${JSON.stringify(all)}`);
  await ui.shot("drained");

  // 4. Gate: a sold ticket admits once, then is denied as already used.
  if (SKIP_GATE) log("step 4: gate SKIPPED (--skip-gate)");
  else await gateStep(ui, codes[0]);

  // 5. Close the shift: expected 150 + 30 + 15 = 195.00, counted 194.50.
  log("step 5: close the shift");
  await ui.click("nav-sell");
  await ui.waitFor(`${sel("sell-screen")}, ${sel("login-form")}`);
  if (await wd.find(sel("login-form"))) await ui.type("pin-input", "1111", { enter: true });
  await ui.click("pane-close");
  await ui.type("counted-cash", "194.50", { enter: true });
  await ui.waitFor(sel("z-report"));
  await ui.waitAttr("z-expected", "data-cents", "19500");
  await ui.waitAttr("z-counted", "data-cents", "19450");
  await ui.waitAttr("z-over-short", "data-cents", "-50");
  await ui.waitText("z-over-short", "0.50 € short");
  // The Z report also goes to the printer (only it says "Counted cash").
  await printer.waitForReceipts(1, "Counted cash");
  await ui.shot("z-report", { docs: true });

  // The supervisor's screen, for the docs; its engine calls come with the
  // day-close issue, so an engine refusal here is logged, not failed.
  log("supervisor screen");
  await ui.click("nav-supervisor");
  await ui.type("sup-pin", "9999", { enter: true });
  try {
    await ui.waitFor(`${sel("day-report")}, ${sel("error")}`);
    if (!(await wd.find(sel("day-report")))) log(`day report not available: ${await ui.text("error")}`);
  } catch (e) {
    log(`supervisor: ${e.message}`);
  }
  await ui.shot("supervisor", { docs: true });
}

async function gateStep(ui, code) {
  log("step 4: gate");
  await ui.click("nav-gate");
  await ui.type("scan-input", code, { enter: true });
  await ui.waitAttr("scan-result", "data-seq", "1");
  await ui.waitAttr("scan-result", "data-result", "admitted");
  await ui.waitText("scan-verdict", "ADMIT");
  await ui.shot("gate", { docs: true });
  await ui.type("scan-input", code, { enter: true, clear: false });
  await ui.waitAttr("scan-result", "data-seq", "2");
  await ui.waitAttr("scan-result", "data-result", "denied");
  await ui.waitText("scan-verdict", "DENY");
  const reason = await ui.text("scan-detail");
  if (!/already|used/i.test(reason)) throw new Error(`deny reason should say already used, says ${JSON.stringify(reason)}`);
  await ui.shot("gate-deny", { docs: true });
}

/** Books 5 adults online for the slot selected on screen and waits, with no
 * interaction, for its "N left" to drop by 5. The bar is one second
 * from the order's confirmation to the screen; TESSERA_E2E_WAIT_SCALE
 * stretches it on a slow machine. A second order gets a second chance, so
 * one stall of a busy machine is not a failure, two are. */
async function onlineOrderShows(ui, wd, server, serverUrl) {
  log("step 2b: an online order lowers the places on screen by itself");
  await ui.waitAttr("push-state", "data-live", "true", { timeoutMs: LONG_WAIT });
  const token = (await server.cli(["channel", "add", "--db", server.db, "--name", "e2e partner"])).trim().split(/\r?\n/).pop().trim();
  const bound = 1000 * SCALE;
  const took = [];
  for (let attempt = 1; attempt <= 2; attempt++) {
    const selected = await ui.waitFor(`${sel("slot")}[aria-checked="true"]`, { what: "(a slot selected)" });
    const slotId = await wd.attribute(selected, "data-slot-id");
    const left = async () => {
      const el = await ui.waitFor(`${sel("slot")}[data-slot-id="${slotId}"] ${sel("slot-remaining")}`);
      const m = /^(\d+) left$/.exec((await wd.text(el)).trim());
      return m ? Number(m[1]) : null;
    };
    const before = await left();
    if (before === null || before < 5) throw new Error(`slot ${slotId} shows ${before} places; the test needs 5`);
    const confirmedAt = await bookOnline(serverUrl, token, slotId, 5);
    await ui.waitFor(`${sel("slot")}[data-slot-id="${slotId}"] ${sel("slot-remaining")}`, {
      what: `to read "${before - 5} left"`,
      check: async (el) => (await wd.text(el)).trim() === `${before - 5} left`,
    });
    const ms = Date.now() - confirmedAt;
    took.push(ms);
    log(`online order of 5 for ${slotId}: ${before} → ${before - 5} left on screen ${ms} ms after its confirmation`);
    await ui.shot(`online-order-shown-${attempt}`);
    if (ms <= bound) return;
  }
  throw new Error(`an online order took ${took.join(" ms, then ")} ms to show on the counter; the bar is ${bound} ms`);
}

/** Holds and confirms an order over the public API, as a partner site
 * would; returns when the confirmation was answered (Date.now()). */
async function bookOnline(serverUrl, token, slotId, adults) {
  const post = async (url, body, headers = {}) => {
    const r = await fetch(`${serverUrl}${url}`, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": crypto.randomUUID(), ...headers },
      body: JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`POST ${url} answered ${r.status}: ${text}`);
    return JSON.parse(text);
  };
  const hold = await post("/v1/holds", { slot_id: slotId, items: [{ product_id: "adult", quantity: adults }] });
  await post(`/v1/holds/${hold.hold_id}/confirm`, { payment_reference: `e2e-${hold.hold_id}` }, { authorization: `Bearer ${token}` });
  return Date.now();
}

/** Polls the server's database until it holds these sales, each once. */
async function waitServerSales(server, ids, timeoutMs = WAIT) {
  const end = Date.now() + timeoutMs;
  const list = ids.map((id) => `'${id.replace(/'/g, "")}'`).join(",");
  for (;;) {
    const rows = await server.query(`SELECT sale_id, count(*) AS n FROM sales WHERE sale_id IN (${list}) GROUP BY sale_id`);
    if (rows.length === ids.length && rows.every((r) => r.n === 1)) return;
    if (Date.now() > end) throw new Error(`server should hold sales ${ids.join(", ")} once each; holds ${JSON.stringify(rows)}`);
    await sleep(300);
  }
}

main().then(
  () => {
    log("PASS");
    process.exit(0);
  },
  (e) => {
    console.error(`[e2e] FAIL: ${e.stack ?? e}`);
    process.exit(1);
  },
);
