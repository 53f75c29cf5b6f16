#!/usr/bin/env node
// Writes ../../tests/fixtures/interop/ts.json: HS512 tokens and AES-256-GCM ciphertexts made
// by this SDK, which the Rust relay's tests verify (and vice versa with rust.json).
// Deterministic: fixed secret, times and nonces, so re-running gives the same file.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { mintConnectToken, mintPublishToken, encryptText, toBase64 } from "../dist/server.js";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.env.SEALCAST_FIXTURE_OUT ?? resolve(here, "../../../tests/fixtures/interop/ts.json"));

const app = "acme";
const kid = "k1";
const secret = "ts-interop-secret-0123456789abcdef-not-for-production";
const keyBytes = Uint8Array.from({ length: 32 }, (_, i) => (i * 7 + 3) & 0xff);
const ns = "ari:cloud:jira::site/7f3c0d2e/dashboard/10001";
const iat = 1700000000;

const connectClaims = { iss: app, sub: "user-1", ns, aud: "connect", iat, exp: iat + 3600 };
const publishClaims = { iss: app, ns, aud: "publish", iat, exp: iat + 300 };
const tokens = [
  { aud: "connect", token: mintConnectToken({ app, kid, secret, ns, sub: "user-1", ttlSeconds: 3600, iat }), claims: connectClaims },
  { aud: "publish", token: mintPublishToken({ app, kid, secret, ns, ttlSeconds: 300, iat }), claims: publishClaims },
];

const samples = [
  { channel: `${ns}#gadget-1`, event: "AddAbsence", plaintext: JSON.stringify({ who: "user-1", from: "2023-11-20", to: "2023-11-24", note: "Ferien in Zürich ☀️" }) },
  { channel: `${ns}#gadget-2`, event: "OnCallChanged", plaintext: JSON.stringify({ week: 47, primary: "user-2", secondary: null }) },
  { channel: `${ns}#gadget-1`, event: "RemoveAbsence", plaintext: "{}" },
];
const ciphertexts = [];
for (const [i, s] of samples.entries()) {
  const nonce = Uint8Array.from({ length: 12 }, (_, j) => (i * 16 + j) & 0xff);
  ciphertexts.push({ ...s, data: await encryptText(s.channel, s.event, s.plaintext, keyBytes, { nonce }) });
}

const fixture = { app, kid, secret, payload_key: toBase64(keyBytes), now: iat + 100, tokens, ciphertexts };
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify(fixture, null, 2) + "\n");
console.log(`wrote ${out}`);
