// A small W3C WebDriver client over Node's built-in fetch (undici keeps
// connections alive, which tauri-driver's proxy needs: a client that closes
// the connection after every request sees random "connection reset"s).

const ELEMENT = "element-6066-11e4-a52e-4f735466cecf";

export class WebDriverError extends Error {
  constructor(method, path, status, value) {
    super(`${method} ${path} → ${status} ${value?.error ?? ""}: ${value?.message ?? JSON.stringify(value)}`);
    this.error = value?.error;
  }
}

export class WebDriver {
  constructor(baseUrl) {
    this.base = baseUrl.replace(/\/$/, "");
    this.sessionId = null;
  }

  async request(method, path, body) {
    const res = await fetch(this.base + path, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json; charset=utf-8" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      throw new WebDriverError(method, path, res.status, { error: "bad json", message: text.slice(0, 300) });
    }
    if (!res.ok || (json.value && json.value.error)) throw new WebDriverError(method, path, res.status, json.value);
    return json.value;
  }

  /** Resolves once the driver answers /status (it starts WebKitWebDriver first). */
  async waitUntilReady(timeoutMs = 30000) {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.request("GET", "/status");
        return;
      } catch (e) {
        if (Date.now() > end) throw new Error(`WebDriver at ${this.base} not ready: ${e.message}`);
        await sleep(250);
      }
    }
  }

  async newSession(alwaysMatch) {
    const value = await this.request("POST", "/session", { capabilities: { alwaysMatch } });
    this.sessionId = value.sessionId;
    return value;
  }

  /** Always safe to call: a session left open blocks the next run. */
  async deleteSession() {
    if (!this.sessionId) return;
    const id = this.sessionId;
    this.sessionId = null;
    await this.request("DELETE", `/session/${id}`);
  }

  s(path) {
    if (!this.sessionId) throw new Error("no WebDriver session");
    return `/session/${this.sessionId}${path}`;
  }

  async findAll(css) {
    const els = await this.request("POST", this.s("/elements"), { using: "css selector", value: css });
    return els.map((e) => e[ELEMENT]);
  }

  async find(css) {
    const [first] = await this.findAll(css);
    return first ?? null;
  }

  click(el) {
    return this.request("POST", this.s(`/element/${el}/click`), {});
  }

  clear(el) {
    return this.request("POST", this.s(`/element/${el}/clear`), {});
  }

  sendKeys(el, text) {
    return this.request("POST", this.s(`/element/${el}/value`), { text });
  }

  /** A DOM property (an input's current `value`, not its attribute). */
  property(el, name) {
    return this.request("GET", this.s(`/element/${el}/property/${encodeURIComponent(name)}`));
  }

  text(el) {
    return this.request("GET", this.s(`/element/${el}/text`));
  }

  attribute(el, name) {
    return this.request("GET", this.s(`/element/${el}/attribute/${encodeURIComponent(name)}`));
  }

  execute(script, args = []) {
    return this.request("POST", this.s("/execute/sync"), { script, args });
  }

  executeAsync(script, args = []) {
    return this.request("POST", this.s("/execute/async"), { script, args });
  }

  async screenshotPng() {
    return Buffer.from(await this.request("GET", this.s("/screenshot")), "base64");
  }

  pageSource() {
    return this.request("GET", this.s("/source"));
  }
}

export const KEY = { ENTER: "\uE007", TAB: "\uE004", ESCAPE: "\uE00C" };

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
