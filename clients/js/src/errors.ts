/**
 * The error type of the subscriber client. It lives apart from the `Sealcast` class so that
 * the option types (which mention it in `onError`) and the helpers can use it without
 * depending on the connection state machine.
 */

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

/** The message of anything thrown, for error reports. */
export function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
