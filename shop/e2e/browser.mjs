// Headless Debian Chromium driven over W3C WebDriver (chromedriver), plus
// what the shop's test needs on top of the shared client (e2e/webdriver.mjs):
// navigation, window sizes, real key presses, screenshots after paint and
// axe-core's accessibility check.
import { spawn } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import { freePort } from "../../e2e/server.mjs";
import { sleep, WebDriver } from "../../e2e/webdriver.mjs";

const require = createRequire(import.meta.url);
const AXE_SOURCE = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

export const KEYS = { TAB: "\uE004", ENTER: "\uE007", SPACE: " ", SHIFT: "\uE008" };

/** chromedriver on a free loopback port; `stop()` ends it. */
export async function startChromedriver({ bin = process.env.CHROMEDRIVER ?? "chromedriver", log } = {}) {
  const port = await freePort();
  const proc = spawn(bin, [`--port=${port}`, "--allowed-ips=127.0.0.1"], { stdio: ["ignore", "pipe", "pipe"] });
  proc.stdout.on("data", (d) => log?.write(d));
  proc.stderr.on("data", (d) => log?.write(d));
  const url = `http://127.0.0.1:${port}`;
  const probe = new WebDriver(url);
  await probe.waitUntilReady(30000);
  return {
    url,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      await Promise.race([gone, sleep(5000)]);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    },
  };
}

export class Browser extends WebDriver {
  /** A new headless Chromium window (as root Chromium needs --no-sandbox). */
  static async open(driverUrl, { width = 1280, height = 900, languages = "fr-FR,fr" } = {}) {
    const b = new Browser(driverUrl);
    await b.newSession({
      browserName: "chrome",
      "goog:chromeOptions": {
        binary: process.env.CHROMIUM ?? "/usr/bin/chromium",
        args: [
          "--headless=new",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-dev-shm-usage",
          "--no-first-run",
          "--hide-scrollbars",
          `--window-size=${width},${height}`,
          `--lang=${languages.split(",")[0]}`,
        ],
        prefs: { "intl.accept_languages": languages },
      },
    });
    await b.size(width, height);
    return b;
  }

  navigate(url) {
    return this.request("POST", this.s("/url"), { url });
  }

  url() {
    return this.request("GET", this.s("/url"));
  }

  /** The viewport is what a phone or a desktop shows: set the window so. */
  async size(width, height) {
    await this.request("POST", this.s("/window/rect"), { width, height });
    // Headless windows include no browser chrome, but make sure.
    const inner = await this.execute("return [innerWidth, innerHeight]");
    if (inner[0] !== width) {
      await this.request("POST", this.s("/window/rect"), { width: width + (width - inner[0]), height: height + (height - inner[1]) });
    }
  }

  /** Real key presses to whatever has the focus (no element is clicked or focused for us). */
  async press(...keys) {
    const actions = [];
    for (const k of keys) actions.push({ type: "keyDown", value: k }, { type: "keyUp", value: k });
    await this.request("POST", this.s("/actions"), { actions: [{ type: "key", id: "keyboard", actions }] });
    await this.request("DELETE", this.s("/actions"));
  }

  /** Types text key by key into the focused field. */
  async typeKeys(text) {
    await this.press(...Array.from(text));
  }

  /** What has the focus, described. */
  focused() {
    return this.execute(`
      const a = document.activeElement;
      if (!a) return null;
      const s = getComputedStyle(a);
      return {
        tag: a.tagName.toLowerCase(),
        id: a.id || null,
        href: a.getAttribute("href"),
        type: a.getAttribute("type"),
        label: a.getAttribute("aria-label"),
        text: (a.innerText || a.value || "").trim().slice(0, 80),
        focusVisible: a.matches(":focus-visible"),
        // A ring of any style the browser draws (its own default is visible too).
        ring: (s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== "none",
      };`);
  }

  /**
   * Presses Tab until the focus is on what `wanted` accepts (no key at all
   * when it already is, e.g. an autofocused button), at most `max` times;
   * fails naming where the focus went. Also checks the focus can be seen
   * there (an outline or a shadow).
   */
  async tabTo(wanted, what, max = 60) {
    const seen = [];
    for (let i = 0; i <= max; i++) {
      if (i > 0) await this.press(KEYS.TAB);
      const f = await this.focused();
      if (f && wanted(f)) {
        if (!f.ring) throw new Error(`focus on ${what} is not visible: ${JSON.stringify(f)}`);
        return f;
      }
      seen.push(f ? `${f.tag}${f.id ? "#" + f.id : ""}${f.href ? "[" + f.href + "]" : ""} ${f.label ?? f.text}` : "nothing");
    }
    throw new Error(`${what}: not reached with ${max} Tabs; focus went to ${seen.join(" → ")}`);
  }

  /** Waits for the page to have painted (two animation frames). */
  async painted() {
    await this.executeAsync("const done = arguments[arguments.length - 1]; requestAnimationFrame(() => requestAnimationFrame(() => done(true)));");
  }

  async screenshot(file) {
    await this.painted();
    fs.writeFileSync(file, await this.screenshotPng());
  }

  /** A screenshot of the whole page, not only the viewport (Chromium's own command). */
  async fullScreenshot(file) {
    await this.painted();
    const [w, h] = await this.execute("return [innerWidth, Math.max(document.documentElement.scrollHeight, innerHeight)]");
    const rect = await this.request("GET", this.s("/window/rect"));
    await this.request("POST", this.s("/window/rect"), { width: rect.width, height: Math.min(h + (rect.height - (await this.execute("return innerHeight"))), 4000) });
    await this.painted();
    fs.writeFileSync(file, await this.screenshotPng());
    await this.request("POST", this.s("/window/rect"), { width: rect.width, height: rect.height });
    return [w, h];
  }

  /** axe-core's violations of impact serious or critical on the current page. */
  async axe() {
    await this.execute(`if (!window.axe) { ${AXE_SOURCE}\n }`);
    const found = await this.executeAsync(`
      const done = arguments[arguments.length - 1];
      window.axe.run(document, { resultTypes: ["violations"] }).then(
        (r) => done(r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }))),
        (e) => done([{ id: "axe-error", impact: "critical", help: String(e), nodes: [] }]),
      );`);
    return found.filter((v) => v.impact === "serious" || v.impact === "critical");
  }
}
