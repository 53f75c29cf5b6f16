/**
 * Public types of the subscriber client: its options, connection states, publication metadata
 * and the subscription handle. Declarations only (no runtime code), kept apart from the
 * `Sealcast` class so the shape of the API reads in one place.
 */
import type { Sealcast } from "./client.js"; // for the {@link} below
import type { KeyInput } from "./crypto.js";
import type { SealcastError } from "./errors.js";
import type { StreamPosition } from "./protocol.js";
import type { WebSocketConstructor } from "./transport.js";

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
  /**
   * The decrypted plaintext exactly as the publisher encrypted it (UTF-8 JSON text), for
   * apps that store or forward it unchanged; the payload argument is this, parsed.
   */
  plaintext: string;
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
