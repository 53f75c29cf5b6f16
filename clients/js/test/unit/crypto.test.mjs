import { test } from "node:test";
import assert from "node:assert/strict";
import { createDecipheriv, createCipheriv, randomBytes } from "node:crypto";
import { encrypt, encryptText, decrypt, decryptText, DecryptError, toBase64, fromBase64, generateKey } from "../../dist/index.js";

const CH = "ari:cloud:jira::site/1/dashboard/2#gadget-1";

test("round trip of JSON, with a fresh nonce per message", async () => {
  const key = generateKey();
  const payload = { who: "ana", days: [1, 2], note: "Grüße ☀️" };
  const a = await encrypt(CH, "AddAbsence", payload, key);
  const b = await encrypt(CH, "AddAbsence", payload, key);
  assert.notEqual(a, b);
  assert.deepEqual(await decrypt(CH, "AddAbsence", a, [key]), payload);
  assert.equal(fromBase64(a).length, 12 + Buffer.byteLength(JSON.stringify(payload)) + 16);
  assert.ok(!Buffer.from(fromBase64(a)).toString("latin1").includes("ana"));
});

test("layout is nonce || ciphertext || tag with AD = channel\\nevent (checked with node:crypto)", async () => {
  const key = randomBytes(32);
  const text = '{"x":1}';
  const data = await encryptText(CH, "E", text, new Uint8Array(key));
  const raw = Buffer.from(data, "base64");
  const d = createDecipheriv("aes-256-gcm", key, raw.subarray(0, 12));
  d.setAAD(Buffer.from(`${CH}\nE`, "utf8"));
  d.setAuthTag(raw.subarray(raw.length - 16));
  assert.equal(Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]).toString(), text);

  // and the other direction
  const nonce = randomBytes(12);
  const c = createCipheriv("aes-256-gcm", key, nonce);
  c.setAAD(Buffer.from(`${CH}\nE`));
  const ct = Buffer.concat([c.update('{"y":2}'), c.final()]);
  const data2 = Buffer.concat([nonce, ct, c.getAuthTag()]).toString("base64");
  assert.deepEqual(await decrypt(CH, "E", data2, key.toString("base64")), { y: 2 });
});

test("a payload moved to another channel or event fails authentication", async () => {
  const key = generateKey();
  const data = await encrypt(CH, "AddAbsence", { a: 1 }, key);
  await assert.rejects(decrypt(CH + "x", "AddAbsence", data, [key]), DecryptError);
  await assert.rejects(decrypt(CH, "RemoveAbsence", data, [key]), DecryptError);
});

test("tampering, short data, non-base64 and wrong keys are refused", async () => {
  const key = generateKey();
  const data = await encrypt(CH, "E", { a: 1 }, key);
  const raw = fromBase64(data);
  raw[14] ^= 1;
  await assert.rejects(decrypt(CH, "E", toBase64(raw), [key]), DecryptError);
  await assert.rejects(decrypt(CH, "E", toBase64(new Uint8Array(27)), [key]), DecryptError);
  await assert.rejects(decrypt(CH, "E", "not base64!", [key]), DecryptError);
  await assert.rejects(decrypt(CH, "E", data, [generateKey()]), DecryptError);
  await assert.rejects(decrypt(CH, "E", data, []), DecryptError);
});

test("key ring: each key is tried, for rotation", async () => {
  const oldKey = generateKey();
  const newKey = generateKey();
  const data = await encrypt(CH, "E", { v: "old" }, oldKey);
  assert.deepEqual(await decrypt(CH, "E", data, [newKey, oldKey]), { v: "old" });
  assert.equal(await decryptText(CH, "E", data, [toBase64(newKey), toBase64(oldKey)]), '{"v":"old"}');
});

test("keys must be 32 bytes", async () => {
  await assert.rejects(encrypt(CH, "E", 1, new Uint8Array(16)), /32 bytes/);
});

test("base64 helpers are standard and strict", () => {
  const bytes = Uint8Array.from({ length: 70000 }, (_, i) => i & 0xff);
  const b = toBase64(bytes);
  assert.equal(b, Buffer.from(bytes).toString("base64"));
  assert.deepEqual(fromBase64(b), bytes);
  assert.throws(() => fromBase64("abc"));
  assert.throws(() => fromBase64("ab-_"));
});
