"""Publish, batch and revoke against a scripted HTTP server on 127.0.0.1: the retry rules,
idempotency keys and error mapping for the answers a healthy relay rarely gives (5xx, a
broken connection). The same paths against the real relay are in test_relay.py."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import sealcast
from sealcast import Publication, RetryPolicy, SealcastHttpError, publish, publish_batch, revoke

SECRET = "0123456789abcdef0123456789abcdef-test"
DATA = "A" * 56  # 42 zero bytes in base64

#: (status, JSON body or None to drop the connection, extra headers)
Reply = Tuple[int, Any, Dict[str, str]]
Handler = Callable[[Dict[str, Any], int], Reply]


class Scripted:
    def __init__(self, handler: Handler) -> None:
        self.requests: List[Dict[str, Any]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                req = {"path": self.path, "headers": dict(self.headers), "body": body}
                outer.requests.append(req)
                status, out, headers = handler(req, len(outer.requests))
                if out is None:
                    self.close_connection = True
                    self.connection.close()  # no answer at all: a transport failure
                    return
                raw = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def scripted() -> Iterator[Callable[[Handler], Scripted]]:
    made: List[Scripted] = []

    def make(handler: Handler) -> Scripted:
        made.append(Scripted(handler))
        return made[-1]

    yield make
    for s in made:
        s.close()


class Clock:
    """Records the waits instead of sleeping them."""

    def __init__(self) -> None:
        self.waits: List[float] = []

    def policy(self, retries: int = 4, base: float = 0.1, cap: float = 2.0, dice: float = 0.5) -> RetryPolicy:
        return RetryPolicy(retries=retries, base_seconds=base, max_seconds=cap, sleep=self.waits.append,
                           random=lambda: dice)


def token() -> str:
    return sealcast.mint_publish_token(app="acme", secret=SECRET, ttl_seconds=60)


def test_publish_retries_503_429_and_a_dropped_connection_with_one_idempotency_key(scripted: Any) -> None:
    def handler(req: Dict[str, Any], n: int) -> Reply:
        if n == 1:
            return 503, {"error": {"code": "unavailable", "message": "busy"}}, {}
        if n == 2:
            return 0, None, {}
        if n == 3:
            return 429, {"error": {"code": "rate_limited", "message": "slow down"}}, {"Retry-After": "1"}
        return 200, {"offset": 7, "epoch": "e1"}, {}

    s = scripted(handler)
    clock, calls = Clock(), []

    def counting_token() -> str:
        calls.append(1)
        return token()

    res = publish(url=s.url + "/", token=counting_token, channel="ns#t", event="E", data=DATA, retry=clock.policy())
    assert res == {"offset": 7, "epoch": "e1"}
    assert len(s.requests) == 4 and len(calls) == 4, "a token per attempt"
    keys = {r["body"]["idempotency_key"] for r in s.requests}
    assert len(keys) == 1 and 1 <= len(next(iter(keys))) <= 64
    for r in s.requests:
        assert r["path"] == "/v1/publish"
        assert r["headers"]["Content-Type"] == "application/json"
        assert r["headers"]["Authorization"].startswith("Bearer ey")
        assert sorted(r["body"]) == ["channel", "data", "event", "idempotency_key"]
    # Full jitter (dice 0.5) over windows 0.1, 0.2, 0.4; the 429's Retry-After raises the third.
    assert clock.waits == [0.05, 0.1, 1.0]


def test_retry_after_is_capped_by_max_seconds_and_an_http_date_is_understood() -> None:
    p = RetryPolicy(base_seconds=0.1, max_seconds=2.0, random=lambda: 0.0)
    assert p.delay(0, retry_after=30.0) == 2.0
    assert p.delay(10) == 0.0
    assert RetryPolicy(random=lambda: 0.999).delay(30) < 5.0
    from sealcast.http import _retry_after

    assert _retry_after("3") == 3.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert _retry_after("soon") is None and _retry_after(None) is None


def test_a_callers_key_is_kept_and_4xx_is_not_retried(scripted: Any) -> None:
    s = scripted(lambda req, n: (403, {"error": {"code": "forbidden", "message": "ns mismatch"}}, {}))
    clock = Clock()
    with pytest.raises(SealcastHttpError) as e:
        publish(url=s.url, token="t", channel="ns#t", event="E", data=DATA, idempotency_key="my-key",
                retry=clock.policy())
    assert (e.value.status, e.value.code, e.value.retryable) == (403, "forbidden", False)
    assert "ns mismatch" in str(e.value)
    assert len(s.requests) == 1 and clock.waits == []
    assert s.requests[0]["body"]["idempotency_key"] == "my-key"


def test_retries_give_up_after_the_policys_count_with_the_last_answer(scripted: Any) -> None:
    s = scripted(lambda req, n: (502, "bad gateway", {}))
    clock = Clock()
    with pytest.raises(SealcastHttpError) as e:
        publish(url=s.url, token="t", channel="ns#t", event="E", data=DATA, retry=clock.policy(retries=2))
    assert (e.value.status, e.value.code, e.value.retryable) == (502, "http_error", True)
    assert len(s.requests) == 3 and len(clock.waits) == 2


def test_a_relay_that_cannot_be_reached_is_a_transport_error_after_the_retries() -> None:
    s = Scripted(lambda req, n: (200, {}, {}))
    url = s.url
    s.close()  # nothing listens on that port now
    clock = Clock()
    with pytest.raises(SealcastHttpError) as e:
        publish(url=url, token="t", channel="ns#t", event="E", data=DATA, retry=clock.policy(retries=1),
                timeout_seconds=2)
    assert (e.value.status, e.value.code, e.value.retryable) == (0, "transport", True)
    assert len(clock.waits) == 1


def test_redirects_are_not_followed_and_odd_answers_are_errors(scripted: Any) -> None:
    s = scripted(lambda req, n: (307, {}, {"Location": "http://127.0.0.1:9/elsewhere"}))
    with pytest.raises(SealcastHttpError) as e:
        publish(url=s.url, token="t", channel="ns#t", event="E", data=DATA, retry=Clock().policy())
    assert e.value.status == 307 and len(s.requests) == 1
    s2 = scripted(lambda req, n: (200, {"offset": "1"}, {}))
    with pytest.raises(SealcastHttpError, match="bad_response"):
        publish(url=s2.url, token="t", channel="ns#t", event="E", data=DATA)
    with pytest.raises(ValueError, match="http"):
        publish(url="file:///etc/passwd", token="t", channel="ns#t", event="E", data=DATA)


def test_batch_resends_only_transient_item_errors_with_their_keys(scripted: Any) -> None:
    def handler(req: Dict[str, Any], n: int) -> Reply:
        items = req["body"]["publications"]
        if n == 1:
            assert len(items) == 3
            return 200, {"results": [
                {"offset": 1, "epoch": "e"},
                {"error": {"code": "rate_limited", "message": "later"}},
                {"error": {"code": "bad_request", "message": "event: bad"}},
            ]}, {}
        assert len(items) == 1
        return 200, {"results": [{"offset": 2, "epoch": "e"}]}, {}

    s = scripted(handler)
    clock = Clock()
    pubs: List[Any] = [Publication("ns#a", "E", DATA, "k-a"), {"channel": "ns#b", "event": "E", "data": DATA},
                       Publication("ns#c", "E/", DATA)]
    res = publish_batch(url=s.url, token=token, publications=pubs, retry=clock.policy())
    assert res == [{"offset": 1, "epoch": "e"}, {"offset": 2, "epoch": "e"},
                   {"error": {"code": "bad_request", "message": "event: bad"}}]
    first, second = s.requests[0]["body"]["publications"], s.requests[1]["body"]["publications"]
    assert first[0]["idempotency_key"] == "k-a"
    assert second[0]["idempotency_key"] == first[1]["idempotency_key"]
    assert s.requests[0]["path"] == "/v1/publish/batch" and len(clock.waits) == 1


def test_batch_splits_into_requests_of_1000(scripted: Any) -> None:
    def handler(req: Dict[str, Any], n: int) -> Reply:
        items = req["body"]["publications"]
        return 200, {"results": [{"offset": int(p["channel"][3:]), "epoch": "e"} for p in items]}, {}

    s = scripted(handler)
    pubs = [Publication(f"ns#{i}", "E", DATA) for i in range(2500)]
    res = publish_batch(url=s.url, token="t", publications=pubs)
    assert [len(r["body"]["publications"]) for r in s.requests] == [1000, 1000, 500]
    assert [r["offset"] for r in res] == list(range(2500))  # type: ignore[typeddict-item]


def test_batch_results_that_do_not_match_the_request_are_an_error(scripted: Any) -> None:
    s = scripted(lambda req, n: (200, {"results": []}, {}))
    with pytest.raises(SealcastHttpError, match="do not match"):
        publish_batch(url=s.url, token="t", publications=[Publication("ns#a", "E", DATA)])


def test_revoke_sends_sub_or_jti_and_until(scripted: Any) -> None:
    s = scripted(lambda req, n: (200, {"closed": 2}, {}))
    assert revoke(url=s.url, token="t", sub="user-1", until=2_000_000_000) == {"closed": 2}
    assert revoke(url=s.url, token="t", jti="j-1") == {"closed": 2}
    assert [r["body"] for r in s.requests] == [{"sub": "user-1", "until": 2_000_000_000}, {"jti": "j-1"}]
    assert s.requests[0]["path"] == "/v1/revoke"
    with pytest.raises(ValueError, match="exactly one"):
        revoke(url=s.url, token="t", sub="a", jti="b")


def test_the_publisher_encrypts_reuses_its_token_and_revokes_with_an_app_wide_one(scripted: Any) -> None:
    def handler(req: Dict[str, Any], n: int) -> Reply:
        if req["path"] == "/v1/revoke":
            return 200, {"closed": 0}, {}
        return 200, {"offset": n, "epoch": "e"}, {}

    s = scripted(handler)
    key = sealcast.generate_key()
    pub = sealcast.Publisher(url=s.url, app="acme", kid="k1", secret=SECRET, payload_key=key, ns="site/1")
    assert pub.publish("site/1#g", "E", {"n": 1}) == {"offset": 1, "epoch": "e"}
    pub.publish("site/1#g", "E", {"n": 2}, idempotency_key="mine")
    pub.revoke(sub="user-1")
    a, b, r = s.requests
    assert a["headers"]["Authorization"] == b["headers"]["Authorization"], "token reused"
    assert b["body"]["idempotency_key"] == "mine"
    assert sealcast.decrypt("site/1#g", "E", a["body"]["data"], key) == {"n": 1}
    bearer = a["headers"]["Authorization"][7:]
    assert sealcast.verify_token(bearer, apps={"acme": {"k1": SECRET}}, aud="publish").ns == "site/1"
    revoker = sealcast.verify_token(r["headers"]["Authorization"][7:], apps={"acme": {"k1": SECRET}}, aud="publish")
    assert revoker.ns is None


def test_the_publisher_refuses_bad_settings_at_once() -> None:
    key = sealcast.generate_key()
    with pytest.raises(sealcast.TokenError, match="at most 300 s"):
        sealcast.Publisher(url="http://127.0.0.1:1", app="acme", secret=SECRET, payload_key=key, token_ttl_seconds=600)
    with pytest.raises(sealcast.TokenError, match="namespace"):
        sealcast.Publisher(url="http://127.0.0.1:1", app="acme", secret=SECRET, payload_key=key, ns="a b")
    with pytest.raises(ValueError, match="32 bytes"):
        sealcast.Publisher(url="http://127.0.0.1:1", app="acme", secret=SECRET, payload_key=b"short")
    with pytest.raises(ValueError, match="http"):
        sealcast.Publisher(url="relay.example", app="acme", secret=SECRET, payload_key=key)


