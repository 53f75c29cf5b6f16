// A key's secret replaced on the relay (a leaked secret, rotated with SIGHUP): its sessions
// are closed with 4002, and the client fetches a token minted with the new secret and
// recovers what was published meanwhile, with no page reload.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { Sealcast, generateKey } from "../../dist/index.js";
import { SealcastPublisher, mintConnectToken } from "../../dist/server.js";
import { startRelay, skipReason, APP, KID } from "../helpers/relay.mjs";
import { until } from "../helpers/fake-ws.mjs";

const NS = "ns-rotation";
const OLD = "rotation-old-secret-0123456789abcdef-0123456789";
const NEW = "rotation-new-secret-0123456789abcdef-0123456789";
let relay;
let sc;
after(async () => {
  sc?.close();
  await relay?.stop();
});

test("replacing a key's secret closes its sessions with 4002; the client recovers with a new token", { skip: skipReason, timeout: 30000 }, async () => {
  const secretFile = join(mkdtempSync(join(tmpdir(), "sealcast-rot-")), "k1.secret");
  writeFileSync(secretFile, OLD);
  relay = await startRelay({ secretFile });
  let secret = OLD;
  const payloadKey = generateKey();
  const closes = [];
  sc = new Sealcast({
    url: relay.ws,
    getToken: async () => mintConnectToken({ app: APP, kid: KID, secret, ns: NS, sub: "user-1", ttlSeconds: 600 }),
    keys: [payloadKey],
    WebSocket,
    backoff: { baseMs: 100, maxMs: 500 },
  });
  sc.onStateChange((s) => s.status === "disconnected" && closes.push({ code: s.code, willRetry: s.willRetry }));
  const got = [];
  sc.subscribe(`${NS}#t`, { onEvent: (_e, p) => got.push(p.n) });
  await until(() => sc.state.status === "connected", 5000);
  const pub = (s) => new SealcastPublisher({ url: relay.http, app: APP, kid: KID, secret: s, payloadKey, ns: NS });
  await pub(OLD).publish(`${NS}#t`, "Tick", { n: 1 });
  await until(() => got.length === 1, 5000, "first publication");

  // The operator rotates the leaked secret in place (same kid) and reloads; the app's
  // backend mints with the new secret from now on.
  writeFileSync(secretFile, NEW);
  secret = NEW;
  relay.child.kill("SIGHUP");
  await until(() => closes.some((c) => c.code === 4002), 5000, "4002 close");
  assert.ok(closes.find((c) => c.code === 4002).willRetry, "4002 is retried with a new token");
  await pub(NEW).publish(`${NS}#t`, "Tick", { n: 2 });
  await until(() => got.length === 2 && sc.state.status === "connected", 8000, "recovered");
  assert.deepEqual(got, [1, 2]);
  assert.ok(!closes.some((c) => c.code === 4001), "never the permanent 4001");
});
