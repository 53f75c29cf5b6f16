// Token expiry and in-band refresh against the real relay, with [tokens] leeway = "0s".
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Sealcast, generateKey } from "../../dist/index.js";
import { SealcastPublisher, mintConnectToken } from "../../dist/server.js";
import { startRelay, skipReason, APP, KID, SECRET } from "../helpers/relay.mjs";
import { until, tick } from "../helpers/fake-ws.mjs";

const NS = "ns-expiry";
const payloadKey = generateKey();
let relay;
let publisher;
const clients = [];

before(async () => {
  if (skipReason) return;
  relay = await startRelay({ leeway: "0s" });
  publisher = new SealcastPublisher({ url: relay.http, app: APP, kid: KID, secret: SECRET, payloadKey, ns: NS });
});
after(async () => {
  for (const c of clients) c.close();
  await relay?.stop();
});

function client(ttlSeconds, extra = {}) {
  const errors = [];
  const closes = [];
  let tokenCalls = 0;
  const sc = new Sealcast({
    url: relay.ws,
    getToken: async () => {
      tokenCalls++;
      return mintConnectToken({ app: APP, kid: KID, secret: SECRET, ns: NS, sub: "user-1", ttlSeconds });
    },
    keys: [payloadKey],
    WebSocket,
    onError: (e) => errors.push(e),
    backoff: { baseMs: 100, maxMs: 500 },
    ...extra,
  });
  sc.onStateChange((s) => s.status === "disconnected" && closes.push(s.code));
  clients.push(sc);
  return { sc, errors, closes, tokenCalls: () => tokenCalls };
}

const opts = { skip: skipReason, timeout: 30000 };

test("without refresh the relay closes with 4002 at expiry; the client reconnects with a fresh token and recovers", opts, async () => {
  const { sc, closes, tokenCalls } = client(2, { refreshAt: false });
  const got = [];
  sc.subscribe(`${NS}#t1`, { onEvent: (_e, p) => got.push(p.n) });
  await until(() => sc.state.status === "connected", 5000);
  await publisher.publish(`${NS}#t1`, "Tick", { n: 1 });
  await until(() => closes.includes(4002), 6000, "4002 close");
  await publisher.publish(`${NS}#t1`, "Tick", { n: 2 });
  await until(() => got.length === 2, 6000, "both publications");
  assert.deepEqual(got, [1, 2]);
  assert.ok(tokenCalls() >= 2);
  sc.close();
});

test("in-band refresh keeps a session with a 3 s token alive", opts, async () => {
  const { sc, errors, closes, tokenCalls } = client(3);
  const got = [];
  sc.subscribe(`${NS}#t2`, { onEvent: (_e, p) => got.push(p.n) });
  await until(() => sc.state.status === "connected", 5000);
  const firstExp = sc.state.expiresAt;
  await tick(6500); // two token lifetimes
  const refused = errors.filter((e) => /refresh/.test(e.message));
  assert.deepEqual(refused, [], "the relay accepted every refresh");
  assert.deepEqual(closes, [], "never disconnected");
  assert.equal(sc.state.status, "connected");
  assert.ok(sc.state.expiresAt > firstExp, "expires_at moved forward via `refreshed`");
  assert.ok(tokenCalls() >= 3, `getToken called for each refresh (${tokenCalls()})`);
  await publisher.publish(`${NS}#t2`, "Tick", { n: 1 });
  await until(() => got.length === 1, 5000);
  sc.close();
});
