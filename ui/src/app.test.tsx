// The screens against the fake engine, in happy-dom: the cashier's and the
// gate attendant's paths by keyboard and click, and the messages they see.
import { act } from "preact/test-utils";
import { describe, expect, it } from "vitest";
import { FakeBackend } from "./fake-backend";
import { appHarness } from "./test-harness";

const { h, byId, mount, find, submit } = appHarness();

async function until(check: () => boolean, what: string, timeoutMs = 2000) {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await act(() => new Promise((r) => setTimeout(r, 20)));
  }
}

async function type(id: string, text: string) {
  const el = (await find(id)) as HTMLInputElement;
  await act(async () => {
    el.value = text;
    el.dispatchEvent(new Event("input", { bubbles: true }));
  });
}

async function click(id: string) {
  const el = await find(id);
  await act(async () => {
    el.click();
  });
}

async function loginAndOpenShift() {
  await type("pin-input", "1111");
  await submit("pin-input");
  await type("float-input", "150");
  await submit("float-input");
  await find("sell-screen");
}

describe("setup", () => {
  it("enrols and opens the till", async () => {
    const fake = new FakeBackend({ enrolled: false });
    await mount(fake);
    await type("setup-code", "ABCD-1234");
    await type("setup-printer", "network:127.0.0.1:9100");
    await submit("setup-code");
    await find("login-form");
    expect(fake.enrolled).toBe(true);
    expect(fake.printer).toBe("network:127.0.0.1:9100");
  });

  it("shows the server's refusal", async () => {
    await mount(new FakeBackend({ enrolled: false }));
    await type("setup-server", "127.0.0.1:8080");
    await type("setup-code", "ABCD");
    await submit("setup-code");
    expect((await find("error")).textContent).toContain("http://");
  });
});

describe("cashier", () => {
  it("a wrong PIN says so and clears the field", async () => {
    await mount(new FakeBackend());
    await type("pin-input", "0000");
    await submit("pin-input");
    expect((await find("error")).textContent).toBe("That PIN is not recognised.");
    expect((byId("pin-input") as HTMLInputElement).value).toBe("");
  });

  it("sells 2 adults + 1 child for cash and shows the change", async () => {
    const fake = new FakeBackend();
    await mount(fake);
    await loginAndOpenShift();
    await until(() => h.root.querySelectorAll('[data-testid="slot"]').length > 0, "slots");
    await click("product-adult");
    await click("product-adult");
    await click("product-child");
    await until(() => byId("cart-total")?.dataset.cents === "3000", "total 30.00");
    expect(byId("vat-lines")?.textContent).toContain("5.5 %");
    await type("tendered", "50");
    expect(byId("change-due")?.textContent).toBe("20.00 €");
    await submit("tendered");
    const last = await find("last-sale");
    expect(last.dataset.seq).toBe("1");
    expect(byId("last-sale-change")?.textContent).toBe("20.00 €");
    expect(byId("print-status")?.dataset.status).toBe("no_printer");
    expect(h.root.querySelectorAll('[data-testid="ticket-code"]').length).toBe(3);
    expect(fake.sales).toHaveLength(1);
    expect(fake.sales[0].tendered).toBe(5000);
    expect(byId("cart-total")?.dataset.cents).toBe("0");
  });

  it("refuses to complete with too little cash", async () => {
    const fake = new FakeBackend();
    await mount(fake);
    await loginAndOpenShift();
    await click("product-family");
    await type("tendered", "20");
    expect(byId("change-short")?.textContent).toBe("20.00 € more needed");
    await submit("tendered");
    expect((await find("error")).textContent).toBe("20.00 € more needed.");
    expect(fake.sales).toHaveLength(0);
  });

  it("adds products with number keys and takes a card", async () => {
    const fake = new FakeBackend();
    await mount(fake);
    await loginAndOpenShift();
    await until(() => byId("product-adult") !== null, "products");
    await act(async () => {
      window.dispatchEvent(new KeyboardEvent("keydown", { key: "1" }));
      window.dispatchEvent(new KeyboardEvent("keydown", { key: "6" }));
      window.dispatchEvent(new KeyboardEvent("keydown", { key: "F8" }));
    });
    await until(() => byId("cart-total")?.dataset.cents === "2000", "adult + audio guide");
    await click("complete-sale");
    await find("last-sale");
    expect(fake.sales[0].payment_method).toBe("card");
    expect(byId("last-sale-change")).toBeNull();
  });

  it("an engine refusal reaches the screen", async () => {
    const fake = new FakeBackend();
    fake.slots.forEach((s) => (s.lease_left = 1));
    await mount(fake);
    await loginAndOpenShift();
    await click("product-family");
    expect((await find("quote-error")).textContent).toContain("only 1 more places");
  });

  it("voids with a supervisor PIN and closes the shift with a Z report", async () => {
    const fake = new FakeBackend();
    await mount(fake);
    await loginAndOpenShift();
    await click("product-adult");
    await type("tendered", "20");
    await submit("tendered");
    await find("last-sale");
    await click("product-adult");
    await type("tendered", "15");
    await submit("tendered");
    await until(() => byId("last-sale")?.dataset.seq === "2", "second sale");

    await click("pane-sales");
    await click("void-2");
    await type("void-reason", "wrong slot");
    await type("void-pin", "1111");
    await submit("void-pin");
    expect((await find("error")).textContent).toContain("supervisor");
    await type("void-pin", "9999");
    await submit("void-pin");
    expect((await find("sales-notice")).textContent).toContain("approved by Inès");

    await click("pane-close");
    await type("counted-cash", "164");
    await submit("counted-cash");
    await find("z-report");
    expect(byId("z-expected")?.textContent).toBe("165.00 €");
    expect(byId("z-counted")?.textContent).toBe("164.00 €");
    expect(byId("z-over-short")?.textContent).toBe("1.00 € short");
  });
});

describe("navigation", () => {
  it("a look at another screen keeps the cashier logged in; Lock logs out", async () => {
    await mount(new FakeBackend());
    await loginAndOpenShift();
    await click("nav-gate");
    await find("scan-input");
    await click("nav-sell");
    await find("sell-screen");
    await click("lock");
    await find("login-form");
  });
});

describe("gate", () => {
  it("admits once, then denies with the reason; the counter counts", async () => {
    const fake = new FakeBackend();
    await mount(fake);
    await loginAndOpenShift();
    await click("product-adult");
    await type("tendered", "15");
    await submit("tendered");
    await find("last-sale");
    const code = fake.sales[0].tickets[0].code;

    await click("nav-gate");
    await type("scan-input", code);
    await submit("scan-input");
    let result = await find("scan-result");
    expect(result.dataset.result).toBe("admitted");
    expect(byId("scan-verdict")?.textContent).toBe("ADMIT");
    expect(byId("scan-detail")?.textContent).toBe("Adult · admits 1");
    expect(byId("admitted-today")?.textContent).toBe("1");
    expect((byId("scan-input") as HTMLInputElement).value).toBe("");

    await type("scan-input", code);
    await submit("scan-input");
    await until(() => byId("scan-result")?.dataset.seq === "2", "second scan");
    result = byId("scan-result")!;
    expect(result.dataset.result).toBe("denied");
    expect(result.dataset.reason).toBe("already_used");
    expect(byId("scan-verdict")?.textContent).toBe("DENY");
    expect(byId("scan-detail")?.textContent).toBe("Already used");
    expect(byId("scan-first-use")?.textContent).toContain("Main gate");
    expect(byId("admitted-today")?.textContent).toBe("1");
  });

  it("says when it is offline", async () => {
    const fake = new FakeBackend({ online: false });
    localStorage.setItem("tessera.mode", "gate");
    await mount(fake);
    await find("gate-offline");
    expect(byId("net-status")?.textContent).toBe("Offline");
  });
});

describe("supervisor", () => {
  it("loads the day report, shows money as money, exports the CSV", async () => {
    const fake = new FakeBackend();
    await mount(fake);
    await click("nav-supervisor");
    await type("sup-pin", "9999");
    await submit("sup-pin");
    const report = await find("day-report");
    expect(report.textContent).toContain("95.00 €");
    expect(h.root.querySelectorAll('[data-testid="revoke-row"]').length).toBe(1);
    await click("export-csv");
    expect((await find("sup-notice")).textContent).toContain("day-report-");
    expect(Object.values(fake.exports)[0]).toContain("Counter 1");
  });

  it("lists leases and revokes one after confirmation", async () => {
    const fake = new FakeBackend();
    await mount(fake);
    await click("nav-supervisor");
    await type("sup-pin", "9999");
    await click("load-leases");
    await find("leases");
    window.confirm = () => true;
    await click("revoke-row");
    expect((await find("sup-notice")).textContent).toContain("revoked");
    expect(fake.revoked).toEqual(["0190f2a4-0000-7000-8000-000000000001"]);
  });

  it("a cashier's PIN gets the engine's refusal", async () => {
    await mount(new FakeBackend());
    await click("nav-supervisor");
    await type("sup-pin", "1111");
    await submit("sup-pin");
    expect((await find("error")).textContent).toContain("supervisor");
  });
});
