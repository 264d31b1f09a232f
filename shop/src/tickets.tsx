// Choosing tickets: quantities per product, a membership number per member
// ticket, the audio guide only with an admission, a running total with VAT.
import { useEffect, useState } from "preact/hooks";
import type { CartLine, Catalogue, Product } from "./api";
import { useShop } from "./app";
import { money, percent } from "./format";
import { productName } from "./i18n";

/** The same rounding as the server (crates/core/src/vat.rs): per line, half away from zero. */
export function vatOf(gross: number, bp: number): number {
  const num = gross * bp;
  const den = 10000 + bp;
  const tax = Math.floor((Math.abs(num) + Math.floor(den / 2)) / den);
  return num < 0 ? -tax : tax;
}

export const MEMBERSHIP = /^[A-Za-z0-9-]{4,20}$/;
/** What one online order may hold (CartLimits::ONLINE on the server). */
export const MAX_ADMISSIONS = 20;

export interface Totals {
  gross: number;
  tax: number;
  admissions: number;
  addOns: number;
}

export function totals(products: Product[], vatRates: Record<string, number>, qty: Record<string, number>): Totals {
  let gross = 0;
  let tax = 0;
  let admissions = 0;
  let addOns = 0;
  for (const p of products) {
    const n = qty[p.id] ?? 0;
    if (n <= 0) continue;
    const line = p.price * n;
    gross += line;
    tax += vatOf(line, vatRates[p.vat] ?? 0);
    if (p.admits > 0) admissions += p.admits * n;
    else addOns += n;
  }
  return { gross, tax, admissions, addOns };
}

export function cartLines(products: Product[], qty: Record<string, number>, members: Record<string, string[]>): CartLine[] {
  return products
    .filter((p) => (qty[p.id] ?? 0) > 0)
    .map((p) => {
      const line: CartLine = { product_id: p.id, quantity: qty[p.id] };
      if (p.requires_membership) line.membership_numbers = (members[p.id] ?? []).slice(0, qty[p.id]).map((m) => m.trim());
      return line;
    });
}

interface Props {
  catalogue: Catalogue;
  /** Places left at the chosen time, when known. */
  available: number | null;
  /** Admissions this order may hold at most. */
  maxAdmissions?: number;
  initial?: CartLine[] | null;
  busy: boolean;
  onSubmit: (items: CartLine[], admissions: number) => void;
  /** Told every change, e.g. to remember the choice for another time. */
  onChange?: (items: CartLine[]) => void;
}

export function TicketChooser({ catalogue, available, maxAdmissions = MAX_ADMISSIONS, initial, busy, onSubmit, onChange }: Props) {
  const { t, lang } = useShop();
  const products = catalogue.products.filter((p) => p.sold_online !== false);
  const [qty, setQty] = useState<Record<string, number>>(() => {
    const q: Record<string, number> = {};
    for (const l of initial ?? []) if (products.some((p) => p.id === l.product_id)) q[l.product_id] = l.quantity;
    return q;
  });
  const [members, setMembers] = useState<Record<string, string[]>>(() => {
    const m: Record<string, string[]> = {};
    for (const l of initial ?? []) if (l.membership_numbers) m[l.product_id] = [...l.membership_numbers];
    return m;
  });
  const [errors, setErrors] = useState<Record<string, string>>({});
  const sum = totals(products, catalogue.vat_rates, qty);
  useEffect(() => {
    onChange?.(cartLines(products, qty, members));
  }, [qty, members]);
  const currency = catalogue.museum.currency;

  const set = (id: string, n: number) => {
    const v = Math.max(0, Math.min(MAX_ADMISSIONS, Number.isFinite(n) ? Math.floor(n) : 0));
    setQty({ ...qty, [id]: v });
    setErrors({});
  };

  const submit = (e: Event) => {
    e.preventDefault();
    const errs: Record<string, string> = {};
    if (sum.admissions === 0) errs.cart = t(sum.addOns > 0 ? "addon_needs_admission" : "choose_some");
    else if (sum.admissions > maxAdmissions) errs.cart = t("too_many", { n: maxAdmissions });
    for (const p of products) {
      if (!p.requires_membership) continue;
      for (let i = 0; i < (qty[p.id] ?? 0); i++) {
        if (!MEMBERSHIP.test((members[p.id]?.[i] ?? "").trim())) errs[`m-${p.id}-${i}`] = t("membership_bad");
      }
    }
    setErrors(errs);
    const keys = Object.keys(errs);
    if (keys.length > 0) {
      // The first field in error takes the focus; its message is tied to it.
      const id = keys.includes("cart") ? "cart-total" : keys[0];
      setTimeout(() => document.getElementById(id)?.focus(), 0);
      return;
    }
    onSubmit(cartLines(products, qty, members), sum.admissions);
  };

  return (
    <form onSubmit={submit} noValidate class="tickets">
      <fieldset aria-describedby={errors.cart ? "cart-error" : undefined}>
        <legend>{t("tickets_legend")}</legend>
        {products.map((p) => {
          // The museum's own translation first; the shop's table knows the demo's.
          const name = p.names?.[lang] ?? productName(lang, p.id, p.name);
          const n = qty[p.id] ?? 0;
          const rate = catalogue.vat_rates[p.vat] ?? 0;
          return (
            <div class="product" key={p.id} data-product={p.id}>
              <div class="product-text">
                <label for={`q-${p.id}`} class="product-name">
                  {name}
                </label>
                <span class="product-price" id={`price-${p.id}`}>
                  {p.price === 0 ? t("free") : t("price_each", { price: money(lang, { amount: p.price, currency }) })}
                  {" · "}
                  {t("vat_incl", { rate: percent(lang, rate) })}
                </span>
                {p.admits === 0 ? (
                  <span class="hint" id={`addon-${p.id}`}>
                    {t("addon_needs_admission")}
                  </span>
                ) : null}
              </div>
              <div class="stepper">
                <button type="button" aria-label={t("less", { name })} onClick={() => set(p.id, n - 1)} disabled={n === 0}>
                  −
                </button>
                <input
                  id={`q-${p.id}`}
                  type="number"
                  inputMode="numeric"
                  min={0}
                  max={MAX_ADMISSIONS}
                  value={n}
                  aria-describedby={`price-${p.id}${p.admits === 0 ? ` addon-${p.id}` : ""}`}
                  onInput={(e) => set(p.id, Number((e.target as HTMLInputElement).value))}
                />
                <button type="button" aria-label={t("more", { name })} onClick={() => set(p.id, n + 1)} disabled={n >= MAX_ADMISSIONS}>
                  +
                </button>
              </div>
              {p.requires_membership && n > 0 ? (
                <div class="members">
                  {Array.from({ length: n }, (_, i) => {
                    const id = `m-${p.id}-${i}`;
                    const err = errors[id];
                    return (
                      <div class="field" key={id}>
                        <label for={id}>{t("membership_number", { n: i + 1 })}</label>
                        <input
                          id={id}
                          type="text"
                          autoComplete="off"
                          maxLength={20}
                          value={members[p.id]?.[i] ?? ""}
                          aria-invalid={err ? true : undefined}
                          aria-describedby={`${id}-hint${err ? ` ${id}-error` : ""}`}
                          onInput={(e) => {
                            const list = [...(members[p.id] ?? [])];
                            list[i] = (e.target as HTMLInputElement).value;
                            setMembers({ ...members, [p.id]: list });
                          }}
                        />
                        <span class="hint" id={`${id}-hint`}>
                          {t("membership_hint")}
                        </span>
                        {err ? (
                          <span class="field-error" id={`${id}-error`}>
                            {err}
                          </span>
                        ) : null}
                      </div>
                    );
                  })}
                </div>
              ) : null}
            </div>
          );
        })}
      </fieldset>
      <div class="total" id="cart-total" tabIndex={-1} aria-describedby={errors.cart ? "cart-error" : undefined}>
        <span>
          {t("total")} <strong data-total={sum.gross}>{money(lang, { amount: sum.gross, currency })}</strong>
        </span>
        <span class="hint">
          {t("total_vat", { amount: money(lang, { amount: sum.tax, currency }) })} · {t("admissions_n", { n: sum.admissions })}
        </span>
      </div>
      {/* Only a warning: the server's answer decides, and a refusal comes
          with the nearest times that can take the party. */}
      {available !== null && sum.admissions > available && !errors.cart ? (
        <p class="warning">{t("not_enough", { n: available })}</p>
      ) : null}
      {errors.cart ? (
        <p class="error" id="cart-error" role="alert">
          {errors.cart}
        </p>
      ) : null}
      <button type="submit" class="primary" disabled={busy} id="continue">
        {t("continue")}
      </button>
    </form>
  );
}
