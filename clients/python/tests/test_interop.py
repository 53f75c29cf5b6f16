"""The golden fixtures shared by every implementation (tests/fixtures/interop): tokens and
envelopes made by the relay's Rust side and by the TypeScript SDK verify and decrypt here,
and this SDK makes the very same bytes from the same inputs."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Dict

import pytest

import sealcast
from conftest import INTEROP, fixture_files


def load(path: Path) -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_the_fixtures_of_the_relay_and_the_typescript_sdk_are_present() -> None:
    names = {p.name for p in fixture_files()}
    assert {"rust.json", "ts.json"} <= names, f"fixtures in {INTEROP}: {sorted(names)}"


FILES = [p for p in fixture_files() if "tokens" in load(p)]


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
