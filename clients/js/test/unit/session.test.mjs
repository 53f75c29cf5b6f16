// The recorded session shared by the four implementations (tests/fixtures/interop/session.json,
// recorded from the real relay by tests/interop_session.rs, which also replays it there).
// This SDK verifies its tokens, decrypts every pub to the recorded plaintext, builds the
// recorded client frames and HTTP bodies for the same actions, and plays every connection
// of it through the real `Sealcast` client (over a scripted socket that sends the recorded
// relay frames), checking what the client sends and what it delivers.
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Sealcast, connectFrame, subscribeFrame, unsubscribeFrame, refreshFrame, closeCodeInfo, decryptText } from "../../dist/index.js";
import { verifyToken, TokenError, encryptText, mintConnectToken, mintPublishToken, publish, revoke } from "../../dist/server.js";
import { FakeWS, until } from "../helpers/fake-ws.mjs";

const fx = JSON.parse(readFileSync(fileURLToPath(new URL("../../../../tests/fixtures/interop/session.json", import.meta.url)), "utf8"));
const tokenNamed = (name) => fx.tokens.find((t) => t.name === name).token;
const clients = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

test("session: the recorded tokens verify as the relay judged them and mint to the same bytes", () => {
  const apps = { [fx.app]: { [fx.kid]: fx.secret } };
  for (const t of fx.tokens) {
    const check = () => verifyToken(t.token, { apps, aud: t.aud, now: fx.now });
    if (t.expect === "valid") assert.deepEqual(check(), t.claims, t.name);
    else assert.throws(check, (e) => e instanceof TokenError && (t.expect === "expired" ? /expired/ : /kid/).test(e.message), t.name);
    const c = t.claims;
    const common = { app: c.iss, kid: t.kid, secret: fx.secret, ttlSeconds: c.exp - c.iat, iat: c.iat };
    const mine = t.aud === "connect" ? mintConnectToken({ ...common, ns: c.ns, sub: c.sub }) : mintPublishToken({ ...common, ns: c.ns });
    assert.equal(mine, t.token, `${t.name}: minted to the same bytes`);
  }
});

test("session: every pub decrypts to its recorded plaintext; publications seal to the recorded bytes", async () => {
  let pubs = 0;
  for (const s of fx.steps) {
    if (s.recv?.type === "pub") {
      assert.equal(await decryptText(s.recv.channel, s.recv.event, s.recv.data, fx.payload_key), s.plaintext);
      pubs++;
    }
    if (s.http?.path === "/v1/publish") {
      const b = s.http.body;
      const nonce = Buffer.from(b.data, "base64").subarray(0, 12);
      assert.equal(await encryptText(b.channel, b.event, s.plaintext, fx.payload_key, { nonce }), b.data);
    }
  }
  assert.ok(pubs >= 5);
});

test("session: the frames this SDK builds for the recorded actions are the recorded ones", () => {
  let n = 0;
  for (const s of fx.steps) {
    if (!s.send || s.sdk === false) continue;
    const f = s.send;
    const mine = { connect: () => connectFrame(f.token), subscribe: () => subscribeFrame(f.id, f.channel, f.since), unsubscribe: () => unsubscribeFrame(f.id, f.channel), refresh: () => refreshFrame(f.id, f.token) }[f.type]();
    assert.deepEqual(JSON.parse(JSON.stringify(mine)), f);
    n++;
  }
  assert.ok(n >= 8);
});

test("session: publish and revoke send the recorded bodies and read the recorded answers", async () => {
  const tokens = { publish: tokenNamed("publish"), revoke: tokenNamed("revoke") };
  for (const s of fx.steps.filter((s) => s.http)) {
    const seen = [];
    const fetch = async (url, init) => {
      seen.push({ url, init });
      return new Response(JSON.stringify(s.answer.body), { status: s.answer.status, headers: { "content-type": "application/json" } });
    };
    const o = { url: "http://relay.invalid", token: tokens[s.http.token], fetch, retry: { retries: 0 } };
    const b = s.http.body;
    const got = s.http.path === "/v1/publish" ? await publish({ ...o, channel: b.channel, event: b.event, data: b.data, idempotencyKey: b.idempotency_key }) : await revoke({ ...o, sub: b.sub, until: b.until });
    assert.equal(seen.length, 1);
    assert.equal(seen[0].url, `http://relay.invalid${s.http.path}`);
    assert.deepEqual(JSON.parse(seen[0].init.body), b);
    assert.equal(seen[0].init.headers.authorization, `Bearer ${tokens[s.http.token]}`);
    assert.deepEqual(got, s.answer.body);
  }
});

/**
 * Plays connection `conn` of the recording through a real client: each recorded client frame
 * is caused by the action that sends it (open, subscribe, unsubscribe, a token refresh) and
 * compared with what the client sent; each relay frame and close is fed to it.
 */
async function play(conn) {
  const steps = fx.steps.filter((s) => s.conn === conn);
  const firstToken = steps[0].send.token;
  // The first getToken() is the connect; later ones are refreshes, released when the
  // recording sends them (so each refresh goes out exactly at its step).
  const refreshes = [];
  let calls = 0;
  const getToken = () => (calls++ === 0 ? Promise.resolve(firstToken) : new Promise((resolve) => refreshes.push(resolve)));
  const errors = [];
  const got = { events: [], subscribed: [], failed: [], refused: [] };
  FakeWS.reset();
  const sc = new Sealcast({ url: "ws://127.0.0.1:1/v1/ws", getToken, keys: [fx.payload_key], WebSocket: FakeWS, onError: (e) => errors.push(e), refreshAt: 1e-9, random: () => 0.5, backoff: { baseMs: 60000, maxMs: 60000 } });
  clients.push(sc);
  const ws = await until(() => FakeWS.last, 1000, "socket");
  const subs = new Map();
  let sentChecked = 0;
  const sentNow = async (want) => {
    await until(() => ws.sent.length > sentChecked, 2000, `the client to send ${JSON.stringify(want)}`);
    assert.deepEqual(ws.sent[sentChecked], want);
    sentChecked++;
  };
  for (const s of steps) {
    if (s.send && s.sdk === false) continue; // a violation no SDK sends
    if (s.send) {
      const f = s.send;
      if (f.type === "connect") ws.open();
      else if (f.type === "subscribe") {
        const opts = {
          since: f.since,
          onEvent: (event, payload, meta) => got.events.push({ event, payload, meta }),
          onSubscribed: (info) => got.subscribed.push(info),
          onRecoveryFailed: (info) => got.failed.push(info),
          onError: (e) => got.refused.push(e),
        };
        subs.set(f.channel, sc.subscribe(f.channel, opts));
      } else if (f.type === "unsubscribe") subs.get(f.channel).unsubscribe();
      else if (f.type === "refresh") {
        await until(() => refreshes.length > 0, 2000, "the client to ask for a refresh token");
        refreshes.shift()(f.token);
      }
      await sentNow(f);
    } else if (s.recv) {
      ws.emit(s.recv);
      if (s.recv.type === "pub") {
        await until(() => got.events.some((e) => e.meta.channel === s.recv.channel && e.meta.offset === s.recv.offset), 2000, `pub ${s.recv.offset} delivered`);
      }
    } else if (s.close !== undefined) {
      ws.serverClose(s.close);
    }
  }
  // Nothing more was sent than the recording shows.
  assert.equal(ws.sent.length, sentChecked, JSON.stringify(ws.sent.slice(sentChecked)));
  await until(() => got.subscribed.length === steps.filter((s) => s.recv?.type === "subscribed").length, 1000, "subscribed callbacks");
  assert.ok(!errors.some((e) => e.kind === "protocol" || e.kind === "decrypt_failed" || e.kind === "bad_payload"), errors.map((e) => e.message).join("; "));
  return { sc, steps, errors, got };
}

function checkDeliveries(steps, got) {
  const pubs = steps.filter((s) => s.recv?.type === "pub");
  assert.equal(got.events.length, pubs.length);
  pubs.forEach((s, i) => {
    const e = got.events[i];
    assert.equal(e.event, s.recv.event);
    assert.equal(e.meta.offset, s.recv.offset);
    assert.equal(e.meta.plaintext, s.plaintext, "the plaintext byte for byte");
    assert.deepEqual(e.payload, JSON.parse(s.plaintext));
  });
}

test("session: connection a through the real client (subscribe, pubs, forbidden, unsubscribe, refresh, errors, 1008)", async () => {
  const { sc, steps, errors, got } = await play("a");
  checkDeliveries(steps, got);
  assert.ok(got.events.every((e) => e.meta.replayed === false));
  const forbidden = steps.find((s) => s.recv?.code === "forbidden" && s.recv.id === 3).recv;
  assert.equal(got.refused.length, 1);
  assert.match(got.refused[0].message, new RegExp(forbidden.message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
  // The refused refresh and the request without an id are reported, not fatal.
  const relayErrors = errors.filter((e) => e.kind === "relay_error").map((e) => e.message);
  assert.ok(relayErrors.some((m) => /token refresh refused: forbidden/.test(m)), relayErrors.join("; "));
  assert.ok(relayErrors.some((m) => /bad_request/.test(m)), relayErrors.join("; "));
  // `refreshed` moved the session's expiry; 1008 is never retried.
  assert.equal(sc.state.status, "disconnected");
  assert.equal(sc.state.willRetry, false);
  assert.equal(sc.state.code, 1008);
  const refreshed = steps.find((s) => s.recv?.type === "refreshed").recv;
  assert.ok(errors.some((e) => e.kind === "closed" && e.code === 1008));
  assert.ok(refreshed.expires_at > steps.find((s) => s.recv?.type === "connected").recv.expires_at);
});

test("session: connection b through the real client (recovered replay, recovered:false, live pub, revoked 4003)", async () => {
  const { sc, steps, got } = await play("b");
  checkDeliveries(steps, got);
  assert.deepEqual(got.events.map((e) => [e.meta.offset, e.meta.replayed]), [[2, true], [3, true], [4, false]]);
  assert.deepEqual(got.subscribed.map((i) => i.recovered), [true, false]);
  const rotation = steps.find((s) => s.recv?.recovered === false).recv;
  const asked = steps.find((s) => s.send?.channel === rotation.channel).send.since;
  assert.deepEqual(got.failed, [{ channel: rotation.channel, since: asked, position: { epoch: rotation.epoch, offset: rotation.offset } }]);
  assert.deepEqual([sc.state.status, sc.state.code, sc.state.willRetry], ["disconnected", 4003, false]);
});

test("session: connections c and d (refused tokens) through the real client, and the close codes' rules", async () => {
  const c = await play("c");
  assert.deepEqual([c.sc.state.code, c.sc.state.willRetry], [4001, false]);
  const d = await play("d");
  // An expired token on a connection that never came up: retried with backoff and a new token.
  assert.deepEqual([d.sc.state.code, d.sc.state.willRetry], [4002, true]);
  const rules = fx.steps.filter((s) => s.close !== undefined).map((s) => [s.close, closeCodeInfo(s.close).retry]);
  assert.deepEqual(rules, [[1008, "never"], [4003, "never"], [4001, "never"], [4002, "new_token"]]);
});
