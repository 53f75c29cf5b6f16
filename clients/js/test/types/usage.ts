// Compile-time checks of the public types (run by `npm run typecheck`; never executed).
import { Sealcast, type ConnectionState } from "../../src/index.js";
import { mintConnectToken, SealcastPublisher } from "../../src/server.js";

interface Absence { id: string; who: string }
interface Events { AddAbsence: Absence; RemoveAbsence: { id: string } }

declare const sc: Sealcast;
const sub = sc.subscribe<Events>("ns#absences", {
  onEvent: (event, payload, meta) => {
    const e: "AddAbsence" | "RemoveAbsence" = event;
    void e; void payload; void meta.offset;
  },
  onRecoveryFailed: ({ position }) => void position.epoch,
});
sub.on("AddAbsence", (a) => { const who: string = a.who; void who; });
sub.on("RemoveAbsence", (r) => void r.id);
// @ts-expect-error: unknown event name
sub.on("Nope", () => {});
// @ts-expect-error: wrong payload type
sub.on("RemoveAbsence", (r: Absence) => void r.who);
const off = sc.onStateChange((s: ConnectionState) => {
  if (s.status === "disconnected") { const c: number = s.code; const r: string = s.reason; void c; void r; }
});
off();
const token: string = mintConnectToken({ app: "a", secret: "x".repeat(32), ns: "n", sub: "u", ttlSeconds: 60 });
void token;
void new SealcastPublisher({ url: "http://127.0.0.1:1", app: "a", secret: "x".repeat(32), payloadKey: new Uint8Array(32) });
