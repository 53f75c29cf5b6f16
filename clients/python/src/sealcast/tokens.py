"""HS512 tokens of PROTOCOL.md 2: minting (refusing what the relay would refuse) and
verification with the relay's own rules and reasons (``src/auth/mod.rs``).

Tokens are compact JWTs: header ``{"alg":"HS512","typ":"JWT"[,"kid":K]}``, claims in the
order ``iss, sub, ns, aud, iat, exp, jti``, both as compact JSON, so that a token minted
here is byte for byte the token the relay's and the TypeScript SDK's minting make.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from .names import app_id_problem, namespace_problem

#: An HMAC secret: text (its UTF-8 bytes are the key) or raw bytes; at least 32 bytes.
Secret = Union[str, bytes]

#: The most bytes a token may have (PROTOCOL.md 2.1).
MAX_TOKEN_BYTES = 4096
#: The relay's hard ceilings (PROTOCOL.md 2.1-2.3); a relay may be configured lower.
MAX_CONNECT_LIFETIME = 24 * 3600
MAX_PUBLISH_LIFETIME = 300
MAX_LEEWAY = 30
MIN_SECRET_BYTES = 32
MAX_SUB_BYTES = 128
MAX_JTI_BYTES = 128
MAX_KID_BYTES = 64

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

#: The relay's refusal reasons (``TokenError::label``), each with its message.
REASONS: Dict[str, str] = {
    "too_large": "token too large",
    "malformed": "token malformed",
    "unsupported_algorithm": "token algorithm not accepted",
    "bad_type": "token type not accepted",
    "unknown_app": "unknown app",
    "unknown_key": "unknown key id",
    "bad_signature": "bad signature",
    "missing_claim": "missing claim",
    "invalid_claim": "invalid claim",
    "wrong_audience": "wrong audience",
    "expired": "token expired",
    "issued_in_future": "token issued in the future",
    "lifetime_too_long": "token lifetime too long",
    "not_yet_valid": "token not yet valid",
    "critical_header": "token header has crit",
}


class TokenError(ValueError):
    """A token the relay refuses (from :func:`verify_token`), or would refuse (from minting).

    ``reason`` is the relay's label for the refusal (a key of :data:`REASONS`, the same
    label as its ``sealcast_token_rejections_total{name=...}`` metric); ``claim`` names the
    claim for ``missing_claim`` and ``invalid_claim``.
    """

    def __init__(self, reason: str, claim: Optional[str] = None, detail: Optional[str] = None) -> None:
        self.reason = reason
        self.claim = claim
        text = REASONS[reason] + (f" {claim}" if claim else "")
        super().__init__(f"{text}: {detail}" if detail else text)


def _secret_bytes(secret: Secret) -> bytes:
    if isinstance(secret, str):
        b = secret.encode("utf-8")
    elif isinstance(secret, (bytes, bytearray, memoryview)):
        b = bytes(secret)
    else:
        raise TypeError("sealcast: a signing secret is str or bytes")
    if len(b) < MIN_SECRET_BYTES:
        raise ValueError(f"sealcast: a signing secret must be at least {MIN_SECRET_BYTES} bytes, got {len(b)}")
    return b


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def _compact(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("sealcast: token text must be valid Unicode (a lone surrogate is not)") from None


def sign_token(claims: Mapping[str, Any], secret: Secret, kid: Optional[str] = None) -> str:
    """Signs ``claims`` as they are (no rule checked) as an HS512 JWT.

    Use :func:`mint_connect_token` and :func:`mint_publish_token`, which check the rules;
    this exists for tests that need a token the relay refuses.
    """
    header: Dict[str, str] = {"alg": "HS512", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{_b64url(_compact(header))}.{_b64url(_compact(dict(claims)))}"
    mac = hmac.new(_secret_bytes(secret), signing_input.encode("ascii"), hashlib.sha512).digest()
    return f"{signing_input}.{_b64url(mac)}"


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def _check_common(app: str, kid: Optional[str], ttl_seconds: int, max_lifetime: int, kind: str,
                  jti: Optional[str], iat: Optional[int]) -> int:
    if not isinstance(app, str):
        raise TypeError("sealcast: app must be a str")
    for name, value in (("kid", kid), ("jti", jti)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"sealcast: {name} must be a str")
    problem = app_id_problem(app)
    if problem:
        raise TokenError("unknown_app", detail=f"{problem}: the relay knows no such app")
    if kid is not None and not 1 <= _utf8_len(kid) <= MAX_KID_BYTES:
        raise TokenError("unknown_key", detail=f"kid must be 1 to {MAX_KID_BYTES} bytes")
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
        raise TypeError("sealcast: ttl_seconds must be an int")
    if ttl_seconds <= 0:
        raise TokenError("invalid_claim", "exp", "ttl_seconds must be positive (exp after iat)")
    if ttl_seconds > max_lifetime:
        raise TokenError("lifetime_too_long", detail=f"a {kind} token lives at most {max_lifetime} s, asked {ttl_seconds} s")
    if jti is not None and not 1 <= _utf8_len(jti) <= MAX_JTI_BYTES:
        raise TokenError("invalid_claim", "jti", f"jti must be 1 to {MAX_JTI_BYTES} bytes")
    if iat is None:
        return int(time.time())
    if isinstance(iat, bool) or not isinstance(iat, int) or not _I64_MIN <= iat + ttl_seconds <= _I64_MAX:
        raise TokenError("invalid_claim", "iat", "iat must be an int of unix seconds")
    return iat


def mint_connect_token(*, app: str, kid: Optional[str] = None, secret: Secret, ns: str, sub: str,
                       ttl_seconds: int, jti: Optional[str] = None, iat: Optional[int] = None) -> str:
    """Mints a connect token for one user (``sub``) and one namespace (``ns``).

    Raises :class:`TokenError`, with the reason the relay would give, for what the relay
    would refuse: a lifetime over 24 h, a namespace or ``sub`` outside their rules, a
    ``jti`` over 128 bytes, an app id or ``kid`` no relay can have. ``iat`` defaults to now.
    """
    now = _check_common(app, kid, ttl_seconds, MAX_CONNECT_LIFETIME, "connect", jti, iat)
    if not isinstance(sub, str) or not 1 <= _utf8_len(sub) <= MAX_SUB_BYTES:
        raise TokenError("invalid_claim", "sub", f"sub must be 1 to {MAX_SUB_BYTES} bytes")
    problem = namespace_problem(ns) if isinstance(ns, str) else "namespace must be a str"
    if problem:
        raise TokenError("invalid_claim", "ns", problem)
    claims: Dict[str, Any] = {"iss": app, "sub": sub, "ns": ns, "aud": "connect", "iat": now, "exp": now + ttl_seconds}
    if jti is not None:
        claims["jti"] = jti
    return sign_token(claims, secret, kid)


def mint_publish_token(*, app: str, kid: Optional[str] = None, secret: Secret, ttl_seconds: int,
                       ns: Optional[str] = None, jti: Optional[str] = None, iat: Optional[int] = None) -> str:
    """Mints a short-lived publish token (sent as ``Authorization: Bearer``).

    With ``ns`` it may publish only to channels of that namespace (and cannot revoke).
    Raises :class:`TokenError` for a lifetime over 300 s and the other rules the relay checks.
    """
    now = _check_common(app, kid, ttl_seconds, MAX_PUBLISH_LIFETIME, "publish", jti, iat)
    if ns is not None:
        problem = namespace_problem(ns) if isinstance(ns, str) else "namespace must be a str"
        if problem:
            raise TokenError("invalid_claim", "ns", problem)
    claims: Dict[str, Any] = {"iss": app}
    if ns is not None:
        claims["ns"] = ns
    claims.update({"aud": "publish", "iat": now, "exp": now + ttl_seconds})
    if jti is not None:
        claims["jti"] = jti
    return sign_token(claims, secret, kid)


# ------------------------------------------------------------------ verification


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed :func:`verify_token`."""

    app: str
    aud: str
    iat: int
    exp: int
    sub: Optional[str]
    ns: Optional[str]
    jti: Optional[str]
    #: The key id that verified it: the header's, or the one found by trying each key.
    kid: Optional[str]
    #: Every claim as decoded, unknown ones included.
    claims: Dict[str, Any] = field(repr=False)


_HEADER_FIELDS = ("alg", "typ", "kid", "crit")
_CLAIM_FIELDS = ("iss", "sub", "ns", "aud", "iat", "exp", "jti", "nbf")


class _Malformed(Exception):
    pass


def _b64url_decode(part: str) -> bytes:
    # The relay's decoder: unpadded base64url, canonical (no stray trailing bits).
    if not part or len(part) % 4 == 1 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in part):
        raise _Malformed
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise _Malformed from None
    if _b64url(raw) != part:
        raise _Malformed
    return raw


def _reject_constant(_: str) -> Any:
    raise _Malformed  # NaN, Infinity: not JSON to the relay


def _object(raw: bytes, known: Tuple[str, ...]) -> Dict[str, Any]:
    """Parses a JSON object as serde does into the relay's structs: strict UTF-8, no
    duplicate known field, ``null`` meaning absent."""

    # The hook runs for every object, innermost first, so the last call is the top level:
    # only there are duplicate fields an error (serde ignores the insides of unknown ones).
    duplicates: List[bool] = []

    def pairs(items: List[Tuple[str, Any]]) -> Dict[str, Any]:
        seen = [k for k, _ in items if k in known]
        duplicates.append(len(seen) != len(set(seen)))
        return dict(items)

    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _Malformed from None
    if not isinstance(value, dict) or duplicates[-1]:
        raise _Malformed
    return value


def _opt_str(obj: Mapping[str, Any], key: str) -> Optional[str]:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise _Malformed
    try:
        v.encode("utf-8")  # a lone surrogate escape is not a string to serde_json
    except UnicodeEncodeError:
        raise _Malformed from None
    return v


def _opt_i64(obj: Mapping[str, Any], key: str) -> Optional[int]:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not _I64_MIN <= v <= _I64_MAX:
        raise _Malformed
    return int(v)


def verify_token(token: str, *, apps: Mapping[str, Mapping[str, Secret]], aud: str,
                 now: Optional[int] = None, leeway: int = MAX_LEEWAY,
                 max_lifetime: Optional[int] = None) -> VerifiedToken:
    """Verifies ``token`` as the relay does (PROTOCOL.md 2.1-2.3), in the relay's order, and
    returns its claims or raises :class:`TokenError` with the relay's reason.

    ``apps`` maps app id to ``{kid: secret}``; ``aud`` is ``"connect"`` or ``"publish"``;
    ``now`` is unix seconds (default: now); ``leeway`` (at most 30) and ``max_lifetime``
    (default and at most 86400 for connect, 300 for publish) mirror the relay's ``[tokens]``.
    """
    if aud not in ("connect", "publish"):
        raise ValueError("sealcast: aud must be 'connect' or 'publish'")
    ceiling = MAX_CONNECT_LIFETIME if aud == "connect" else MAX_PUBLISH_LIFETIME
    max_life = ceiling if max_lifetime is None else max_lifetime
    if not 0 < max_life <= ceiling:
        raise ValueError(f"sealcast: max_lifetime must be 1 to {ceiling} s")
    if not 0 <= leeway <= MAX_LEEWAY:
        raise ValueError(f"sealcast: leeway must be 0 to {MAX_LEEWAY} s")
    when = int(time.time()) if now is None else now
    if not isinstance(token, str):
        raise TokenError("malformed", detail="a token is a str")
    if _utf8_len(token) > MAX_TOKEN_BYTES:
        raise TokenError("too_large", detail=f"more than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    try:
        if len(parts) != 3:
            raise _Malformed
        header_raw, claims_raw, signature = (_b64url_decode(p) for p in parts)
        header = _object(header_raw, _HEADER_FIELDS)
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise _Malformed
        typ, kid = _opt_str(header, "typ"), _opt_str(header, "kid")
    except _Malformed:
        raise TokenError("malformed", detail="not three base64url parts of JSON") from None
    if alg != "HS512":
        raise TokenError("unsupported_algorithm", detail="alg must be HS512")
    if typ is not None and typ != "JWT":
        raise TokenError("bad_type", detail="typ must be JWT")
    if "crit" in header:
        # RFC 7515 4.1.11: the relay implements no critical extension, so it refuses any.
        raise TokenError("critical_header", detail="the relay implements no crit extension")
    try:
        claims = _object(claims_raw, _CLAIM_FIELDS)
        iss, sub, ns, aud_claim, jti = (_opt_str(claims, k) for k in ("iss", "sub", "ns", "aud", "jti"))
        iat, exp = _opt_i64(claims, "iat"), _opt_i64(claims, "exp")
        nbf = _opt_i64(claims, "nbf")
    except _Malformed:
        raise TokenError("malformed", detail="claims are not a JSON object of the right types") from None
    if iss is None:
        raise TokenError("missing_claim", "iss")
    keys = apps.get(iss) if app_id_problem(iss) is None else None
    if keys is None:
        raise TokenError("unknown_app")
    signing_input = token[: len(parts[0]) + 1 + len(parts[1])].encode("ascii")
    candidates: Iterable[Tuple[str, Secret]]
    if kid is not None:
        if kid not in keys:
            raise TokenError("unknown_key")
        candidates = [(kid, keys[kid])]
    else:
        candidates = keys.items()
    matched = None
    for key_id, secret in candidates:
        mac = hmac.new(_secret_bytes(secret), signing_input, hashlib.sha512).digest()
        if hmac.compare_digest(mac, signature):
            matched = key_id
            break
    if matched is None:
        raise TokenError("bad_signature")
    if aud_claim is None:
        raise TokenError("missing_claim", "aud")
    if aud_claim != aud:
        raise TokenError("wrong_audience", detail=f"aud must be {aud}")
    if exp is None:
        raise TokenError("missing_claim", "exp")
    if iat is None:
        raise TokenError("missing_claim", "iat")
    if exp <= iat:
        raise TokenError("invalid_claim", "exp", "exp must be after iat")
    if exp - iat > max_life:
        raise TokenError("lifetime_too_long", detail=f"exp - iat over {max_life} s")
    if when >= exp + leeway:
        raise TokenError("expired")
    if iat > when + leeway:
        raise TokenError("issued_in_future")
    if nbf is not None and nbf > when + leeway:
        raise TokenError("not_yet_valid")
    if jti is not None and not 1 <= _utf8_len(jti) <= MAX_JTI_BYTES:
        raise TokenError("invalid_claim", "jti", f"jti must be 1 to {MAX_JTI_BYTES} bytes")
    if aud == "connect":
        if sub is None:
            raise TokenError("missing_claim", "sub")
        if not 1 <= _utf8_len(sub) <= MAX_SUB_BYTES:
            raise TokenError("invalid_claim", "sub", f"sub must be 1 to {MAX_SUB_BYTES} bytes")
        if ns is None:
            raise TokenError("missing_claim", "ns")
    if ns is not None and namespace_problem(ns):
        raise TokenError("invalid_claim", "ns", namespace_problem(ns))
    return VerifiedToken(app=iss, aud=aud, iat=iat, exp=exp, sub=sub, ns=ns, jti=jti, kid=matched, claims=claims)
