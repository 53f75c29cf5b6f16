// The subscriber's state machine against a scripted in-memory WebSocket.
import { test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { Sealcast, encrypt, generateKey } from "../../dist/index.js";
import { FakeWS, tick, until } from "../helpers/fake-ws.mjs";

const CH = "ns-1#gadget-1";
const key = generateKey();
const clients = [];
beforeEach(() => FakeWS.reset());
// A failed assertion must not leave a client reconnecting forever.
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

function make(extra = {}) {
  const errors = [];
  const states = [];
  let tokens = 0;
  const sc = new Sealcast({
    url: "ws://127.0.0.1:1/v1/ws",
    getToken: async () => `tok-${++tokens}`,
    keys: [key],
    WebSocket: FakeWS,
    onError: (e) => errors.push(e),
    random: () => 0,
    ...extra,
  });
  clients.push(sc);
  sc.onStateChange((s) => states.push(s));
  return { sc, errors, states, tokens: () => tokens };
}

async function connected(ws, expiresIn = 3600) {
  ws.open();
  ws.emit({ type: "connected", session: "s1", ns: "ns-1", expires_at: Math.floor(Date.now() / 1000) + expiresIn });
}

const pubFrame = async (offset, payload, event = "AddAbsence", k = key, channel = CH) => ({ type: "pub", channel, event, offset, data: await encrypt(channel, event, payload, k) });

test("connects with a token, subscribes, decrypts and delivers in order", async () => {
  const { sc, states } = make();
  const got = [];
  const typed = [];
  const sub = sc.subscribe(CH, { onEvent: (ev, p, meta) => got.push([ev, p, meta.offset]) });
  sub.on("AddAbsence", (p) => typed.push(p));
  await until(() => FakeWS.last, 500, "socket");
  const ws = FakeWS.last;
  assert.equal(ws.url, "ws://127.0.0.1:1/v1/ws");
  await connected(ws);
  assert.deepEqual(ws.sent[0], { type: "connect", token: "tok-1" });
  const subFrame = ws.frames("subscribe")[0];
  assert.equal(subFrame.channel, CH);
  assert.equal(subFrame.since, undefined);
  ws.emit({ type: "subscribed", id: subFrame.id, channel: CH, epoch: "E1", offset: 4 });
  for (let o = 5; o <= 8; o++) ws.emit(await pubFrame(o, { n: o }, o === 7 ? "Other" : "AddAbsence"));
  await until(() => got.length === 4, 1000, "4 events");
  assert.deepEqual(got.map((g) => g[2]), [5, 6, 7, 8]);
  assert.deepEqual(got[2].slice(0, 2), ["Other", { n: 7 }]);
  assert.deepEqual(typed, [{ n: 5 }, { n: 6 }, { n: 8 }]);
  assert.deepEqual(sub.position, { epoch: "E1", offset: 8 });
  assert.deepEqual(states.map((s) => s.status), ["connecting", "connected"]);
  sc.close();
  assert.equal(sc.state.status, "disconnected");
});

test("duplicates and stale offsets are dropped", async () => {
  const { sc } = make();
  const got = [];
  sc.subscribe(CH, { onEvent: (_e, p) => got.push(p.n) });
  await until(() => FakeWS.last);
  const ws = FakeWS.last;
  await connected(ws);
  ws.emit({ type: "subscribed", id: ws.frames("subscribe")[0].id, channel: CH, epoch: "E", offset: 10 });
  for (const o of [9, 10, 11, 11, 12, 10, 12, 13]) ws.emit(await pubFrame(o, { n: o }));
  await tick(50);
  assert.deepEqual(got, [11, 12, 13]);
  sc.close();
});

test("a publication that fails authentication is reported and never delivered; key ring for rotation", async () => {
  const oldKey = generateKey();
  const { sc, errors } = make({ keys: [key, oldKey] });
  const got = [];
  sc.subscribe(CH, { onEvent: (_e, p) => got.push(p.n) });
  await until(() => FakeWS.last);
  const ws = FakeWS.last;
  await connected(ws);
  ws.emit({ type: "subscribed", id: ws.frames("subscribe")[0].id, channel: CH, epoch: "E", offset: 0 });
  ws.emit(await pubFrame(1, { n: 1 }, "AddAbsence", generateKey())); // unknown key
  ws.emit(await pubFrame(2, { n: 2 }, "AddAbsence", oldKey)); // previous key: still accepted
  const moved = await pubFrame(3, { n: 3 }, "AddAbsence", key, "ns-1#other"); // encrypted for another channel
  ws.emit({ ...moved, channel: CH });
  ws.emit({ type: "pub", channel: CH, event: "AddAbsence", offset: 4, data: "AAAA" });
  ws.emit(await pubFrame(5, { n: 5 }));
  await until(() => got.length === 2, 1000);
  await tick(20);
  assert.deepEqual(got, [2, 5]);
  const d = errors.filter((e) => e.kind === "decrypt_failed");
  assert.deepEqual(d.map((e) => e.offset), [1, 3, 4]);
  assert.ok(d.every((e) => e.channel === CH && !/\"n\"/.test(e.message)));
  // setKeys replaces the ring
  sc.setKeys([oldKey]);
  ws.emit(await pubFrame(6, { n: 6 }, "AddAbsence", key));
  ws.emit(await pubFrame(7, { n: 7 }, "AddAbsence", oldKey));
  await until(() => got.length === 3, 1000);
  assert.deepEqual(got, [2, 5, 7]);
  sc.close();
});

test("after a network drop it reconnects with a fresh token and resubscribes with since = last seen", async () => {
  const { sc, tokens } = make({ backoff: { baseMs: 10, maxMs: 20 } });
  const got = [];
  const failed = [];
  sc.subscribe(CH, { onEvent: (_e, p, m) => got.push([p.n, m.replayed]), onRecoveryFailed: (i) => failed.push(i) });
  await until(() => FakeWS.last);
  let ws = FakeWS.last;
  await connected(ws);
  ws.emit({ type: "subscribed", id: ws.frames("subscribe")[0].id, channel: CH, epoch: "E", offset: 2 });
  ws.emit(await pubFrame(3, { n: 3 }));
  await until(() => got.length === 1);
  ws.serverClose(1006);
  assert.equal(sc.state.status, "disconnected");
  assert.equal(sc.state.willRetry, true);
  await until(() => FakeWS.instances.length === 2, 1000, "second socket");
  ws = FakeWS.last;
  await connected(ws);
  assert.equal(tokens(), 2);
  const s2 = ws.frames("subscribe")[0];
  assert.deepEqual(s2.since, { epoch: "E", offset: 3 });
  ws.emit({ type: "subscribed", id: s2.id, channel: CH, epoch: "E", offset: 6, recovered: true });
  for (const o of [3, 4, 5, 6, 7]) ws.emit(await pubFrame(o, { n: o }));
  await until(() => got.length === 5, 1000);
  assert.deepEqual(got, [[3, false], [4, true], [5, true], [6, true], [7, false]]);
  assert.equal(failed.length, 0);

  // the relay restarted: new epoch, recovered:false -> onRecoveryFailed, offsets restart
  ws.serverClose(1001);
  await until(() => FakeWS.instances.length === 3, 1000, "third socket");
  ws = FakeWS.last;
  await connected(ws);
  const s3 = ws.frames("subscribe")[0];
  assert.deepEqual(s3.since, { epoch: "E", offset: 7 });
  ws.emit({ type: "subscribed", id: s3.id, channel: CH, epoch: "F", offset: 1, recovered: false });
  ws.emit(await pubFrame(2, { n: 102 }));
  await until(() => got.length === 6, 1000);
  assert.deepEqual(failed, [{ channel: CH, since: { epoch: "E", offset: 7 }, position: { epoch: "F", offset: 1 } }]);
  assert.deepEqual(got[5], [102, false]);
  sc.close();
});

test("close codes: never retried for 4001, 4003, 1002, 1003, 1007, 1008, 1009 (a client bug is not retried in a loop)", async () => {
  for (const code of [4001, 4003, 1002, 1003, 1007, 1008, 1009]) {
    FakeWS.reset();
    const { sc, errors, tokens } = make({ backoff: { baseMs: 1, maxMs: 2 } });
    await until(() => FakeWS.last);
    FakeWS.last.open();
    FakeWS.last.serverClose(code, "nope");
    await tick(30);
    assert.equal(FakeWS.instances.length, 1, `no reconnect after ${code}`);
    assert.equal(tokens(), 1);
    assert.deepEqual({ ...sc.state }, { status: "disconnected", code, reason: "nope", willRetry: false });
    assert.ok(errors.some((e) => e.kind === "closed" && e.code === code));
    sc.close();
  }
});

test("close codes: 4002 reconnects promptly with a new token; 1011/4008/1001 recover with backoff; 4029 backs off longer", async () => {
  const { sc, tokens } = make({ backoff: { baseMs: 1000, maxMs: 8000, rateLimitedMinMs: 5000 }, random: () => 0.5 });
  sc.subscribe(CH);
  await until(() => FakeWS.last);
  await connected(FakeWS.last);
  FakeWS.last.serverClose(4002, "expired");
  assert.ok(sc.state.willRetry && sc.state.retryInMs < 250);
  await until(() => FakeWS.instances.length === 2, 1000);
  assert.equal(tokens(), 2);

  const delays = [];
  for (const code of [1011, 4008, 1001]) {
    FakeWS.last.serverClose(code);
    delays.push(sc.state.retryInMs);
    assert.equal(sc.state.code, code);
    sc.reconnect(); // skip the wait
    await until(() => FakeWS.last.readyState === 0 && FakeWS.instances.length >= 3, 500);
  }
  assert.deepEqual(delays, [1000, 2000, 4000], "full jitter over a doubling window (the 4002 counted as attempt 1)");
  FakeWS.last.serverClose(4029);
  assert.ok(sc.state.retryInMs >= 2500, `4029 waits at least half of rateLimitedMinMs, got ${sc.state.retryInMs}`);
  sc.close();
});

test("4002 before `connected` (token already expired) backs off instead of looping", async () => {
  const { sc, tokens } = make({ backoff: { baseMs: 1000, maxMs: 8000 }, random: () => 0.5 });
  await until(() => FakeWS.last);
  FakeWS.last.open();
  FakeWS.last.serverClose(4002, "expired");
  assert.equal(sc.state.retryInMs, 500);
  sc.reconnect();
  await until(() => FakeWS.instances.length === 2);
  FakeWS.last.open();
  FakeWS.last.serverClose(4002, "expired");
  assert.equal(sc.state.retryInMs, 1000);
  assert.equal(tokens(), 2);
  sc.close();
});

test("backoff window is capped and jittered", async () => {
  const seq = [0.999, 0.999, 0.999, 0.999, 0.999, 0.999, 0.999, 0.1];
  let i = 0;
  const { sc } = make({ backoff: { baseMs: 100, maxMs: 400 }, random: () => seq[i++ % seq.length] });
  const delays = [];
  for (let k = 0; k < 5; k++) {
    await until(() => FakeWS.instances.length === k + 1, 1000);
    FakeWS.last.serverClose(1006);
    delays.push(sc.state.retryInMs);
    sc.reconnect();
  }
  assert.deepEqual(delays, [99, 199, 399, 399, 399]);
  sc.close();
});

test("token is refreshed in-band before it expires", async () => {
  const { sc, tokens } = make({ refreshAt: 0.5 });
  await until(() => FakeWS.last);
  const ws = FakeWS.last;
  await connected(ws, 1); // expires in ~1 s -> refresh at ~0.5 s
  await until(() => ws.frames("refresh").length === 1, 2000, "refresh frame");
  const r = ws.frames("refresh")[0];
  assert.equal(r.token, "tok-2");
  assert.equal(tokens(), 2);
  const newExp = Math.floor(Date.now() / 1000) + 3600;
  ws.emit({ type: "refreshed", id: r.id, expires_at: newExp });
  assert.equal(sc.state.expiresAt, newExp);
  sc.close();
});

test("a refused subscription is reported and not retried; unsubscribe stops delivery", async () => {
  const { sc, errors } = make({ backoff: { baseMs: 1, maxMs: 2 } });
  const subErrors = [];
  sc.subscribe("other-ns#t", { onError: (e) => subErrors.push(e) });
  const got = [];
  const a = sc.subscribe(CH, { onEvent: (_e, p) => got.push(["a", p.n]) });
  const b = sc.subscribe(CH, { onEvent: (_e, p) => got.push(["b", p.n]) });
  await until(() => FakeWS.last);
  let ws = FakeWS.last;
  await connected(ws);
  const subs = ws.frames("subscribe");
  assert.equal(subs.length, 2, "one wire subscription per channel");
  const forb = subs.find((s) => s.channel === "other-ns#t");
  ws.emit({ type: "error", id: forb.id, code: "forbidden", message: "namespace" });
  assert.equal(subErrors[0].code, "forbidden");
  assert.ok(errors.some((e) => e.kind === "relay_error" && e.code === "forbidden"));
  const mine = subs.find((s) => s.channel === CH);
  ws.emit({ type: "subscribed", id: mine.id, channel: CH, epoch: "E", offset: 0 });
  ws.emit(await pubFrame(1, { n: 1 }));
  await until(() => got.length === 2);
  a.unsubscribe();
  ws.emit(await pubFrame(2, { n: 2 }));
  await until(() => got.length === 3);
  assert.deepEqual(got, [["a", 1], ["b", 1], ["b", 2]]);
  assert.equal(ws.frames("unsubscribe").length, 0);
  b.unsubscribe();
  assert.deepEqual(ws.frames("unsubscribe").map((f) => f.channel), [CH]);
  ws.emit(await pubFrame(3, { n: 3 }));
  await tick(20);
  assert.equal(got.length, 3);
  // after a reconnect neither the refused nor the unsubscribed channel is subscribed again
  ws.serverClose(1006);
  await until(() => FakeWS.instances.length === 2, 1000);
  ws = FakeWS.last;
  await connected(ws);
  assert.equal(ws.frames("subscribe").length, 0);
  sc.close();
});

test("getToken failure is reported and retried with backoff", async () => {
  let n = 0;
  const errors = [];
  const sc = new Sealcast({
    url: "http://127.0.0.1:1",
    getToken: async () => {
      if (++n === 1) throw new Error("backend down");
      return "tok";
    },
    keys: key,
    WebSocket: FakeWS,
    onError: (e) => errors.push(e),
    backoff: { baseMs: 5, maxMs: 10 },
  });
  clients.push(sc);
  await until(() => FakeWS.last, 1000);
  assert.equal(FakeWS.last.url, "ws://127.0.0.1:1/v1/ws");
  assert.equal(errors[0].kind, "token");
  sc.close();
});

test("close() keeps subscriptions; connect() resumes and recovers", async () => {
  const { sc } = make();
  sc.subscribe(CH);
  await until(() => FakeWS.last);
  let ws = FakeWS.last;
  await connected(ws);
  ws.emit({ type: "subscribed", id: ws.frames("subscribe")[0].id, channel: CH, epoch: "E", offset: 3 });
  sc.close();
  assert.deepEqual(ws.closedByClient, { code: 1000, reason: "client closed" });
  await tick(20);
  assert.equal(FakeWS.instances.length, 1);
  sc.connect();
  await until(() => FakeWS.instances.length === 2);
  ws = FakeWS.last;
  await connected(ws);
  assert.deepEqual(ws.frames("subscribe")[0].since, { epoch: "E", offset: 3 });
  sc.close();
});
