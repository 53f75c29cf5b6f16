// The TypeScript SDK's subscriber of the cross-SDK matrix, the same module in Node and in the
// browser: a `Sealcast` client subscribed to every channel of the plan, collecting as many
// publications per channel as the plan has payloads for it, each with its plaintext exactly
// as decrypted (`meta.plaintext`), as base64 of its UTF-8 bytes.
import { Sealcast } from "../../dist/index.js";

function base64OfUtf8(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

/**
 * Starts subscribing. `token` is a connect token for the plan's namespace; `WebSocket` a
 * constructor where there is no global one (Node). Returns `{ ready, done, close }`: `ready`
 * resolves once every channel is subscribed; `done` with `{ received: { channel: [...] } }`
 * once every publication arrived, or rejects after `plan.timeout_ms` with what did.
 */
export function subscribeAll(plan, { token, WebSocket } = {}) {
  const errors = [];
  const sc = new Sealcast({ url: plan.ws, getToken: async () => token, keys: [plan.payload_key], WebSocket, onError: (e) => errors.push(`${e.kind}: ${e.message}`) });
  const received = {};
  const want = {};
  let subscribed = 0;
  let markReady;
  let markDone;
  const ready = new Promise((r) => (markReady = r));
  const done = new Promise((r) => (markDone = r));
  const channels = Object.entries(plan.channels);
  const finished = () => channels.every(([name, ch]) => received[ch].length >= want[name]);
  for (const [name, channel] of channels) {
    received[channel] = [];
    want[name] = plan.payloads[name].length;
    let first = true;
    sc.subscribe(channel, {
      onSubscribed: () => {
        if (first && ++subscribed === channels.length) markReady();
        first = false;
      },
      onEvent: (event, _payload, meta) => {
        received[channel].push({ offset: meta.offset, event, plaintext_b64: base64OfUtf8(meta.plaintext) });
        if (finished()) markDone();
      },
    });
  }
  // Bounded waits whose timers end with them or with close() (a pending timer would keep
  // Node alive).
  const timers = new Set();
  const timeout = (what, p) => {
    let timer;
    const late = new Promise((_, rej) => {
      timer = setTimeout(() => {
        const counts = Object.fromEntries(Object.entries(received).map(([c, l]) => [c, l.length]));
        rej(new Error(`${what} timed out after ${plan.timeout_ms} ms; errors: ${errors.join("; ") || "none"}; received: ${JSON.stringify(counts)}`));
      }, plan.timeout_ms);
      timers.add(timer);
    });
    return Promise.race([p, late]).finally(() => {
      clearTimeout(timer);
      timers.delete(timer);
    });
  };
  return {
    ready: timeout("subscribing", ready),
    done: timeout("receiving", done).then(() => ({ received, errors })),
    close: () => {
      for (const t of timers) clearTimeout(t);
      sc.close();
    },
  };
}
