#!/usr/bin/env node
// Demo "app backend" for sealcast: serves the dashboard page and the built SDK, mints connect
// tokens, and turns user actions into encrypted publications. Listens on 127.0.0.1 only.
//
//   npm run demo                      # starts a relay too (SEALCAST_BIN, or the release or debug build)
//   SEALCAST_URL=http://127.0.0.1:8080 SEALCAST_SECRET=... npm run demo   # use a running relay
//
// Environment: SEALCAST_URL, SEALCAST_SECRET, SEALCAST_APP (acme), SEALCAST_KID (k1),
// SEALCAST_BIN, PORT (see README.md, "Demo").
//
// DEMO ONLY: the page receives the payload key from GET /config. A real app delivers the key
// to its users through its own authenticated channel, never through the relay.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { SealcastPublisher, SealcastHttpError, SealcastTransportError, mintConnectToken, generateKey, toBase64, encrypt, publish } from "../dist/server.js";

const here = dirname(fileURLToPath(import.meta.url));
const dist = resolve(here, "../dist");

/**
 * The relay binary the demo starts: `$SEALCAST_BIN`, else the release build, else the debug
 * build (the README builds with `--release`). Returns undefined when there is none.
 */
export function findRelayBin(env = process.env) {
  if (env.SEALCAST_BIN) return existsSync(env.SEALCAST_BIN) ? env.SEALCAST_BIN : undefined;
  return ["release", "debug"].map((p) => resolve(here, `../../../target/${p}/sealcast`)).find((p) => existsSync(p));
}

/**
 * The status the demo answers for a failed action: the relay's own 4xx/5xx when it answered,
 * 502 (Bad Gateway) when it could not be reached, 500 for anything else.
 */
export function statusFor(e) {
  if (e instanceof SealcastTransportError) return 502;
  if (e instanceof SealcastHttpError) return e.status >= 400 && e.status <= 599 ? e.status : 502;
  return Number.isInteger(e?.status) && e.status >= 400 && e.status <= 599 ? e.status : 500;
}

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".map": "application/json" };

/**
 * Starts the demo backend. `relayHttp` is the relay's base URL (http://host:port).
 * Returns { url, stop, published } where `published` records every publication sent
 * (channel, event, data) so tests can check that no plaintext leaves the app.
 */
export async function startDemo({ relayHttp, app, kid, secret, ns = "demo:site/1/dashboard/1", payloadKey = generateKey(), port = 0, tokenTtlSeconds = 600 }) {
  const relayWs = relayHttp.replace(/^http/, "ws").replace(/\/+$/, "") + "/v1/ws";
  const publisher = new SealcastPublisher({ url: relayHttp, app, kid, secret, payloadKey, ns });
  const channels = { absences: `${ns}#absences`, oncall: `${ns}#oncall` };
  const people = ["Ada", "Grace", "Linus", "Margaret", "Ken"];
  const state = {
    absences: [],
    oncall: { primary: "Ada", secondary: "Grace", since: new Date(0).toISOString() },
    positions: {}, // topic -> { epoch, offset } of the last publication reflected in this state
  };
  const published = [];
  // Actions and snapshots are serialised so that a snapshot's positions match its contents.
  let chain = Promise.resolve();
  const serial = (f) => {
    const p = chain.then(f);
    chain = p.catch(() => {});
    return p;
  };

  async function emit(topic, event, payload) {
    const channel = channels[topic];
    const data = await encrypt(channel, event, payload, payloadKey); // the relay only ever sees this
    published.push({ channel, event, data });
    const pos = await publish({ url: relayHttp, token: () => publisher.token(), channel, event, data });
    state.positions[topic] = { epoch: pos.epoch, offset: pos.offset };
    return pos;
  }

  async function act(body, user) {
    const by = String(user || "someone").slice(0, 40);
    switch (body.type) {
      case "addAbsence": {
        const a = { id: randomUUID(), who: String(body.who || by).slice(0, 60), from: String(body.from || ""), to: String(body.to || body.from || ""), reason: String(body.reason || "").slice(0, 120), by };
        state.absences.push(a);
        return emit("absences", "AddAbsence", a);
      }
      case "removeAbsence": {
        const i = state.absences.findIndex((a) => a.id === body.id);
        if (i < 0) throw Object.assign(new Error("no such absence"), { status: 404 });
        state.absences.splice(i, 1);
        return emit("absences", "RemoveAbsence", { id: body.id, by });
      }
      case "rotateOnCall": {
        const i = people.indexOf(state.oncall.primary);
        const primary = people[(i + 1) % people.length];
        const secondary = people[(i + 2) % people.length];
        state.oncall = { primary, secondary, since: new Date().toISOString(), by };
        return emit("oncall", "OnCallChanged", state.oncall);
      }
      case "takeOnCall": {
        const primary = String(body.person || by).slice(0, 60);
        state.oncall = { primary, secondary: state.oncall.primary === primary ? state.oncall.secondary : state.oncall.primary, since: new Date().toISOString(), by };
        return emit("oncall", "OnCallChanged", state.oncall);
      }
      default:
        throw Object.assign(new Error("unknown action"), { status: 400 });
    }
  }

  const send = (res, status, body, type = "application/json") => {
    res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
    res.end(type === "application/json" ? JSON.stringify(body) : body);
  };

  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url, "http://localhost");
      const user = url.searchParams.get("user") || "guest";
      if (req.method === "GET" && (url.pathname === "/" || url.pathname === "/index.html")) {
        return send(res, 200, await readFile(join(here, "index.html")), TYPES[".html"]);
      }
      if (req.method === "GET" && url.pathname === "/app.js") return send(res, 200, await readFile(join(here, "app.js")), TYPES[".js"]);
      // No icon: answered so that the browser's automatic request does not log a 404.
      if (req.method === "GET" && url.pathname === "/favicon.ico") {
        res.writeHead(204, { "cache-control": "max-age=86400" });
        return res.end();
      }
      const sdk = /^\/sdk\/([a-z]+\.js(?:\.map)?)$/.exec(url.pathname);
      if (req.method === "GET" && sdk && sdk[1] !== "server.js") {
        return send(res, 200, await readFile(join(dist, sdk[1])), TYPES[sdk[1].endsWith(".map") ? ".map" : ".js"]);
      }
      if (req.method === "GET" && url.pathname === "/config") {
        // DEMO ONLY: handing the payload key out like this is for the demo; see the header.
        return send(res, 200, { wsUrl: relayWs, ns, channels, people, payloadKey: toBase64(payloadKey) });
      }
      if (req.method === "GET" && url.pathname === "/token") {
        // A real backend authenticates the user here and checks they may view this dashboard.
        return send(res, 200, { token: mintConnectToken({ app, kid, secret, ns, sub: user, ttlSeconds: tokenTtlSeconds }) });
      }
      if (req.method === "GET" && url.pathname === "/state") {
        return send(res, 200, await serial(() => structuredClone({ absences: state.absences, oncall: state.oncall, positions: state.positions })));
      }
      if (req.method === "POST" && url.pathname === "/action") {
        let raw = "";
        for await (const c of req) {
          raw += c;
          if (raw.length > 10000) return send(res, 413, { error: "too large" });
        }
        const body = JSON.parse(raw || "{}");
        const pos = await serial(() => act(body, user));
        return send(res, 200, { ok: true, offset: pos.offset, epoch: pos.epoch });
      }
      send(res, 404, { error: "not found" });
    } catch (e) {
      if (res.headersSent) return res.destroy();
      const status = statusFor(e);
      send(res, status, { error: status === 502 ? `relay unreachable: ${e.message}` : String(e.message ?? e) });
    }
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    published,
    stop: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
  };
}

// ---- run as a program
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let relay = null;
  let relayHttp = process.env.SEALCAST_URL;
  let secret = process.env.SEALCAST_SECRET;
  const app = process.env.SEALCAST_APP ?? "acme";
  const kid = process.env.SEALCAST_KID ?? "k1";
  if (!relayHttp) {
    const bin = findRelayBin();
    if (!bin) {
      console.error(
        process.env.SEALCAST_BIN
          ? `sealcast demo: SEALCAST_BIN=${process.env.SEALCAST_BIN} does not exist`
          : "sealcast demo: no relay binary; run `cargo build --release` in the repository root, set SEALCAST_BIN, or set SEALCAST_URL and SEALCAST_SECRET to use a running relay",
      );
      process.exit(1);
    }
    const { startRelay, SECRET, APP, KID } = await import("../test/helpers/relay.mjs");
    relay = await startRelay({ bin });
    relayHttp = relay.http;
    secret = SECRET;
    if (app !== APP || kid !== KID) throw new Error("a self-started relay uses app acme, kid k1");
    console.log(`started relay at ${relayHttp}`);
  }
  if (!secret) throw new Error("set SEALCAST_SECRET to the app secret configured in the relay");
  const demo = await startDemo({ relayHttp, app, kid, secret, port: Number(process.env.PORT ?? 0) });
  console.log(`demo dashboard: ${demo.url}/?user=Ada  (open a second tab with ?user=Grace)`);
  const stop = async () => {
    await demo.stop();
    await relay?.stop();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
