// The TypeScript SDK's publisher of the cross-SDK matrix (Node): encrypts each payload text of
// the plan as it is written (encryptText) and publishes it with the SDK's `publish` (retries,
// idempotency key), with publish tokens from `mintPublishToken`.
import { encryptText, mintPublishToken, publish } from "../../dist/server.js";

/** Publishes the plan's payloads of publisher `name` on its channel; returns the relay's answers. */
export async function publishAll(plan, name) {
  const channel = plan.channels[name];
  const token = () => mintPublishToken({ app: plan.app, kid: plan.kid, secret: plan.secret, ns: plan.ns, ttlSeconds: 60 });
  const results = [];
  for (const [i, p] of plan.payloads[name].entries()) {
    const data = await encryptText(channel, p.event, p.text, plan.payload_key);
    results.push(await publish({ url: plan.http, token, channel, event: p.event, data, idempotencyKey: `matrix-${name}-${i}` }));
  }
  return results;
}
