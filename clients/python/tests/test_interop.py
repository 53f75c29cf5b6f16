"""The golden fixtures shared by every implementation (tests/fixtures/interop): tokens and
envelopes made by the relay's Rust side and by the TypeScript SDK verify and decrypt here,
and this SDK makes the very same bytes from the same inputs."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest

import sealcast
from conftest import INTEROP, RELAY_BIN, fixture_files, relay_or_skip


def load(path: Path) -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_the_fixtures_of_the_relay_and_the_typescript_sdk_are_present() -> None:
    names = {p.name for p in fixture_files()}
    assert {"rust.json", "ts.json"} <= names, f"fixtures in {INTEROP}: {sorted(names)}"


# The per-SDK fixtures (session.json, the recorded session, has its own test: test_session.py).
FILES = [p for p in fixture_files() if "ciphertexts" in load(p)]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_tokens_verify_with_the_relays_rules_and_mint_to_the_same_bytes(path: Path) -> None:
    fx = load(path)
    apps = {fx["app"]: {fx["kid"]: fx["secret"]}}
    assert {t["aud"] for t in fx["tokens"]} == {"connect", "publish"}
    for t in fx["tokens"]:
        v = sealcast.verify_token(t["token"], apps=apps, aud=t["aud"], now=fx["now"])
        assert v.claims == t["claims"]
        assert (v.app, v.kid, v.iat, v.exp) == (fx["app"], fx["kid"], t["claims"]["iat"], t["claims"]["exp"])
        other = "publish" if t["aud"] == "connect" else "connect"
        with pytest.raises(sealcast.TokenError) as e:
            sealcast.verify_token(t["token"], apps=apps, aud=other, now=fx["now"])
        assert e.value.reason == "wrong_audience"
        c = t["claims"]
        ttl = c["exp"] - c["iat"]
        if t["aud"] == "connect":
            minted = sealcast.mint_connect_token(app=c["iss"], kid=fx["kid"], secret=fx["secret"], ns=c["ns"],
                                                 sub=c["sub"], ttl_seconds=ttl, jti=c.get("jti"), iat=c["iat"])
        else:
            minted = sealcast.mint_publish_token(app=c["iss"], kid=fx["kid"], secret=fx["secret"], ns=c.get("ns"),
                                                 ttl_seconds=ttl, jti=c.get("jti"), iat=c["iat"])
        assert minted == t["token"], "minted byte for byte as the other implementation did"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_envelopes_decrypt_and_encrypt_to_the_same_bytes(path: Path) -> None:
    fx = load(path)
    key = fx["payload_key"]
    assert len(base64.b64decode(key)) == 32
    assert fx["ciphertexts"]
    for c in fx["ciphertexts"]:
        ch, ev, data, text = c["channel"], c["event"], c["data"], c["plaintext"]
        assert sealcast.decrypt_bytes(ch, ev, data, key) == text.encode("utf-8")
        assert sealcast.decrypt(ch, ev, data, base64.b64decode(key)) == json.loads(text)
        nonce = base64.b64decode(data)[:12]
        assert sealcast.encrypt_text(ch, ev, text, key, nonce=nonce) == data
        # Bound to its channel and event.
        for wrong in ((ch + "x", ev), (ch, ev + "x")):
            with pytest.raises(sealcast.DecryptError):
                sealcast.decrypt_bytes(wrong[0], wrong[1], data, key)


NS = "ari:cloud:jira::site/7f3c0d2e/dashboard/10001"


def python_fixture() -> Dict[str, Any]:
    """tests/fixtures/interop/python.json, made deterministically (HMAC, fixed nonces) with
    this SDK's own minting and encryption, for the other implementations to check."""
    secret = "python-interop-secret-0123456789abcdef-not-for-production"
    key = bytes((i * 13 + 1) % 256 for i in range(32))
    iat = 1_700_000_000
    connect = sealcast.mint_connect_token(app="acme", kid="k1", secret=secret, ns=NS, sub="557058:py-user",
                                          ttl_seconds=7200, jti="py-jti-1", iat=iat)
    publish = sealcast.mint_publish_token(app="acme", kid="k1", secret=secret, ttl_seconds=120, iat=iat)
    values = [
        (f"{NS}#gadget-30003", "AddAbsence", {"who": "Zoë", "days": ["2026-12-24"], "note": "Weihnachten ✓ 🎄"}),
        (f"{NS}#team.on-call:eu", "OnCallChanged", [1, 2.5, None, True, "x"]),
        (f"{NS}#empty", "Ping", "just a JSON string"),
    ]
    ciphertexts = []
    for i, (ch, ev, value) in enumerate(values):
        text = sealcast.crypto.to_json(value)
        nonce = bytes(range(48 + i * 12, 60 + i * 12))
        ciphertexts.append({"channel": ch, "event": ev, "plaintext": text,
                            "data": sealcast.encrypt_text(ch, ev, text, key, nonce=nonce)})
    return {
        "app": "acme", "kid": "k1", "secret": secret, "payload_key": sealcast.to_base64(key), "now": iat + 100,
        "tokens": [
            {"aud": "connect", "token": connect,
             "claims": sealcast.verify_token(connect, apps={"acme": {"k1": secret}}, aud="connect", now=iat).claims},
            {"aud": "publish", "token": publish,
             "claims": sealcast.verify_token(publish, apps={"acme": {"k1": secret}}, aud="publish", now=iat).claims},
        ],
        "ciphertexts": ciphertexts,
    }


def test_the_python_made_fixture_is_current() -> None:
    path = INTEROP / "python.json"
    text = json.dumps(python_fixture(), indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("SEALCAST_WRITE_FIXTURES"):
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, "stale: rerun with SEALCAST_WRITE_FIXTURES=1"


def relay_cli(*args: str, key: str) -> str:
    relay_or_skip()
    out = subprocess.run([str(RELAY_BIN), *args, "--key-env", "SEALCAST_PY_TEST_PAYLOAD_KEY"], capture_output=True,
                         env=dict(os.environ, SEALCAST_PY_TEST_PAYLOAD_KEY=key), timeout=30)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout.decode("utf-8").rstrip("\n")


def test_the_relays_own_cli_decrypts_what_this_sdk_encrypts_and_the_other_way_round() -> None:
    fx = python_fixture()
    for c in fx["ciphertexts"]:
        plain = relay_cli("decrypt", "--channel", c["channel"], "--event", c["event"], c["data"], key=fx["payload_key"])
        assert plain == c["plaintext"]
        data = relay_cli("encrypt", "--channel", c["channel"], "--event", c["event"], c["plaintext"],
                         key=fx["payload_key"])
        assert data != c["data"], "a fresh nonce"
        assert sealcast.decrypt_text(c["channel"], c["event"], data, fx["payload_key"]) == c["plaintext"]
