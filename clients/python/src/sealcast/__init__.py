"""sealcast: the Python backend SDK of the sealcast relay.

Mints HS512 tokens (PROTOCOL.md 2), encrypts payloads with AES-256-GCM (5), publishes,
batch-publishes and revokes over HTTP with idempotent retries (4), and verifies tokens with
the relay's own rules. Names mirror the TypeScript SDK (``sealcast-client/server``) in
snake_case.
"""

from __future__ import annotations

from ._types import BatchItemError, BatchItemResult, ErrorBody, PublishResult, RevokeResult
from .crypto import (
    DecryptError,
    KeyInput,
    KeyRing,
    associated_data,
    decrypt,
    decrypt_bytes,
    decrypt_text,
    encrypt,
    encrypt_text,
    from_base64,
    generate_key,
    to_base64,
)
from .http import (
    RETRYABLE_CODES,
    RETRYABLE_STATUS,
    Publication,
    RetryPolicy,
    SealcastHttpError,
    TokenSource,
    publish,
    publish_batch,
    revoke,
)
from .names import channel_of, is_valid_channel, is_valid_event, is_valid_namespace
from .publisher import BatchItem, Publisher
from .tokens import (
    MAX_CONNECT_LIFETIME,
    MAX_PUBLISH_LIFETIME,
    REASONS,
    Secret,
    TokenError,
    VerifiedToken,
    mint_connect_token,
    mint_publish_token,
    sign_token,
    verify_token,
)

__version__ = "0.1.0"

__all__ = [
    "BatchItem",
    "BatchItemError",
    "BatchItemResult",
    "DecryptError",
    "ErrorBody",
    "KeyInput",
    "KeyRing",
    "MAX_CONNECT_LIFETIME",
    "MAX_PUBLISH_LIFETIME",
    "Publication",
    "PublishResult",
    "Publisher",
    "REASONS",
    "RETRYABLE_CODES",
    "RETRYABLE_STATUS",
    "RetryPolicy",
    "RevokeResult",
    "SealcastHttpError",
    "Secret",
    "TokenError",
    "TokenSource",
    "VerifiedToken",
    "associated_data",
    "channel_of",
    "decrypt",
    "decrypt_bytes",
    "decrypt_text",
    "encrypt",
    "encrypt_text",
    "from_base64",
    "generate_key",
    "is_valid_channel",
    "is_valid_event",
    "is_valid_namespace",
    "mint_connect_token",
    "mint_publish_token",
    "publish",
    "publish_batch",
    "revoke",
    "sign_token",
    "to_base64",
    "verify_token",
]
