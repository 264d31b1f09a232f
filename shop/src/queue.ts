// Which days go through a waiting room, and the visitor's place and pass in
// each, kept in localStorage: a reload or another tab of this browser finds
// the same place (the server binds it to this browser's session cookie).
import type { PlaceStatus, RoomInfo, ShopConfig } from "./api";

export interface Kept {
  place: string;
  pass: string | null;
  /** ms since the epoch, server clock. */
  passUntil: number | null;
}

const key = (room: string) => `tessera.queue.${room}`;

export function roomFor(config: ShopConfig, date: string): RoomInfo | undefined {
  return config.waiting_rooms?.find((r) => r.from <= date && date <= r.until);
}

export function kept(room: string): Kept | null {
  try {
    const v = localStorage.getItem(key(room));
    return v ? (JSON.parse(v) as Kept) : null;
  } catch {
    return null;
  }
}

export function keep(room: string, s: PlaceStatus) {
  const value: Kept = {
    place: s.place,
    pass: s.pass,
    passUntil: s.pass_until ? Date.parse(s.pass_until) : null,
  };
  try {
    localStorage.setItem(key(room), JSON.stringify(value));
  } catch {
    // Storage off: the place lives as long as the page.
  }
}

export function forget(room: string) {
  try {
    localStorage.removeItem(key(room));
  } catch {
    // Nothing kept.
  }
}

/** The pass for a slot's day, if its room gave one still in its window. */
export function passFor(config: ShopConfig, slotId: string, now: number): string | undefined {
  const room = roomFor(config, slotId.slice(0, 10));
  if (!room) return undefined;
  const k = kept(room.id);
  if (!k?.pass || k.passUntil === null || k.passUntil <= now) return undefined;
  return k.pass;
}

/** Where a visitor must go first to book `date`, or null. */
export function queueGate(config: ShopConfig, date: string, now: number): string | null {
  const room = roomFor(config, date);
  if (!room) return null;
  if (passFor(config, `${date}T00:00`, now)) return null;
  return `/queue/${encodeURIComponent(room.id)}?date=${encodeURIComponent(date)}`;
}
