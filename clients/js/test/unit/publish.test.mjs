// HTTP publish helpers against a scripted local HTTP server (127.0.0.1): retries and idempotency.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { publish, publishBatch, SealcastHttpError, SealcastTransportError, SealcastPublisher, mintPublishToken, decrypt } from "../../dist/server.js";

async function scripted(handler) {
  const requests = [];
  const server = createServer(async (req, res) => {
    let body = "";
    for await (const c of req) body += c;
    const r = { method: req.method, url: req.url, headers: req.headers, body: JSON.parse(body) };
    requests.push(r);
    const [status, out, headers] = handler(r, requests.length);
    res.writeHead(status, { "content-type": "application/json", ...(headers ?? {}) });
    res.end(JSON.stringify(out));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, requests, close: () => new Promise((r) => server.close(r)) };
}

const secret = "0123456789abcdef0123456789abcdef-test";
const fast = { retries: 4, baseMs: 5, maxMs: 20 };
const pub = { channel: "ns#t", event: "E", data: Buffer.alloc(40).toString("base64") };

test("publish retries 503/429 and transport errors with the same idempotency key", async () => {
  const s = await scripted((r, n) => (n === 1 ? [503, { error: { code: "unavailable", message: "busy" } }] : n === 2 ? [429, { error: { code: "rate_limited", message: "slow down" } }] : [200, { offset: 7, epoch: "e1" }]));
  try {
    let tokens = 0;
    const res = await publish({ url: s.url + "/", token: () => (tokens++, mintPublishToken({ app: "acme", secret, ttlSeconds: 60 })), ...pub, retry: fast });
    assert.deepEqual(res, { offset: 7, epoch: "e1" });
    assert.equal(s.requests.length, 3);
    assert.equal(tokens, 3, "a token is fetched per attempt");
    const keys = new Set(s.requests.map((r) => r.body.idempotency_key));
    assert.equal(keys.size, 1);
    const [key] = keys;
    assert.ok(key.length >= 1 && key.length <= 64);
    for (const r of s.requests) {
      assert.equal(r.url, "/v1/publish");
      assert.equal(r.headers["content-type"], "application/json");
      assert.match(r.headers.authorization, /^Bearer ey/);
      assert.deepEqual(Object.keys(r.body).sort(), ["channel", "data", "event", "idempotency_key"]);
    }
  } finally {
    await s.close();
  }
});

test("a caller's idempotency key is used as is; non-retryable errors surface the protocol error", async () => {
  const s = await scripted(() => [403, { error: { code: "forbidden", message: "ns mismatch" } }]);
  try {
    await assert.rejects(
      publish({ url: s.url, token: "t", ...pub, idempotencyKey: "my-key", retry: fast }),
      (e) => e instanceof SealcastHttpError && e.status === 403 && e.code === "forbidden" && /ns mismatch/.test(e.message),
    );
    assert.equal(s.requests.length, 1, "4xx is not retried");
    assert.equal(s.requests[0].body.idempotency_key, "my-key");
  } finally {
    await s.close();
  }
});

test("retries are bounded", async () => {
  const s = await scripted(() => [503, { error: { code: "unavailable", message: "down" } }]);
  try {
    await assert.rejects(publish({ url: s.url, token: "t", ...pub, retry: { retries: 2, baseMs: 1, maxMs: 2 } }), (e) => e.code === "unavailable");
    assert.equal(s.requests.length, 3);
  } finally {
    await s.close();
  }
});

test("transport failure is retried, then reported", async () => {
  // nothing listens on this port (bound then closed)
  const s = await scripted(() => [200, {}]);
  const url = s.url;
  await s.close();
  await assert.rejects(publish({ url, token: "t", ...pub, retry: { retries: 1, baseMs: 1, maxMs: 2 } }), (e) => {
    // A class of its own (still a SealcastHttpError for existing handlers), with the cause.
    assert.ok(e instanceof SealcastTransportError && e instanceof SealcastHttpError);
    assert.equal(e.name, "SealcastTransportError");
    assert.equal(e.code, "transport");
    assert.equal(e.status, 0);
    assert.ok(e.cause instanceof Error);
    return true;
  });
});

test("an answer from the relay is a SealcastHttpError, never a transport error", async () => {
  const s = await scripted(() => [401, { error: { code: "unauthorized", message: "publish token refused" } }]);
  try {
    await assert.rejects(publish({ url: s.url, token: "t", ...pub, retry: fast }), (e) => e instanceof SealcastHttpError && !(e instanceof SealcastTransportError) && e.status === 401 && e.code === "unauthorized");
  } finally {
    await s.close();
  }
});

test("publishBatch: one result per item; transient item errors retried with their keys", async () => {
  let calls = 0;
  const s = await scripted((r) => {
    calls++;
    if (calls === 1) return [503, { error: { code: "unavailable", message: "x" } }];
    const results = r.body.publications.map((p, i) =>
      calls === 2 && i === 1 ? { error: { code: "rate_limited", message: "later" } } : p.channel === "bad" ? { error: { code: "bad_request", message: "bad channel" } } : { offset: calls * 10 + i, epoch: "e" },
    );
    return [200, { results }];
  });
  try {
    const items = [pub, { ...pub, idempotencyKey: "k2" }, { ...pub, channel: "bad" }];
    const res = await publishBatch({ url: s.url, token: "t", publications: items, retry: fast });
    assert.equal(res.length, 3);
    assert.deepEqual(res[0], { offset: 20, epoch: "e" });
    assert.deepEqual(res[1], { offset: 30, epoch: "e" });
    assert.deepEqual(res[2], { error: { code: "bad_request", message: "bad channel" } });
    assert.equal(s.requests.length, 3);
    assert.deepEqual(s.requests[0].body.publications.map((p) => p.idempotency_key), s.requests[1].body.publications.map((p) => p.idempotency_key));
    assert.equal(s.requests[2].body.publications.length, 1);
    assert.equal(s.requests[2].body.publications[0].idempotency_key, "k2");
    assert.equal(s.requests[0].url, "/v1/publish/batch");
  } finally {
    await s.close();
  }
});

test("SealcastPublisher encrypts with the payload key and sends a publish token", async () => {
  const s = await scripted(() => [200, { offset: 1, epoch: "e" }]);
  try {
    const key = new Uint8Array(32).fill(9);
    const p = new SealcastPublisher({ url: s.url, app: "acme", kid: "k1", secret, payloadKey: key, ns: "ns" });
    await p.publish("ns#t", "AddAbsence", { who: "secret-name" });
    const body = s.requests[0].body;
    assert.ok(!JSON.stringify(body).includes("secret-name"));
    assert.deepEqual(await decrypt("ns#t", "AddAbsence", body.data, [key]), { who: "secret-name" });
    const claims = JSON.parse(Buffer.from(s.requests[0].headers.authorization.slice(7).split(".")[1], "base64url"));
    assert.equal(claims.aud, "publish");
    assert.equal(claims.ns, "ns");
  } finally {
    await s.close();
  }
});

test("publishBatch splits more than 1000 publications into several requests", async () => {
  const s = await scripted((r) => [200, { results: r.body.publications.map((_, i) => ({ offset: i + 1, epoch: "e" })) }]);
  try {
    const items = Array.from({ length: 1001 }, () => pub);
    const res = await publishBatch({ url: s.url, token: "t", publications: items, retry: fast });
    assert.equal(res.length, 1001);
    assert.deepEqual(s.requests.map((r) => r.body.publications.length), [1000, 1]);
    assert.equal(new Set(s.requests.flatMap((r) => r.body.publications.map((p) => p.idempotency_key))).size, 1001);
  } finally {
    await s.close();
  }
});
