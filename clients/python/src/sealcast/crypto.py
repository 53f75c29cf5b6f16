"""Payload encryption of PROTOCOL.md 5 (done by apps, never by the relay).

``data = base64(nonce(12) || ciphertext || tag(16))`` with AES-256-GCM, the associated
data being the UTF-8 bytes of ``channel + "\\n" + event``, so a payload cannot be moved to
another channel or event without detection.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from typing import Any, Optional, Sequence, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: A payload key: 32 raw bytes, or their standard base64.
KeyInput = Union[bytes, str]
#: One key or a ring of them (during a rotation each is tried in turn).
KeyRing = Union[KeyInput, Sequence[KeyInput]]

NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32

_STD_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class DecryptError(ValueError):
    """No key of the ring authenticates the payload, or the payload is malformed."""


def to_base64(b: bytes) -> str:
    """Standard base64 (RFC 4648, with padding)."""
    return base64.b64encode(b).decode("ascii")


def from_base64(text: str) -> bytes:
    """Decodes strict standard base64 (with padding); raises ``ValueError`` otherwise."""
    if not isinstance(text, str) or _STD_B64.fullmatch(text) is None:
        raise ValueError("sealcast: not standard base64")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("sealcast: not standard base64") from None


def key_bytes(key: KeyInput) -> bytes:
    """The 32 bytes of a payload key given as bytes or standard base64."""
    if isinstance(key, str):
        raw = from_base64(key)
    elif isinstance(key, (bytes, bytearray, memoryview)):
        raw = bytes(key)
    else:
        raise TypeError("sealcast: a payload key is 32 bytes or their base64")
    if len(raw) != KEY_BYTES:
        raise ValueError(f"sealcast: a payload key must be {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def generate_key() -> bytes:
    """32 fresh random bytes, for a new payload key."""
    return os.urandom(KEY_BYTES)


def associated_data(channel: str, event: str) -> bytes:
    """The associated data binding a payload to its channel and event."""
    return f"{channel}\n{event}".encode("utf-8")


def to_json(payload: Any) -> str:
    """The JSON text the SDK encrypts for ``payload``: compact, UTF-8 as is (like
    ``JSON.stringify``); NaN and infinities are refused, as JSON has none."""
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"sealcast: payload is not JSON-serializable: {e}") from None


def encrypt_text(channel: str, event: str, text: Union[str, bytes], key: KeyInput, *,
                 nonce: Optional[bytes] = None) -> str:
    """Encrypts UTF-8 text (normally JSON) and returns the ``data`` string to publish.

    ``nonce`` exists only to make test vectors: leave it out, and every message gets a fresh
    random one (reusing a nonce under one key breaks AES-GCM).
    """
    plaintext = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    iv = os.urandom(NONCE_BYTES) if nonce is None else bytes(nonce)
    if len(iv) != NONCE_BYTES:
        raise ValueError(f"sealcast: a nonce is {NONCE_BYTES} bytes")
    sealed = AESGCM(key_bytes(key)).encrypt(iv, plaintext, associated_data(channel, event))
    return to_base64(iv + sealed)


def encrypt(channel: str, event: str, payload: Any, key: KeyInput, *, nonce: Optional[bytes] = None) -> str:
    """Encrypts a JSON value (a ``str`` is a JSON string value; use :func:`encrypt_text`
    for ready-made JSON text) and returns the ``data`` string to publish."""
    return encrypt_text(channel, event, to_json(payload), key, nonce=nonce)


def _ring(keys: KeyRing) -> Sequence[KeyInput]:
    if isinstance(keys, str):
        return [keys]
    if isinstance(keys, (bytes, bytearray, memoryview)):
        return [bytes(keys)]
    return list(keys)


def decrypt_bytes(channel: str, event: str, data: str, keys: KeyRing) -> bytes:
    """Decrypts a ``data`` string with the first key of the ring that authenticates it and
    returns the plaintext bytes. Raises :class:`DecryptError` if none does."""
    try:
        raw = from_base64(data)
    except ValueError:
        raise DecryptError("payload is not standard base64") from None
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise DecryptError("payload shorter than nonce + tag")
    ring = _ring(keys)
    if not ring:
        raise DecryptError("no payload key configured")
    ad = associated_data(channel, event)
    for key in ring:
        try:
            return AESGCM(key_bytes(key)).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], ad)
        except InvalidTag:
            continue
    raise DecryptError("authentication failed with every key of the ring")


def decrypt_text(channel: str, event: str, data: str, keys: KeyRing) -> str:
    """Decrypts and returns the UTF-8 plaintext."""
    try:
        return decrypt_bytes(channel, event, data, keys).decode("utf-8")
    except UnicodeDecodeError:
        raise DecryptError("plaintext is not UTF-8") from None


def decrypt(channel: str, event: str, data: str, keys: KeyRing) -> Any:
    """Decrypts and parses the JSON plaintext; returns the JSON value."""
    text = decrypt_text(channel, event, data, keys)
    try:
        return json.loads(text)
    except ValueError:
        raise DecryptError("plaintext is not JSON") from None
