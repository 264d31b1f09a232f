// Money on screen. Amounts are integer cents end to end (the engine's unit);
// this module only turns them into text and back, never through floats, so
// what the cashier types is exactly what the engine receives.

const SYMBOLS: Record<string, string> = { EUR: "€", USD: "$", GBP: "£", CHF: "CHF" };

/** The largest amount a cashier can type: guards against a scanner burst
 * landing in a money field. */
export const MAX_TYPED_CENTS = 100_000_00;

/** 1500 → "15.00 €". Negative amounts keep their sign in front. */
export function formatMoney(cents: number, currency = "EUR"): string {
  const sign = cents < 0 ? "-" : "";
  const abs = Math.abs(Math.trunc(cents));
  const units = Math.floor(abs / 100);
  const rest = String(abs % 100).padStart(2, "0");
  const grouped = String(units).replace(/\B(?=(\d{3})+(?!\d))/g, "\u202f");
  const symbol = SYMBOLS[currency] ?? currency;
  return `${sign}${grouped}.${rest} ${symbol}`;
}

/** Signed amount for over/short: "+2.50 €", "-1.00 €", "0.00 €". */
export function formatSigned(cents: number, currency = "EUR"): string {
  return cents > 0 ? `+${formatMoney(cents, currency)}` : formatMoney(cents, currency);
}

/**
 * What the cashier typed → cents, or null when it is not an amount.
 * Accepts "50", "50.5", "50.50", "50,50" (French keyboards), an optional
 * currency sign and spaces. Rejects negatives, more than two decimals and
 * anything above MAX_TYPED_CENTS.
 */
export function parseMoney(text: string): number | null {
  const cleaned = text.replace(/[\s\u202f€$£]/g, "").replace(",", ".");
  const match = /^(\d{1,9})(?:\.(\d{0,2}))?$/.exec(cleaned) ?? /^()\.(\d{1,2})$/.exec(cleaned);
  if (!match) return null;
  const units = match[1] === "" ? 0 : Number.parseInt(match[1], 10);
  const decimals = (match[2] ?? "").padEnd(2, "0");
  const cents = units * 100 + Number.parseInt(decimals, 10);
  if (!Number.isSafeInteger(cents) || cents > MAX_TYPED_CENTS) return null;
  return cents;
}

/** Cents → the text to pre-fill a money field with ("50.00"). */
export function centsToInput(cents: number): string {
  const abs = Math.abs(Math.trunc(cents));
  return `${cents < 0 ? "-" : ""}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}
