/**
 * Browser-side (subscriber) client of the sealcast relay. No runtime dependencies: it uses
 * the native `WebSocket` and WebCrypto. In Node, pass a WebSocket constructor (e.g. from the
 * `ws` package) through {@link SealcastOptions.WebSocket}.
 */
import { decryptText, importKey, type KeyInput } from "./crypto.js";
import {
  closeCodeInfo,
  type ClientFrame,
  type ServerFrame,
  type StreamPosition,
  type SubscribedFrame,
} from "./protocol.js";

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

export type ConnectionState =
  | { status: "idle" }
  | { status: "connecting"; attempt: number }
  | { status: "connected"; session: string; ns: string; expiresAt: number }
  | {
      status: "disconnected";
      code: number;
      reason: string;
      /** True if the client will reconnect by itself. */
      willRetry: boolean;
      /** Delay before the next attempt, when willRetry. */
      retryInMs?: number;
    };

/** Everything the client reports through `onError`. Never carries plaintext. */
export type SealcastErrorKind =
  | "decrypt_failed" // a publication failed authentication with every key: dropped
  | "bad_payload" // decrypted, but not JSON: dropped
  | "relay_error" // an `error` frame from the relay
  | "closed" // the relay closed the connection with a code that is not retried
  | "token" // getToken() failed
  | "protocol" // an unexpected frame from the relay
  | "gap" // offsets jumped (should never happen with a conforming relay)
  | "handler"; // an application handler threw

export class SealcastError extends Error {
  readonly kind: SealcastErrorKind;
  readonly channel?: string;
  readonly event?: string;
  readonly offset?: number;
  /** relay error code (`forbidden`, ...) or close code. */
  readonly code?: string | number;
  constructor(
    kind: SealcastErrorKind,
    message: string,
    extra: { channel?: string; event?: string; offset?: number; code?: string | number; cause?: unknown } = {},
  ) {
    super(message);
    this.name = "SealcastError";
    this.kind = kind;
    this.channel = extra.channel;
    this.event = extra.event;
    this.offset = extra.offset;
    this.code = extra.code;
    if (extra.cause !== undefined) (this as { cause?: unknown }).cause = extra.cause;
  }
}

export interface BackoffOptions {
  /** First retry window in ms (default 500). */
  baseMs?: number;
  /** Largest retry window in ms (default 30000). */
  maxMs?: number;
  /** Smallest window after a 4029 rate-limit close (default 5000). */
  rateLimitedMinMs?: number;
}

export interface SealcastOptions {
  /** WebSocket URL of the relay, e.g. `wss://relay.example/v1/ws`. An http(s) base URL gets `/v1/ws` appended. */
  url: string;
  /** Returns a fresh connect token. Called on every (re)connect and before the token expires. */
  getToken: () => Promise<string> | string;
  /** Payload key ring: every key is tried in order (rotation). */
  keys: readonly KeyInput[] | KeyInput;
  onError?: (error: SealcastError) => void;
  /** Defaults to `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  backoff?: BackoffOptions;
  /** Fraction of the token's remaining lifetime after which it is refreshed in-band (default 0.8). `false` disables. */
  refreshAt?: number | false;
  /** Connect at construction time (default true). Otherwise call {@link Sealcast.connect}. */
  autoConnect?: boolean;
  /** Random source in [0,1) for the jitter (tests). */
  random?: () => number;
}

/** Metadata delivered with every publication. */
export interface PublicationMeta {
  channel: string;
  event: string;
  offset: number;
  epoch: string;
  /** True while replaying publications missed during a disconnection. */
  replayed: boolean;
}

export type EventMap = Record<string, unknown>;
export type EventName<M> = Extract<keyof M, string>;

export interface RecoveryFailedInfo {
  channel: string;
  /** The position the client asked to resume from. */
  since: StreamPosition;
  /** The channel's new position; state must be reloaded from the app up to here. */
  position: StreamPosition;
}

export interface SubscribeOptions<M extends object = EventMap> {
  /** Called for every authenticated publication, with the parsed JSON plaintext. */
  onEvent?: (event: EventName<M>, payload: M[EventName<M>], meta: PublicationMeta) => void;
  /** Publications were lost (relay restart, history expired): reload state from the app. */
  onRecoveryFailed?: (info: RecoveryFailedInfo) => void;
  /** Called each time the subscription becomes live (also after every reconnect). */
  onSubscribed?: (info: { channel: string; position: StreamPosition; recovered?: boolean }) => void;
  /** The relay refused the subscription (e.g. `forbidden`); it is not retried. */
  onError?: (error: SealcastError) => void;
  /**
   * Start from this position instead of "now", e.g. the position at which the app's state
   * snapshot was taken. Everything after it is replayed (or onRecoveryFailed is called).
   */
  since?: StreamPosition;
}

export interface Subscription<M extends object = EventMap> {
  readonly channel: string;
  /** Last position seen on this channel, if any. */
  readonly position: StreamPosition | undefined;
  /** Typed handler for one event; returns a function that removes it. */
  on<K extends EventName<M>>(event: K, handler: (payload: M[K], meta: PublicationMeta) => void): () => void;
  unsubscribe(): void;
}

interface Listener {
  opts: SubscribeOptions<any>;
  handlers: Map<string, Set<(payload: any, meta: PublicationMeta) => void>>;
}

type WireState = "none" | "pending" | "active";

interface ChannelState {
  channel: string;
  listeners: Set<Listener>;
  wire: WireState;
  /** request id of the pending subscribe */
  reqId?: number;
  /** position asked for in the pending subscribe */
  askedSince?: StreamPosition;
  epoch?: string;
  /** last offset seen (from `subscribed` or `pub`) */
  offset?: number;
  /** offset up to which publications are a replay */
  replayUntil?: number;
}

type Pending =
  | { kind: "subscribe"; ch: ChannelState }
  | { kind: "unsubscribe"; channel: string }
  | { kind: "refresh" };

function toWsUrl(url: string): string {
  if (/^https?:\/\//i.test(url)) {
    const u = new URL(url);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    if (u.pathname === "/" || u.pathname === "") u.pathname = "/v1/ws";
    return u.toString();
  }
  return url;
}

/** Reads `iat`/`exp` of a JWT without verifying it (used only to time the refresh). */
function tokenLifetimeMs(token: string): number | undefined {
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
 * A connection to the relay, shared by all subscriptions of a page.
 *
 * ```ts
 * const sc = new Sealcast({ url, getToken, keys: [payloadKey] });
 * const sub = sc.subscribe<{ AddAbsence: Absence }>(`${ns}#absences`, { onRecoveryFailed: reload });
 * sub.on("AddAbsence", (absence) => render(absence));
 * ```
 */
export class Sealcast {
  private readonly url: string;
  private readonly opts: SealcastOptions;
  private readonly WS: WebSocketConstructor;
  private readonly rand: () => number;
  private keys: Promise<CryptoKey[]>;
  private ws: WebSocketLike | null = null;
  private _state: ConnectionState = { status: "idle" };
  private readonly stateListeners = new Set<(s: ConnectionState) => void>();
  private readonly channels = new Map<string, ChannelState>();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private attempt = 0;
  private stopped = true;
  private connectedAt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private currentToken = "";
  /** Serialises decryption so publications are delivered in arrival order. */
  private deliveryChain: Promise<void> = Promise.resolve();
  /** Increments for each socket; events of an old socket are ignored. */
  private generation = 0;
  private onlineHandler: (() => void) | null = null;

  constructor(options: SealcastOptions) {
    if (!options || typeof options.url !== "string") throw new TypeError("sealcast: options.url is required");
    if (typeof options.getToken !== "function") throw new TypeError("sealcast: options.getToken is required");
    this.opts = options;
    this.url = toWsUrl(options.url);
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new TypeError("sealcast: no WebSocket implementation; pass options.WebSocket");
    this.WS = WS;
    this.rand = options.random ?? Math.random;
    this.keys = this.importRing(options.keys);
    if (options.autoConnect !== false) this.connect();
  }

  // ---------------------------------------------------------------- public API

  /** Current connection state. */
  get state(): ConnectionState {
    return this._state;
  }

  /** Observes connection state changes (for UIs). Called at once with the current state. Returns an unsubscribe function. */
  onStateChange(listener: (state: ConnectionState) => void): () => void {
    this.stateListeners.add(listener);
    try {
      listener(this._state);
    } catch (e) {
      this.report(new SealcastError("handler", "state listener threw", { cause: e }));
    }
    return () => this.stateListeners.delete(listener);
  }

  /** Replaces the payload key ring (key rotation). */
  setKeys(keys: readonly KeyInput[] | KeyInput): void {
    this.keys = this.importRing(keys);
  }

  /** Starts (or resumes after {@link close}) the connection. Subscriptions and positions are kept. */
  connect(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    this.installOnlineHandler();
    void this.open();
  }

  /**
   * Closes the connection without reconnecting. Subscriptions and their positions are kept,
   * so a later {@link connect} resumes and recovers what was published meanwhile.
   */
  close(): void {
    this.stopped = true;
    this.clearTimers();
    this.removeOnlineHandler();
    const ws = this.ws;
    this.dropSocket();
    if (ws) safeClose(ws, 1000, "client closed");
    this.setState({ status: "disconnected", code: 1000, reason: "client closed", willRetry: false });
  }

  /**
   * Drops the current socket and reconnects after `delayMs` (default 0), recovering every
   * subscription. Useful after a network change, and as a test hook.
   */
  reconnect(delayMs = 0): void {
    if (this.stopped) {
      this.connect();
      return;
    }
    const ws = this.ws;
    this.dropSocket();
    if (ws) safeClose(ws, 4000, "client reconnect");
    this.scheduleRetry(delayMs, 4000, "client reconnect");
  }

  /** Subscribes to a channel. Several subscriptions to one channel share one relay subscription. */
  subscribe<M extends object = EventMap>(channel: string, options: SubscribeOptions<M> = {}): Subscription<M> {
    let ch = this.channels.get(channel);
    if (!ch) {
      ch = { channel, listeners: new Set(), wire: "none" };
      if (options.since) {
        ch.epoch = options.since.epoch;
        ch.offset = options.since.offset;
      }
      this.channels.set(channel, ch);
    }
    const listener: Listener = { opts: options, handlers: new Map() };
    ch.listeners.add(listener);
    const state = ch;
    if (ch.wire === "none" && this.isConnected()) this.sendSubscribe(ch);
    else if (ch.wire === "active" && ch.epoch !== undefined && ch.offset !== undefined) {
      // Already live: tell the new listener where the stream stands.
      const info = { channel, position: { epoch: ch.epoch, offset: ch.offset } };
      queueMicrotask(() => this.safeCall(() => options.onSubscribed?.(info)));
    }
    let done = false;
    return {
      channel,
      get position() {
        return state.epoch !== undefined && state.offset !== undefined ? { epoch: state.epoch, offset: state.offset } : undefined;
      },
      on: (event, handler) => {
        let set = listener.handlers.get(event);
        if (!set) listener.handlers.set(event, (set = new Set()));
        set.add(handler as (p: unknown, m: PublicationMeta) => void);
        return () => set!.delete(handler as (p: unknown, m: PublicationMeta) => void);
      },
      unsubscribe: () => {
        if (done) return;
        done = true;
        state.listeners.delete(listener);
        if (state.listeners.size === 0 && this.channels.get(channel) === state) {
          this.channels.delete(channel);
          if (state.wire !== "none" && this.isConnected()) {
            const id = this.nextId++;
            this.pending.set(id, { kind: "unsubscribe", channel });
            this.send({ type: "unsubscribe", id, channel });
          }
          state.wire = "none";
        }
      },
    };
  }

  // ---------------------------------------------------------------- connection

  private isConnected(): boolean {
    return this._state.status === "connected" && this.ws !== null;
  }

  private async open(): Promise<void> {
    if (this.stopped) return;
    const gen = ++this.generation;
    this.setState({ status: "connecting", attempt: this.attempt });
    let token: string;
    try {
      token = await this.opts.getToken();
      if (typeof token !== "string" || token === "") throw new Error("getToken() returned no token");
    } catch (e) {
      if (gen !== this.generation || this.stopped) return;
      this.report(new SealcastError("token", `getToken failed: ${errMessage(e)}`, { cause: e }));
      this.failAndRetry(1006, "token unavailable");
      return;
    }
    if (gen !== this.generation || this.stopped) return;
    this.currentToken = token;
    let ws: WebSocketLike;
    try {
      ws = new this.WS(this.url);
    } catch (e) {
      this.report(new SealcastError("protocol", `cannot open WebSocket: ${errMessage(e)}`, { cause: e }));
      this.failAndRetry(1006, "cannot open socket");
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (gen !== this.generation) return;
      this.send({ type: "connect", token });
    };
    ws.onmessage = (ev) => {
      if (gen !== this.generation) return;
      this.onMessage(ev.data);
    };
    ws.onerror = () => {
      /* the close event follows and carries the information */
    };
    ws.onclose = (ev) => {
      if (gen !== this.generation) return;
      this.onClose(ev.code, ev.reason ?? "");
    };
  }

  private dropSocket(): void {
    this.generation++;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = null;
      ws.onmessage = null;
      ws.onclose = null;
      ws.onerror = () => {};
    }
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    this.pending.clear();
    for (const ch of this.channels.values()) {
      ch.wire = "none";
      ch.reqId = undefined;
    }
  }

  private onClose(code: number, reason: string): void {
    const wasConnected = this.connectedAt > 0;
    const wasConnectedFor = wasConnected ? Date.now() - this.connectedAt : 0;
    this.dropSocket();
    this.connectedAt = 0;
    if (wasConnectedFor > 5000) this.attempt = 0; // the connection was healthy: start backoff afresh
    const policy = closeCodeInfo(code);
    if (policy.retry === "never") {
      this.stopped = true;
      this.clearTimers();
      this.removeOnlineHandler();
      this.report(new SealcastError("closed", `relay closed the connection: ${code} ${policy.name}${reason ? ` (${reason})` : ""}`, { code }));
      this.setState({ status: "disconnected", code, reason, willRetry: false });
      return;
    }
    if (policy.retry === "new_token" && wasConnected && this.attempt === 0) {
      // getToken() is called on every connect: reconnect promptly with a fresh token. (If
      // that keeps failing, the backoff below applies, so a stale token cannot cause a hot loop.)
      this.attempt++;
      this.scheduleRetry(Math.floor(this.rand() * 250), code, reason);
      return;
    }
    this.failAndRetry(code, reason);
  }

  private failAndRetry(code: number, reason: string): void {
    const b = this.opts.backoff ?? {};
    const base = b.baseMs ?? 500;
    const max = b.maxMs ?? 30000;
    let window = Math.min(max, base * 2 ** Math.min(this.attempt, 30));
    if (code === 4029) window = Math.max(window, b.rateLimitedMinMs ?? 5000);
    this.attempt++;
    // Full jitter: uniform in [0, window).
    this.scheduleRetry(Math.floor(this.rand() * window), code, reason);
  }

  private scheduleRetry(delay: number, code: number, reason: string): void {
    if (this.stopped) return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.setState({ status: "disconnected", code, reason, willRetry: true, retryInMs: delay });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.open();
    }, delay);
  }

  private clearTimers(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.retryTimer = this.refreshTimer = null;
  }

  private installOnlineHandler(): void {
    const g = globalThis as { addEventListener?: (t: string, f: () => void) => void };
    if (this.onlineHandler || typeof g.addEventListener !== "function" || typeof (globalThis as any).window === "undefined") return;
    this.onlineHandler = () => {
      // Back online: skip the rest of the backoff delay.
      if (this.retryTimer && !this.stopped) {
        clearTimeout(this.retryTimer);
        this.retryTimer = null;
        void this.open();
      }
    };
    g.addEventListener("online", this.onlineHandler);
  }

  private removeOnlineHandler(): void {
    const g = globalThis as { removeEventListener?: (t: string, f: () => void) => void };
    if (this.onlineHandler && typeof g.removeEventListener === "function") g.removeEventListener("online", this.onlineHandler);
    this.onlineHandler = null;
  }

  private send(frame: ClientFrame): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return;
    try {
      ws.send(JSON.stringify(frame));
    } catch (e) {
      this.report(new SealcastError("protocol", `send failed: ${errMessage(e)}`, { cause: e }));
    }
  }

  private sendSubscribe(ch: ChannelState): void {
    const id = this.nextId++;
    ch.wire = "pending";
    ch.reqId = id;
    const since = ch.epoch !== undefined && ch.offset !== undefined ? { epoch: ch.epoch, offset: ch.offset } : undefined;
    ch.askedSince = since;
    this.pending.set(id, { kind: "subscribe", ch });
    this.send(since ? { type: "subscribe", id, channel: ch.channel, since } : { type: "subscribe", id, channel: ch.channel });
  }

  // ---------------------------------------------------------------- frames

  private onMessage(raw: unknown): void {
    if (typeof raw !== "string") {
      this.report(new SealcastError("protocol", "binary frame from relay ignored"));
      return;
    }
    let f: ServerFrame;
    try {
      f = JSON.parse(raw) as ServerFrame;
    } catch {
      this.report(new SealcastError("protocol", "non-JSON frame from relay ignored"));
      return;
    }
    if (!f || typeof f !== "object") return;
    switch (f.type) {
      case "connected": {
        this.connectedAt = Date.now();
        this.setState({ status: "connected", session: f.session, ns: f.ns, expiresAt: f.expires_at });
        this.scheduleRefresh(f.expires_at, this.currentToken);
        for (const ch of this.channels.values()) if (ch.wire === "none") this.sendSubscribe(ch);
        break;
      }
      case "subscribed":
        this.onSubscribed(f);
        break;
      case "pub":
        this.onPub(f.channel, f.event, f.data, f.offset);
        break;
      case "unsubscribed":
        if (typeof f.id === "number") this.pending.delete(f.id);
        break;
      case "refreshed": {
        if (typeof f.id === "number") this.pending.delete(f.id);
        if (this._state.status === "connected") this.setState({ ...this._state, expiresAt: f.expires_at });
        this.scheduleRefresh(f.expires_at, this.currentToken);
        break;
      }
      case "error":
        this.onErrorFrame(f.id, f.code, f.message);
        break;
      default:
        this.report(new SealcastError("protocol", `unknown frame type from relay: ${String((f as { type?: unknown }).type)}`));
    }
  }

  private onSubscribed(f: SubscribedFrame): void {
    const p = typeof f.id === "number" ? this.pending.get(f.id) : undefined;
    if (typeof f.id === "number") this.pending.delete(f.id);
    const ch = p && p.kind === "subscribe" ? p.ch : this.channels.get(f.channel);
    if (!ch || this.channels.get(f.channel) !== ch || ch.wire !== "pending") return; // unsubscribed meanwhile
    const asked = ch.askedSince;
    ch.wire = "active";
    ch.replayUntil = f.offset;
    const position = { epoch: f.epoch, offset: f.offset };
    if (asked && f.recovered === true) {
      // Replay of (asked.offset, f.offset] follows: keep the last seen offset.
      ch.epoch = f.epoch;
      ch.offset = asked.offset;
    } else {
      ch.epoch = f.epoch;
      ch.offset = f.offset;
    }
    const info = { channel: ch.channel, position, recovered: f.recovered };
    const recoveryFailed = asked !== undefined && f.recovered !== true;
    // Run callbacks in delivery order, after any publication already queued.
    this.enqueue(async () => {
      for (const l of [...ch.listeners]) {
        if (recoveryFailed) this.safeCall(() => l.opts.onRecoveryFailed?.({ channel: ch.channel, since: asked!, position }));
        this.safeCall(() => l.opts.onSubscribed?.(info));
      }
    });
  }

  private onPub(channel: string, event: string, data: string, offset: number): void {
    const ch = this.channels.get(channel);
    if (!ch || ch.wire !== "active") return;
    if (typeof offset !== "number" || typeof event !== "string" || typeof data !== "string") {
      this.report(new SealcastError("protocol", "malformed pub frame", { channel }));
      return;
    }
    const last = ch.offset ?? 0;
    if (offset <= last) return; // duplicate or stale: already delivered
    if (offset !== last + 1 && ch.offset !== undefined) {
      this.report(new SealcastError("gap", `offset jumped from ${last} to ${offset}`, { channel, offset }));
    }
    ch.offset = offset;
    const meta: PublicationMeta = { channel, event, offset, epoch: ch.epoch ?? "", replayed: offset <= (ch.replayUntil ?? 0) };
    const keysP = this.keys;
    this.enqueue(async () => {
      let text: string;
      try {
        text = await decryptText(channel, event, data, await keysP);
      } catch (e) {
        this.report(new SealcastError("decrypt_failed", `publication ${channel}@${offset} (${event}) failed authentication: dropped`, { channel, event, offset, cause: e }));
        return;
      }
      let payload: unknown;
      try {
        payload = JSON.parse(text);
      } catch {
        this.report(new SealcastError("bad_payload", `publication ${channel}@${offset} (${event}) is not JSON: dropped`, { channel, event, offset }));
        return;
      }
      if (this.channels.get(channel) !== ch) return; // unsubscribed while decrypting
      for (const l of [...ch.listeners]) {
        if (l.opts.onEvent) this.safeCall(() => l.opts.onEvent!(event, payload, meta), channel);
        const hs = l.handlers.get(event);
        if (hs) for (const h of [...hs]) this.safeCall(() => h(payload, meta), channel);
      }
    });
  }

  private onErrorFrame(id: number | undefined, code: string, message: string): void {
    const p = typeof id === "number" ? this.pending.get(id) : undefined;
    if (typeof id === "number") this.pending.delete(id);
    if (p?.kind === "subscribe") {
      const ch = p.ch;
      const err = new SealcastError("relay_error", `subscribe to ${ch.channel} refused: ${code}: ${message}`, { channel: ch.channel, code });
      if (this.channels.get(ch.channel) === ch) {
        // A refusal is final: the channel is forgotten, so it is not retried on later
        // reconnects (a later subscribe() to it asks the relay again).
        ch.wire = "none";
        this.channels.delete(ch.channel);
      }
      for (const l of [...ch.listeners]) this.safeCall(() => l.opts.onError?.(err));
      this.report(err);
      return;
    }
    if (p?.kind === "refresh") {
      this.report(new SealcastError("relay_error", `token refresh refused: ${code}: ${message}`, { code }));
      return;
    }
    this.report(new SealcastError("relay_error", `${code}: ${message}`, { code }));
  }

  // ---------------------------------------------------------------- token refresh

  private scheduleRefresh(expiresAt: number, token: string): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    const ratio = this.opts.refreshAt ?? 0.8;
    if (ratio === false || typeof expiresAt !== "number") return;
    let remaining = expiresAt * 1000 - Date.now();
    // Guard against a skewed local clock: never wait longer than the token's own lifetime.
    const lifetime = tokenLifetimeMs(token);
    if (lifetime !== undefined && (remaining <= 0 || remaining > lifetime)) remaining = lifetime;
    if (remaining <= 0) return;
    const delay = Math.max(250, Math.floor(remaining * ratio));
    const gen = this.generation;
    this.refreshTimer = setTimeout(() => void this.refresh(gen), Math.min(delay, 2 ** 31 - 1));
  }

  private async refresh(gen: number): Promise<void> {
    this.refreshTimer = null;
    let token: string;
    try {
      token = await this.opts.getToken();
    } catch (e) {
      if (gen !== this.generation) return;
      this.report(new SealcastError("token", `getToken failed during refresh: ${errMessage(e)}`, { cause: e }));
      this.refreshTimer = setTimeout(() => void this.refresh(gen), 2000);
      return;
    }
    if (gen !== this.generation || !this.isConnected()) return;
    this.currentToken = token;
    const id = this.nextId++;
    this.pending.set(id, { kind: "refresh" });
    this.send({ type: "refresh", id, token });
  }

  // ---------------------------------------------------------------- helpers

  private importRing(keys: readonly KeyInput[] | KeyInput): Promise<CryptoKey[]> {
    const list = (Array.isArray(keys) ? keys : [keys]) as KeyInput[];
    const p = Promise.all(list.map((k) => importKey(k)));
    p.catch((e) => this.report(new SealcastError("decrypt_failed", `invalid payload key: ${errMessage(e)}`, { cause: e })));
    return p;
  }

  private enqueue(task: () => Promise<void>): void {
    this.deliveryChain = this.deliveryChain.then(task).catch((e) => this.report(new SealcastError("handler", errMessage(e), { cause: e })));
  }

  private safeCall(f: () => void, channel?: string): void {
    try {
      f();
    } catch (e) {
      this.report(new SealcastError("handler", `handler threw: ${errMessage(e)}`, { channel, cause: e }));
    }
  }

  private setState(s: ConnectionState): void {
    this._state = s;
    for (const l of [...this.stateListeners]) {
      try {
        l(s);
      } catch (e) {
        this.report(new SealcastError("handler", "state listener threw", { cause: e }));
      }
    }
  }

  private report(e: SealcastError): void {
    if (this.opts.onError) {
      try {
        this.opts.onError(e);
      } catch {
        /* never let the error callback break the client */
      }
    } else if (typeof console !== "undefined") {
      console.warn(`[sealcast] ${e.message}`);
    }
  }
}

function safeClose(ws: WebSocketLike, code: number, reason: string): void {
  try {
    if (ws.readyState === 0 || ws.readyState === 1) ws.close(code, reason);
  } catch {
    /* ignore */
  }
}

function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
