"""The convenience an app backend uses: mints publish tokens, encrypts, publishes, revokes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, Optional, Tuple, Union

from ._types import BatchItemResult, PublishResult, RevokeResult
from .crypto import KeyInput, encrypt, key_bytes
from .http import Publication, RetryPolicy, _endpoint, publish, publish_batch, revoke
from .tokens import Secret, mint_publish_token


@dataclass(frozen=True)
class BatchItem:
    """One payload of :meth:`Publisher.publish_batch`: any JSON value, encrypted for its
    channel and event."""

    channel: str
    event: str
    payload: Any
    idempotency_key: Optional[str] = None


class Publisher:
    """Publishes encrypted payloads to a relay (thread-safe; one per relay and app).

    >>> pub = Publisher(url="https://relay.example", app="acme", kid="k1",
    ...                 secret=secret, payload_key=payload_key)        # doctest: +SKIP
    >>> pub.publish(f"{ns}#absences", "AddAbsence", {"who": "ana"})   # doctest: +SKIP
    {'offset': 1, 'epoch': '9f2c61ab'}

    Mistakes in the settings (a short secret, a bad key, a lifetime or namespace the relay
    would refuse) raise here, in the constructor, not at the first publication.
    """

    def __init__(self, *, url: str, app: str, kid: Optional[str] = None, secret: Secret,
                 payload_key: KeyInput, ns: Optional[str] = None, token_ttl_seconds: int = 60,
                 retry: Optional[RetryPolicy] = None, timeout_seconds: float = 10.0) -> None:
        self._url = url
        self._app = app
        self._kid = kid
        self._secret = secret
        self._key = key_bytes(payload_key)
        self._ns = ns
        self._ttl = token_ttl_seconds
        self._retry = retry
        self._timeout = timeout_seconds
        self._lock = threading.Lock()
        self._cached: Optional[Tuple[str, float]] = None
        # Fail now on anything the relay would refuse in every token.
        self.token()
        _endpoint(url, "")

    def _mint(self, ns: Optional[str]) -> str:
        return mint_publish_token(app=self._app, kid=self._kid, secret=self._secret,
                                  ttl_seconds=self._ttl, ns=ns)

    def token(self) -> str:
        """A publish token (limited to ``ns`` if one was given), reused for half its lifetime."""
        now = time.monotonic()
        with self._lock:
            if self._cached is not None and self._cached[1] > now:
                return self._cached[0]
            token = self._mint(self._ns)
            self._cached = (token, now + self._ttl / 2)
            return token

    def publish(self, channel: str, event: str, payload: Any,
                idempotency_key: Optional[str] = None) -> PublishResult:
        """Encrypts ``payload`` (any JSON value) for ``channel`` and ``event`` and publishes it;
        returns the relay's ``{"offset", "epoch"}``. Retries reuse one idempotency key (the
        given one, or a generated one), so the relay stores it once."""
        data = encrypt(channel, event, payload, self._key)
        return publish(url=self._url, token=self.token, channel=channel, event=event, data=data,
                       idempotency_key=idempotency_key, retry=self._retry, timeout_seconds=self._timeout)

    def publish_batch(self, items: Iterable[Union[BatchItem, Mapping[str, Any]]]) -> List[BatchItemResult]:
        """Encrypts and publishes many payloads (``BatchItem`` or mappings with ``channel``,
        ``event``, ``payload`` and optionally ``idempotency_key``); one result per item."""
        pubs: List[Publication] = []
        for it in items:
            if isinstance(it, BatchItem):
                channel, event, payload, key = it.channel, it.event, it.payload, it.idempotency_key
            else:
                channel, event, payload, key = it["channel"], it["event"], it["payload"], it.get("idempotency_key")
            pubs.append(Publication(channel, event, encrypt(channel, event, payload, self._key), key))
        return publish_batch(url=self._url, token=self.token, publications=pubs,
                             retry=self._retry, timeout_seconds=self._timeout)

    def revoke(self, *, sub: Optional[str] = None, jti: Optional[str] = None,
               until: Optional[int] = None) -> RevokeResult:
        """Closes the sessions of user ``sub`` (or of token id ``jti``) with 4003 and refuses
        their connect tokens until ``until``. Uses an app-wide publish token (no ``ns``), as
        the relay requires for revocation."""
        return revoke(url=self._url, token=lambda: self._mint(None), sub=sub, jti=jti, until=until,
                      retry=self._retry, timeout_seconds=self._timeout)
