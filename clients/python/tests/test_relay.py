"""Against the real relay binary (SEALCAST_BIN) on a free 127.0.0.1 port: what the Python
Publisher publishes arrives over a real WebSocket subscription and decrypts to the same
bytes; batch, idempotency, revocation (4003) and the HTTP errors (401, 403, 413, 429 with
Retry-After) as the relay really answers them."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import sealcast
from conftest import APP, KID, NS, SECRET, Relay
from sealcast import BatchItem, Publisher, RetryPolicy, SealcastHttpError
from sealcast.crypto import to_json

pytestmark = pytest.mark.relay
KEY = sealcast.generate_key()
_seq = itertools.count(1)


def fresh(name: str) -> str:
    return f"{NS}#{name}-{os.getpid()}-{next(_seq)}"


def publisher(relay: Relay, **over: Any) -> Publisher:
    args: Dict[str, Any] = dict(url=relay.http, app=APP, kid=KID, secret=SECRET, payload_key=KEY, ns=NS,
                                retry=RetryPolicy(retries=2, base_seconds=0.05, max_seconds=0.5))
    args.update(over)
    return Publisher(**args)


def frame(ws: ClientConnection, timeout: float = 5.0) -> Dict[str, Any]:
    out: Dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return out


def session(relay: Relay, sockets: contextlib.ExitStack, sub: str = "user-1",
            token: Optional[str] = None) -> ClientConnection:
    ws = connect(relay.ws, open_timeout=5, close_timeout=2)
    sockets.enter_context(ws)
    ws.send(json.dumps({"type": "connect", "token": token or sealcast.mint_connect_token(
        app=APP, kid=KID, secret=SECRET, ns=NS, sub=sub, ttl_seconds=600)}))
    return ws


def subscribed(relay: Relay, sockets: contextlib.ExitStack, channel: str, sub: str = "user-1") -> ClientConnection:
    ws = session(relay, sockets, sub)
    hello = frame(ws)
    assert hello["type"] == "connected" and hello["ns"] == NS
    ws.send(json.dumps({"type": "subscribe", "id": 1, "channel": channel}))
    ack = frame(ws)
    assert (ack["type"], ack["channel"]) == ("subscribed", channel)
    return ws


def close_code(ws: ClientConnection, timeout: float = 5.0) -> int:
    with pytest.raises(ConnectionClosed) as e:
        while True:  # a pub in flight may come first
            ws.recv(timeout=timeout)
    assert e.value.rcvd is not None, "the relay sent a close frame"
    return e.value.rcvd.code


@pytest.fixture
def sockets() -> Iterator[contextlib.ExitStack]:
    """Every WebSocket a test opens, closed when it ends."""
    with contextlib.ExitStack() as stack:
        yield stack


def test_a_publication_arrives_over_a_websocket_and_decrypts_to_the_same_bytes(relay: Relay, sockets: contextlib.ExitStack) -> None:
    ch = fresh("gadget")
    ws = subscribed(relay, sockets, ch)
    payload = {"who": "Zoë", "days": ["2026-12-01", "2026-12-02"], "note": "Größe: ✓ ☀️", "n": 1.5, "x": None}
    res = publisher(relay).publish(ch, "AddAbsence", payload)
    assert set(res) == {"offset", "epoch"} and res["offset"] == 1
    pub = frame(ws)
    assert (pub["type"], pub["channel"], pub["event"], pub["offset"]) == ("pub", ch, "AddAbsence", res["offset"])
    assert sealcast.decrypt_bytes(ch, "AddAbsence", pub["data"], KEY) == to_json(payload).encode("utf-8")
    assert sealcast.decrypt(ch, "AddAbsence", pub["data"], KEY) == payload


def test_batch_publishes_in_order_and_reports_each_item(relay: Relay, sockets: contextlib.ExitStack) -> None:
    ch = fresh("batch")
    ws = subscribed(relay, sockets, ch)
    items: List[Any] = [BatchItem(ch, "Tick", {"n": 1}), {"channel": ch, "event": "bad event", "payload": 0},
                        {"channel": ch, "event": "Tick", "payload": {"n": 2}, "idempotency_key": "b-2"}]
    res = publisher(relay).publish_batch(items)
    assert res[0] == {"offset": 1, "epoch": res[0]["epoch"]}  # type: ignore[typeddict-item]
    assert res[1]["error"]["code"] == "bad_request"  # type: ignore[typeddict-item]
    assert "event" in res[1]["error"]["message"]  # type: ignore[typeddict-item]
    assert res[2] == {"offset": 2, "epoch": res[0]["epoch"]}  # type: ignore[typeddict-item]
    got = [frame(ws), frame(ws)]
    assert [g["offset"] for g in got] == [1, 2]
    assert [sealcast.decrypt(ch, g["event"], g["data"], KEY) for g in got] == [{"n": 1}, {"n": 2}]


def test_one_idempotency_key_publishes_once(relay: Relay, sockets: contextlib.ExitStack) -> None:
    ch = fresh("idem")
    ws = subscribed(relay, sockets, ch)
    pub = publisher(relay)
    first = pub.publish(ch, "Tick", {"n": 1}, idempotency_key="once")
    again = pub.publish(ch, "Tick", {"n": 1}, idempotency_key="once")
    assert again == first
    later = pub.publish(ch, "Tick", {"n": 2})
    assert later["offset"] == first["offset"] + 1
    got = [frame(ws), frame(ws)]
    assert [g["offset"] for g in got] == [first["offset"], later["offset"]], "no duplicate delivered"


def test_revoke_closes_the_users_sessions_with_4003_and_refuses_their_tokens(relay: Relay, sockets: contextlib.ExitStack) -> None:
    user = f"revoked-{os.getpid()}-{next(_seq)}"
    ws = subscribed(relay, sockets, fresh("revoke"), sub=user)
    bystander = subscribed(relay, sockets, fresh("revoke"), sub="someone-else")
    answer = publisher(relay).revoke(sub=user)  # with an app-wide token
    assert answer["closed"] == 1 and answer["until"] > time.time()
    assert close_code(ws) == 4003
    again = session(relay, sockets, sub=user)
    assert close_code(again) == 4003
    assert bystander.ping().wait(timeout=5), "another user's session stays open"
    with pytest.raises(SealcastHttpError) as e:  # a namespace-limited token cannot revoke
        sealcast.revoke(url=relay.http, token=publisher(relay).token(), sub=user)
    assert (e.value.status, e.value.code) == (403, "forbidden")


def test_http_errors_map_to_status_and_code_without_retrying(relay: Relay) -> None:
    waits: List[float] = []
    policy = RetryPolicy(retries=3, sleep=waits.append)
    with pytest.raises(SealcastHttpError) as e:
        publisher(relay, secret=SECRET + "-wrong", retry=policy).publish(fresh("x"), "E", 1)
    assert (e.value.status, e.value.code, e.value.retryable) == (401, "unauthorized", False)
    with pytest.raises(SealcastHttpError) as e:
        publisher(relay, retry=policy).publish(fresh("x"), "E", "x" * 70_000)
    assert (e.value.status, e.value.code) == (413, "payload_too_large")
    with pytest.raises(SealcastHttpError) as e:
        publisher(relay, retry=policy).publish("other/ns#x", "E", 1)
    assert (e.value.status, e.value.code) == (403, "forbidden")
    with pytest.raises(SealcastHttpError) as e:
        publisher(relay, retry=policy).publish(f"{NS}#bad topic", "E", 1)
    assert (e.value.status, e.value.code) == (400, "bad_request") and "topic" in e.value.message
    assert waits == [], "none of these is retried"


@pytest.mark.parametrize(
    "claims, reason, mint",
    [
        ({"exp": 86_401}, "lifetime_too_long", {"ttl_seconds": 86_401}),  # exp relative to iat here
        ({"ns": "a b"}, "invalid_claim ns", {"ns": "a b"}),
        ({"sub": "s" * 129}, "invalid_claim sub", {"sub": "s" * 129}),
        ({"jti": "j" * 129}, "invalid_claim jti", {"jti": "j" * 129}),
        ({"aud": "publish"}, "wrong_audience", None),
    ],
)
def test_what_minting_refuses_the_relay_refuses_too(relay: Relay, sockets: contextlib.ExitStack,
                                                     claims: Dict[str, Any], reason: str,
                                                     mint: Optional[Dict[str, Any]]) -> None:
    iat = int(time.time()) - 1
    base = {"iss": APP, "sub": "u", "ns": NS, "aud": "connect", "iat": iat, "exp": iat + 600}
    if "exp" in claims:
        claims = {"exp": iat + claims["exp"]}
    token = sealcast.sign_token({**base, **claims}, SECRET, KID)  # signs without checking
    with pytest.raises(sealcast.TokenError) as e:
        sealcast.verify_token(token, apps={APP: {KID: SECRET}}, aud="connect")
    assert e.value.reason + (f" {e.value.claim}" if e.value.claim else "") == reason
    if mint is not None:
        args: Dict[str, Any] = dict(app=APP, kid=KID, secret=SECRET, ns=NS, sub="u", ttl_seconds=600)
        with pytest.raises(sealcast.TokenError) as m:
            sealcast.mint_connect_token(**{**args, **mint})
        assert (m.value.reason, m.value.claim) == (e.value.reason, e.value.claim)
    ws = session(relay, sockets, token=token)
    assert close_code(ws) == 4001, "the relay refuses it too"


def test_429_carries_retry_after_and_the_publisher_waits_it_out(sockets: contextlib.ExitStack) -> None:
    limited = Relay("[limits]\npublish_rate_per_app = 1\npublish_burst_per_app = 1\n")
    try:
        ch = fresh("rate")
        ws = subscribed(limited, sockets, ch)
        waits: List[float] = []
        no_retry = RetryPolicy(retries=0, sleep=waits.append)
        assert publisher(limited, retry=no_retry).publish(ch, "Tick", {"n": 1})["offset"] == 1
        with pytest.raises(SealcastHttpError) as e:
            publisher(limited, retry=no_retry).publish(ch, "Tick", {"n": 0})
        assert (e.value.status, e.value.code, e.value.retryable) == (429, "rate_limited", True)
        assert e.value.retry_after is not None and e.value.retry_after >= 1

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            time.sleep(seconds)

        patient = RetryPolicy(retries=3, base_seconds=0.01, max_seconds=3.0, sleep=sleep)
        res = publisher(limited, retry=patient).publish(ch, "Tick", {"n": 2})
        assert res["offset"] == 2
        assert waits and waits[0] >= 1.0, "the first wait is the relay's Retry-After, not the 10 ms backoff"
        got = [frame(ws), frame(ws)]
        assert [sealcast.decrypt(ch, "Tick", g["data"], KEY) for g in got] == [{"n": 1}, {"n": 2}]
    finally:
        limited.stop()
