"""The recorded session shared by the four implementations (tests/fixtures/interop/session.json,
recorded from the real relay by tests/interop_session.rs, which also replays it there).

This SDK has no WebSocket subscriber, so it checks what a backend does in that session: the
recorded tokens verify with the reasons the relay gave and mint to the same bytes, every
``pub`` the relay sent decrypts to its recorded plaintext, the publications seal to the same
bytes, and ``publish`` and ``revoke`` send the recorded requests (path, token, body) and read
the recorded answers (served by a scripted server on 127.0.0.1)."""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Optional, Tuple

import pytest

import sealcast
from conftest import INTEROP
from test_http import Reply, Scripted


def session() -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads((INTEROP / "session.json").read_text(encoding="utf-8"))
    return data


FX = session()
TOKENS = {t["name"]: t for t in FX["tokens"]}


@pytest.mark.parametrize("name", sorted(TOKENS))
def test_each_token_verifies_as_the_relay_judged_it_and_mints_to_the_same_bytes(name: str) -> None:
    t = TOKENS[name]
    apps = {FX["app"]: {FX["kid"]: FX["secret"]}}
    if t["expect"] == "valid":
        assert sealcast.verify_token(t["token"], apps=apps, aud=t["aud"], now=FX["now"]).claims == t["claims"]
    else:
        with pytest.raises(sealcast.TokenError) as e:
            sealcast.verify_token(t["token"], apps=apps, aud=t["aud"], now=FX["now"])
        assert e.value.reason == t["expect"]
    c = t["claims"]
    ttl = c["exp"] - c["iat"]
    if t["aud"] == "connect":
        mine = sealcast.mint_connect_token(app=c["iss"], kid=t["kid"], secret=FX["secret"], ns=c["ns"], sub=c["sub"],
                                           ttl_seconds=ttl, iat=c["iat"])
    else:
        mine = sealcast.mint_publish_token(app=c["iss"], kid=t["kid"], secret=FX["secret"], ns=c.get("ns"),
                                           ttl_seconds=ttl, iat=c["iat"])
    assert mine == t["token"]


def test_the_relay_answered_each_connect_and_refresh_with_the_tokens_exp() -> None:
    """`expires_at` of `connected` and `refreshed` is the exp this SDK reads in the token sent."""
    by_token = {t["token"]: t["claims"] for t in FX["tokens"]}
    asked: Dict[Tuple[str, Optional[int]], str] = {}
    checked = 0
    for s in FX["steps"]:
        f = s.get("send")
        if f and f["type"] in ("connect", "refresh"):
            asked[(s["conn"], f.get("id"))] = f["token"]
        r = s.get("recv")
        if r and r["type"] in ("connected", "refreshed"):
            token = asked[(s["conn"], r.get("id"))]
            assert r["expires_at"] == by_token[token]["exp"]
            checked += 1
    assert checked == 3


def test_every_pub_decrypts_to_its_recorded_plaintext_and_publications_seal_to_the_same_bytes() -> None:
    key = FX["payload_key"]
    pubs = 0
    for s in FX["steps"]:
        r = s.get("recv")
        if r and r["type"] == "pub":
            assert sealcast.decrypt_bytes(r["channel"], r["event"], r["data"], key) == s["plaintext"].encode("utf-8")
            assert sealcast.decrypt(r["channel"], r["event"], r["data"], key) == json.loads(s["plaintext"])
            pubs += 1
        req = s.get("http")
        if req and req["path"] == "/v1/publish":
            b = req["body"]
            nonce = base64.b64decode(b["data"])[:12]
            assert sealcast.encrypt_text(b["channel"], b["event"], s["plaintext"], key, nonce=nonce) == b["data"]
    assert pubs >= 5


def test_publish_and_revoke_send_the_recorded_requests_and_read_the_recorded_answers() -> None:
    steps = [s for s in FX["steps"] if "http" in s]
    assert {s["http"]["path"] for s in steps} == {"/v1/publish", "/v1/revoke"}
    for s in steps:
        answer = s["answer"]

        def reply(_req: Dict[str, Any], _n: int, answer: Dict[str, Any] = answer) -> Reply:
            return answer["status"], answer["body"], {}

        server = Scripted(reply)
        try:
            req, token = s["http"], TOKENS[s["http"]["token"]]["token"]
            b = req["body"]
            got: Any
            if req["path"] == "/v1/publish":
                got = sealcast.publish(url=server.url, token=token, channel=b["channel"], event=b["event"],
                                       data=b["data"], idempotency_key=b["idempotency_key"])
            else:
                got = sealcast.revoke(url=server.url, token=token, sub=b["sub"], until=b["until"])
            sent: List[Dict[str, Any]] = server.requests
            assert len(sent) == 1
            assert sent[0]["path"] == req["path"]
            assert sent[0]["headers"]["Authorization"] == f"Bearer {token}"
            assert sent[0]["body"] == b
            assert got == answer["body"]
        finally:
            server.close()
