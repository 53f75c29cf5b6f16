// Integration tests against the real sealcast relay binary (no mock server).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Sealcast, generateKey } from "../../dist/index.js";
import { SealcastPublisher, mintConnectToken, publish, publishBatch, mintPublishToken, encrypt, SealcastHttpError } from "../../dist/server.js";
import { startRelay, skipReason, APP, KID, SECRET } from "../helpers/relay.mjs";
import { until, tick } from "../helpers/fake-ws.mjs";

const NS = "ari:cloud:jira::site/7f3c0d2e/dashboard/10001";
const payloadKey = generateKey();
let relay;
let publisher;
const clients = [];
let seq = 0;
const freshChannel = (name) => `${NS}#${name}-${process.pid}-${++seq}`;

/** Records the sockets the SDK opens, so a test can kill one. */
function recordingWs() {
  const sockets = [];
  class Recording extends WebSocket {
    constructor(url) {
      super(url);
      sockets.push(this);
      this.sentFrames = [];
      const send = this.send.bind(this);
      this.send = (d) => {
        this.sentFrames.push(JSON.parse(d));
        send(d);
      };
    }
  }
  return { Ctor: Recording, sockets };
}

function client(extra = {}) {
  const errors = [];
  let tokenCalls = 0;
  const sc = new Sealcast({
    url: relay.ws,
    getToken: async () => {
      tokenCalls++;
      return mintConnectToken({ app: APP, kid: KID, secret: SECRET, ns: NS, sub: "user-1", ttlSeconds: 3600 });
    },
    keys: [payloadKey],
    WebSocket,
    onError: (e) => errors.push(e),
    backoff: { baseMs: 100, maxMs: 1000 },
    ...extra,
  });
  clients.push(sc);
  return { sc, errors, tokenCalls: () => tokenCalls };
}

const subscribedOnce = (sc, channel, opts = {}) =>
  new Promise((res, rej) => {
    const got = [];
    const t = setTimeout(() => rej(new Error("not subscribed within 5 s")), 5000);
    const sub = sc.subscribe(channel, {
      ...opts,
      onEvent: (ev, p, meta) => got.push({ ev, p, meta }),
      onSubscribed: (info) => {
        clearTimeout(t);
        opts.onSubscribed?.(info);
        res({ sub, got, info });
      },
    });
  });

before(async () => {
  if (skipReason) return;
  relay = await startRelay();
  publisher = new SealcastPublisher({ url: relay.http, app: APP, kid: KID, secret: SECRET, payloadKey, ns: NS, retry: { retries: 3, baseMs: 50, maxMs: 500 } });
});

after(async () => {
  for (const c of clients) c.close();
  await relay?.stop();
});

const opts = { skip: skipReason, timeout: 30000 };

test("connect, subscribe, and decrypt a publication made with the SDK's publish", opts, async () => {
  const { sc, errors } = client();
  const states = [];
  sc.onStateChange((s) => states.push(s.status));
  const ch = freshChannel("gadget");
  const { sub, got, info } = await subscribedOnce(sc, ch);
  assert.equal(sc.state.status, "connected");
  assert.equal(sc.state.ns, NS);
  assert.equal(typeof info.position.epoch, "string");
  const typed = [];
  sub.on("AddAbsence", (p) => typed.push(p));
  const r = await publisher.publish(ch, "AddAbsence", { who: "Ada", day: "2024-05-01", note: "Ürlaub" });
  assert.equal(r.offset, info.position.offset + 1);
  await until(() => got.length === 1, 5000, "publication");
  assert.deepEqual(got[0].p, { who: "Ada", day: "2024-05-01", note: "Ürlaub" });
  assert.equal(got[0].ev, "AddAbsence");
  assert.equal(got[0].meta.offset, r.offset);
  assert.equal(got[0].meta.epoch, r.epoch);
  assert.deepEqual(typed, [got[0].p]);
  assert.deepEqual(errors, []);
  assert.ok(states.includes("connecting") && states.includes("connected"));
  sc.close();
});

test("after the socket is killed, everything published meanwhile arrives exactly once, in order", opts, async () => {
  const { Ctor, sockets } = recordingWs();
  // random 0.99 with a 1.5 s window: the reconnect waits ~1.5 s, while we publish
  const { sc, errors } = client({ WebSocket: Ctor, backoff: { baseMs: 1500, maxMs: 1500 }, random: () => 0.99 });
  const ch = freshChannel("recover");
  const { got } = await subscribedOnce(sc, ch);
  await publisher.publish(ch, "Tick", { n: 1 });
  await until(() => got.length === 1, 5000);
  sockets[0].terminate(); // abrupt: no close handshake
  await until(() => sc.state.status === "disconnected", 2000, "disconnected state");
  assert.equal(sc.state.willRetry, true);
  for (let n = 2; n <= 6; n++) await publisher.publish(ch, "Tick", { n });
  assert.equal(sc.state.status, "disconnected", "all were published while disconnected");
  await until(() => got.length >= 6, 10000, "caught up");
  await tick(300); // nothing extra arrives
  assert.deepEqual(got.map((g) => g.p.n), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(got.map((g) => g.meta.replayed), [false, true, true, true, true, true]);
  assert.equal(sockets.length, 2);
  const resub = sockets[1].sentFrames.find((f) => f.type === "subscribe");
  assert.deepEqual(resub.since, { epoch: got[0].meta.epoch, offset: got[0].meta.offset });
  // live again
  await publisher.publish(ch, "Tick", { n: 7 });
  await until(() => got.length === 7, 5000);
  assert.deepEqual(errors.filter((e) => e.kind !== "token"), []);
  sc.close();
});

test("subscribe with `since` from a snapshot replays what followed; a wrong epoch calls onRecoveryFailed", opts, async () => {
  const ch = freshChannel("snapshot");
  const r1 = await publisher.publish(ch, "Tick", { n: 1 });
  await publisher.publish(ch, "Tick", { n: 2 });
  await publisher.publish(ch, "Tick", { n: 3 });
  const { sc } = client();
  const { got, info } = await subscribedOnce(sc, ch, { since: { epoch: r1.epoch, offset: r1.offset } });
  assert.equal(info.recovered, true);
  await until(() => got.length === 2, 5000);
  assert.deepEqual(got.map((g) => g.p.n), [2, 3]);

  const failed = [];
  const { sc: sc2 } = client();
  const res = await subscribedOnce(sc2, ch, { since: { epoch: "not-the-epoch", offset: 1 }, onRecoveryFailed: (i) => failed.push(i) });
  assert.equal(res.info.recovered, false);
  await until(() => failed.length === 1, 2000, "onRecoveryFailed");
  assert.deepEqual(failed[0].since, { epoch: "not-the-epoch", offset: 1 });
  assert.equal(failed[0].position.epoch, r1.epoch);
  assert.equal(failed[0].position.offset, 3);
  await publisher.publish(ch, "Tick", { n: 4 });
  await until(() => res.got.length >= 1, 5000);
  assert.deepEqual(res.got.map((g) => g.p.n), [4], "after a failed recovery only new publications are delivered");
  sc.close();
  sc2.close();
});

test("a bad token is refused with 4001 and not retried", opts, async () => {
  const { sc, errors, tokenCalls } = client({
    getToken: async () => mintConnectToken({ app: APP, kid: KID, secret: SECRET + "-wrong", ns: NS, sub: "user-1", ttlSeconds: 3600 }),
  });
  let calls = 0;
  sc.onStateChange((s) => s.status === "connecting" && calls++);
  await until(() => sc.state.status === "disconnected", 5000, "disconnect");
  assert.equal(sc.state.code, 4001);
  assert.equal(sc.state.willRetry, false);
  await tick(1500);
  assert.equal(calls, 1, "connected only once");
  assert.ok(errors.some((e) => e.kind === "closed" && e.code === 4001));
  void tokenCalls;
});

test("a publish token cannot connect (4001)", opts, async () => {
  const { sc } = client({ getToken: async () => mintPublishToken({ app: APP, kid: KID, secret: SECRET, ns: NS, ttlSeconds: 60 }) });
  await until(() => sc.state.status === "disconnected", 5000);
  assert.equal(sc.state.code, 4001);
  assert.equal(sc.state.willRetry, false);
});

test("a channel of another namespace is refused with forbidden; the connection stays usable", opts, async () => {
  const { sc, errors } = client();
  const subErrors = [];
  sc.subscribe(`ari:cloud:jira::site/other/dashboard/1#g`, { onError: (e) => subErrors.push(e) });
  const ch = freshChannel("ok");
  const { got } = await subscribedOnce(sc, ch);
  await until(() => subErrors.length === 1, 5000, "forbidden");
  assert.equal(subErrors[0].code, "forbidden");
  assert.ok(errors.some((e) => e.code === "forbidden"));
  await publisher.publish(ch, "Tick", { n: 1 });
  await until(() => got.length === 1, 5000);
  sc.close();
});

test("two subscriptions to one channel share one relay subscription; unsubscribe works", opts, async () => {
  const { Ctor, sockets } = recordingWs();
  const { sc, errors } = client({ WebSocket: Ctor });
  const ch = freshChannel("shared");
  const a = await subscribedOnce(sc, ch);
  const b = await subscribedOnce(sc, ch);
  await publisher.publish(ch, "Tick", { n: 1 });
  await until(() => a.got.length === 1 && b.got.length === 1, 5000);
  assert.equal(sockets[0].sentFrames.filter((f) => f.type === "subscribe").length, 1);
  a.sub.unsubscribe();
  b.sub.unsubscribe();
  assert.equal(sockets[0].sentFrames.filter((f) => f.type === "unsubscribe").length, 1);
  await publisher.publish(ch, "Tick", { n: 2 });
  await tick(300);
  assert.equal(a.got.length + b.got.length, 2);
  assert.deepEqual(errors, [], "the relay accepted the unsubscribe");
  sc.close();
});

test("a repeated idempotency key is published once; batch publish; protocol errors surface", opts, async () => {
  const { sc } = client();
  const ch = freshChannel("idem");
  const { got } = await subscribedOnce(sc, ch);
  const token = () => mintPublishToken({ app: APP, kid: KID, secret: SECRET, ns: NS, ttlSeconds: 60 });
  const data = await encrypt(ch, "Tick", { n: 1 }, payloadKey);
  const r1 = await publish({ url: relay.http, token, channel: ch, event: "Tick", data, idempotencyKey: "idem-1" });
  const r2 = await publish({ url: relay.http, token, channel: ch, event: "Tick", data, idempotencyKey: "idem-1" });
  assert.deepEqual(r2, r1);
  const batch = await publishBatch({
    url: relay.http,
    token,
    publications: [
      { channel: ch, event: "Tick", data: await encrypt(ch, "Tick", { n: 2 }, payloadKey) },
      { channel: ch, event: "bad event!", data },
      { channel: ch, event: "Tick", data: await encrypt(ch, "Tick", { n: 3 }, payloadKey) },
    ],
  });
  assert.equal(batch.length, 3);
  assert.equal(batch[0].offset, r1.offset + 1);
  assert.equal(batch[1].error?.code, "bad_request");
  assert.equal(batch[2].offset, r1.offset + 2);
  await until(() => got.length === 3, 5000);
  await tick(200);
  assert.deepEqual(got.map((g) => g.p.n), [1, 2, 3]);
  // errors carry the protocol's code
  await assert.rejects(
    publish({ url: relay.http, token, channel: `other#t`, event: "Tick", data }),
    (e) => e instanceof SealcastHttpError && e.status === 403 && e.code === "forbidden",
  );
  await assert.rejects(
    publish({ url: relay.http, token: mintConnectToken({ app: APP, kid: KID, secret: SECRET, ns: NS, sub: "u", ttlSeconds: 60 }), channel: ch, event: "Tick", data }),
    (e) => e instanceof SealcastHttpError && e.status === 401 && e.code === "unauthorized",
  );
  await assert.rejects(
    publish({ url: relay.http, token, channel: ch, event: "Tick", data: Buffer.from("plain text, not encrypted").toString("base64") }),
    (e) => e instanceof SealcastHttpError && e.status === 400 && e.code === "bad_request",
  );
  sc.close();
});

test("publications racing with subscribe and with a killed socket: no gap, no duplicate", opts, async () => {
  const ch = freshChannel("race");
  const N = 60;
  const { Ctor, sockets } = recordingWs();
  const { sc, errors } = client({ WebSocket: Ctor, backoff: { baseMs: 50, maxMs: 200 } });
  const got = [];
  let publishing = true;
  const published = [];
  const producer = (async () => {
    for (let n = 1; n <= N; n++) {
      published.push((await publisher.publish(ch, "Tick", { n })).offset);
      if (n % 10 === 0) await tick(20);
    }
    publishing = false;
  })();
  await tick(30); // some publications exist before the subscription, more arrive during its setup
  sc.subscribe(ch, { onEvent: (_e, p, m) => got.push([p.n, m.offset]) });
  await until(() => got.length >= 5 || !publishing, 10000, "first live publications");
  sockets[sockets.length - 1].terminate();
  await until(() => sockets.length >= 2 && sc.state.status === "connected", 10000, "reconnected");
  await producer;
  const first = got[0][1];
  await until(() => got.length > 0 && got[got.length - 1][1] === published[published.length - 1], 10000, "caught up");
  await tick(200);
  const offsets = got.map((g) => g[1]);
  assert.deepEqual(offsets, Array.from({ length: offsets.length }, (_, i) => first + i), "contiguous offsets, each once");
  assert.deepEqual(got.map((g) => g[0]), offsets.map((o) => o - published[0] + 1), "payloads match offsets");
  assert.deepEqual(errors.filter((e) => e.kind === "gap" || e.kind === "decrypt_failed"), []);
  sc.close();
});

test("oversized payloads are refused with 413 payload_too_large", opts, async () => {
  const ch = freshChannel("big");
  const token = () => mintPublishToken({ app: APP, kid: KID, secret: SECRET, ns: NS, ttlSeconds: 60 });
  const data = await encrypt(ch, "Big", { blob: "x".repeat(70 * 1024) }, payloadKey);
  await assert.rejects(
    publish({ url: relay.http, token, channel: ch, event: "Big", data, retry: { retries: 0 } }),
    (e) => e instanceof SealcastHttpError && e.status === 413 && e.code === "payload_too_large",
  );
});
