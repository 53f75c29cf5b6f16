/**
 * sealcast-client/server: helpers for the app backend (Node 20+).
 * Mints HS512 tokens (PROTOCOL.md 2), encrypts payloads (5) and publishes over HTTP (4).
 */
import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";
import { encrypt, type KeyInput } from "./crypto.js";

export { encrypt, encryptText, decrypt, decryptText, generateKey, importKey, toBase64, fromBase64, DecryptError, type KeyInput } from "./crypto.js";
export * from "./protocol.js";

/** An HMAC secret: a string (its UTF-8 bytes are the key) or raw bytes. At least 32 bytes. */
export type Secret = string | Uint8Array;

function secretBytes(secret: Secret): Buffer {
  const b = typeof secret === "string" ? Buffer.from(secret, "utf8") : Buffer.from(secret);
  if (b.length < 32) throw new RangeError("sealcast: a signing secret must be at least 32 bytes");
  return b;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString("base64url");

export interface TokenClaims {
  iss: string;
  sub?: string;
  ns?: string;
  aud: "connect" | "publish";
  iat: number;
  exp: number;
  jti?: string;
  [extra: string]: unknown;
}

/** Signs claims as an HS512 JWT with header `{"alg":"HS512","typ":"JWT"[,"kid":kid]}`. */
export function signToken(claims: TokenClaims, secret: Secret, kid?: string): string {
  const header: Record<string, string> = { alg: "HS512", typ: "JWT" };
  if (kid !== undefined) header.kid = kid;
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = createHmac("sha512", secretBytes(secret)).update(input).digest();
  return `${input}.${b64url(sig)}`;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

/** The longest lifetimes (`exp - iat`) a relay accepts; its config may set them lower. */
export const MAX_CONNECT_TTL_SECONDS = 86400;
export const MAX_PUBLISH_TTL_SECONDS = 300;

const utf8Length = (s: string) => Buffer.byteLength(s, "utf8");

/**
 * Refuses, at mint time, claims the relay would refuse when the token is used (PROTOCOL.md 2
 * and the name rules), naming the rule: a mistake then fails where it is made, not as a bare
 * 401 or close code 4001 later.
 */
function checkClaims(aud: "connect" | "publish", o: { app: string; kid?: string; ns?: string; sub?: string; jti?: string; ttlSeconds: number }): number {
  if (typeof o.app !== "string" || !/^[A-Za-z0-9._-]{1,64}$/.test(o.app)) throw new TypeError("sealcast: app must be 1 to 64 characters of [A-Za-z0-9._-] (an [[apps]] id of the relay)");
  if (o.kid !== undefined && (typeof o.kid !== "string" || o.kid.length === 0 || utf8Length(o.kid) > 64)) throw new TypeError("sealcast: kid must be 1 to 64 bytes");
  if (o.ns !== undefined && (typeof o.ns !== "string" || !/^[\x21-\x22\x24-\x7e]{1,256}$/.test(o.ns))) {
    throw new TypeError("sealcast: ns must be 1 to 256 bytes of printable ASCII without space or '#' (the '#' separates a channel's topic)");
  }
  if (o.sub !== undefined && (typeof o.sub !== "string" || o.sub.length === 0 || utf8Length(o.sub) > 128)) throw new TypeError("sealcast: sub must be 1 to 128 bytes");
  if (o.jti !== undefined && (typeof o.jti !== "string" || o.jti.length === 0 || utf8Length(o.jti) > 128)) throw new TypeError("sealcast: jti must be 1 to 128 bytes");
  const ttl = Math.floor(o.ttlSeconds);
  if (!(ttl >= 1)) throw new RangeError("sealcast: ttlSeconds must be at least 1");
  const [max, key] = aud === "connect" ? [MAX_CONNECT_TTL_SECONDS, "tokens.max_connect_lifetime"] : [MAX_PUBLISH_TTL_SECONDS, "tokens.max_publish_lifetime"];
  if (ttl > max) {
    throw new RangeError(`sealcast: ttlSeconds ${ttl} is over ${max}, the longest a ${aud} token may live (relay setting ${key}): the relay would refuse it`);
  }
  return ttl;
}

export interface MintConnectTokenOptions {
  app: string;
  kid?: string;
  secret: Secret;
  /** The one namespace the token grants. */
  ns: string;
  /** The user's account id (audit only). */
  sub: string;
  /** Lifetime in seconds: 1 to 86400 (24 h; a relay may set `tokens.max_connect_lifetime` lower). */
  ttlSeconds: number;
  jti?: string;
  /** Issue time in unix seconds (default: now). */
  iat?: number;
}

/**
 * Mints a connect token for one user and one namespace. Throws (naming the rule) for claims
 * the relay would refuse: a lifetime over 24 h, a namespace with `#` or a space, ...
 */
export function mintConnectToken(o: MintConnectTokenOptions): string {
  if (!o.sub || !o.ns) throw new TypeError("sealcast: connect token needs sub and ns");
  const ttl = checkClaims("connect", o);
  const iat = o.iat ?? nowSeconds();
  const claims: TokenClaims = { iss: o.app, sub: o.sub, ns: o.ns, aud: "connect", iat, exp: iat + ttl };
  if (o.jti !== undefined) claims.jti = o.jti;
  return signToken(claims, o.secret, o.kid);
}

export interface MintPublishTokenOptions {
  app: string;
  kid?: string;
  secret: Secret;
  /** Restricts the token to channels of this namespace. */
  ns?: string;
  /** Lifetime in seconds: 1 to 300 (a relay may set `tokens.max_publish_lifetime` lower). */
  ttlSeconds: number;
  jti?: string;
  iat?: number;
}

/**
 * Mints a short-lived publish token (sent as `Authorization: Bearer`). Throws (naming the
 * rule) for claims the relay would refuse, such as a lifetime over 300 s.
 */
export function mintPublishToken(o: MintPublishTokenOptions): string {
  const ttl = checkClaims("publish", o);
  const iat = o.iat ?? nowSeconds();
  // Claim order as in the fixtures: iss, ns, aud, iat, exp, jti.
  const claims: TokenClaims = { iss: o.app, ...(o.ns !== undefined ? { ns: o.ns } : {}), aud: "publish", iat, exp: iat + ttl };
  if (o.jti !== undefined) claims.jti = o.jti;
  return signToken(claims, o.secret, o.kid);
}

export class TokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenError";
  }
}

export interface VerifyTokenOptions {
  /** app id -> keys (kid -> secret). */
  apps: Record<string, Record<string, Secret>>;
  aud: "connect" | "publish";
  /** unix seconds (default: now) */
  now?: number;
  /** seconds (default 30, at most 30) */
  leeway?: number;
  /** maximum exp - iat in seconds (default 86400 for connect, 300 for publish) */
  maxLifetime?: number;
}

/**
 * Verifies a token exactly as PROTOCOL.md 2.1 says the relay does. Returns its claims or
 * throws {@link TokenError}. Useful in tests and for backends that accept sealcast tokens.
 */
export function verifyToken(token: string, o: VerifyTokenOptions): TokenClaims {
  if (typeof token !== "string" || token.length > 4096) throw new TokenError("token too long");
  const parts = token.split(".");
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]+$/.test(p))) throw new TokenError("malformed token");
  let header: Record<string, unknown>;
  let claims: TokenClaims;
  try {
    header = JSON.parse(Buffer.from(parts[0]!, "base64url").toString("utf8"));
    claims = JSON.parse(Buffer.from(parts[1]!, "base64url").toString("utf8"));
  } catch {
    throw new TokenError("malformed token");
  }
  if (!header || typeof header !== "object" || header.alg !== "HS512") throw new TokenError("alg must be HS512");
  if (header.typ !== undefined && header.typ !== "JWT") throw new TokenError("typ must be JWT");
  if (!claims || typeof claims !== "object" || typeof claims.iss !== "string") throw new TokenError("iss missing");
  const keys = Object.prototype.hasOwnProperty.call(o.apps, claims.iss) ? o.apps[claims.iss]! : undefined;
  if (!keys) throw new TokenError("unknown app");
  let candidates: Secret[];
  if (header.kid !== undefined) {
    if (typeof header.kid !== "string" || !Object.prototype.hasOwnProperty.call(keys, header.kid)) throw new TokenError("unknown kid");
    candidates = [keys[header.kid]!];
  } else candidates = Object.values(keys);
  const sig = Buffer.from(parts[2]!, "base64url");
  const input = `${parts[0]}.${parts[1]}`;
  const ok = candidates.some((s) => {
    const mac = createHmac("sha512", secretBytes(s)).update(input).digest();
    return mac.length === sig.length && timingSafeEqual(mac, sig);
  });
  if (!ok) throw new TokenError("bad signature");
  const now = o.now ?? nowSeconds();
  const leeway = Math.min(o.leeway ?? 30, 30);
  if (!Number.isInteger(claims.exp) || !Number.isInteger(claims.iat)) throw new TokenError("exp and iat must be integers");
  if (claims.exp + leeway <= now) throw new TokenError("token expired");
  if (claims.iat - leeway > now) throw new TokenError("iat in the future");
  if (claims.aud !== o.aud) throw new TokenError(`aud must be ${o.aud}`);
  const max = o.maxLifetime ?? (o.aud === "connect" ? 86400 : 300);
  if (claims.exp - claims.iat > max) throw new TokenError("lifetime too long");
  if (claims.jti !== undefined && (typeof claims.jti !== "string" || Buffer.byteLength(claims.jti) > 128)) throw new TokenError("bad jti");
  if (o.aud === "connect" && (typeof claims.sub !== "string" || typeof claims.ns !== "string")) throw new TokenError("sub and ns required");
  return claims;
}

// ------------------------------------------------------------------ HTTP publish

/**
 * An error answered by the relay (`{"error":{"code","message"}}`, `status` its HTTP status),
 * or, as the subclass {@link SealcastTransportError}, no answer at all.
 */
export class SealcastHttpError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(`${status} ${code}: ${message}`);
    this.name = "SealcastHttpError";
    this.status = status;
    this.code = code;
  }
}

/**
 * The relay could not be reached or did not answer (connection refused or reset, DNS, TLS,
 * timeout) after every retry. `status` is 0 and `code` is `"transport"`: there was no HTTP
 * answer, so an app that forwards the failure answers its own caller 502 (Bad Gateway) or
 * 503, never `status`. The underlying error is `cause`.
 */
export class SealcastTransportError extends SealcastHttpError {
  constructor(message: string, cause?: unknown) {
    super(0, "transport", message);
    this.name = "SealcastTransportError";
    if (cause !== undefined) (this as { cause?: unknown }).cause = cause;
  }
}

export interface RetryOptions {
  /** Retries after the first attempt (default 4). */
  retries?: number;
  /** First backoff window in ms (default 200); full jitter. */
  baseMs?: number;
  /** Largest backoff window in ms (default 5000). */
  maxMs?: number;
}

export type TokenSource = string | (() => string | Promise<string>);

export interface HttpOptions {
  /** Relay base URL, e.g. `https://relay.example` (the path `/v1/...` is appended). */
  url: string;
  /** Publish token, or a function called before every attempt (so a retry never uses an expired token). */
  token: TokenSource;
  retry?: RetryOptions;
  /** Per-attempt timeout in ms (default 10000). */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

export interface Publication {
  channel: string;
  event: string;
  /** base64 ciphertext, e.g. from {@link encrypt}. */
  data: string;
  /** 1 to 64 bytes; generated if absent and reused on every retry. */
  idempotencyKey?: string;
}

export interface PublishResult {
  offset: number;
  epoch: string;
}
export type BatchItemResult = PublishResult | { error: { code: string; message: string } };

const RETRYABLE_STATUS = new Set([408, 425, 429, 500, 502, 503, 504]);
const RETRYABLE_CODES = new Set(["rate_limited", "unavailable"]);

function endpoint(base: string, path: string): string {
  return base.replace(/\/+$/, "") + path;
}

function backoffDelay(attempt: number, r: RetryOptions, retryAfterMs?: number): number {
  const window = Math.min(r.maxMs ?? 5000, (r.baseMs ?? 200) * 2 ** attempt);
  const d = Math.floor(Math.random() * window);
  return retryAfterMs !== undefined ? Math.max(d, Math.min(retryAfterMs, r.maxMs ?? 5000)) : d;
}

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

interface AttemptOutcome {
  status: number;
  body: any;
  retryAfterMs?: number;
}

async function postOnce(o: HttpOptions, path: string, body: unknown): Promise<AttemptOutcome> {
  const token = typeof o.token === "function" ? await o.token() : o.token;
  const f = o.fetch ?? globalThis.fetch;
  const res = await f(endpoint(o.url, path), {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(o.timeoutMs ?? 10000),
  });
  const text = await res.text();
  let parsed: any = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  const ra = res.headers.get("retry-after");
  const retryAfterMs = ra && /^\d+$/.test(ra) ? Number(ra) * 1000 : undefined;
  return { status: res.status, body: parsed ?? text, retryAfterMs };
}

function httpError(out: AttemptOutcome): SealcastHttpError {
  const e = out.body && typeof out.body === "object" ? out.body.error : undefined;
  if (e && typeof e.code === "string") return new SealcastHttpError(out.status, e.code, String(e.message ?? ""));
  return new SealcastHttpError(out.status, "http_error", typeof out.body === "string" ? out.body.slice(0, 200) : "unexpected response");
}

/**
 * POSTs with retries. `body` must be the same object on every attempt (it carries the
 * idempotency keys), so a retried request is applied at most once by the relay.
 */
async function postWithRetry(o: HttpOptions, path: string, body: () => unknown): Promise<AttemptOutcome> {
  const r = o.retry ?? {};
  const retries = r.retries ?? 4;
  for (let attempt = 0; ; attempt++) {
    let out: AttemptOutcome | undefined;
    let transportError: unknown;
    try {
      out = await postOnce(o, path, body());
    } catch (e) {
      transportError = e;
    }
    if (out && out.status >= 200 && out.status < 300) return out;
    const retryable = out === undefined || RETRYABLE_STATUS.has(out.status);
    if (!retryable || attempt >= retries) {
      if (out) throw httpError(out);
      throw new SealcastTransportError(transportError instanceof Error ? transportError.message : String(transportError), transportError);
    }
    await sleep(backoffDelay(attempt, r, out?.retryAfterMs));
  }
}

/**
 * Publishes one publication (`POST /v1/publish`), retrying transport failures, 429 and 5xx
 * with full-jitter backoff. Every attempt carries the same `idempotency_key`, so the
 * publication is delivered at most once however many attempts it takes.
 */
export async function publish(o: HttpOptions & Publication): Promise<PublishResult> {
  const body = {
    channel: o.channel,
    event: o.event,
    data: o.data,
    idempotency_key: o.idempotencyKey ?? randomUUID(),
  };
  const out = await postWithRetry(o, "/v1/publish", () => body);
  return out.body as PublishResult;
}

/**
 * Publishes many publications (`POST /v1/publish/batch`, split in chunks of 1000). Returns one
 * result per item, in order. Items refused with a transient code (`rate_limited`,
 * `unavailable`) are retried with their same idempotency key; others are returned as errors.
 */
export async function publishBatch(o: HttpOptions & { publications: readonly Publication[] }): Promise<BatchItemResult[]> {
  const items = o.publications.map((p) => ({
    channel: p.channel,
    event: p.event,
    data: p.data,
    idempotency_key: p.idempotencyKey ?? randomUUID(),
  }));
  const results: BatchItemResult[] = new Array(items.length);
  const r = o.retry ?? {};
  const retries = r.retries ?? 4;
  for (let start = 0; start < items.length; start += 1000) {
    let todo = Array.from({ length: Math.min(1000, items.length - start) }, (_, i) => start + i);
    for (let attempt = 0; todo.length > 0; attempt++) {
      const body = { publications: todo.map((i) => items[i]) };
      const out = await postWithRetry(o, "/v1/publish/batch", () => body);
      const rs = (out.body as { results?: BatchItemResult[] })?.results;
      if (!Array.isArray(rs) || rs.length !== todo.length) throw new SealcastHttpError(out.status, "bad_response", "batch results do not match the request");
      const again: number[] = [];
      rs.forEach((res, j) => {
        const i = todo[j]!;
        results[i] = res;
        if ("error" in res && RETRYABLE_CODES.has(res.error?.code) && attempt < retries) again.push(i);
      });
      todo = again;
      if (todo.length) await sleep(backoffDelay(attempt, r));
    }
  }
  return results;
}

/** Revokes sessions and connect tokens by `sub` or `jti` (`POST /v1/revoke`). */
export async function revoke(o: HttpOptions & ({ sub: string } | { jti: string }) & { until?: number }): Promise<{ closed: number }> {
  const body: Record<string, unknown> = "sub" in o ? { sub: o.sub } : { jti: (o as { jti: string }).jti };
  if (o.until !== undefined) body.until = o.until;
  const out = await postWithRetry(o, "/v1/revoke", () => body);
  return out.body as { closed: number };
}

export interface PublisherOptions {
  /** Relay base URL (http/https). */
  url: string;
  app: string;
  kid?: string;
  secret: Secret;
  /** Payload key (or key to encrypt with: the first of a ring). */
  payloadKey: KeyInput;
  /** Restrict the publish tokens to this namespace. */
  ns?: string;
  /** Publish token lifetime in seconds (default 60). */
  tokenTtlSeconds?: number;
  retry?: RetryOptions;
  timeoutMs?: number;
  fetch?: typeof fetch;
}

/**
 * Convenience for an app backend: mints publish tokens, encrypts and publishes.
 *
 * ```ts
 * const pub = new SealcastPublisher({ url, app: "acme", kid: "k1", secret, payloadKey });
 * await pub.publish(`${ns}#absences`, "AddAbsence", { who: "ana", day: "2025-01-02" });
 * ```
 */
export class SealcastPublisher {
  private cached?: { token: string; until: number };
  constructor(private readonly o: PublisherOptions) {}

  /** A publish token, reused for half its lifetime. */
  token(): string {
    const ttl = this.o.tokenTtlSeconds ?? 60;
    const now = Date.now();
    if (this.cached && this.cached.until > now) return this.cached.token;
    const token = mintPublishToken({ app: this.o.app, kid: this.o.kid, secret: this.o.secret, ns: this.o.ns, ttlSeconds: ttl });
    this.cached = { token, until: now + (ttl * 1000) / 2 };
    return token;
  }

  private http(): HttpOptions {
    return { url: this.o.url, token: () => this.token(), retry: this.o.retry, timeoutMs: this.o.timeoutMs, fetch: this.o.fetch };
  }

  /** Encrypts `payload` (any JSON value) for `channel`/`event` and publishes it. */
  async publish(channel: string, event: string, payload: unknown, opts: { idempotencyKey?: string } = {}): Promise<PublishResult> {
    const data = await encrypt(channel, event, payload, this.o.payloadKey);
    return publish({ ...this.http(), channel, event, data, idempotencyKey: opts.idempotencyKey });
  }

  /** Encrypts and publishes many payloads in one request. */
  async publishBatch(items: readonly { channel: string; event: string; payload: unknown; idempotencyKey?: string }[]): Promise<BatchItemResult[]> {
    const publications = await Promise.all(
      items.map(async (it) => ({ channel: it.channel, event: it.event, data: await encrypt(it.channel, it.event, it.payload, this.o.payloadKey), idempotencyKey: it.idempotencyKey })),
    );
    return publishBatch({ ...this.http(), publications });
  }
}
