#!/usr/bin/env node
// Checks the published specification against itself and against the golden fixtures:
//  1. docs/asyncapi.yaml is a valid AsyncAPI 3.0.0 document (the JSON schema of the npm
//     package @asyncapi/specs, draft-07, with ajv);
//  2. every frame of tests/fixtures/wire.json validates against the payload schema of its
//     message, in the direction it travels (client frames are messages the relay receives,
//     server frames messages it sends);
//  3. every HTTP example of wire.json validates against docs/openapi.yaml (the request body
//     of a 2xx example, and the response of its status);
//  4. the ciphertexts of tests/fixtures/interop/*.json validate as publications, and every
//     frame and HTTP body of the recorded session (interop/session.json) against both documents;
//  5. the examples inside both documents validate against their own schemas;
//  6. the codes of tests/fixtures/protocol.json are the documents' codes: close codes in the
//     close-code table of docs/protocol.md, frame error codes in the `error` frame's enum,
//     HTTP errors in openapi's ErrorCode enum with a response of that status.
// openapi.yaml itself is validated by openapi-spec-validator (scripts/check-spec).
// Exits non-zero, listing every problem, when anything does not match.
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Ajv from "ajv";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import specs from "@asyncapi/specs";
import YAML from "yaml";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const read = (p) => readFileSync(join(root, p), "utf8");
const asyncapi = YAML.parse(read("docs/asyncapi.yaml"));
const openapi = YAML.parse(read("docs/openapi.yaml"));
const wire = JSON.parse(read("tests/fixtures/wire.json"));
const protocol = JSON.parse(read("tests/fixtures/protocol.json"));
const protocolMd = read("docs/protocol.md");

const problems = [];
let checked = 0;
const fail = (what, detail) => problems.push(`${what}: ${detail}`);
const errorsText = (errors) => (errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message}${e.params ? " " + JSON.stringify(e.params) : ""}`).join("; ");

// ---- 1. AsyncAPI 3.0.0 document
{
  // The AsyncAPI schema bundles its own copy of the draft-07 meta-schema (under that
  // meta-schema's $id), so ajv must not add its built-in one as well.
  const ajv = new Ajv({ allErrors: true, strict: false, meta: false, validateSchema: false });
  addFormats(ajv);
  const validate = ajv.compile(specs.schemas["3.0.0"]);
  if (!validate(asyncapi)) fail("docs/asyncapi.yaml is not valid AsyncAPI 3.0.0", errorsText(validate.errors));
  else checked++;
}

// Resolves a local JSON pointer ("#/a/b") in a document.
function at(doc, ref) {
  if (!ref.startsWith("#/")) throw new Error(`only local references are used: ${ref}`);
  return ref.slice(2).split("/").reduce((o, k) => o?.[k.replace(/~1/g, "/").replace(/~0/g, "~")], doc);
}
const deref = (doc, v) => (v && v.$ref ? deref(doc, at(doc, v.$ref)) : v);

// ---- schemas of the two documents, compiled with their own components for $ref
// AsyncAPI's default schema format is a superset of JSON Schema draft-07; OpenAPI 3.1's is
// JSON Schema 2020-12. Each document is registered whole so that "#/components/..." resolves.
const asyncAjv = new Ajv({ allErrors: true, strict: false });
addFormats(asyncAjv);
asyncAjv.addSchema({ ...asyncapi, $id: "asyncapi.yaml" });
const openAjv = new Ajv2020({ allErrors: true, strict: false });
addFormats(openAjv);
openAjv.addSchema({ ...openapi, $id: "openapi.yaml" });
const asyncSchema = (ref) => asyncAjv.compile({ $ref: `asyncapi.yaml${ref}` });
const openSchema = (ref) => openAjv.compile({ $ref: `openapi.yaml${ref}` });

// ---- the messages of each direction, from the operations (the relay's point of view)
const messagesBy = { receive: new Map(), send: new Map() };
for (const [opName, op] of Object.entries(asyncapi.operations ?? {})) {
  const add = (dir, refs) => {
    for (const r of refs ?? []) {
      const message = deref(asyncapi, r);
      const payloadRef = message?.payload?.$ref;
      const type = deref(asyncapi, message?.payload)?.properties?.type?.const;
      if (!payloadRef || !type) {
        fail(`asyncapi operation ${opName}`, `message ${r.$ref} needs a payload $ref with a const type`);
        continue;
      }
      messagesBy[dir].set(type, { message, validate: asyncSchema(payloadRef) });
    }
  };
  add(op.action, op.messages);
  // A reply travels the other way.
  add(op.action === "receive" ? "send" : "receive", op.reply?.messages);
}

function checkFrame(dir, frame, where) {
  const m = messagesBy[dir].get(frame?.type);
  if (!m) return fail(where, `no ${dir === "receive" ? "client" : "server"} message of type ${JSON.stringify(frame?.type)} in docs/asyncapi.yaml`);
  if (!m.validate(frame)) return fail(where, `${JSON.stringify(frame)} does not match its payload schema: ${errorsText(m.validate.errors)}`);
  checked++;
}

// ---- 2. frames of the wire fixture
wire.websocket.client.forEach((f, i) => checkFrame("receive", f, `wire.json websocket.client[${i}]`));
wire.websocket.server.forEach((f, i) => checkFrame("send", f, `wire.json websocket.server[${i}]`));
for (const [dir, label] of [["receive", "client"], ["send", "server"]]) {
  const shown = new Set(wire.websocket[label].map((f) => f.type));
  for (const type of messagesBy[dir].keys()) if (!shown.has(type)) fail("wire.json", `no example of the ${label} frame ${type}`);
}

// ---- 3. HTTP examples against openapi
const operations = new Map();
for (const [path, item] of Object.entries(openapi.paths ?? {})) {
  for (const [method, op] of Object.entries(item)) if (op?.operationId) operations.set(op.operationId, { path, method, op });
}
function jsonSchemaRef(content, where) {
  const schema = content?.["application/json"]?.schema;
  if (!schema?.$ref) {
    fail(where, "no application/json schema $ref");
    return undefined;
  }
  return schema.$ref;
}
wire.http.forEach((ex, i) => {
  const where = `wire.json http[${i}] (${ex.operation} ${ex.status})`;
  const o = operations.get(ex.operation);
  if (!o) return fail(where, `no operationId ${ex.operation} in docs/openapi.yaml`);
  if (ex.status >= 200 && ex.status < 300) {
    const ref = jsonSchemaRef(deref(openapi, o.op.requestBody)?.content, `${where} request`);
    // A batch's items succeed or fail one by one: the items that succeeded must be valid
    // publications; a refused item is an example of what the schema refuses.
    const request = ex.operation === "publishBatch" ? { ...ex.request, publications: ex.request.publications.filter((_, j) => !ex.response.results?.[j]?.error) } : ex.request;
    if (ref) {
      const v = openSchema(ref);
      if (!v(request)) fail(`${where} request`, errorsText(v.errors));
      else checked++;
    }
  }
  const response = deref(openapi, o.op.responses?.[String(ex.status)]);
  if (!response) return fail(where, `docs/openapi.yaml has no ${ex.status} response for ${o.method.toUpperCase()} ${o.path}`);
  const ref = jsonSchemaRef(response.content, `${where} response`);
  if (ref) {
    const v = openSchema(ref);
    if (!v(ex.response)) fail(`${where} response`, errorsText(v.errors));
    else checked++;
  }
});
for (const id of ["publish", "publishBatch", "revoke"]) {
  if (!wire.http.some((ex) => ex.operation === id && ex.status === 200)) fail("wire.json", `no 200 example of ${id}`);
}

// ---- 4. the interop fixtures' ciphertexts are valid publications
{
  const v = openSchema("#/components/schemas/Publication");
  const dir = join(root, "tests/fixtures/interop");
  for (const name of readdirSync(dir).filter((n) => n.endsWith(".json"))) {
    const fx = JSON.parse(readFileSync(join(dir, name), "utf8"));
    (fx.ciphertexts ?? []).forEach((c, i) => {
      const publication = { channel: c.channel, event: c.event, data: c.data };
      if (!v(publication)) fail(`interop/${name} ciphertexts[${i}]`, errorsText(v.errors));
      else checked++;
    });
  }
}

// ---- 4b. the recorded session: every frame and HTTP body of it against the documents. Its
// live values are named placeholders ("{live:epoch:...}", "{live:session:...}"); each takes
// the shape the relay gives such a value (16 lowercase hex digits) before it is checked.
{
  const name = "tests/fixtures/interop/session.json";
  const fx = JSON.parse(read(name));
  const live = (v) => JSON.parse(JSON.stringify(v).replace(/"\{live:[^"}]+\}"/g, '"0123456789abcdef"'));
  const opOf = { "/v1/publish": "publish", "/v1/revoke": "revoke" };
  fx.steps.forEach((s, i) => {
    const where = `interop/session.json steps[${i}]`;
    // A frame no SDK sends is recorded for the relay's answer: not necessarily valid.
    if (s.send && s.sdk !== false) checkFrame("receive", live(s.send), where);
    if (s.recv) checkFrame("send", live(s.recv), where);
    if (s.http) {
      const o = operations.get(opOf[s.http.path]);
      if (!o) return fail(where, `no operation for ${s.http.path} in docs/openapi.yaml`);
      const req = jsonSchemaRef(deref(openapi, o.op.requestBody)?.content, `${where} request`);
      const res = jsonSchemaRef(deref(openapi, o.op.responses?.[String(s.answer.status)])?.content, `${where} response`);
      for (const [ref, body, what] of [[req, s.http.body, "request"], [res, live(s.answer.body), "answer"]]) {
        if (!ref) continue;
        const v = openSchema(ref);
        if (!v(body)) fail(`${where} ${what}`, errorsText(v.errors));
        else checked++;
      }
    }
  });
}

// ---- 5. the documents' own examples
for (const [name, message] of Object.entries(asyncapi.components?.messages ?? {})) {
  const v = asyncSchema(message.payload.$ref);
  (message.examples ?? []).forEach((ex, i) => {
    if (!v(ex.payload)) fail(`asyncapi message ${name} example ${i}`, errorsText(v.errors));
    else checked++;
  });
}
for (const [id, { op }] of operations) {
  const media = deref(openapi, op.requestBody)?.content?.["application/json"];
  if (media?.example !== undefined) {
    const v = openSchema(media.schema.$ref);
    if (!v(media.example)) fail(`openapi ${id} request example`, errorsText(v.errors));
    else checked++;
  }
  for (const [status, r] of Object.entries(op.responses ?? {})) {
    const m = deref(openapi, r)?.content?.["application/json"];
    if (m?.example === undefined) continue;
    const v = openSchema(m.schema.$ref);
    if (!v(m.example)) fail(`openapi ${id} ${status} example`, errorsText(v.errors));
    else checked++;
  }
}

// ---- 6. the shared code tables
{
  // Rows of the close-code table of docs/protocol.md: "| 4002 | `token_expired` | ...".
  const rows = [...protocolMd.matchAll(/^\| (\d{4}) \| `([a-z_]+)` \|/gm)].map((m) => `${m[1]} ${m[2]}`);
  for (const c of protocol.close_codes) {
    if (!rows.includes(`${c.code} ${c.name}`)) fail("tests/fixtures/protocol.json", `close code ${c.code} ${c.name} is not in the close-code table of docs/protocol.md`);
    else checked++;
  }
  const frameCodes = deref(asyncapi, asyncapi.components.schemas.ErrorFrame).properties.code.enum;
  const same = (a, b) => a.length === b.length && [...a].sort().join() === [...b].sort().join();
  if (!same(frameCodes, protocol.frame_error_codes)) fail("tests/fixtures/protocol.json", `frame_error_codes ${protocol.frame_error_codes} differ from the error frame's enum ${frameCodes}`);
  else checked++;
  const httpCodes = openapi.components.schemas.ErrorCode.enum;
  if (!same(httpCodes, protocol.http_errors.map((e) => e.code))) fail("tests/fixtures/protocol.json", `http_errors codes differ from openapi ErrorCode ${httpCodes}`);
  for (const e of protocol.http_errors) {
    const answered = [...operations.values()].some(({ op }) => op.responses?.[String(e.status)]);
    const inTable = new RegExp(`^\\| ${e.status} \\| \`${e.code}\` \\|`, "m").test(protocolMd);
    if (!answered) fail("docs/openapi.yaml", `no operation answers ${e.status} (${e.code})`);
    else if (!inTable) fail("docs/protocol.md", `the HTTP error table has no row for ${e.status} ${e.code}`);
    else checked++;
  }
}

if (problems.length) {
  console.error(`spec check: ${problems.length} problem(s)`);
  for (const p of problems) console.error(`- ${p}`);
  process.exit(1);
}
console.log(`spec check: docs/asyncapi.yaml is valid AsyncAPI 3.0.0; ${checked} checks of the fixtures and examples against docs/asyncapi.yaml, docs/openapi.yaml and docs/protocol.md passed`);
