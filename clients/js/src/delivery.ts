/**
 * Delivery to application code, kept apart from the connection state machine: publications
 * are decrypted one after another so they reach handlers in arrival order, other callbacks can
 * queue behind them, and a handler that throws is reported instead of breaking the client.
 */
import type { ChannelState } from "./channels.js";
import { decryptText } from "./crypto.js";
import { errMessage, SealcastError } from "./errors.js";
import type { PublicationMeta } from "./types.js";

export class Delivery {
  /** Serialises decryption so publications are delivered in arrival order. */
  private chain: Promise<void> = Promise.resolve();
  private readonly report: (e: SealcastError) => void;

  constructor(report: (e: SealcastError) => void) {
    this.report = report;
  }

  /** Runs `task` after every task queued before it. */
  enqueue(task: () => Promise<void>): void {
    this.chain = this.chain.then(task).catch((e) => this.report(new SealcastError("handler", errMessage(e), { cause: e })));
  }

  /** Calls an application callback; what it throws is reported. */
  call(f: () => void, channel?: string): void {
    try {
      f();
    } catch (e) {
      this.report(new SealcastError("handler", `handler threw: ${errMessage(e)}`, { channel, cause: e }));
    }
  }

  /**
   * Queues one publication of `ch`: decrypts `data` with the key ring, parses the JSON
   * plaintext and hands it to every listener (`onEvent`, then the handlers of its event), with
   * `position` and the plaintext as its metadata.
   * One that fails is reported and dropped; none is delivered once `stillSubscribed()` is false.
   */
  publication(ch: ChannelState, data: string, position: Omit<PublicationMeta, "plaintext">, keys: Promise<CryptoKey[]>, stillSubscribed: () => boolean): void {
    const { channel, event, offset } = position;
    this.enqueue(async () => {
      let text: string;
      try {
        text = await decryptText(channel, event, data, await keys);
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
      if (!stillSubscribed()) return; // unsubscribed while decrypting
      const meta: PublicationMeta = { ...position, plaintext: text };
      for (const l of [...ch.listeners]) {
        if (l.opts.onEvent) this.call(() => l.opts.onEvent!(event, payload, meta), channel);
        const hs = l.handlers.get(event);
        if (hs) for (const h of [...hs]) this.call(() => h(payload, meta), channel);
      }
    });
  }
}
