/**
 * Wire-level constants and frame types of the sealcast protocol v1 (PROTOCOL.md).
 * This module has no runtime dependencies and is shared by the browser and Node sides.
 */

/** What a client does after the relay closes the connection with a given code. */
export type RetryPolicy = "never" | "recover" | "new_token";

export interface CloseCodeInfo {
  readonly code: number;
  readonly name: string;
  readonly retry: RetryPolicy;
}

/** Close codes of PROTOCOL.md section 3.4. */
export const CloseCode = {
  GoingAway: 1001,
  ProtocolError: 1002,
  UnsupportedData: 1003,
  InvalidPayload: 1007,
  ProtocolViolation: 1008,
  FrameTooLarge: 1009,
  InternalError: 1011,
  Unauthorized: 4001,
  TokenExpired: 4002,
  TokenRevoked: 4003,
  SlowConsumer: 4008,
  RateLimited: 4029,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** The table of close codes with their retry policy (mirrors tests/fixtures/protocol.json). */
export const CLOSE_CODES: readonly CloseCodeInfo[] = Object.freeze([
  { code: 1001, name: "going_away", retry: "recover" },
  // 1002, 1003, 1007 and 1008: this client sent what the relay cannot accept; reconnecting
  // would send it again, so the fix is in the client, not a retry.
  { code: 1002, name: "protocol_error", retry: "never" },
  { code: 1003, name: "unsupported_data", retry: "never" },
  { code: 1007, name: "invalid_payload", retry: "never" },
  { code: 1008, name: "protocol_violation", retry: "never" },
  { code: 1009, name: "frame_too_large", retry: "never" },
  { code: 1011, name: "internal_error", retry: "recover" },
  { code: 4001, name: "unauthorized", retry: "never" },
  { code: 4002, name: "token_expired", retry: "new_token" },
  { code: 4003, name: "token_revoked", retry: "never" },
  { code: 4008, name: "slow_consumer", retry: "recover" },
  { code: 4029, name: "rate_limited", retry: "recover" },
] as const);

/**
 * Retry policy for any close code. Codes outside the table (1000, 1005, 1006 = network
 * drop, ...) are treated as transient: reconnect with backoff and recover.
 */
export function closeCodeInfo(code: number): CloseCodeInfo {
  const known = CLOSE_CODES.find((c) => c.code === code);
  return known ?? { code, name: "transient", retry: "recover" };
}

/** Error codes of an `error` frame (PROTOCOL.md 3.2). */
export const FRAME_ERROR_CODES = ["bad_request", "forbidden", "limit_exceeded", "unauthorized"] as const;
export type FrameErrorCode = (typeof FRAME_ERROR_CODES)[number];

/** HTTP API error statuses and codes (PROTOCOL.md 4). */
export const HTTP_ERRORS: readonly { status: number; code: string }[] = Object.freeze([
  { status: 400, code: "bad_request" },
  { status: 401, code: "unauthorized" },
  { status: 403, code: "forbidden" },
  { status: 413, code: "payload_too_large" },
  { status: 415, code: "unsupported_media_type" },
  { status: 429, code: "rate_limited" },
  { status: 503, code: "unavailable" },
]);

/** Position in a channel's stream. */
export interface StreamPosition {
  epoch: string;
  offset: number;
}

// ---- client -> relay ----
export interface ConnectFrame { type: "connect"; token: string }
export interface SubscribeFrame { type: "subscribe"; id?: number; channel: string; since?: StreamPosition }
export interface UnsubscribeFrame { type: "unsubscribe"; id?: number; channel: string }
export interface RefreshFrame { type: "refresh"; id?: number; token: string }
export type ClientFrame = ConnectFrame | SubscribeFrame | UnsubscribeFrame | RefreshFrame;

/** The `connect` frame: the first frame of a connection. */
export function connectFrame(token: string): ConnectFrame {
  return { type: "connect", token };
}

/** The `subscribe` frame; with `since`, the relay replays everything after that position. */
export function subscribeFrame(id: number, channel: string, since?: StreamPosition): SubscribeFrame {
  return since ? { type: "subscribe", id, channel, since: { epoch: since.epoch, offset: since.offset } } : { type: "subscribe", id, channel };
}

/** The `unsubscribe` frame. */
export function unsubscribeFrame(id: number, channel: string): UnsubscribeFrame {
  return { type: "unsubscribe", id, channel };
}

/** The `refresh` frame: replaces the session's token (same `iss`, `sub` and `ns`). */
export function refreshFrame(id: number, token: string): RefreshFrame {
  return { type: "refresh", id, token };
}

// ---- relay -> client ----
export interface ConnectedFrame { type: "connected"; session: string; ns: string; expires_at: number }
export interface SubscribedFrame {
  type: "subscribed"; id?: number; channel: string; epoch: string; offset: number; recovered?: boolean;
}
export interface PubFrame { type: "pub"; channel: string; event: string; data: string; offset: number }
export interface UnsubscribedFrame { type: "unsubscribed"; id?: number; channel: string }
export interface RefreshedFrame { type: "refreshed"; id?: number; expires_at: number }
export interface ErrorFrame { type: "error"; id?: number; code: FrameErrorCode | string; message: string }
export type ServerFrame = ConnectedFrame | SubscribedFrame | PubFrame | UnsubscribedFrame | RefreshedFrame | ErrorFrame;

const TOPIC_RE = /^[A-Za-z0-9._:@/-]{1,128}$/;
const EVENT_RE = /^[A-Za-z0-9._:-]{1,64}$/;

/** True if `ns` is a valid namespace: 1..256 bytes of printable ASCII, no `#`, no space. */
export function isValidNamespace(ns: string): boolean {
  return ns.length >= 1 && ns.length <= 256 && /^[\x21-\x7e]+$/.test(ns) && !ns.includes("#");
}

/** True if `channel` is `<namespace>#<topic>` with both parts valid. */
export function isValidChannel(channel: string): boolean {
  const i = channel.indexOf("#");
  if (i < 0) return false;
  return isValidNamespace(channel.slice(0, i)) && TOPIC_RE.test(channel.slice(i + 1));
}

/** True if `event` is a valid event name. */
export function isValidEvent(event: string): boolean {
  return EVENT_RE.test(event);
}

/** Builds a channel name from a namespace and a topic. */
export function channelOf(ns: string, topic: string): string {
  return `${ns}#${topic}`;
}
