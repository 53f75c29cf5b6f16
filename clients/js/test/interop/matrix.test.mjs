// The cross-SDK matrix: one real relay (127.0.0.1, a free port); three publishers (the Rust
// SDK, the TypeScript SDK in Node, the Python SDK) each publish the same kinds of payloads
// (payloads.mjs: non-ASCII, nested, escaped, the largest the relay takes) on a channel of its
// own; three subscribers (the Rust SDK, the TypeScript SDK in Node, the TypeScript SDK in
// headless Chromium) receive every channel. Each of the 3 x 3 cells compares what the
// subscriber decrypted with the bytes the publisher encrypted, byte for byte, in order.
//
// Run by scripts/test (npm run test:matrix), which builds what it needs first:
//   cargo build --bin sealcast && cargo build -p sealcast-client --examples   (the relay, interop_pub, interop_sub)
//   target/py-venv with clients/python installed                              (interop_pub.py)
// Paths: SEALCAST_BIN, SEALCAST_RUST_EXAMPLES (target/debug/examples), SEALCAST_PYTHON
// (target/py-venv/bin/python), CHROMIUM_PATH (/usr/bin/chromium). Without one of them the test
// is skipped, unless SEALCAST_REQUIRE_RELAY=1 (CI), where it fails.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { generateKey, mintConnectToken, toBase64 } from "../../dist/server.js";
import { startRelay, RELAY_BIN, APP, KID, SECRET } from "../helpers/relay.mjs";
import { matrixPayloads } from "./payloads.mjs";
import { publishAll } from "./publisher.mjs";
import { subscribeAll } from "./subscriber.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const jsRoot = resolve(here, "../..");
const repo = resolve(jsRoot, "../..");
const RUST_EXAMPLES = process.env.SEALCAST_RUST_EXAMPLES ?? join(repo, "target/debug/examples");
const PYTHON = process.env.SEALCAST_PYTHON ?? join(repo, "target/py-venv/bin/python");
const PY_PUB = join(repo, "clients/python/tests/interop_pub.py");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const NS = "ari:cloud:jira::site/7f3c0d2e/dashboard/10001";
/** Every wait of the run: subscribing, each publisher, the deliveries. */
const TIMEOUT_MS = 60000;

const needed = {
  "the relay (cargo build --bin sealcast)": RELAY_BIN,
  "the Rust SDK's examples (cargo build -p sealcast-client --examples)": join(RUST_EXAMPLES, "interop_pub"),
  "the Python SDK's venv (scripts/test makes target/py-venv)": PYTHON,
  "Chromium (apt-get install chromium)": CHROMIUM,
};
const missing = Object.entries(needed).filter(([, p]) => !existsSync(p)).map(([what, p]) => `${what}: ${p}`);
const skip = missing.length && process.env.SEALCAST_REQUIRE_RELAY !== "1" ? `missing ${missing.join("; ")}` : false;

/** Timers of the waits under way, cleared when the run ends however it ends. */
const timers = new Set();

/** Resolves with `p`, or rejects after `ms` naming `what`; the timer never outlives it. */
function bounded(what, p, ms = TIMEOUT_MS) {
  let timer;
  const late = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error(`${what}: no result within ${ms} ms`)), ms);
    timers.add(timer);
  });
  return Promise.race([p, late]).finally(() => {
    clearTimeout(timer);
    timers.delete(timer);
  });
}

/** `{ v }` or `{ e }`: an outcome held until it is looked at, never an unhandled rejection. */
const settle = (p) => p.then((v) => ({ v }), (e) => ({ e }));

/**
 * Runs a program of the matrix: resolves with its stdout lines (parsed as JSON) once it exits
 * with 0; `onLine` sees each line as it comes. Killed if it outlives the run.
 */
function runProgram(name, cmd, args, children, onLine = () => {}) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn" } });
  children.push(child);
  let out = "";
  let err = "";
  const lines = [];
  child.stdout.on("data", (d) => {
    out += d;
    let i;
    while ((i = out.indexOf("\n")) >= 0) {
      const line = out.slice(0, i).trim();
      out = out.slice(i + 1);
      if (!line) continue;
      const v = JSON.parse(line);
      lines.push(v);
      onLine(v);
    }
  });
  child.stderr.on("data", (d) => {
    err += d;
    if (err.length > 20000) err = err.slice(-10000);
  });
  return new Promise((res, rej) => {
    child.on("error", rej);
    child.on("exit", (code, signal) => (code === 0 ? res(lines) : rej(new Error(`${name} exited with ${code ?? signal}; stderr:\n${err}\nstdout: ${JSON.stringify(lines).slice(0, 2000)}`))));
  });
}

/** Serves the built SDK and the matrix's browser page (clients/js/dist, clients/js/test/interop) on 127.0.0.1. */
async function staticServer() {
  const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8" };
  const allowed = [join(jsRoot, "dist") + sep, here + sep];
  const server = createServer((req, res) => {
    const file = resolve(jsRoot, "." + decodeURIComponent(new URL(req.url, "http://x").pathname));
    if (!allowed.some((d) => file.startsWith(d)) || !existsSync(file) || !types[extname(file)]) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": types[extname(file)], "cache-control": "no-store" }).end(readFileSync(file));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

/** Where the first difference of two byte strings is, for a readable failure. */
function firstDifference(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

test("cross-SDK matrix: 3 publishers x 3 subscribers, plaintext byte for byte", { skip, timeout: 4 * TIMEOUT_MS }, async (t) => {
  const relay = await startRelay();
  const dir = mkdtempSync(join(tmpdir(), "sealcast-matrix-"));
  const children = [];
  let browser;
  let web;
  let nodeSub;
  try {
    const publishers = ["rust", "ts", "python"];
    const plan = {
      http: relay.http,
      ws: relay.ws,
      app: APP,
      kid: KID,
      secret: SECRET,
      payload_key: toBase64(generateKey()),
      ns: NS,
      channels: Object.fromEntries(publishers.map((p) => [p, `${NS}#matrix-from-${p}`])),
      payloads: Object.fromEntries(publishers.map((p) => [p, matrixPayloads(p)])),
      timeout_ms: TIMEOUT_MS,
    };
    const planFile = join(dir, "plan.json");
    writeFileSync(planFile, JSON.stringify(plan));
    const token = (sub) => mintConnectToken({ app: APP, kid: KID, secret: SECRET, ns: NS, sub, ttlSeconds: 600 });

    // ---- the subscribers, each live on every channel before anything is published
    const subscribers = {};
    {
      let ready;
      const isReady = new Promise((r) => (ready = r));
      const done = runProgram("interop_sub (Rust)", join(RUST_EXAMPLES, "interop_sub"), [planFile], children, (v) => v.ready && ready());
      subscribers.rust = { ready: settle(Promise.race([isReady, done])), done: settle(done.then((lines) => lines.find((l) => l.received).received)) };
    }
    {
      nodeSub = subscribeAll(plan, { token: token("matrix-ts-node"), WebSocket });
      subscribers["ts-node"] = { ready: settle(nodeSub.ready), done: settle(nodeSub.done.then((r) => r.received)) };
    }
    {
      const { chromium } = await import("playwright-core");
      web = await staticServer();
      browser = await chromium.launch({ headless: true, executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"], timeout: 30000 });
      const page = await browser.newPage();
      const pageErrors = [];
      page.on("pageerror", (e) => pageErrors.push(e.message));
      await page.goto(`${web.url}/test/interop/browser.html`);
      await page.waitForSelector("body[data-loaded=true]", { state: "attached", timeout: 10000 });
      const ready = page.evaluate(async ([plan, token]) => {
        window.matrix = window.subscribeAll(plan, { token });
        await window.matrix.ready;
      }, [plan, token("matrix-ts-chromium")]);
      const withPageErrors = (e) => {
        throw new Error(`${e.message}${pageErrors.length ? `; page errors: ${pageErrors.join("; ")}` : ""}`);
      };
      subscribers["ts-chromium"] = {
        ready: settle(ready.catch(withPageErrors)),
        done: settle(ready.then(() => page.evaluate(() => window.matrix.done.then((r) => r.received))).catch(withPageErrors)),
      };
    }
    for (const [name, s] of Object.entries(subscribers)) {
      const r = await bounded(`subscriber ${name}: ready`, s.ready);
      if (r.e) throw r.e;
    }
    const results = Object.fromEntries(Object.entries(subscribers).map(([name, s]) => [name, settle(bounded(`subscriber ${name}: every publication`, s.done.then((r) => (r.e ? Promise.reject(r.e) : r.v))))]));

    // ---- the publishers, one after another
    const answers = {};
    answers.rust = (await bounded("publisher rust", runProgram("interop_pub (Rust)", join(RUST_EXAMPLES, "interop_pub"), [planFile, "rust"], children)));
    answers.ts = await bounded("publisher ts", publishAll(plan, "ts"));
    answers.python = await bounded("publisher python", runProgram("interop_pub.py (Python)", PYTHON, [PY_PUB, planFile, "python"], children));
    for (const p of publishers) {
      assert.deepEqual(answers[p].map((a) => a.offset), plan.payloads[p].map((_, i) => i + 1), `${p}: offsets 1..n`);
      assert.equal(new Set(answers[p].map((a) => a.epoch)).size, 1, `${p}: one epoch`);
    }

    // ---- the 9 cells
    const report = [];
    for (const p of publishers) {
      const channel = plan.channels[p];
      const expected = plan.payloads[p].map((x) => ({ event: x.event, bytes: Buffer.from(x.text, "utf8") }));
      for (const s of Object.keys(subscribers)) {
        await t.test(`${p} publisher -> ${s} subscriber`, async () => {
          const r = await results[s];
          if (r.e) throw r.e;
          const got = r.v[channel] ?? [];
          assert.equal(got.length, expected.length, `${got.length} of ${expected.length} publications`);
          got.forEach((g, i) => {
            const bytes = Buffer.from(g.plaintext_b64, "base64");
            assert.equal(g.offset, i + 1, "in order, no gap, no duplicate");
            assert.equal(g.event, expected[i].event);
            const at = firstDifference(bytes, expected[i].bytes);
            assert.ok(at < 0, `${expected[i].event}: ${bytes.length} bytes received, ${expected[i].bytes.length} published, first difference at byte ${at}`);
          });
          report.push(`${p.padEnd(6)} -> ${s.padEnd(11)} ${got.length} publications, ${got.reduce((n, g) => n + Buffer.from(g.plaintext_b64, "base64").length, 0)} bytes, identical`);
        });
      }
    }
    console.log(`cross-SDK matrix (relay ${relay.addr}):\n  ${report.join("\n  ")}`);
    assert.equal(report.length, 9, "every cell passed");
  } finally {
    for (const timer of timers) clearTimeout(timer);
    nodeSub?.close();
    await browser?.close().catch(() => {});
    await web?.close();
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await relay.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
