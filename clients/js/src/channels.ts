/**
 * Per-channel bookkeeping of the subscriber client: which listeners a channel has, how far its
 * stream was seen, and where its relay subscription stands; plus the `Subscription` handle
 * that `Sealcast.subscribe` returns. The wire traffic itself stays in the `Sealcast` class.
 */
import type { StreamPosition, SubscribedFrame } from "./protocol.js";
import type { PublicationMeta, SubscribeOptions, Subscription } from "./types.js";

/** One `subscribe()` call: its options and its per-event handlers. */
export interface Listener {
  opts: SubscribeOptions<any>;
  handlers: Map<string, Set<(payload: any, meta: PublicationMeta) => void>>;
}

/** The relay subscription of a channel on the current socket. */
export type WireState = "none" | "pending" | "active";

/** A channel with at least one listener. Several listeners share one relay subscription. */
export interface ChannelState {
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

/** A channel not yet subscribed on the wire, starting from `since` when given. */
export function newChannelState(channel: string, since: StreamPosition | undefined): ChannelState {
  const ch: ChannelState = { channel, listeners: new Set(), wire: "none" };
  if (since) {
    ch.epoch = since.epoch;
    ch.offset = since.offset;
  }
  return ch;
}

/** The last position seen on a channel, if any. */
export function channelPosition(ch: ChannelState): StreamPosition | undefined {
  return ch.epoch !== undefined && ch.offset !== undefined ? { epoch: ch.epoch, offset: ch.offset } : undefined;
}

/**
 * The handle of one listener on a channel. Its `unsubscribe` removes the listener once, and
 * calls `onLastListenerGone` when that leaves the channel without listeners.
 */
export function subscriptionHandle<M extends object>(
  state: ChannelState,
  listener: Listener,
  onLastListenerGone: () => void,
): Subscription<M> {
  let done = false;
  return {
    channel: state.channel,
    get position() {
      return channelPosition(state);
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
      if (state.listeners.size === 0) onLastListenerGone();
    },
  };
}

/**
 * Applies the relay's `subscribed` answer to a pending channel, which becomes active. When the
 * relay recovered from `asked`, the replay of (asked.offset, f.offset] follows, so the last seen
 * offset stays at `asked.offset`; otherwise the channel stands at the relay's position.
 */
export function markSubscribed(ch: ChannelState, f: SubscribedFrame, asked: StreamPosition | undefined): void {
  ch.wire = "active";
  ch.replayUntil = f.offset;
  ch.epoch = f.epoch;
  ch.offset = asked && f.recovered === true ? asked.offset : f.offset;
}
