// What the shop keeps between its pages on this device (sessionStorage: gone
// with the tab): the hold being paid for and the tickets last chosen, so a
// visitor sent to another entry time keeps their choice.
import type { CartLine, Hold } from "./api";

function get<T>(key: string): T | null {
  try {
    const v = sessionStorage.getItem(key);
    return v ? (JSON.parse(v) as T) : null;
  } catch {
    return null;
  }
}

function put(key: string, value: unknown) {
  try {
    if (value === null) sessionStorage.removeItem(key);
    else sessionStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage full or disabled: the pages still work, they just forget.
  }
}

export const saveHold = (hold: Hold) => put(`hold:${hold.hold_id}`, hold);
export const loadHold = (holdId: string) => get<Hold>(`hold:${holdId}`);
export const dropHold = (holdId: string) => put(`hold:${holdId}`, null);

export const saveDraft = (items: CartLine[]) => put("draft", items);
export const loadDraft = () => get<CartLine[]>("draft");

/** The hold a checkout pays for, so its return page can offer to start again. */
export const saveCheckoutSlot = (checkoutId: string, slotId: string) => put(`checkout:${checkoutId}`, slotId);
export const loadCheckoutSlot = (checkoutId: string) => get<string>(`checkout:${checkoutId}`);
