// Starts the real sealcast relay binary for integration tests (127.0.0.1 only).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const RELAY_BIN = process.env.SEALCAST_BIN ?? resolve(here, "../../../../target/debug/sealcast");
export const relayAvailable = existsSync(RELAY_BIN);
// With SEALCAST_REQUIRE_RELAY=1 (CI), a missing binary fails the tests instead of skipping them.
export const skipReason = relayAvailable || process.env.SEALCAST_REQUIRE_RELAY === "1" ? false : `relay binary not found at ${RELAY_BIN} (build it with \`cargo build\` in the repository root, or set SEALCAST_BIN)`;

export const APP = "acme";
export const KID = "k1";
export const SECRET = "integration-secret-0123456789abcdef-0123456789";

/** A port that was free a moment ago (for restarting a relay on the same address). */
export async function freePort() {
  const { createServer } = await import("node:net");
  const srv = createServer();
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/**
 * Starts `sealcast serve` with a fresh config; resolves once it prints its listening line.
 * Returns { http, ws, stop, stderr() }.
 */
export async function startRelay({ bin = RELAY_BIN, listen = "127.0.0.1:0", leeway = "30s", historyTtl = "120s", idle = "60s", extra = "", secretFile = null, timeoutMs = 15000 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "sealcast-test-"));
  const cfg = join(dir, "sealcast.toml");
  // With `secretFile`, k1's secret is read from that file (so a reload can replace it).
  const secretSource = secretFile ? `secret_file = ${JSON.stringify(secretFile)}` : `secret_env = "SEALCAST_TEST_ACME_KEY_1"`;
  writeFileSync(
    cfg,
    `listen = "${listen}"
[websocket]
auth_timeout = "5s"
ping_interval = "25s"
idle_timeout = "${idle}"
[history]
ttl = "${historyTtl}"
max_per_channel = 1000
[tokens]
leeway = "${leeway}"
[shutdown]
drain = "500ms"
[[apps]]
id = "${APP}"
[[apps.keys]]
kid = "${KID}"
${secretSource}
${extra}`,
  );
  const child = spawn(bin, ["serve", "--config", cfg], {
    env: { ...process.env, SEALCAST_TEST_ACME_KEY_1: SECRET, RUST_LOG: process.env.RUST_LOG ?? "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let err = "";
  child.stderr.on("data", (d) => {
    err += d;
    if (err.length > 200000) err = err.slice(-100000);
  });
  const addr = await new Promise((res, rej) => {
    let out = "";
    const timer = setTimeout(() => rej(new Error(`relay did not report listening within ${timeoutMs} ms; stderr:\n${err}`)), timeoutMs);
    child.stdout.on("data", (d) => {
      out += d;
      const m = /listening on http:\/\/([0-9.]+:[0-9]+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        res(m[1]);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      rej(new Error(`relay exited with ${code}; stderr:\n${err}`));
    });
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(t);
    rmSync(dir, { recursive: true, force: true });
  };
  return { http: `http://${addr}`, ws: `ws://${addr}/v1/ws`, addr, stop, stderr: () => err, child };
}
