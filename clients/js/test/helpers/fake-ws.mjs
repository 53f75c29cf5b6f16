// A scripted in-memory WebSocket for unit tests of the client's state machine.
export class FakeWS {
  static instances = [];
  static reset() { FakeWS.instances = []; }
  static get last() { return FakeWS.instances[FakeWS.instances.length - 1]; }
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedByClient = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeWS.instances.push(this);
  }
  send(data) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(data));
  }
  close(code, reason) {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }
  // ---- server side
  open() { this.readyState = 1; this.onopen?.({}); }
  emit(frame) { this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) }); }
  serverClose(code, reason = "") { this.readyState = 3; this.onclose?.({ code, reason, wasClean: code !== 1006 }); }
  frames(type) { return this.sent.filter((f) => f.type === type); }
}

export const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 5 ms until it is truthy or `ms` elapse (then throws). */
export async function until(cond, ms = 2000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await tick(5);
  }
}
