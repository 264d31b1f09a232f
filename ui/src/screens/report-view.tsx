// Shows the server's day report whatever its exact shape: objects as
// label/value lists, arrays of objects as tables. Amounts are recognised by
// their field names (the API's convention: integer cents), and any row that
// names a lease gets a Revoke button.
import { formatMoney } from "../money";

const MONEY_KEYS = /(gross|net|tax|total|amount|cash|over_short|price|refund|float|expected|counted|takings|sales)$/i;
const COUNT_HINTS = /(count|quantity|admissions|orders|seq|number|places|granted|sold|scans)/i;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function humanKey(key: string): string {
  const words = key.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function formatCell(key: string, value: unknown): string {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number" && Number.isInteger(value) && MONEY_KEYS.test(key) && !COUNT_HINTS.test(key))
    return formatMoney(value);
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function ReportValue({ value, onRevoke, name }: { value: unknown; onRevoke: (leaseId: string) => void; name?: string }) {
  if (Array.isArray(value)) {
    if (value.length === 0) return <p class="muted">none</p>;
    if (!value.every(isRecord)) return <p>{value.map((v) => formatCell(name ?? "", v)).join(", ")}</p>;
    const rows = value as Record<string, unknown>[];
    const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
    const leaseCol = columns.includes("lease_id");
    return (
      <table class="table" data-testid={name ? `report-${name}` : undefined}>
        <thead>
          <tr>
            {columns.map((c) => (
              <th>{humanKey(c)}</th>
            ))}
            {leaseCol ? <th /> : null}
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr>
              {columns.map((c) => (
                <td class={typeof r[c] === "number" ? "num" : ""}>{formatCell(c, r[c])}</td>
              ))}
              {leaseCol ? (
                <td>
                  <button type="button" class="small danger" data-testid="revoke-row" onClick={() => onRevoke(String(r.lease_id))}>
                    Revoke
                  </button>
                </td>
              ) : null}
            </tr>
          ))}
        </tbody>
      </table>
    );
  }
  if (isRecord(value)) {
    const entries = Object.entries(value);
    const scalars = entries.filter(([, v]) => !isRecord(v) && !Array.isArray(v));
    const nested = entries.filter(([, v]) => isRecord(v) || Array.isArray(v));
    return (
      <div class="report-object">
        {scalars.length > 0 ? (
          <dl class="facts">
            {scalars.map(([k, v]) => (
              <>
                <dt>{humanKey(k)}</dt>
                <dd>{formatCell(k, v)}</dd>
              </>
            ))}
          </dl>
        ) : null}
        {nested.map(([k, v]) => (
          <section>
            <h3>{humanKey(k)}</h3>
            <ReportValue value={v} onRevoke={onRevoke} name={k} />
          </section>
        ))}
      </div>
    );
  }
  return <p>{formatCell(name ?? "", value)}</p>;
}
