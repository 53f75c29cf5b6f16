// Demo page: two gadgets kept live by sealcast. Runs in the browser, imports the built SDK.
import { Sealcast } from "/sdk/index.js";

const params = new URLSearchParams(location.search);
const user = params.get("user") || `guest-${Math.floor(Math.random() * 1000)}`;
const $ = (id) => document.getElementById(id);
$("me").textContent = user;

const view = { absences: new Map(), oncall: null };
const log = (text) => {
  const line = document.createElement("div");
  line.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("log").prepend(line);
};

function renderAbsences() {
  const ul = $("absences");
  ul.replaceChildren();
  if (view.absences.size === 0) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "Nobody is away.";
    ul.append(li);
  }
  for (const a of [...view.absences.values()].sort((x, y) => x.from.localeCompare(y.from))) {
    const li = document.createElement("li");
    li.dataset.id = a.id;
    const text = document.createElement("span");
    text.textContent = `${a.who}: ${a.from}${a.to && a.to !== a.from ? ` → ${a.to}` : ""} `;
    const small = document.createElement("small");
    small.textContent = a.reason ? `(${a.reason})` : "";
    text.append(small);
    const rm = document.createElement("button");
    rm.className = "link";
    rm.textContent = "remove";
    rm.onclick = () => action({ type: "removeAbsence", id: a.id });
    li.append(text, rm);
    ul.append(li);
  }
}

function renderOnCall() {
  const el = $("oncall");
  const o = view.oncall;
  el.replaceChildren();
  if (!o) return;
  const p = document.createElement("div");
  p.innerHTML = "Primary: <b></b>";
  p.querySelector("b").textContent = o.primary;
  p.querySelector("b").id = "oncall-primary";
  const s = document.createElement("div");
  s.textContent = `Secondary: ${o.secondary}`;
  const by = document.createElement("small");
  by.textContent = o.by ? `changed by ${o.by}` : "";
  el.append(p, s, by);
}

async function action(body) {
  const res = await fetch(`/action?user=${encodeURIComponent(user)}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (!res.ok) log(`action failed: ${res.status}`);
  // No optimistic update: the change comes back through the relay like everyone else's.
}

async function loadState() {
  const s = await (await fetch("/state")).json();
  view.absences = new Map(s.absences.map((a) => [a.id, a]));
  view.oncall = s.oncall;
  renderAbsences();
  renderOnCall();
  return s;
}

const config = await (await fetch("/config")).json();
const snapshot = await loadState();

const client = new Sealcast({
  url: config.wsUrl,
  getToken: async () => (await (await fetch(`/token?user=${encodeURIComponent(user)}`)).json()).token,
  keys: [config.payloadKey], // DEMO ONLY: see demo/server.mjs
  onError: (e) => log(`sealcast: ${e.kind}: ${e.message}`),
});

client.onStateChange((s) => {
  const badge = $("status");
  badge.className = `badge ${s.status}`;
  badge.textContent = s.status === "disconnected" ? `disconnected (${s.code}${s.willRetry ? ", retrying" : ""})` : s.status;
  document.body.dataset.state = s.status;
});

// Handlers are idempotent (keyed by id / full state), so reloading state never double-applies.
const reload = async () => {
  log("missed updates: reloading");
  await loadState();
};

// Subscribing from the snapshot's position means nothing between the snapshot and the live
// stream is lost.
const absences = client.subscribe(config.channels.absences, { since: snapshot.positions.absences, onRecoveryFailed: reload });
absences.on("AddAbsence", (a) => {
  view.absences.set(a.id, a);
  renderAbsences();
  log(`${a.by} added an absence for ${a.who}`);
});
absences.on("RemoveAbsence", (r) => {
  view.absences.delete(r.id);
  renderAbsences();
  log(`${r.by} removed an absence`);
});

const oncall = client.subscribe(config.channels.oncall, { since: snapshot.positions.oncall, onRecoveryFailed: reload });
oncall.on("OnCallChanged", (o) => {
  view.oncall = o;
  renderOnCall();
  log(`${o.by} put ${o.primary} on call`);
});

$("absence-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  action({ type: "addAbsence", who: $("absence-who").value, from: $("absence-from").value, to: $("absence-to").value, reason: $("absence-reason").value });
  $("absence-reason").value = "";
});
$("oncall-rotate").addEventListener("click", () => action({ type: "rotateOnCall" }));
$("oncall-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if ($("oncall-person").value) action({ type: "takeOnCall", person: $("oncall-person").value });
  $("oncall-person").value = "";
});

// Test hook: drop the socket and reconnect after `delayMs` (the SDK recovers what was missed).
window.__demo = { client, view, user, dropConnection: (delayMs = 0) => client.reconnect(delayMs) };
document.body.dataset.ready = "1";
