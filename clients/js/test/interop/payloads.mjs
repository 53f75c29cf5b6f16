// The payloads of the cross-SDK matrix: JSON texts each publisher sends byte for byte and
// each subscriber must receive byte for byte. Several are written the way no JSON serializer
// writes them (spaces, escapes, `2.50`, `-0.0`, `1e21`, a combining accent), so a
// re-serialization anywhere on the way would show.

/** The relay's default payload limit (`http.max_payload_bytes`): nonce + ciphertext + tag. */
export const MAX_PAYLOAD_BYTES = 64 * 1024;
/** AES-GCM's overhead in a payload: a 12-byte nonce and a 16-byte tag. */
export const ENVELOPE_OVERHEAD = 12 + 16;

const utf8 = (s) => new TextEncoder().encode(s).length;

/** A JSON text of exactly `bytes` UTF-8 bytes, mixing 1-, 2-, 3- and 4-byte characters. */
export function largeText(from, bytes) {
  const head = `{"from":"${from}","kind":"large","blob":"`;
  const tail = `","end":"✓"}`;
  const unit = "Zoë Größe ✓ 日本語 🎉 plain ascii 0123456789 ";
  let body = "";
  while (utf8(head + body + unit + tail) <= bytes) body += unit;
  body += "x".repeat(bytes - utf8(head + body + tail));
  const text = head + body + tail;
  if (utf8(text) !== bytes) throw new Error(`large payload is ${utf8(text)} bytes, wanted ${bytes}`);
  return text;
}

/** The payloads publisher `from` sends, in order: `{ event, text }`. */
export function matrixPayloads(from) {
  return [
    { event: "Matrix.Ascii", text: `{"from":"${from}","n":1,"kind":"ascii"}` },
    { event: "Matrix.NonAscii", text: `{"from":"${from}","who":"Zoë Ærøskøbing","note":"Größe ✓ — 日本語 — 🎉🎄","rtl":"שלום","combining":"e\u0301"}` },
    { event: "Matrix.Nested", text: `{"from":"${from}","a":{"b":[1,2.50,-0.0,1e21,{"c":[true,false,null,[]]}],"d":{"e":{"f":{"g":"h"}}}}}` },
    { event: "Matrix.Escapes", text: `{ "from" : "${from}" ,\n  "esc" : "\\u00e9\\t\\"quoted\\" \\\\ \\/" , "pair" : "\\ud83c\\udf89" }` },
    { event: "Matrix.String", text: `"just a JSON string from ${from}"` },
    { event: "Matrix.Array", text: `[1,"two",{"three":3},["${from}"]]` },
    // The largest payload the relay accepts by default.
    { event: "Matrix.Large", text: largeText(from, MAX_PAYLOAD_BYTES - ENVELOPE_OVERHEAD) },
  ];
}
