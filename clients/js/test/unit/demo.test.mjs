// The demo backend (demo/server.mjs) as a newcomer meets it: which relay binary it starts,
// what it answers while the relay is down, and the favicon request every browser makes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findRelayBin, startDemo, statusFor } from "../../demo/server.mjs";
import { SealcastHttpError, SealcastTransportError } from "../../dist/server.js";

const secret = "demo-test-secret-0123456789abcdef-0123456789";

test("the relay binary: SEALCAST_BIN when it exists, else a build", () => {
  const dir = mkdtempSync(join(tmpdir(), "sealcast-demo-"));
  try {
    const bin = join(dir, "sealcast");
    writeFileSync(bin, "");
    assert.equal(findRelayBin({ SEALCAST_BIN: bin }), bin);
    assert.equal(findRelayBin({ SEALCAST_BIN: join(dir, "missing") }), undefined);
    const found = findRelayBin({});
    assert.ok(found === undefined || /target\/(release|debug)\/sealcast$/.test(found), found);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("statuses: the relay's own answer, 502 when it cannot be reached", () => {
  assert.equal(statusFor(new SealcastTransportError("connect ECONNREFUSED")), 502);
  assert.equal(statusFor(new SealcastHttpError(401, "unauthorized", "publish token refused")), 401);
  assert.equal(statusFor(new SealcastHttpError(0, "transport", "old style")), 502);
  assert.equal(statusFor(Object.assign(new Error("no such absence"), { status: 404 })), 404);
  assert.equal(statusFor(new Error("boom")), 500);
});

async function closedPort() {
  const srv = createServer();
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

test("while the relay is down an action answers 502 and the demo keeps serving", async () => {
  const relayHttp = `http://127.0.0.1:${await closedPort()}`;
  const demo = await startDemo({ relayHttp, app: "acme", kid: "k1", secret });
  try {
    const r = await fetch(`${demo.url}/action?user=Ada`, { method: "POST", body: JSON.stringify({ type: "rotateOnCall" }), signal: AbortSignal.timeout(30000) });
    assert.equal(r.status, 502);
    assert.match((await r.json()).error, /relay unreachable/);
    // Still up: the page, and no 404 for the icon the browser asks for.
    assert.equal((await fetch(`${demo.url}/`)).status, 200);
    assert.equal((await fetch(`${demo.url}/favicon.ico`)).status, 204);
  } finally {
    await demo.stop();
  }
});
