/**
 * The client's view of the network, kept apart from the session logic: the minimal WebSocket
 * interface it needs (so Node can pass the `ws` package), normalisation of the relay URL,
 * closing a socket without throwing, and the browser's "online" signal.
 */

/** The subset of the WHATWG WebSocket interface that the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => unknown) | null;
  onmessage: ((ev: { data: unknown }) => unknown) | null;
  onclose: ((ev: { code: number; reason: string; wasClean?: boolean }) => unknown) | null;
  onerror: ((ev: any) => unknown) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** An http(s) base URL becomes the ws(s) endpoint (`/v1/ws` when no path is given); a ws(s) URL is kept as is. */
export function toWsUrl(url: string): string {
  if (/^https?:\/\//i.test(url)) {
    const u = new URL(url);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    if (u.pathname === "/" || u.pathname === "") u.pathname = "/v1/ws";
    return u.toString();
  }
  return url;
}

/** Closes a socket that is connecting or open; never throws. */
export function safeClose(ws: WebSocketLike, code: number, reason: string): void {
  try {
    if (ws.readyState === 0 || ws.readyState === 1) ws.close(code, reason);
  } catch {
    /* ignore */
  }
}

/**
 * Calls `onOnline` on the browser's `online` event. Returns a function that stops listening,
 * or null where there is no such event (outside a browser window).
 */
export function watchOnline(onOnline: () => void): (() => void) | null {
  const g = globalThis as {
    addEventListener?: (t: string, f: () => void) => void;
    removeEventListener?: (t: string, f: () => void) => void;
  };
  if (typeof g.addEventListener !== "function" || typeof (globalThis as any).window === "undefined") return null;
  g.addEventListener("online", onOnline);
  return () => {
    if (typeof g.removeEventListener === "function") g.removeEventListener("online", onOnline);
  };
}
