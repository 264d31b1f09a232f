// Selling: pick the entry slot, tap products, take cash or card, complete.
// Everything a busy Saturday needs is on one screen and reachable by keys:
// digits add products, Enter in the cash field completes, F8 switches to
// card, Esc empties the cart.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { PrintOutcome, ProductView, Quote, SaleDone, SlotStatus, Status } from "../api";
import { EngineError } from "../api";
import { useBackend } from "../backend-context";
import { ErrorBox, Money } from "../components/common";
import {
  addOne,
  cartLines,
  cartTotal,
  emptyCart,
  itemCount,
  missingMembershipNumbers,
  pricedEntries,
  quantityOf,
  quickTenders,
  removeOne,
  tender,
  type Cart,
} from "../cart";
import { formatAge } from "../format";
import { isTyping, useAction, useEngineRefresh, useFirstFocus, useKeys } from "../hooks";
import { formatMoney, parseMoney } from "../money";
import { printOutcomeText } from "./setup";

/** The slot a cashier most likely sells next: the first still open. */
export function defaultSlot(slots: SlotStatus[]): string | null {
  return slots.find((s) => !s.closed)?.slot_id ?? null;
}

export function SellScreen({ status, onSold }: { status: Status | null; onSold: () => void }) {
  const backend = useBackend();
  const [products, setProducts] = useState<ProductView[]>([]);
  const [slots, setSlots] = useState<SlotStatus[]>([]);
  const [slotId, setSlotId] = useState<string | null>(null);
  const [cart, setCart] = useState<Cart>(emptyCart);
  const [quote, setQuote] = useState<Quote | null>(null);
  const [quoteError, setQuoteError] = useState<string | null>(null);
  const [method, setMethod] = useState<"cash" | "card">("cash");
  const [tenderedText, setTenderedText] = useState("");
  const [memberFor, setMemberFor] = useState<string | null>(null);
  const [lastSale, setLastSale] = useState<SaleDone | null>(null);
  const { busy, error, setError, run } = useAction();
  const tenderedRef = useRef<HTMLInputElement>(null);
  const completeRef = useRef<HTMLButtonElement>(null);
  const productsRef = useRef<HTMLDivElement>(null);
  const currency = quote?.currency ?? "EUR";

  useEngineRefresh(["catalogue"], async () => {
    await backend.products().then(setProducts, (e) => setError(EngineError.from(e).message));
  });

  // Places left change with every sale here, and with every sale elsewhere
  // the moment the engine hears of it (pushed by the server).
  useEngineRefresh(["slots"], async () => {
    try {
      const s = await backend.slotsToday();
      setSlots(s);
      setSlotId((cur) => (cur && s.some((x) => x.slot_id === cur && !x.closed) ? cur : defaultSlot(s)));
    } catch (e) {
      setError(EngineError.from(e).message);
    }
  });

  // The engine prices the cart (VAT per line, its rounding rule). The newest
  // request wins so a fast double tap never shows a stale total.
  const quoteSeq = useRef(0);
  useEffect(() => {
    const seq = ++quoteSeq.current;
    if (!slotId || cart.length === 0 || missingMembershipNumbers(cart, products) > 0) {
      setQuote(null);
      setQuoteError(null);
      return;
    }
    backend.quote(slotId, cartLines(cart)).then(
      (q) => {
        if (seq !== quoteSeq.current) return;
        setQuote(q);
        setQuoteError(null);
      },
      (e) => {
        if (seq !== quoteSeq.current) return;
        setQuote(null);
        setQuoteError(EngineError.from(e).message);
      },
    );
  }, [backend, slotId, cart, products]);

  const total = quote?.total ?? cartTotal(cart, products);
  const tendered = tenderedText.trim() === "" ? null : parseMoney(tenderedText);
  const cash = tenderedText.trim() === "" ? null : tender(total, tendered);
  const slot = slots.find((s) => s.slot_id === slotId) ?? null;

  const add = (p: ProductView) => {
    if (p.requires_membership) {
      setMemberFor(p.product_id);
      return;
    }
    setCart((c) => addOne(c, p.product_id));
  };

  const clear = () => {
    setCart(emptyCart);
    setTenderedText("");
    setMethod("cash");
    setMemberFor(null);
    setError(null);
  };

  const complete = async () => {
    // Read the cash field itself: Enter can come before the re-render that
    // would have updated `tenderedText`.
    const typed = tenderedRef.current?.value ?? tenderedText;
    if (!slotId) return setError("No entry slot is open for sale today.");
    if (cart.length === 0) return setError("Add tickets to the cart first.");
    if (missingMembershipNumbers(cart, products) > 0) return setError("Each member ticket needs a membership number.");
    let payment: { method: "cash"; tendered: number } | { method: "card" };
    if (method === "card") {
      payment = { method: "card" };
    } else {
      const handed = typed.trim() === "" ? (total === 0 ? 0 : null) : parseMoney(typed);
      if (handed === null) {
        tenderedRef.current?.focus();
        return setError(typed.trim() === "" ? "Type the cash handed over (or choose card)." : `"${typed}" is not an amount.`);
      }
      if (handed < total) return setError(`${formatMoney(total - handed, currency)} more needed.`);
      payment = { method: "cash", tendered: handed };
    }
    const done = await run(() => backend.sell({ slot_id: slotId, items: cartLines(cart), payment }));
    if (!done) return;
    setLastSale(done);
    setCart(emptyCart);
    setTenderedText("");
    setMethod("cash");
    // Out of the cash field, so the next visitor's number keys add tickets.
    productsRef.current?.querySelector("button")?.focus();
    onSold();
    backend.slotsToday().then(setSlots, () => undefined);
  };

  useKeys((e) => {
    if (e.key === "Enter" && e.ctrlKey) {
      e.preventDefault();
      void complete();
      return;
    }
    if (e.key === "F8") {
      e.preventDefault();
      setMethod("card");
      // Enter now completes: the card terminal has the amount.
      setTimeout(() => completeRef.current?.focus(), 0);
      return;
    }
    if (e.key === "Enter" && (e.target === document.body || e.target === null)) {
      e.preventDefault();
      void complete();
      return;
    }
    if (e.key === "F7") {
      e.preventDefault();
      setMethod("cash");
      tenderedRef.current?.focus();
      return;
    }
    if (e.key === "Escape") {
      e.preventDefault();
      if (memberFor) setMemberFor(null);
      else clear();
      return;
    }
    if (isTyping(e.target) || e.ctrlKey || e.altKey || e.metaKey) return;
    const n = Number.parseInt(e.key, 10);
    if (n >= 1 && n <= products.length) {
      e.preventDefault();
      add(products[n - 1]);
    }
  });

  return (
    <div class="sell" data-testid="sell-screen">
      <section class="slots" aria-label="Entry time">
        <h2>Entry time</h2>
        <SlotList slots={slots} selected={slotId} onSelect={setSlotId} now={status?.now ?? null} />
      </section>

      <section class="products" aria-label="Products">
        <h2>Tickets</h2>
        <div class="product-grid" ref={productsRef}>
          {products.map((p, i) => (
            <button
              type="button"
              class="product"
              data-testid={`product-${p.product_id}`}
              onClick={() => add(p)}
              aria-keyshortcuts={i < 9 ? String(i + 1) : undefined}
            >
              {i < 9 ? <kbd class="corner">{i + 1}</kbd> : null}
              <span class="product-name">{p.name}</span>
              <span class="product-price">{p.price === 0 ? "free" : formatMoney(p.price, currency)}</span>
              {quantityOf(cart, p.product_id) > 0 ? (
                <span class="badge" data-testid={`qty-${p.product_id}`}>
                  {quantityOf(cart, p.product_id)}
                </span>
              ) : null}
            </button>
          ))}
        </div>
        <p class="muted small keys-hint">
          Keys: <kbd>1</kbd>–<kbd>9</kbd> add a ticket · <kbd>F7</kbd> cash · <kbd>F8</kbd> card · <kbd>Enter</kbd> complete ·{" "}
          <kbd>Esc</kbd> clear · <kbd>Ctrl</kbd>+<kbd>Enter</kbd> complete from anywhere
        </p>
        {memberFor ? (
          <MembershipPrompt
            onAdd={(number) => {
              setCart((c) => addOne(c, memberFor, number));
              setMemberFor(null);
            }}
            onCancel={() => setMemberFor(null)}
          />
        ) : null}
        {lastSale ? <LastSale done={lastSale} /> : null}
      </section>

      <section class="cart" aria-label="Cart">
        <h2>
          Cart {slot ? <span class="muted">· {slot.label}</span> : null}
        </h2>
        <CartView cart={cart} products={products} quote={quote} currency={currency} onCart={setCart} />
        {quoteError ? <ErrorBox message={quoteError} testid="quote-error" /> : null}
        <div class="total-row">
          <span>Total</span>
          <Money cents={total} currency={currency} testid="cart-total" />
        </div>
        {quote && quote.vat.length > 0 ? (
          <div class="vat-lines" data-testid="vat-lines">
            {quote.vat.map((v) => (
              <div class="vat-line">
                <span>incl. VAT {v.label}</span>
                <span>{formatMoney(v.amounts.tax, currency)}</span>
              </div>
            ))}
          </div>
        ) : null}

        <form
          class="payment"
          onSubmit={(e) => {
            e.preventDefault();
            void complete();
          }}
        >
          <div class="row method" role="radiogroup" aria-label="Payment">
            <button
              type="button"
              role="radio"
              aria-checked={method === "cash"}
              class={method === "cash" ? "active" : ""}
              data-testid="pay-cash"
              onClick={() => {
                setMethod("cash");
                tenderedRef.current?.focus();
              }}
            >
              Cash <kbd>F7</kbd>
            </button>
            <button
              type="button"
              role="radio"
              aria-checked={method === "card"}
              class={method === "card" ? "active" : ""}
              data-testid="pay-card"
              onClick={() => {
                setMethod("card");
                completeRef.current?.focus();
              }}
            >
              Card <kbd>F8</kbd>
            </button>
          </div>
          {method === "cash" ? (
            <>
              <label class="field">
                <span class="field-label">Cash handed over</span>
                <input
                  ref={tenderedRef}
                  inputMode="decimal"
                  class="money-input"
                  data-testid="tendered"
                  autocomplete="off"
                  value={tenderedText}
                  onInput={(e) => setTenderedText(e.currentTarget.value)}
                />
              </label>
              <div class="row quick">
                {itemCount(cart) > 0
                  ? quickTenders(total).map((c) => (
                      <button type="button" class="small" data-testid={`quick-${c}`} onClick={() => setTenderedText((c / 100).toFixed(2))}>
                        {formatMoney(c, currency)}
                      </button>
                    ))
                  : null}
              </div>
              <ChangeDue cash={cash} currency={currency} />
            </>
          ) : (
            <p class="muted">Take the card payment on the terminal, then complete.</p>
          )}
          <ErrorBox message={error} />
          <div class="row">
            <button
              type="submit"
              ref={completeRef}
              class="primary big grow"
              data-testid="complete-sale"
              disabled={busy || cart.length === 0}
            >
              {busy ? "Completing…" : "Complete sale"} <kbd>Enter</kbd>
            </button>
            <button type="button" class="big" data-testid="clear-cart" onClick={clear} disabled={busy}>
              Clear <kbd>Esc</kbd>
            </button>
          </div>
        </form>
      </section>
    </div>
  );
}

function SlotList(props: { slots: SlotStatus[]; selected: string | null; onSelect: (id: string) => void; now: string | null }) {
  if (props.slots.length === 0) return <p class="muted">No entry slots today (the museum may be closed).</p>;
  // Past entry windows only take room: late in the day they would push the
  // slots still on sale off the screen.
  const open = props.slots.filter((s) => !s.closed);
  const closedCount = props.slots.length - open.length;
  const asOf = props.slots.find((s) => s.as_of)?.as_of ?? null;
  return (
    <>
      {closedCount > 0 ? (
        <p class="muted small" data-testid="slots-closed">
          {closedCount} earlier {closedCount === 1 ? "slot" : "slots"} closed
        </p>
      ) : null}
      {open.length === 0 ? <p class="muted">All of today's entry windows are over.</p> : null}
      <div class="slot-list" role="radiogroup" aria-label="Entry time">
        {open.map((s) => (
          <button
            type="button"
            role="radio"
            aria-checked={props.selected === s.slot_id}
            class={`slot ${props.selected === s.slot_id ? "active" : ""} ${s.remaining === 0 ? "full" : ""}`}
            data-testid="slot"
            data-slot-id={s.slot_id}
            onClick={() => props.onSelect(s.slot_id)}
          >
            <span class="slot-label">{s.label}</span>
            <span class="slot-remaining" data-testid="slot-remaining">
              {s.remaining === 0 ? "sold out" : `${s.remaining} left`}
            </span>
            <span class="slot-lease" data-testid="slot-lease">
              this till: {s.lease_left}
            </span>
          </button>
        ))}
      </div>
      <p class="muted small" data-testid="slots-as-of">
        Places as of {props.now ? formatAge(asOf, props.now) : "—"}
      </p>
    </>
  );
}

function CartView(props: {
  cart: Cart;
  products: ProductView[];
  quote: Quote | null;
  currency: string;
  onCart: (f: (c: Cart) => Cart) => void;
}) {
  const lines = pricedEntries(props.cart, props.products);
  if (lines.length === 0) return <p class="muted cart-empty">Empty. Tap a ticket or press its number.</p>;
  return (
    <ul class="cart-lines">
      {lines.map((l) => {
        const product = props.products.find((p) => p.product_id === l.productId);
        const quoted = props.quote?.lines.find((q) => q.product_id === l.productId);
        return (
          <li class="cart-line" data-testid={`cart-line-${l.productId}`}>
            <button
              type="button"
              class="qty-btn"
              aria-label={`One fewer ${l.name}`}
              onClick={() => props.onCart((c) => removeOne(c, l.productId))}
            >
              −
            </button>
            <span class="qty" data-testid={`cart-qty-${l.productId}`}>
              {l.quantity}
            </span>
            <button
              type="button"
              class="qty-btn"
              aria-label={`One more ${l.name}`}
              disabled={product?.requires_membership}
              onClick={() => props.onCart((c) => addOne(c, l.productId))}
            >
              +
            </button>
            <span class="grow">× {l.name}</span>
            <span class="line-total">{formatMoney(quoted?.amounts.gross ?? l.lineTotal, props.currency)}</span>
          </li>
        );
      })}
    </ul>
  );
}

function ChangeDue({ cash, currency }: { cash: ReturnType<typeof tender> | null; currency: string }) {
  if (!cash) return <div class="change muted">Change due: —</div>;
  switch (cash.kind) {
    case "ok":
      return (
        <div class="change ok">
          Change due <Money cents={cash.change} currency={currency} testid="change-due" />
        </div>
      );
    case "short":
      return (
        <div class="change short" data-testid="change-short">
          {formatMoney(cash.missing, currency)} more needed
        </div>
      );
    default:
      return <div class="change short">Not an amount</div>;
  }
}

function MembershipPrompt({ onAdd, onCancel }: { onAdd: (n: string) => void; onCancel: () => void }) {
  const [value, setValue] = useState("");
  const first = useFirstFocus<HTMLInputElement>();
  return (
    <form
      class="member-prompt"
      onSubmit={(e) => {
        e.preventDefault();
        if (value.trim()) onAdd(value.trim());
      }}
    >
      <label class="field">
        <span class="field-label">Membership number (scan the card or type it)</span>
        <input data-testid="membership-number" ref={first} autocomplete="off" value={value} onInput={(e) => setValue(e.currentTarget.value)} />
      </label>
      <div class="row">
        <button type="submit" class="primary" disabled={!value.trim()}>
          Add member ticket
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function printLine(p: PrintOutcome): { text: string; ok: boolean } {
  return { text: p.status === "printed" ? "Receipt printed." : printOutcomeText(p), ok: p.status !== "failed" };
}

function LastSale({ done }: { done: SaleDone }) {
  const backend = useBackend();
  const [printed, setPrinted] = useState<PrintOutcome>(done.printed);
  const { busy, error, run } = useAction();
  useEffect(() => setPrinted(done.printed), [done]);
  const sale = done.sale;
  const line = useMemo(() => printLine(printed), [printed]);
  return (
    <div class="last-sale" data-testid="last-sale" data-sale-id={sale.sale_id} data-seq={sale.terminal_seq}>
      <div class="row">
        <strong>
          Sale #{sale.terminal_seq} · {sale.slot_label} · {sale.admissions} {sale.admissions === 1 ? "place" : "places"}
        </strong>
        <span class="grow" />
        <Money cents={sale.total} currency={sale.currency} testid="last-sale-total" />
        <span class="muted">{sale.payment_method}</span>
      </div>
      {sale.change !== null ? (
        <div class="last-change">
          Give back <Money cents={sale.change} currency={sale.currency} testid="last-sale-change" />
        </div>
      ) : null}
      <div class={`print-status ${line.ok ? "" : "failed"}`} data-testid="print-status" data-status={printed.status}>
        {line.text}
        {printed.status !== "no_printer" ? (
          <button
            type="button"
            class="small"
            data-testid="last-sale-reprint"
            disabled={busy}
            onClick={async () => {
              const p = await run(() => backend.reprint(sale.sale_id));
              if (p) setPrinted(p);
            }}
          >
            Reprint
          </button>
        ) : null}
      </div>
      <ErrorBox message={error} />
      <details>
        <summary>
          {sale.tickets.length} ticket {sale.tickets.length === 1 ? "code" : "codes"}
        </summary>
        <ul class="codes">
          {sale.tickets.map((t) => (
            <li data-testid="ticket-code" data-code={t.code}>
              {t.product_name}: <code>{t.code}</code>
            </li>
          ))}
        </ul>
      </details>
    </div>
  );
}
