import { describe, expect, it } from "vitest";
import {
  addOne,
  cartAdmissions,
  cartLines,
  cartTotal,
  emptyCart,
  itemCount,
  MAX_QUANTITY,
  missingMembershipNumbers,
  pricedEntries,
  quantityOf,
  quickTenders,
  removeOne,
  setQuantity,
  tender,
  type CatalogueItem,
} from "./cart";

const catalogue: CatalogueItem[] = [
  { product_id: "adult", name: "Adult", price: 1500, admits: 1, requires_membership: false },
  { product_id: "child", name: "Child under 18", price: 0, admits: 1, requires_membership: false },
  { product_id: "family", name: "Family", price: 4000, admits: 4, requires_membership: false },
  { product_id: "member", name: "Member", price: 0, admits: 1, requires_membership: true },
  { product_id: "audio-guide", name: "Audio guide", price: 500, admits: 0, requires_membership: false },
];

describe("cart", () => {
  it("2 adults + 1 child: 30.00, three places", () => {
    let cart = addOne(emptyCart, "adult");
    cart = addOne(cart, "child");
    cart = addOne(cart, "adult");
    expect(quantityOf(cart, "adult")).toBe(2);
    expect(cartTotal(cart, catalogue)).toBe(3000);
    expect(cartAdmissions(cart, catalogue)).toBe(3);
    expect(itemCount(cart)).toBe(3);
    expect(cartLines(cart)).toEqual([
      { product_id: "adult", quantity: 2 },
      { product_id: "child", quantity: 1 },
    ]);
  });

  it("keeps the order lines were first added", () => {
    const cart = addOne(addOne(addOne(emptyCart, "family"), "adult"), "family");
    expect(pricedEntries(cart, catalogue).map((l) => [l.productId, l.quantity, l.lineTotal])).toEqual([
      ["family", 2, 8000],
      ["adult", 1, 1500],
    ]);
    expect(cartAdmissions(cart, catalogue)).toBe(9);
  });

  it("an audio guide costs but takes no place", () => {
    const cart = addOne(addOne(emptyCart, "adult"), "audio-guide");
    expect(cartTotal(cart, catalogue)).toBe(2000);
    expect(cartAdmissions(cart, catalogue)).toBe(1);
  });

  it("removes down to nothing", () => {
    let cart = addOne(addOne(emptyCart, "adult"), "adult");
    cart = removeOne(cart, "adult");
    expect(quantityOf(cart, "adult")).toBe(1);
    cart = removeOne(cart, "adult");
    expect(cart).toEqual([]);
    expect(removeOne(cart, "adult")).toEqual([]);
  });

  it("clamps typed quantities", () => {
    expect(quantityOf(setQuantity(emptyCart, "adult", 3), "adult")).toBe(3);
    expect(quantityOf(setQuantity(emptyCart, "adult", 1000), "adult")).toBe(MAX_QUANTITY);
    expect(setQuantity(addOne(emptyCart, "adult"), "adult", -2)).toEqual([]);
    expect(setQuantity(addOne(emptyCart, "adult"), "adult", Number.NaN)).toEqual([]);
    let full = setQuantity(emptyCart, "adult", MAX_QUANTITY);
    full = addOne(full, "adult");
    expect(quantityOf(full, "adult")).toBe(MAX_QUANTITY);
  });

  it("member tickets carry one membership number each", () => {
    let cart = addOne(emptyCart, "member", "M-1");
    cart = addOne(cart, "member", "M-2");
    expect(cartLines(cart)).toEqual([{ product_id: "member", quantity: 2, membership_numbers: ["M-1", "M-2"] }]);
    expect(missingMembershipNumbers(cart, catalogue)).toBe(0);
    cart = removeOne(cart, "member");
    expect(cartLines(cart)).toEqual([{ product_id: "member", quantity: 1, membership_numbers: ["M-1"] }]);
    expect(missingMembershipNumbers(setQuantity(cart, "member", 3), catalogue)).toBe(2);
  });

  it("ignores products the catalogue no longer has", () => {
    const cart = addOne(addOne(emptyCart, "gone"), "adult");
    expect(cartTotal(cart, catalogue)).toBe(1500);
  });

  it("does not change the cart it was given", () => {
    const cart = addOne(emptyCart, "adult");
    addOne(cart, "adult");
    removeOne(cart, "adult");
    expect(quantityOf(cart, "adult")).toBe(1);
  });
});

describe("tender", () => {
  it("a 50 note for 30.00: 20.00 change", () => {
    expect(tender(3000, 5000)).toEqual({ kind: "ok", tendered: 5000, change: 2000 });
  });
  it("exact money: no change", () => {
    expect(tender(3000, 3000)).toEqual({ kind: "ok", tendered: 3000, change: 0 });
  });
  it("not enough: says how much is missing", () => {
    expect(tender(3000, 2000)).toEqual({ kind: "short", missing: 1000 });
  });
  it("an unreadable amount is invalid", () => {
    expect(tender(3000, null)).toEqual({ kind: "invalid" });
  });
  it("cents are exact", () => {
    expect(tender(1055, 2000)).toEqual({ kind: "ok", tendered: 2000, change: 945 });
  });
});

describe("quickTenders", () => {
  it("offers exact, then the notes a visitor hands over", () => {
    expect(quickTenders(3000)).toEqual([3000, 4000, 5000, 10000]);
    expect(quickTenders(1500)).toEqual([1500, 2000, 5000, 10000]);
    expect(quickTenders(4370)).toEqual([4370, 4500, 5000, 6000]);
  });
  it("a free cart needs no cash", () => {
    expect(quickTenders(0)).toEqual([0]);
  });
});
