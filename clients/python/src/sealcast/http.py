"""The relay's HTTP API (PROTOCOL.md 4) on the standard library: publish, batch publish and
revoke, with the TypeScript SDK's retry rules.

- Retried: transport failures (no answer, reset, timeout) and the statuses 408, 425, 429,
  500, 502, 503, 504; nothing else (a 400, 401, 403 or 413 would fail the same way again).
- Delays: full jitter, a random wait in ``[0, min(max, base * 2**attempt))``; a
  ``Retry-After`` raises the wait to at least that (capped by ``max_seconds``).
- Every attempt sends the same body, so the same ``idempotency_key``: the relay applies a
  publication once however many attempts it takes. A key is generated when none is given.
- The token source is called before every attempt, so a retry never sends an expired token.
- Batch items refused with a transient code (``rate_limited``, ``unavailable``) are sent
  again, alone, with their same keys; other item errors are returned as they are.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union, cast

from ._types import BatchItemResult, PublishResult, RevokeResult

#: A publish token, or a function called before every attempt that returns one.
TokenSource = Union[str, Callable[[], str]]

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
RETRYABLE_CODES = frozenset({"rate_limited", "unavailable"})
#: Publications per batch request (the relay's default ``http.max_batch``).
MAX_BATCH = 1000
#: The most bytes read of a response body; the relay's answers are far smaller.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class SealcastHttpError(Exception):
    """An error answered by the relay (``{"error":{"code","message"}}``) or a transport failure
    (``status`` 0, ``code`` ``"transport"``).

    ``retry_after`` holds the seconds of a ``Retry-After`` header (429), if any.
    """

    def __init__(self, status: int, code: str, message: str, retry_after: Optional[float] = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether trying again later can succeed (what the SDK itself retries)."""
        return self.status == 0 or self.status in RETRYABLE_STATUS


@dataclass(frozen=True)
class RetryPolicy:
    """How a request is retried: ``retries`` after the first attempt, full-jitter windows from
    ``base_seconds`` doubling up to ``max_seconds``. ``sleep`` and ``random`` are the clock and
    dice (tests may pass their own)."""

    retries: int = 4
    base_seconds: float = 0.2
    max_seconds: float = 5.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.base_seconds < 0 or self.max_seconds < 0:
            raise ValueError("sealcast: retries and delays must not be negative")

    def delay(self, attempt: int, retry_after: Optional[float] = None) -> float:
        """The wait before retry number ``attempt + 1``."""
        window = min(self.max_seconds, self.base_seconds * 2.0 ** min(attempt, 62))
        d = self.random() * window
        if retry_after is not None:
            d = max(d, min(retry_after, self.max_seconds))
        return d


@dataclass(frozen=True)
class Publication:
    """One publication: ``data`` is the ciphertext from :func:`sealcast.encrypt`."""

    channel: str
    event: str
    data: str
    #: 1 to 64 bytes; generated if absent, and reused on every retry.
    idempotency_key: Optional[str] = None


@dataclass
class _Outcome:
    status: int
    body: Any
    retry_after: Optional[float]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A relay never redirects; following one would send the token elsewhere.
    def redirect_request(self, req: Any, fp: Any, code: Any, msg: Any, headers: Any, newurl: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _endpoint(base: str, path: str) -> str:
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("sealcast: the relay URL must be http:// or https:// with a host")
    return base.rstrip("/") + path


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _post_once(url: str, token: TokenSource, body: bytes, timeout: float) -> _Outcome:
    bearer = token() if callable(token) else token
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": f"Bearer {bearer}",
    })
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            status, headers, raw = resp.status, resp.headers, resp.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as e:
        status, headers = e.code, e.headers
        try:
            raw = e.read(MAX_RESPONSE_BYTES + 1)
        except (OSError, http.client.HTTPException, AttributeError):
            raw = b""  # an error status whose body broke off: the status still says it
        finally:
            e.close()
    text = raw[:MAX_RESPONSE_BYTES].decode("utf-8", "replace")
    try:
        parsed: Any = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return _Outcome(status, parsed, _retry_after(headers.get("Retry-After") if headers else None))


def _http_error(out: _Outcome) -> SealcastHttpError:
    err = out.body.get("error") if isinstance(out.body, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        return SealcastHttpError(out.status, err["code"], str(err.get("message", "")), out.retry_after)
    detail = out.body[:200] if isinstance(out.body, str) else "unexpected response"
    return SealcastHttpError(out.status, "http_error", detail, out.retry_after)


def _post_with_retry(base: str, path: str, token: TokenSource, body: Any,
                     retry: Optional[RetryPolicy], timeout: float) -> _Outcome:
    policy = retry or RetryPolicy()
    url = _endpoint(base, path)
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    attempt = 0
    while True:
        out: Optional[_Outcome] = None
        failure = ""
        try:
            out = _post_once(url, token, payload, timeout)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            failure = str(getattr(e, "reason", None) or e) or type(e).__name__
        if out is not None and 200 <= out.status < 300:
            return out
        retryable = out is None or out.status in RETRYABLE_STATUS
        if not retryable or attempt >= policy.retries:
            if out is not None:
                raise _http_error(out)
            raise SealcastHttpError(0, "transport", failure)
        policy.sleep(policy.delay(attempt, out.retry_after if out else None))
        attempt += 1


def _new_key() -> str:
    return uuid.uuid4().hex


def _publish_result(out: _Outcome, body: Any) -> PublishResult:
    if not (isinstance(body, dict) and isinstance(body.get("offset"), int) and isinstance(body.get("epoch"), str)):
        raise SealcastHttpError(out.status, "bad_response", "expected {offset, epoch}")
    return {"offset": body["offset"], "epoch": body["epoch"]}


def publish(*, url: str, token: TokenSource, channel: str, event: str, data: str,
            idempotency_key: Optional[str] = None, retry: Optional[RetryPolicy] = None,
            timeout_seconds: float = 10.0) -> PublishResult:
    """``POST /v1/publish``: one publication, retried as the module says; returns the relay's
    ``{"offset", "epoch"}`` or raises :class:`SealcastHttpError`."""
    body = {"channel": channel, "event": event, "data": data,
            "idempotency_key": idempotency_key if idempotency_key is not None else _new_key()}
    out = _post_with_retry(url, "/v1/publish", token, body, retry, timeout_seconds)
    return _publish_result(out, out.body)


def _item_body(p: Union[Publication, Mapping[str, Any]]) -> Dict[str, Any]:
    if isinstance(p, Publication):
        channel, event, data, key = p.channel, p.event, p.data, p.idempotency_key
    else:
        channel, event, data, key = p["channel"], p["event"], p["data"], p.get("idempotency_key")
    return {"channel": channel, "event": event, "data": data,
            "idempotency_key": key if key is not None else _new_key()}


def publish_batch(*, url: str, token: TokenSource, publications: Sequence[Union[Publication, Mapping[str, Any]]],
                  retry: Optional[RetryPolicy] = None, timeout_seconds: float = 10.0) -> List[BatchItemResult]:
    """``POST /v1/publish/batch`` in requests of at most 1000: one result per item, in order,
    either ``{"offset", "epoch"}`` or ``{"error": {"code", "message"}}``."""
    policy = retry or RetryPolicy()
    items = [_item_body(p) for p in publications]
    results: List[Optional[BatchItemResult]] = [None] * len(items)
    for start in range(0, len(items), MAX_BATCH):
        todo = list(range(start, min(start + MAX_BATCH, len(items))))
        attempt = 0
        while todo:
            out = _post_with_retry(url, "/v1/publish/batch", token,
                                   {"publications": [items[i] for i in todo]}, policy, timeout_seconds)
            rs = out.body.get("results") if isinstance(out.body, dict) else None
            if not isinstance(rs, list) or len(rs) != len(todo):
                raise SealcastHttpError(out.status, "bad_response", "batch results do not match the request")
            again = []
            for i, r in zip(todo, rs):
                err = r.get("error") if isinstance(r, dict) else None
                if isinstance(err, dict) and isinstance(err.get("code"), str):
                    results[i] = {"error": {"code": err["code"], "message": str(err.get("message", ""))}}
                    if err["code"] in RETRYABLE_CODES and attempt < policy.retries:
                        again.append(i)
                else:
                    results[i] = _publish_result(out, r)
            todo = again
            if todo:
                policy.sleep(policy.delay(attempt))
                attempt += 1
    return [cast(BatchItemResult, r) for r in results]


def revoke(*, url: str, token: TokenSource, sub: Optional[str] = None, jti: Optional[str] = None,
           until: Optional[int] = None, retry: Optional[RetryPolicy] = None,
           timeout_seconds: float = 10.0) -> RevokeResult:
    """``POST /v1/revoke``: closes the live sessions of ``sub`` (or of token id ``jti``) with
    4003 and refuses their connect tokens until ``until`` (unix seconds; default: now plus the
    relay's connect-token maximum lifetime). Needs a publish token without ``ns``. Revoking is
    idempotent, so it is retried like a publication."""
    if (sub is None) == (jti is None):
        raise ValueError("sealcast: give exactly one of sub or jti")
    body: Dict[str, Any] = {"sub": sub} if sub is not None else {"jti": jti}
    if until is not None:
        body["until"] = until
    out = _post_with_retry(url, "/v1/revoke", token, body, retry, timeout_seconds)
    closed = out.body.get("closed") if isinstance(out.body, dict) else None
    if not isinstance(closed, int):
        raise SealcastHttpError(out.status, "bad_response", "expected {closed}")
    result: RevokeResult = {"closed": closed}
    until = out.body.get("until")
    if isinstance(until, int) and not isinstance(until, bool):
        result["until"] = until
    return result
