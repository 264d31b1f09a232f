import { render } from "preact";
import { describe, expect, it } from "vitest";
import { DayReportView, isDayReport } from "./day-report";

const channel = (name: string, gross: number, cash: number) => ({
  channel: name,
  device_id: null,
  sales_count: 2,
  voids_count: 0,
  admissions: 4,
  gross_sales: gross,
  refunds: 0,
  net_takings: gross,
  vat: [{ rate_bp: 550, label: "5.5 %", net: Math.round(gross / 1.055), tax: gross - Math.round(gross / 1.055), gross }],
  payments: [
    { method: "cash", sales: cash, refunds: 0, net: cash },
    { method: "card", sales: gross - cash, refunds: 0, net: gross - cash },
  ],
});

const report = {
  date: "2026-12-09",
  museum: "Musée des Tessères",
  currency: "EUR",
  generated_at: "2026-12-09T16:00:00Z",
  channels: [channel("online", 3000, 0), channel("Counter 1", 4500, 4500)],
  total: channel("total", 7500, 4500),
  shifts: [
    {
      counter: "Counter 1",
      shift_id: "s",
      cashier: "Camille",
      opened_at: "2026-12-09T09:00:00Z",
      closed_at: "2026-12-09T15:00:00Z",
      float: 15000,
      expected_cash: 19500,
      counted_cash: 19450,
      over_short: -50,
      z_received: true,
      server_expected_cash: 19500,
      not_uploaded_cash: null,
    },
  ],
  missing: {
    counters: [],
    leases_held: [{ counter: "Counter 2", lease_id: "L-1", slot_id: "2026-12-09T11:00", escrow: 12, sold: 3, unsold: 9, last_sync_at: null }],
    over_capacity: [],
  },
  slots: [{ slot_id: "2026-12-09T11:00", capacity: 120, sold_online: 2, sold_counter: 4, admitted: 1, no_shows: 5, over_capacity: 0 }],
  conflicts: [],
};

describe("DayReportView", () => {
  it("lays out channels with a total, drawers and what is still open", () => {
    expect(isDayReport(report)).toBe(true);
    const root = document.createElement("div");
    const revoked: string[] = [];
    render(<DayReportView report={report} onRevoke={(id) => revoked.push(id)} />, root);
    const channels = root.querySelector('[data-testid="report-channels"]')!;
    const rows = [...channels.querySelectorAll("tbody tr")].map((r) => [...r.querySelectorAll("td")].map((td) => td.textContent));
    expect(rows[2]).toEqual(["Total", "2", "0", "4", "75.00 €", "0.00 €", "45.00 €", "30.00 €", "75.00 €"]);
    expect(root.querySelector('[data-testid="report-shifts"]')!.textContent).toContain("-0.50 €");
    root.querySelector<HTMLButtonElement>('[data-testid="revoke-row"]')!.click();
    expect(revoked).toEqual(["L-1"]);
  });

  it("lists the uploads the server holds for a supervisor, with the reason", () => {
    const root = document.createElement("div");
    const held = {
      ...report,
      quarantine: [
        {
          counter: "Counter 2",
          kind: "sale",
          item_id: "q-1",
          terminal_seq: 17,
          slot_id: "2026-12-09T11:00",
          reason: "adult priced 0.01, the catalogue says 15.00",
          device_at: "2026-12-09T10:02:00Z",
          received_at: "2026-12-09T10:05:00Z",
        },
      ],
    };
    render(<DayReportView report={held} onRevoke={() => undefined} />, root);
    const section = root.querySelector('[data-testid="report-quarantine"]')!;
    expect(section.querySelector(".tag")!.textContent).toBe("1");
    expect(section.textContent).toContain("Counter 2");
    expect(section.textContent).toContain("sale #17");
    expect(section.textContent).toContain("the catalogue says 15.00");
  });

  it("says loudly when the server found that the report does not add up", () => {
    const root = document.createElement("div");
    render(<DayReportView report={{ ...report, does_not_add_up: "total: payments add up to 100, net takings are 90" }} onRevoke={() => undefined} />, root);
    expect(root.querySelector('[data-testid="report-does-not-add-up"]')!.textContent).toContain("payments add up to 100");
    const fine = document.createElement("div");
    render(<DayReportView report={report} onRevoke={() => undefined} />, fine);
    expect(fine.querySelector('[data-testid="report-does-not-add-up"]')).toBeNull();
  });

  it("falls back to the generic view for another shape", () => {
    expect(isDayReport({ date: "x" })).toBe(false);
    const root = document.createElement("div");
    render(<DayReportView report={{ orders: 3 }} onRevoke={() => undefined} />, root);
    expect(root.textContent).toContain("Orders");
  });
});
