"""The relay's JSON answers, as typed dicts (PROTOCOL.md 4)."""

from __future__ import annotations

from typing import TypedDict, Union


class PublishResult(TypedDict):
    """``{"offset": 42, "epoch": "9f2c61ab"}``: where the publication landed."""

    offset: int
    epoch: str


class ErrorBody(TypedDict):
    """``{"code": "rate_limited", "message": "..."}``."""

    code: str
    message: str


class BatchItemError(TypedDict):
    """A refused batch item: ``{"error": {"code", "message"}}``."""

    error: ErrorBody


#: One batch item's outcome, in the order of the request.
BatchItemResult = Union[PublishResult, BatchItemError]


class RevokeResult(TypedDict, total=False):
    """``{"closed": N, "until": T}``: this relay node's live sessions closed with 4003, and
    until when the revocation holds (a ``jti``'s is capped at a connect token's lifetime)."""

    closed: int
    until: int
