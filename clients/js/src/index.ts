/** sealcast-client: browser / subscriber entry point (no runtime dependencies). */
export {
  Sealcast,
  SealcastError,
  type SealcastOptions,
  type SealcastErrorKind,
  type ConnectionState,
  type SubscribeOptions,
  type Subscription,
  type PublicationMeta,
  type RecoveryFailedInfo,
  type EventMap,
  type EventName,
  type BackoffOptions,
  type WebSocketLike,
  type WebSocketConstructor,
} from "./client.js";
export {
  encrypt,
  encryptText,
  decrypt,
  decryptText,
  importKey,
  generateKey,
  toBase64,
  fromBase64,
  DecryptError,
  type KeyInput,
} from "./crypto.js";
export * from "./protocol.js";
