// Real-browser end-to-end test: headless Debian Chromium (playwright-core, no browser download)
// drives the demo dashboard in two pages against the real relay. Requires `apt-get install chromium`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startRelay, skipReason as relaySkip, SECRET, APP, KID } from "./helpers/relay.mjs";
import { startDemo } from "../demo/server.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const skip = relaySkip || (existsSync(CHROMIUM) ? false : `${CHROMIUM} not found (apt-get install -y chromium)`);
const here = dirname(fileURLToPath(import.meta.url));
const artifacts = resolve(here, "../test-artifacts");

let relay, demo, ctx, profile;
const frames = { received: [], sent: [] };

before(async () => {
  if (skip) return;
  const { chromium } = await import("playwright-core");
  relay = await startRelay();
  demo = await startDemo({ relayHttp: relay.http, app: APP, kid: KID, secret: SECRET });
  profile = mkdtempSync(join(tmpdir(), "sealcast-chromium-"));
  ctx = await chromium.launchPersistentContext(profile, {
    headless: true,
    executablePath: CHROMIUM,
    viewport: { width: 1100, height: 640 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    timeout: 30000,
  });
  ctx.setDefaultTimeout(10000);
  // Every request the pages make must go to 127.0.0.1.
  await ctx.route("**/*", (route) => (new URL(route.request().url()).hostname === "127.0.0.1" ? route.continue() : route.abort()));
});

after(async () => {
  await ctx?.close().catch(() => {});
  await demo?.stop();
  await relay?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

async function openPage(user) {
  const page = await ctx.newPage();
  page.on("websocket", (ws) => {
    ws.on("framereceived", (f) => frames.received.push({ user, payload: String(f.payload) }));
    ws.on("framesent", (f) => frames.sent.push({ user, payload: String(f.payload) }));
  });
  page.on("pageerror", (e) => console.error(`[${user}] page error: ${e.message}`));
  await page.goto(`${demo.url}/?user=${user}`);
  await page.waitForSelector("body[data-state=connected]", { polling: 100, timeout: 10000 });
  return page;
}

const SECRET_WORDS = ["Zelda Plaintextova", "Bartholomew Oncallsson", "Quentin Gapfiller", "Ursula Missedwhile", "dentist-appointment"];
const absencesText = (page) => page.locator("#absences").innerText();

test("two pages see each other's changes live; no plaintext crosses the relay; a dropped connection loses nothing", { skip, timeout: 90000 }, async () => {
  const a = await openPage("Ada");
  const b = await openPage("Grace");

  // Ada adds an absence; Grace's page shows it. (A page is brought to the front before
  // Playwright acts on it: background tabs throttle the animation frames its clicks wait for.)
  await a.bringToFront();
  await a.fill("#absence-who", "Zelda Plaintextova");
  await a.fill("#absence-from", "2030-01-07");
  await a.fill("#absence-reason", "dentist-appointment");
  await a.click("#absence-add");
  await b.waitForFunction(() => document.querySelector("#absences").innerText.includes("Zelda Plaintextova"), null, { polling: 100, timeout: 10000 });
  assert.match(await absencesText(b), /dentist-appointment/);

  // Grace changes the on-call person; Ada's page shows it.
  await b.bringToFront();
  await b.fill("#oncall-person", "Bartholomew Oncallsson");
  await b.click("#oncall-take");
  await a.waitForFunction(() => document.querySelector("#oncall-primary")?.innerText === "Bartholomew Oncallsson", null, { polling: 100, timeout: 10000 });

  // Grace's connection drops (test hook: the socket is closed, next attempt in 60 s); Ada acts meanwhile.
  await b.evaluate(() => window.__demo.dropConnection(60000));
  await b.waitForSelector("body[data-state=disconnected]", { timeout: 5000 });
  await a.bringToFront();
  for (const who of ["Quentin Gapfiller", "Ursula Missedwhile"]) {
    await a.fill("#absence-who", who);
    await a.fill("#absence-from", "2030-02-01");
    await a.click("#absence-add");
    await a.waitForFunction((w) => document.querySelector("#absences").innerText.includes(w), who, { polling: 100, timeout: 10000 });
  }
  await a.click("#oncall-rotate");
  await a.waitForFunction(() => document.querySelector("#oncall-primary")?.innerText !== "Bartholomew Oncallsson", null, { polling: 100, timeout: 10000 });
  assert.equal(await b.evaluate(() => document.body.dataset.state), "disconnected", "Grace was offline during these actions");
  assert.doesNotMatch(await absencesText(b), /Quentin/);

  // Grace's page reconnects (skip the rest of the wait) and catches up with everything,
  // without a reload from the backend.
  await b.evaluate(() => window.__demo.client.reconnect(0));
  await b.waitForSelector("body[data-state=connected]", { timeout: 15000 });
  await b.waitForFunction(() => ["Quentin Gapfiller", "Ursula Missedwhile"].every((w) => document.querySelector("#absences").innerText.includes(w)), null, { polling: 100, timeout: 10000 });
  await b.waitForFunction(() => document.querySelector("#oncall-primary")?.innerText === window.__demo.view.oncall.primary && window.__demo.view.oncall.primary !== "Bartholomew Oncallsson", null, { polling: 100, timeout: 10000 });
  assert.equal(await absencesText(b), await absencesText(a));
  assert.equal(await b.locator("#oncall").innerText(), await a.locator("#oncall").innerText());
  const logB = await b.locator("#log").innerText();
  assert.doesNotMatch(logB, /reloading|decrypt_failed/, "recovered from history, not by reloading state");
  const resub = frames.sent.filter((f) => f.user === "Grace" && f.payload.includes('"since"'));
  assert.ok(resub.length >= 2, "Grace resubscribed both gadgets with `since`");

  // The relay's traffic never carried plaintext.
  const pubs = frames.received.filter((f) => f.payload.includes('"type":"pub"'));
  assert.ok(pubs.length >= 8, `pages received pub frames (${pubs.length})`);
  assert.ok(demo.published.length >= 5);
  for (const word of SECRET_WORDS) {
    for (const f of [...frames.received, ...frames.sent]) assert.ok(!f.payload.includes(word), `frame to/from ${f.user} contains "${word}"`);
    for (const p of demo.published) {
      assert.ok(!p.data.includes(word));
      assert.ok(!Buffer.from(p.data, "base64").toString("latin1").includes(word), "published ciphertext contains plaintext");
    }
  }
  // ...while the pages did show it (they decrypted).
  assert.match(await absencesText(a), /Zelda Plaintextova/);

  mkdirSync(artifacts, { recursive: true });
  await a.screenshot({ path: join(artifacts, "demo.png"), fullPage: true });
  assert.ok(existsSync(join(artifacts, "demo.png")));
});
