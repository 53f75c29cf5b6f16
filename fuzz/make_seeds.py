#!/usr/bin/env python3
"""Writes the hand-made seed corpus of both fuzz targets (fuzz/corpus/{frame,token}/seed-*).

Run from anywhere: `python3 fuzz/make_seeds.py`. Deterministic: the tokens are minted with
the keys of fuzz/src/checks.rs (KEYS) around its NOW, so the same files come out each time
and the valid ones still verify in tests/fuzz_corpus.rs.
"""
import base64, hashlib, hmac, json, os

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = 1_800_000_000
KEYS = {
    ("acme", "k1"): b"fuzz-acme-key-one-0123456789abcdefghijkl",
    ("acme", "k2"): b"fuzz-acme-key-two-0123456789abcdefghijkl",
    ("other", "k1"): b"fuzz-other-key-one-0123456789abcdefghijk",
}
NS = "ari:cloud:jira::site/7f3c0d2e/dashboard/10001"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(header, claims, secret):
    h = b64(json.dumps(header, separators=(",", ":")).encode())
    c = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret, f"{h}.{c}".encode(), hashlib.sha512).digest()
    return f"{h}.{c}.{b64(sig)}"


def connect(**over):
    c = {"iss": "acme", "sub": "user-1", "ns": NS, "aud": "connect", "iat": NOW - 10, "exp": NOW + 3600}
    c.update(over)
    return c


def publish(**over):
    c = {"iss": "acme", "aud": "publish", "iat": NOW, "exp": NOW + 60}
    c.update(over)
    return c


HS = {"alg": "HS512", "typ": "JWT", "kid": "k1"}
K1 = KEYS[("acme", "k1")]
good = jwt(HS, connect(), K1)
tokens = {
    "connect-k1": good,
    "connect-k2": jwt({**HS, "kid": "k2"}, connect(jti="j-1"), KEYS[("acme", "k2")]),
    "connect-nokid": jwt({"alg": "HS512"}, connect(), KEYS[("acme", "k2")]),
    "connect-other-app": jwt(HS, connect(iss="other"), KEYS[("other", "k1")]),
    "publish": jwt(HS, publish(), K1),
    "publish-ns": jwt(HS, publish(ns=NS, jti="p"), K1),
    "expired": jwt(HS, connect(iat=NOW - 7200, exp=NOW - 3600), K1),
    "future": jwt(HS, connect(iat=NOW + 600, exp=NOW + 1200), K1),
    "too-long": jwt(HS, publish(exp=NOW + 301), K1),
    "aud-array": jwt(HS, connect(aud=["connect"]), K1),
    "alg-none": jwt({"alg": "none"}, connect(), b""),
    "alg-hs256": jwt({"alg": "HS256"}, connect(), K1),
    "typ-jws": jwt({**HS, "typ": "JWS"}, connect(), K1),
    "unknown-kid": jwt({**HS, "kid": "k9"}, connect(), K1),
    "unknown-app": jwt(HS, connect(iss="nope"), K1),
    "bad-ns": jwt(HS, connect(ns="a b#c"), K1),
    "big-numbers": jwt(HS, connect(iat=-(2**63), exp=2**63 - 1), K1),
    "wrong-key": jwt(HS, connect(), KEYS[("other", "k1")]),
    "flipped-sig": good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1],
    "two-parts": good.rsplit(".", 1)[0],
    "four-parts": good + ".e30",
    "padded": good + "==",
    "empty": "",
    "dots": "..",
    "oversize": good + "A" * (4097 - len(good)),
}
frames = {
    "connect": json.dumps({"type": "connect", "token": good}),
    "subscribe": json.dumps({"type": "subscribe", "id": 1, "channel": NS + "#gadget-1"}),
    "subscribe-since": json.dumps({"type": "subscribe", "id": 2, "channel": NS + "#g", "since": {"epoch": "0123456789abcdef", "offset": 41}}),
    "unsubscribe": json.dumps({"type": "unsubscribe", "id": 3, "channel": NS + "#g"}),
    "refresh": json.dumps({"type": "refresh", "id": 4, "token": good}),
    "extra-field": '{"type":"subscribe","channel":"a#b","x":[1,{"y":null}]}',
    "neg-id": '{"type":"subscribe","id":-1,"channel":"a#b"}',
    "float-id": '{"type":"subscribe","id":1.5,"channel":"a#b"}',
    "huge-id": '{"type":"subscribe","id":1' + "0" * 400 + ',"channel":"a#b"}',
    "exp-id": '{"type":"subscribe","id":1e400,"channel":"a#b"}',
    "no-channel": '{"type":"subscribe","id":5}',
    "bad-channel": '{"type":"subscribe","id":6,"channel":"a\\u0000b#c"}',
    "two-hash": '{"type":"subscribe","channel":"a#b#c"}',
    "unknown-type": '{"type":"publish","channel":"a#b"}',
    "type-number": '{"type":1}',
    "dup-keys": '{"type":"connect","type":"subscribe","channel":"a#b"}',
    "array": "[1,2,3]",
    "deep": "[" * 200 + "]" * 200,
    "deep-object": '{"type":"subscribe","since":' + '{"a":' * 150 + "1" + "}" * 150 + "}",
    "broken": '{"type":"subscribe","channel":"a#b"',
    "escapes": '{"type":"subscribe","channel":"a\\ud800#b"}',
    "null": "null",
    "empty": "",
}
binary_frames = {
    "invalid-utf8": b'{"type":"connect","token":"\xff\xfe"}',
    "overlong-utf8": b'{"type":"subscribe","channel":"a\xc0\xafb#c"}',
    "nul": b'{"type":"subscribe","channel":"a\x00#b"}',
}


# Signed mode of the token target (see checks.rs `token`): 0x01, a key index, then
# `<header JSON>\n<claims JSON>`, which the check signs itself.
def signed(key, header, claims):
    h = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    c = claims if isinstance(claims, str) else json.dumps(claims, separators=(",", ":"))
    return bytes([1, key]) + h.encode() + b"\n" + c.encode()


signed_tokens = {
    "signed-connect": signed(0, HS, connect()),
    "signed-publish-nokid": signed(1, {"alg": "HS512"}, publish(ns=NS)),
    "signed-other": signed(2, HS, connect(iss="other")),
    "signed-typ-null": signed(0, {"alg": "HS512", "typ": None}, connect()),
    "signed-lifetime-edge": signed(0, HS, publish(iat=NOW - 270, exp=NOW + 30)),
    "signed-expiry-edge": signed(0, HS, connect(iat=NOW - 3600, exp=NOW - 29)),
    "signed-extreme-times": signed(0, HS, connect(iat=-(2**63), exp=2**63 - 1)),
    "signed-dup-claim": signed(0, HS, '{"iss":"acme","iss":"other","sub":"u","ns":"n","aud":"connect","iat":1800000000,"exp":1800000060}'),
    "signed-escaped": signed(0, '{"alg":"HS\\u003512"}', connect()),
    "signed-sub-long": signed(0, HS, connect(sub="s" * 129)),
    "signed-jti-empty": signed(0, HS, connect(jti="")),
    "signed-float-time": signed(0, HS, '{"iss":"acme","sub":"u","ns":"n","aud":"connect","iat":1.8e9,"exp":1800000060}'),
}


# WebSocket byte streams for the wsframe target (its decoder refuses messages over 1024).
def ws(fin, op, payload, mask=b"\x5a\x01\xc3\x7e", masked=True):
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | op])
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n <= 0xFFFF:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


CONNECT = json.dumps({"type": "connect", "token": "t"}).encode()
ws_streams = {
    "text": ws(True, 1, CONNECT),
    "text-16bit-len": ws(True, 1, b" " * 300),
    "text-at-limit": ws(True, 1, b"x" * 1024),
    "text-over-limit": ws(True, 1, b"x" * 1025),
    "len-64bit": ws(True, 1, b"y" * 70000)[:20],
    "len-top-bit": bytes([0x81, 0xFF]) + (2**63).to_bytes(8, "big") + b"\0\0\0\0",
    "fragmented-with-ping": ws(False, 1, CONNECT[:9]) + ws(True, 9, b"p") + ws(False, 0, CONNECT[9:20]) + ws(True, 0, CONNECT[20:]),
    "fragmented-utf8-split": ws(False, 1, "€".encode()[:1]) + ws(True, 0, "€".encode()[1:]),
    "fragments-over-limit": ws(False, 1, b"a" * 600) + ws(True, 0, b"a" * 600),
    "binary": ws(True, 2, bytes(range(40))),
    "ping-pong": ws(True, 9, b"hello") + ws(True, 10, b""),
    "ping-125": ws(True, 9, b"p" * 125),
    "ping-126": ws(True, 9, b"p" * 126),
    "close-1000-reason": ws(True, 8, (1000).to_bytes(2, "big") + b"bye"),
    "close-empty": ws(True, 8, b""),
    "close-one-byte": ws(True, 8, b"\x03"),
    "close-1005": ws(True, 8, (1005).to_bytes(2, "big")),
    "close-4999": ws(True, 8, (4999).to_bytes(2, "big")),
    "close-bad-utf8": ws(True, 8, (1000).to_bytes(2, "big") + b"\xff"),
    "unmasked": ws(True, 1, b"{}", masked=False),
    "rsv-bits": bytes([0xC1]) + ws(True, 1, b"{}")[1:],
    "opcode-3": ws(True, 3, b"x"),
    "continuation-first": ws(True, 0, b"x"),
    "text-inside-fragment": ws(False, 1, b"a") + ws(True, 1, b"b"),
    "fragmented-ping": ws(False, 9, b"x"),
    "invalid-utf8": ws(True, 1, b"\xc3\x28"),
    # Refused before the message (or its frame) is complete: UTF-8 is checked as it arrives.
    "invalid-utf8-unfinished": ws(False, 1, "κόσμε".encode()) + ws(False, 0, b"\xf4\x90\x80\x80"),
    "invalid-utf8-cut-frame": ws(True, 1, b"hello \xed\xa0\x80" + b"x" * 50)[:20],
    "binary-fragmented": ws(False, 2, b"\xff\x00") + ws(True, 9, b"") + ws(True, 0, b"\xfe"),
    "close-1015": ws(True, 8, (1015).to_bytes(2, "big")),
    "many-small": b"".join(ws(True, 10, b"") for _ in range(50)) + ws(True, 1, b"{}"),
}


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


for n, t in tokens.items():
    write("token", n, t)
for n, t in signed_tokens.items():
    write("token", n, t)
for n, f in frames.items():
    write("frame", n, f)
for n, f in binary_frames.items():
    write("frame", n, f)
for n, f in ws_streams.items():
    write("wsframe", n, f)
