/**
 * When the client acts on its own: the reconnect backoff window and the in-band token refresh
 * delay. Pure functions of their arguments, kept out of the state machine so the arithmetic
 * reads (and can be checked) on its own.
 */
import { CloseCode } from "./protocol.js";
import type { BackoffOptions } from "./types.js";

/**
 * Upper bound of the retry delay before reconnect attempt `attempt` (0-based): doubling from
 * `baseMs` up to `maxMs`, at least `rateLimitedMinMs` after a 4029 close. The caller draws the
 * actual delay uniformly in [0, window) (full jitter).
 */
export function backoffWindowMs(attempt: number, code: number, b: BackoffOptions): number {
  const base = b.baseMs ?? 500;
  const max = b.maxMs ?? 30000;
  let window = Math.min(max, base * 2 ** Math.min(attempt, 30));
  if (code === CloseCode.RateLimited) window = Math.max(window, b.rateLimitedMinMs ?? 5000);
  return window;
}

/** Reads `iat`/`exp` of a JWT without verifying it (used only to time the refresh). */
export function tokenLifetimeMs(token: string): number | undefined {
  try {
    const part = token.split(".")[1];
    if (!part) return undefined;
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const c = JSON.parse(json) as { iat?: number; exp?: number };
    if (typeof c.iat === "number" && typeof c.exp === "number" && c.exp > c.iat) return (c.exp - c.iat) * 1000;
  } catch {
    /* not a JWT we can read: fine */
  }
  return undefined;
}

/**
 * Delay until the token is refreshed in-band: `ratio` of its remaining lifetime (at least
 * 250 ms, at most what setTimeout accepts), or undefined when it has already expired.
 * `expiresAt` is the relay's `expires_at` (seconds), `now` the local clock (ms).
 */
export function refreshDelayMs(expiresAt: number, token: string, ratio: number, now: number): number | undefined {
  let remaining = expiresAt * 1000 - now;
  // Guard against a skewed local clock: never wait longer than the token's own lifetime.
  const lifetime = tokenLifetimeMs(token);
  if (lifetime !== undefined && (remaining <= 0 || remaining > lifetime)) remaining = lifetime;
  if (remaining <= 0) return undefined;
  const delay = Math.max(250, Math.floor(remaining * ratio));
  return Math.min(delay, 2 ** 31 - 1);
}
