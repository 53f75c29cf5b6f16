/**
 * Browser-side (subscriber) client of the sealcast relay. No runtime dependencies: it uses
 * the native `WebSocket` and WebCrypto. In Node, pass a WebSocket constructor (e.g. from the
 * `ws` package) through {@link SealcastOptions.WebSocket}.
 *
 * This module holds the `Sealcast` class: the connection and session state machine. Its
 * types, errors, channel bookkeeping, delivery queue and timing arithmetic live in the
 * modules imported below; the public ones are re-exported here, where `index.ts` takes them.
 */
import { channelPosition, markSubscribed, newChannelState, subscriptionHandle, type ChannelState, type Listener } from "./channels.js";
import { importKey, type KeyInput } from "./crypto.js";
import { Delivery } from "./delivery.js";
import { errMessage, SealcastError } from "./errors.js";
import { closeCodeInfo, connectFrame, refreshFrame, subscribeFrame, unsubscribeFrame, type ClientFrame, type ServerFrame, type SubscribedFrame } from "./protocol.js";
import { backoffWindowMs, refreshDelayMs } from "./timing.js";
import { safeClose, toWsUrl, watchOnline, type WebSocketConstructor, type WebSocketLike } from "./transport.js";
import type { ConnectionState, EventMap, PublicationMeta, SealcastOptions, SubscribeOptions, Subscription } from "./types.js";

export { SealcastError, type SealcastErrorKind } from "./errors.js";
export type { WebSocketConstructor, WebSocketLike } from "./transport.js";
export type {
  BackoffOptions,
  ConnectionState,
  EventMap,
  EventName,
  PublicationMeta,
  RecoveryFailedInfo,
  SealcastOptions,
  SubscribeOptions,
  Subscription,
} from "./types.js";

type Pending =
  | { kind: "subscribe"; ch: ChannelState }
  | { kind: "unsubscribe"; channel: string }
  | { kind: "refresh" };

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
  /** Ordered delivery of publications and callbacks to the application. */
  private readonly delivery = new Delivery((e) => this.report(e));
  /** Increments for each socket; events of an old socket are ignored. */
  private generation = 0;
  /** Stops listening for the browser's `online` event, while listening. */
  private stopOnlineWatch: (() => void) | null = null;

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
      ch = newChannelState(channel, options.since);
      this.channels.set(channel, ch);
    }
    const listener: Listener = { opts: options, handlers: new Map() };
    ch.listeners.add(listener);
    const state = ch;
    if (ch.wire === "none" && this.isConnected()) this.sendSubscribe(ch);
    else if (ch.wire === "active" && ch.epoch !== undefined && ch.offset !== undefined) {
      // Already live: tell the new listener where the stream stands.
      const info = { channel, position: { epoch: ch.epoch, offset: ch.offset } };
      queueMicrotask(() => this.delivery.call(() => options.onSubscribed?.(info)));
    }
    return subscriptionHandle<M>(state, listener, () => {
      // The channel's last listener is gone: drop the relay subscription too.
      if (this.channels.get(channel) !== state) return;
      this.channels.delete(channel);
      if (state.wire !== "none" && this.isConnected()) {
        const id = this.nextId++;
        this.pending.set(id, { kind: "unsubscribe", channel });
        this.send(unsubscribeFrame(id, channel));
      }
      state.wire = "none";
    });
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
      this.send(connectFrame(token));
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
    const window = backoffWindowMs(this.attempt, code, this.opts.backoff ?? {});
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
    if (this.stopOnlineWatch) return;
    this.stopOnlineWatch = watchOnline(() => {
      // Back online: skip the rest of the backoff delay.
      if (this.retryTimer && !this.stopped) {
        clearTimeout(this.retryTimer);
        this.retryTimer = null;
        void this.open();
      }
    });
  }

  private removeOnlineHandler(): void {
    this.stopOnlineWatch?.();
    this.stopOnlineWatch = null;
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
    const since = channelPosition(ch);
    ch.askedSince = since;
    this.pending.set(id, { kind: "subscribe", ch });
    this.send(subscribeFrame(id, ch.channel, since));
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
    markSubscribed(ch, f, asked);
    const position = { epoch: f.epoch, offset: f.offset };
    const info = { channel: ch.channel, position, recovered: f.recovered };
    const recoveryFailed = asked !== undefined && f.recovered !== true;
    // Run callbacks in delivery order, after any publication already queued.
    this.delivery.enqueue(async () => {
      for (const l of [...ch.listeners]) {
        if (recoveryFailed) this.delivery.call(() => l.opts.onRecoveryFailed?.({ channel: ch.channel, since: asked!, position }));
        this.delivery.call(() => l.opts.onSubscribed?.(info));
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
    const position: Omit<PublicationMeta, "plaintext"> = { channel, event, offset, epoch: ch.epoch ?? "", replayed: offset <= (ch.replayUntil ?? 0) };
    this.delivery.publication(ch, data, position, this.keys, () => this.channels.get(channel) === ch);
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
      for (const l of [...ch.listeners]) this.delivery.call(() => l.opts.onError?.(err));
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
    const delay = refreshDelayMs(expiresAt, token, ratio, Date.now());
    if (delay === undefined) return;
    const gen = this.generation;
    this.refreshTimer = setTimeout(() => void this.refresh(gen), delay);
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
    this.send(refreshFrame(id, token));
  }

  // ---------------------------------------------------------------- helpers

  private importRing(keys: readonly KeyInput[] | KeyInput): Promise<CryptoKey[]> {
    const list = (Array.isArray(keys) ? keys : [keys]) as KeyInput[];
    const p = Promise.all(list.map((k) => importKey(k)));
    p.catch((e) => this.report(new SealcastError("decrypt_failed", `invalid payload key: ${errMessage(e)}`, { cause: e })));
    return p;
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
