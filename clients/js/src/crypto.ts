/**
 * Payload encryption of PROTOCOL.md section 5, on WebCrypto (`globalThis.crypto.subtle`),
 * so it runs unchanged in browsers and in Node 20+.
 *
 *   data = base64(nonce(12) || ciphertext || tag(16))
 *   associated data = UTF-8(channel + "\n" + event)
 */

/** A payload key: 32 raw bytes, their standard base64, or an imported AES-GCM CryptoKey. */
export type KeyInput = Uint8Array | ArrayBuffer | string | CryptoKey;

export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
export const KEY_BYTES = 32;

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new Error("sealcast: WebCrypto (globalThis.crypto.subtle) is not available; a secure context (https or localhost) is required");
  return s;
}

/** Standard base64 (RFC 4648, with padding) of bytes. */
export function toBase64(bytes: Uint8Array): string {
  let s = "";
  const CHUNK = 0x8000;
  for (let i = 0; i < bytes.length; i += CHUNK) {
    s += String.fromCharCode.apply(null, Array.from(bytes.subarray(i, i + CHUNK)));
  }
  return btoa(s);
}

/** Decodes standard base64; throws on anything that is not strict standard base64. */
export function fromBase64(b64: string): Uint8Array {
  if (typeof b64 !== "string" || b64.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) {
    throw new Error("sealcast: not standard base64");
  }
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** WebCrypto's typings want ArrayBuffer-backed views. */
const bs = (u: Uint8Array): BufferSource => u as unknown as BufferSource;

function isCryptoKey(k: unknown): k is CryptoKey {
  return typeof CryptoKey !== "undefined" && k instanceof CryptoKey;
}

/** Imports a payload key for AES-256-GCM. Strings are standard base64 of 32 bytes. */
export async function importKey(key: KeyInput): Promise<CryptoKey> {
  if (isCryptoKey(key)) return key;
  let raw: Uint8Array;
  if (typeof key === "string") raw = fromBase64(key);
  else if (key instanceof ArrayBuffer) raw = new Uint8Array(key);
  else raw = key;
  if (raw.length !== KEY_BYTES) throw new Error(`sealcast: a payload key must be ${KEY_BYTES} bytes, got ${raw.length}`);
  return subtle().importKey("raw", bs(raw), { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

/** Associated data binding a payload to its channel and event. */
export function associatedData(channel: string, event: string): Uint8Array {
  return enc.encode(`${channel}\n${event}`);
}

/** Encrypts UTF-8 text (normally JSON) and returns the `data` string to publish. */
export async function encryptText(
  channel: string,
  event: string,
  text: string,
  key: KeyInput,
  options: { nonce?: Uint8Array } = {},
): Promise<string> {
  const k = await importKey(key);
  // A fresh random nonce per message. `options.nonce` exists only to make test vectors.
  const nonce = options.nonce ?? globalThis.crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
  if (nonce.length !== NONCE_BYTES) throw new Error("sealcast: nonce must be 12 bytes");
  const ct = new Uint8Array(
    await subtle().encrypt(
      { name: "AES-GCM", iv: bs(nonce), additionalData: bs(associatedData(channel, event)), tagLength: TAG_BYTES * 8 },
      k,
      bs(enc.encode(text)),
    ),
  );
  const out = new Uint8Array(NONCE_BYTES + ct.length);
  out.set(nonce, 0);
  out.set(ct, NONCE_BYTES);
  return toBase64(out);
}

/**
 * Encrypts a JSON value. A string argument is treated as a JSON *value* (it is
 * JSON.stringify'd); use {@link encryptText} to encrypt ready-made JSON text.
 */
export async function encrypt(
  channel: string,
  event: string,
  payload: unknown,
  key: KeyInput,
  options: { nonce?: Uint8Array } = {},
): Promise<string> {
  const text = JSON.stringify(payload);
  if (text === undefined) throw new TypeError("sealcast: payload is not JSON-serializable");
  return encryptText(channel, event, text, key, options);
}

/** Raised when no key of the ring authenticates a payload (or the payload is malformed). */
export class DecryptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DecryptError";
  }
}

/**
 * Decrypts a `data` string with the first key of the ring that authenticates it and returns
 * the UTF-8 plaintext. Throws {@link DecryptError} if none does.
 */
export async function decryptText(
  channel: string,
  event: string,
  data: string,
  keys: KeyInput | readonly KeyInput[],
): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = fromBase64(data);
  } catch {
    throw new DecryptError("payload is not standard base64");
  }
  if (bytes.length < NONCE_BYTES + TAG_BYTES) throw new DecryptError("payload shorter than nonce + tag");
  const ring = (Array.isArray(keys) ? keys : [keys]) as readonly KeyInput[];
  if (ring.length === 0) throw new DecryptError("no payload key configured");
  const iv = bytes.subarray(0, NONCE_BYTES);
  const body = bytes.subarray(NONCE_BYTES);
  const ad = associatedData(channel, event);
  for (const key of ring) {
    let pt: ArrayBuffer;
    try {
      pt = await subtle().decrypt({ name: "AES-GCM", iv: bs(iv), additionalData: bs(ad), tagLength: TAG_BYTES * 8 }, await importKey(key), bs(body));
    } catch {
      continue;
    }
    try {
      return dec.decode(pt);
    } catch {
      throw new DecryptError("plaintext is not UTF-8");
    }
  }
  throw new DecryptError("authentication failed with every key of the ring");
}

/** Decrypts and parses the JSON plaintext. */
export async function decrypt<T = unknown>(
  channel: string,
  event: string,
  data: string,
  keys: KeyInput | readonly KeyInput[],
): Promise<T> {
  const text = await decryptText(channel, event, data, keys);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new DecryptError("plaintext is not JSON");
  }
}

/** 32 fresh random bytes, e.g. for a new payload key. */
export function generateKey(): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(KEY_BYTES));
}
