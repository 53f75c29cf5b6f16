"""The AES-256-GCM envelope of PROTOCOL.md 5."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import sealcast
from sealcast import DecryptError, decrypt, decrypt_bytes, encrypt, encrypt_text

CH = "ari:cloud:jira::site/7f3c0d2e/dashboard/10001#gadget-1"
KEY = bytes(range(32))


def test_round_trip_of_any_json_value_with_raw_or_base64_keys() -> None:
    key_b64 = base64.b64encode(KEY).decode()
    for value in [{"who": "Zoë", "days": [1, 2.5, None, True]}, [], "text", 0, None, {"emoji": "☀️"}]:
        data = encrypt(CH, "AddAbsence", value, KEY)
        assert decrypt(CH, "AddAbsence", data, key_b64) == value
        assert decrypt(CH, "AddAbsence", encrypt(CH, "AddAbsence", value, key_b64), KEY) == value


def test_the_envelope_is_nonce_ciphertext_tag_with_channel_and_event_as_associated_data() -> None:
    data = encrypt(CH, "Ev", {"a": "ß"}, KEY)
    raw = base64.b64decode(data, validate=True)
    assert base64.b64encode(raw).decode() == data  # standard base64 with padding
    plain = AESGCM(KEY).decrypt(raw[:12], raw[12:], f"{CH}\nEv".encode())
    assert plain == '{"a":"ß"}'.encode()  # compact JSON, UTF-8 as is (as JSON.stringify)
    assert len(raw) == 12 + len(plain) + 16


def test_every_message_gets_a_fresh_nonce() -> None:
    nonces = {base64.b64decode(encrypt(CH, "E", 1, KEY))[:12] for _ in range(200)}
    assert len(nonces) == 200


def test_moved_tampered_or_foreign_payloads_are_refused() -> None:
    data = encrypt(CH, "E", {"n": 1}, KEY)
    with pytest.raises(DecryptError, match="every key"):
        decrypt(CH + "x", "E", data, KEY)
    with pytest.raises(DecryptError, match="every key"):
        decrypt(CH, "F", data, KEY)
    raw = bytearray(base64.b64decode(data))
    raw[20] ^= 1
    with pytest.raises(DecryptError):
        decrypt(CH, "E", base64.b64encode(bytes(raw)).decode(), KEY)
    with pytest.raises(DecryptError, match="every key"):
        decrypt(CH, "E", data, bytes(32))
    with pytest.raises(DecryptError, match="base64"):
        decrypt(CH, "E", data.rstrip("="), KEY)
    with pytest.raises(DecryptError, match="base64"):
        decrypt(CH, "E", "not base64!", KEY)
    with pytest.raises(DecryptError, match="shorter"):
        decrypt(CH, "E", base64.b64encode(bytes(27)).decode(), KEY)
    with pytest.raises(DecryptError, match="no payload key"):
        decrypt(CH, "E", data, [])


def test_a_key_ring_tries_each_key_in_turn() -> None:
    old, new = bytes(32), KEY
    data = encrypt(CH, "E", "rotated", old)
    assert decrypt(CH, "E", data, [new, base64.b64encode(old).decode()]) == "rotated"


def test_plaintext_that_is_not_utf8_or_not_json_is_reported() -> None:
    nonce = bytes(12)
    not_json = base64.b64encode(nonce + AESGCM(KEY).encrypt(nonce, b"{nope", f"{CH}\nE".encode())).decode()
    with pytest.raises(DecryptError, match="not JSON"):
        decrypt(CH, "E", not_json, KEY)
    assert decrypt_bytes(CH, "E", not_json, KEY) == b"{nope"
    latin = base64.b64encode(nonce + AESGCM(KEY).encrypt(nonce, b"\xff", f"{CH}\nE".encode())).decode()
    with pytest.raises(DecryptError, match="UTF-8"):
        sealcast.decrypt_text(CH, "E", latin, KEY)


def test_bad_keys_and_payloads_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="32 bytes, got 16"):
        encrypt(CH, "E", 1, bytes(16))
    with pytest.raises(ValueError, match="base64"):
        encrypt(CH, "E", 1, "not-a-key")
    with pytest.raises(TypeError, match="JSON"):
        encrypt(CH, "E", {"x": object()}, KEY)
    with pytest.raises(TypeError, match="JSON"):
        encrypt(CH, "E", float("nan"), KEY)
    with pytest.raises(ValueError, match="12 bytes"):
        encrypt_text(CH, "E", "{}", KEY, nonce=bytes(8))


def test_generate_key_gives_32_random_bytes() -> None:
    a, b = sealcast.generate_key(), sealcast.generate_key()
    assert len(a) == 32 and a != b
    assert json.loads(sealcast.decrypt_text(CH, "E", encrypt(CH, "E", [1], a), a)) == [1]
