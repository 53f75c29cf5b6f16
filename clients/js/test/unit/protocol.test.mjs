import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { CLOSE_CODES, CloseCode, closeCodeInfo, FRAME_ERROR_CODES, HTTP_ERRORS, isValidChannel, isValidEvent } from "../../dist/index.js";

const fixture = JSON.parse(readFileSync(fileURLToPath(new URL("../../../../tests/fixtures/protocol.json", import.meta.url)), "utf8"));

test("close-code table matches tests/fixtures/protocol.json", () => {
  assert.deepEqual(
    CLOSE_CODES.map(({ code, name, retry }) => ({ code, name, retry })),
    fixture.close_codes,
  );
  for (const c of fixture.close_codes) assert.deepEqual(closeCodeInfo(c.code), c);
  // the named enum covers exactly the same codes
  assert.deepEqual(Object.values(CloseCode).sort(), fixture.close_codes.map((c) => c.code).sort());
});

test("codes outside the table (network drop, normal close) are retried with recovery", () => {
  for (const code of [1000, 1005, 1006, 1012, 4000]) assert.equal(closeCodeInfo(code).retry, "recover");
});

test("frame error codes and HTTP errors match the fixture", () => {
  assert.deepEqual([...FRAME_ERROR_CODES], fixture.frame_error_codes);
  assert.deepEqual(HTTP_ERRORS.map((e) => ({ ...e })), fixture.http_errors);
});

test("channel and event syntax", () => {
  assert.ok(isValidChannel("ari:cloud:jira::site/7f3c0d2e/dashboard/10001#gadget-20002"));
  assert.ok(!isValidChannel("no-topic"));
  assert.ok(!isValidChannel("a b#t"));
  assert.ok(!isValidChannel("ns#bad topic"));
  assert.ok(!isValidChannel("ns#a#b"));
  assert.ok(isValidEvent("AddAbsence"));
  assert.ok(!isValidEvent("Add Absence"));
  assert.ok(!isValidEvent("x".repeat(65)));
});
