// The cart the cashier builds, and the cash arithmetic shown next to it.
// Pure functions over plain data so the screen stays a thin view and every
// number it shows is unit-tested. The engine prices the sale again when it is
// committed (its quote is the truth for VAT); these totals are what the
// cashier sees while tapping, and they use the same integer cents.

export interface CatalogueItem {
  product_id: string;
  name: string;
  price: number;
  admits: number;
  requires_membership: boolean;
}

export interface CartEntry {
  productId: string;
  quantity: number;
  /** One per ticket for member products, in the order they were added. */
  membershipNumbers: string[];
}

export type Cart = readonly CartEntry[];

/** The most tickets of one product in one sale: more is a typing slip. */
export const MAX_QUANTITY = 99;

export const emptyCart: Cart = [];

export function quantityOf(cart: Cart, productId: string): number {
  return cart.find((e) => e.productId === productId)?.quantity ?? 0;
}

/** One more of a product. Member tickets carry their membership number. */
export function addOne(cart: Cart, productId: string, membershipNumber?: string): Cart {
  const existing = cart.find((e) => e.productId === productId);
  const numbers = membershipNumber ? [membershipNumber] : [];
  if (!existing) return [...cart, { productId, quantity: 1, membershipNumbers: numbers }];
  if (existing.quantity >= MAX_QUANTITY) return cart;
  return cart.map((e) =>
    e === existing
      ? { ...e, quantity: e.quantity + 1, membershipNumbers: [...e.membershipNumbers, ...numbers] }
      : e,
  );
}

/** One fewer; the line disappears at zero. The last membership number goes
 * with the last ticket. */
export function removeOne(cart: Cart, productId: string): Cart {
  return cart.flatMap((e) => {
    if (e.productId !== productId) return [e];
    if (e.quantity <= 1) return [];
    return [{ ...e, quantity: e.quantity - 1, membershipNumbers: e.membershipNumbers.slice(0, e.quantity - 1) }];
  });
}

/** Sets a quantity typed as a number; out-of-range values are clamped. */
export function setQuantity(cart: Cart, productId: string, quantity: number): Cart {
  const q = Number.isFinite(quantity) ? Math.max(0, Math.min(MAX_QUANTITY, Math.trunc(quantity))) : 0;
  if (q === 0) return cart.filter((e) => e.productId !== productId);
  const existing = cart.find((e) => e.productId === productId);
  if (!existing) return [...cart, { productId, quantity: q, membershipNumbers: [] }];
  return cart.map((e) =>
    e === existing ? { ...e, quantity: q, membershipNumbers: e.membershipNumbers.slice(0, q) } : e,
  );
}

/** The cart as the engine's `CartLine`s. */
export function cartLines(cart: Cart): { product_id: string; quantity: number; membership_numbers?: string[] }[] {
  return cart.map((e) =>
    e.membershipNumbers.length > 0
      ? { product_id: e.productId, quantity: e.quantity, membership_numbers: [...e.membershipNumbers] }
      : { product_id: e.productId, quantity: e.quantity },
  );
}

export interface PricedEntry {
  productId: string;
  name: string;
  quantity: number;
  unitPrice: number;
  lineTotal: number;
  admits: number;
}

/** Lines with prices from the catalogue; products no longer in the
 * catalogue are dropped (the engine would refuse them anyway). */
export function pricedEntries(cart: Cart, catalogue: readonly CatalogueItem[]): PricedEntry[] {
  return cart.flatMap((e) => {
    const p = catalogue.find((c) => c.product_id === e.productId);
    if (!p) return [];
    return [
      {
        productId: e.productId,
        name: p.name,
        quantity: e.quantity,
        unitPrice: p.price,
        lineTotal: p.price * e.quantity,
        admits: p.admits * e.quantity,
      },
    ];
  });
}

export function cartTotal(cart: Cart, catalogue: readonly CatalogueItem[]): number {
  return pricedEntries(cart, catalogue).reduce((sum, l) => sum + l.lineTotal, 0);
}

/** Places the cart takes in the slot (an audio guide takes none). */
export function cartAdmissions(cart: Cart, catalogue: readonly CatalogueItem[]): number {
  return pricedEntries(cart, catalogue).reduce((sum, l) => sum + l.admits, 0);
}

export function itemCount(cart: Cart): number {
  return cart.reduce((sum, e) => sum + e.quantity, 0);
}

/** A member line still needs membership numbers typed in. */
export function missingMembershipNumbers(cart: Cart, catalogue: readonly CatalogueItem[]): number {
  return cart.reduce((missing, e) => {
    const p = catalogue.find((c) => c.product_id === e.productId);
    return p?.requires_membership ? missing + Math.max(0, e.quantity - e.membershipNumbers.length) : missing;
  }, 0);
}

export type Tender =
  | { kind: "empty" }
  | { kind: "invalid" }
  | { kind: "short"; missing: number }
  | { kind: "ok"; tendered: number; change: number };

/** Cash handed over against the total: what the change-due box shows. */
export function tender(total: number, tendered: number | null): Tender {
  if (tendered === null) return { kind: "invalid" };
  if (tendered < total) return { kind: "short", missing: total - tendered };
  return { kind: "ok", tendered, change: tendered - total };
}

/** Euro notes and the coins people hand over in practice, in cents. */
const NOTES = [500, 1000, 2000, 5000, 10000, 20000];

/**
 * Quick-tender buttons: the exact amount, then the next few notes (or note
 * combinations rounded to the next note) a visitor is likely to hand over.
 */
export function quickTenders(total: number, count = 4): number[] {
  if (total <= 0) return [0];
  const out = [total];
  for (const note of NOTES) {
    const rounded = Math.ceil(total / note) * note;
    if (!out.includes(rounded)) out.push(rounded);
    if (out.length >= count) break;
  }
  return out.sort((a, b) => a - b);
}
