// Relay restart (1001 then a new epoch) and revocation (4003), against the real relay.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Sealcast, generateKey } from "../../dist/index.js";
import { SealcastPublisher, mintConnectToken, mintPublishToken, revoke } from "../../dist/server.js";
import { startRelay, freePort, skipReason, APP, KID, SECRET } from "../helpers/relay.mjs";
import { until, tick } from "../helpers/fake-ws.mjs";

const NS = "ns-restart";
const payloadKey = generateKey();
const clients = [];
const relays = [];
after(async () => {
  for (const c of clients) c.close();
  for (const r of relays) await r.stop();
});

function client(url, sub = "user-1") {
  const errors = [];
  const closes = [];
  const sc = new Sealcast({
    url,
    getToken: async () => mintConnectToken({ app: APP, kid: KID, secret: SECRET, ns: NS, sub, ttlSeconds: 600 }),
    keys: [payloadKey],
    WebSocket,
    onError: (e) => errors.push(e),
    backoff: { baseMs: 200, maxMs: 1000 },
  });
  sc.onStateChange((s) => s.status === "disconnected" && closes.push(s.code));
  clients.push(sc);
  return { sc, errors, closes };
}

const opts = { skip: skipReason, timeout: 40000 };

test("relay shutdown (1001) and restart: the client reconnects; the lost continuity is reported by onRecoveryFailed", opts, async () => {
  const port = await freePort();
  const listen = `127.0.0.1:${port}`;
  let relay = await startRelay({ listen });
  relays.push(relay);
  const pub = () => new SealcastPublisher({ url: relay.http, app: APP, kid: KID, secret: SECRET, payloadKey, ns: NS });
  const { sc, closes } = client(relay.ws);
  const got = [];
  const failed = [];
  sc.subscribe(`${NS}#r`, { onEvent: (_e, p) => got.push(p.n), onRecoveryFailed: (i) => failed.push(i) });
  await until(() => sc.state.status === "connected", 5000);
  await tick(200);
  await pub().publish(`${NS}#r`, "Tick", { n: 1 });
  await until(() => got.length === 1, 5000);
  await relay.stop(); // SIGTERM: the relay drains and closes sessions
  await until(() => closes.length >= 1, 5000, "disconnect");
  assert.ok(sc.state.status !== "connected");
  relay = await startRelay({ listen });
  relays.push(relay);
  await until(() => failed.length === 1, 15000, "onRecoveryFailed after restart");
  assert.equal(failed[0].since.offset, 1);
  assert.notEqual(failed[0].position.epoch, failed[0].since.epoch, "an in-memory relay restarts with a new epoch");
  await pub().publish(`${NS}#r`, "Tick", { n: 2 });
  await until(() => got.length === 2, 5000);
  assert.deepEqual(got, [1, 2]);
  assert.ok(closes.every((c) => [1001, 1006].includes(c)), `closes: ${closes}`);
  sc.close();
});

test("revocation by sub closes the session with 4003, which is not retried", opts, async () => {
  const relay = await startRelay();
  relays.push(relay);
  const { sc, closes } = client(relay.ws, "user-revoked");
  await until(() => sc.state.status === "connected", 5000);
  const result = await revoke({ url: relay.http, token: mintPublishToken({ app: APP, kid: KID, secret: SECRET, ttlSeconds: 60 }), sub: "user-revoked", retry: { retries: 0 } });
  assert.equal(result.closed, 1);
  await until(() => closes.includes(4003), 5000, "4003");
  assert.equal(sc.state.willRetry, false);
  await tick(1000);
  assert.equal(sc.state.status, "disconnected");
});
