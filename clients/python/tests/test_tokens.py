"""Minting (and refusing at mint time what the relay refuses) and verification with the
relay's reasons, in the relay's order (src/auth/mod.rs)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
from typing import Any, Dict, Optional

import pytest

import sealcast
from sealcast import TokenError, mint_connect_token, mint_publish_token, sign_token, verify_token

SECRET = "0123456789abcdef0123456789abcdef-test"
APPS = {"acme": {"k1": SECRET}}
IAT = 1_700_000_000
NOW = IAT + 100


def part(token: str, i: int) -> Any:
    p = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def raw_token(header: bytes, claims: bytes, secret: str = SECRET) -> str:
    """Signs arbitrary header and claims bytes, for tokens no minting function would make."""
    signing_input = f"{b64url(header)}.{b64url(claims)}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha512).digest()
    return f"{signing_input}.{b64url(mac)}"


def connect(**over: Any) -> str:
    args: Dict[str, Any] = dict(app="acme", kid="k1", secret=SECRET, ns="site/1", sub="user-1", ttl_seconds=3600, iat=IAT)
    args.update(over)
    return mint_connect_token(**args)


def test_connect_token_is_an_hs512_jwt_with_the_documented_header_and_claims() -> None:
    t = connect(jti="j-1")
    h, c, s = t.split(".")
    assert base64.urlsafe_b64decode(h + "==") == b'{"alg":"HS512","typ":"JWT","kid":"k1"}'
    assert list(part(t, 1).items()) == [("iss", "acme"), ("sub", "user-1"), ("ns", "site/1"), ("aud", "connect"),
                                        ("iat", IAT), ("exp", IAT + 3600), ("jti", "j-1")]
    mac = hmac.new(SECRET.encode(), f"{h}.{c}".encode(), hashlib.sha512).digest()
    assert s == b64url(mac)
    assert not set("=+/") & set(t)


def test_publish_token_has_aud_publish_optional_ns_and_no_kid_unless_given() -> None:
    t = mint_publish_token(app="acme", secret=SECRET, ttl_seconds=60, iat=IAT)
    assert part(t, 0) == {"alg": "HS512", "typ": "JWT"}
    assert list(part(t, 1)) == ["iss", "aud", "iat", "exp"]
    assert part(t, 1)["exp"] == IAT + 60
    t2 = mint_publish_token(app="acme", kid="k1", secret=SECRET.encode(), ns="site/1", ttl_seconds=60, iat=IAT)
    assert list(part(t2, 1).items())[:2] == [("iss", "acme"), ("ns", "site/1")]
    assert verify_token(t2, apps=APPS, aud="publish", now=IAT + 10).ns == "site/1"
    v = verify_token(t, apps=APPS, aud="publish", now=IAT + 10)  # no kid: every key is tried
    assert (v.kid, v.ns) == ("k1", None)


def test_the_current_time_is_the_default_iat() -> None:
    import time

    before = int(time.time())
    v = verify_token(connect(iat=None), apps=APPS, aud="connect")
    assert before <= v.iat <= int(time.time()) and v.exp == v.iat + 3600


@pytest.mark.parametrize(
    "over, reason, claim, words",
    [
        ({"ttl_seconds": 86401}, "lifetime_too_long", None, "at most 86400 s"),
        ({"ttl_seconds": 0}, "invalid_claim", "exp", "positive"),
        ({"ns": ""}, "invalid_claim", "ns", "namespace must be 1 to 256 bytes"),
        ({"ns": "n" * 257}, "invalid_claim", "ns", "namespace must be 1 to 256 bytes"),
        ({"ns": "site 1"}, "invalid_claim", "ns", "printable ASCII without space and '#'"),
        ({"ns": "site#1"}, "invalid_claim", "ns", "printable ASCII"),
        ({"ns": "sité"}, "invalid_claim", "ns", "printable ASCII"),
        ({"sub": ""}, "invalid_claim", "sub", "1 to 128 bytes"),
        ({"sub": "é" * 65}, "invalid_claim", "sub", "1 to 128 bytes"),
        ({"jti": "j" * 129}, "invalid_claim", "jti", "1 to 128 bytes"),
        ({"jti": ""}, "invalid_claim", "jti", "1 to 128 bytes"),
        ({"app": "ac me"}, "unknown_app", None, "app id has a character outside"),
        ({"app": "a" * 65}, "unknown_app", None, "app id must be 1 to 64 bytes"),
        ({"kid": "k" * 65}, "unknown_key", None, "kid must be 1 to 64 bytes"),
    ],
)
def test_connect_mint_refuses_what_the_relay_would_refuse_naming_the_rule(
    over: Dict[str, Any], reason: str, claim: Optional[str], words: str
) -> None:
    with pytest.raises(TokenError) as e:
        connect(**over)
    assert (e.value.reason, e.value.claim) == (reason, claim)
    assert words in str(e.value)


def test_the_limits_themselves_are_accepted_by_the_relays_rules() -> None:
    edge = connect(ttl_seconds=86400, ns="n" * 256, sub="s" * 128, jti="j" * 128)
    assert verify_token(edge, apps=APPS, aud="connect", now=NOW).ns == "n" * 256
    assert verify_token(connect(ns="!\"$%&'()*+,-./:;<=>?@[\\]^_`{|}~"), apps=APPS, aud="connect", now=NOW)
    p = mint_publish_token(app="acme", kid="k1", secret=SECRET, ttl_seconds=300, iat=IAT)
    assert verify_token(p, apps=APPS, aud="publish", now=NOW).exp == IAT + 300


def test_publish_mint_refuses_a_lifetime_over_300_s_and_a_bad_namespace() -> None:
    with pytest.raises(TokenError, match="at most 300 s") as e:
        mint_publish_token(app="acme", secret=SECRET, ttl_seconds=301)
    assert e.value.reason == "lifetime_too_long"
    with pytest.raises(TokenError, match="namespace") as e:
        mint_publish_token(app="acme", secret=SECRET, ttl_seconds=60, ns="a b")
    assert (e.value.reason, e.value.claim) == ("invalid_claim", "ns")


def test_short_secrets_and_non_int_lifetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        mint_publish_token(app="acme", secret="short", ttl_seconds=60)
    with pytest.raises(TypeError, match="int"):
        mint_publish_token(app="acme", secret=SECRET, ttl_seconds=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        mint_publish_token(app="acme", secret=SECRET, ttl_seconds=True)
    with pytest.raises(TypeError, match="app must be a str"):
        mint_publish_token(app=None, secret=SECRET, ttl_seconds=60)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lone surrogate"):
        connect(sub="\ud800")


def reason_of(token: str, aud: str = "connect", **kw: Any) -> str:
    with pytest.raises(TokenError) as e:
        verify_token(token, apps=kw.pop("apps", APPS), aud=aud, now=kw.pop("now", NOW), **kw)
    return e.value.reason + (f" {e.value.claim}" if e.value.claim else "")


HS512 = b'{"alg":"HS512","typ":"JWT","kid":"k1"}'
GOOD = b'{"iss":"acme","sub":"u","ns":"n","aud":"connect","iat":1700000000,"exp":1700003600}'


def test_a_good_token_verifies_and_every_refusal_names_the_relays_reason() -> None:
    good = connect()
    v = verify_token(good, apps=APPS, aud="connect", now=NOW)
    assert (v.app, v.sub, v.ns, v.aud, v.jti) == ("acme", "user-1", "site/1", "connect", None)
    h, c, s = good.split(".")
    assert reason_of(good, aud="publish") == "wrong_audience"
    assert reason_of(good, now=IAT + 3600 + 30) == "expired"
    assert verify_token(good, apps=APPS, aud="connect", now=IAT + 3600 + 29)
    assert reason_of(good, now=IAT + 3600, leeway=0) == "expired"
    assert reason_of(good, now=IAT - 31) == "issued_in_future"
    assert verify_token(good, apps=APPS, aud="connect", now=IAT - 30)
    assert reason_of(good, apps={"acme": {"k1": SECRET + "x"}}) == "bad_signature"
    assert reason_of(good, apps={"other": {"k1": SECRET}}) == "unknown_app"
    assert reason_of(good, apps={"acme": {"k2": SECRET}}) == "unknown_key"
    assert reason_of(good, max_lifetime=3599) == "lifetime_too_long"
    assert reason_of(f"{h}.{c}") == "malformed"
    assert reason_of(f"{h}.{c}.{s}.x") == "malformed"
    assert reason_of(f"{h}.{c}.") == "malformed"
    assert reason_of(f"{h}.{c}.{s}=") == "malformed"
    assert reason_of(f"{h}.{c}.{s[:-1]}") == "malformed"  # 85 characters are no base64
    assert reason_of(f"{h}.{c}.{s[:-2]}") == "bad_signature"
    assert reason_of(f"{h}.{c}.{s[:-1]}B") == "malformed"  # stray bits past the last byte
    assert reason_of("x" * 4097) == "too_large"
    assert reason_of(good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]) == "bad_signature"


def test_header_rules() -> None:
    assert reason_of(raw_token(b'{"alg":"none"}', GOOD)) == "unsupported_algorithm"
    assert reason_of(raw_token(b'{"alg":"HS256","typ":"JWT"}', GOOD)) == "unsupported_algorithm"
    assert reason_of(raw_token(b'{"alg":"HS512","typ":"JWS"}', GOOD)) == "bad_type"
    nulls = raw_token(b'{"alg":"HS512","typ":null,"kid":null}', GOOD)  # null is absent
    assert verify_token(nulls, apps=APPS, aud="connect", now=NOW).kid == "k1"
    assert reason_of(raw_token(b'{"typ":"JWT"}', GOOD)) == "malformed"
    assert reason_of(raw_token(b'{"alg":"HS512","alg":"HS512"}', GOOD)) == "malformed"
    assert reason_of(raw_token(b'{"alg":"HS512","kid":7}', GOOD)) == "malformed"
    assert reason_of(raw_token(b'["HS512"]', GOOD)) == "malformed"
    assert reason_of(raw_token(b"\xff", GOOD)) == "malformed"
    # Unknown fields are ignored, and so are duplicates inside them.
    ok = raw_token(b'{"alg":"HS512","x":{"alg":1,"alg":2},"kid":"k1"}', GOOD)
    assert verify_token(ok, apps=APPS, aud="connect", now=NOW).kid == "k1"


def claims_token(claims: Dict[str, Any]) -> str:
    return raw_token(HS512, json.dumps(claims).encode())


BASE: Dict[str, Any] = {"iss": "acme", "sub": "u", "ns": "n", "aud": "connect", "iat": IAT, "exp": IAT + 3600}


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"iss": None}, "missing_claim iss"),
        ({"iss": 5}, "malformed"),
        ({"iss": "a b"}, "unknown_app"),
        ({"aud": None}, "missing_claim aud"),
        ({"exp": None}, "missing_claim exp"),
        ({"iat": None}, "missing_claim iat"),
        ({"iat": IAT + 0.5}, "malformed"),
        ({"iat": True}, "malformed"),
        ({"exp": 2**63}, "malformed"),
        ({"exp": IAT}, "invalid_claim exp"),
        ({"exp": IAT + 86401}, "lifetime_too_long"),
        ({"jti": ""}, "invalid_claim jti"),
        ({"jti": "j" * 129}, "invalid_claim jti"),
        ({"sub": None}, "missing_claim sub"),
        ({"sub": "s" * 129}, "invalid_claim sub"),
        ({"sub": ""}, "invalid_claim sub"),
        ({"ns": None}, "missing_claim ns"),
        ({"ns": "a#b"}, "invalid_claim ns"),
    ],
)
def test_claim_rules(change: Dict[str, Any], reason: str) -> None:
    claims = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    assert reason_of(claims_token(claims)) == reason


def test_claim_parsing_is_as_strict_as_the_relays() -> None:
    assert reason_of(raw_token(HS512, GOOD[:-1] + b',"iat":1}')) == "malformed"  # duplicate field
    assert reason_of(raw_token(HS512, GOOD[:-1] + b',"exp":NaN}')) == "malformed"
    assert reason_of(raw_token(HS512, GOOD.replace(b'"u"', b'"\\ud800"'))) == "malformed"
    assert reason_of(raw_token(HS512, b"[1]")) == "malformed"
    extra = raw_token(HS512, GOOD[:-1] + b',"extra":{"iat":1,"iat":2}}')
    assert verify_token(extra, apps=APPS, aud="connect", now=NOW).claims["extra"] == {"iat": 2}


def test_publish_tokens_need_no_sub_and_check_ns_if_present() -> None:
    p = {"iss": "acme", "aud": "publish", "iat": IAT, "exp": IAT + 60}
    assert verify_token(claims_token(p), apps=APPS, aud="publish", now=IAT + 10).sub is None
    assert reason_of(claims_token({**p, "ns": "a b"}), aud="publish", now=IAT + 10) == "invalid_claim ns"
    assert reason_of(claims_token({**p, "exp": IAT + 301}), aud="publish") == "lifetime_too_long"


def test_order_a_bad_signature_hides_the_claims_verdict() -> None:
    # Expired and of the wrong audience, but unsigned by this app: only the signature is named.
    stale = sign_token({**BASE, "aud": "publish", "exp": IAT + 10}, SECRET + "-other", "k1")
    assert reason_of(stale, now=IAT + 10_000) == "bad_signature"


def test_verify_settings_are_bounded_like_the_relays() -> None:
    good = connect()
    with pytest.raises(ValueError, match="leeway"):
        verify_token(good, apps=APPS, aud="connect", leeway=31)
    with pytest.raises(ValueError, match="max_lifetime"):
        verify_token(good, apps=APPS, aud="publish", max_lifetime=301)
    with pytest.raises(ValueError, match="aud"):
        verify_token(good, apps=APPS, aud="other")


def run_cli(*args: str, env: Dict[str, str], stdin: str = "") -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "sealcast", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=30)


def test_the_token_command_mints_and_verifies_naming_the_reason(tmp_path: Any) -> None:
    import os

    env = dict(os.environ, ACME_KEY=SECRET + "\n")
    minted = run_cli("token", "connect", "--app", "acme", "--kid", "k1", "--secret-env", "ACME_KEY",
                     "--ns", "site/1", "--sub", "u-1", env=env)
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    ok = run_cli("token", "verify", "--app", "acme", "--kid", "k1", "--secret-env", "ACME_KEY", "--aud", "connect",
                 "-", env=env, stdin=token + "\n")
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["valid"] and out["kid"] == "k1" and out["claims"]["sub"] == "u-1"
    key_file = tmp_path / "k"
    key_file.write_text(SECRET + "\r\n")
    wrong = run_cli("token", "verify", "--app", "acme", "--kid", "k1", "--secret-file", str(key_file),
                    "--aud", "publish", token, env=env)
    assert wrong.returncode == 1
    assert "refused (wrong_audience)" in wrong.stderr
    too_long = run_cli("token", "publish", "--app", "acme", "--kid", "k1", "--secret-env", "ACME_KEY",
                       "--ttl", "301", env=env)
    assert too_long.returncode == 1 and "lifetime_too_long" in too_long.stderr
    assert "at most 300 s" in too_long.stderr


def test_reasons_are_the_relays_labels() -> None:
    assert set(sealcast.REASONS) == {
        "too_large", "malformed", "unsupported_algorithm", "bad_type", "unknown_app", "unknown_key",
        "bad_signature", "missing_claim", "invalid_claim", "wrong_audience", "expired",
        "issued_in_future", "lifetime_too_long", "not_yet_valid", "critical_header",
    }


def test_crit_is_refused_and_nbf_is_honoured_with_the_leeway() -> None:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def signed(header: bytes, claims: Dict[str, Any]) -> str:
        signing_input = f"{b64(header)}.{b64(json.dumps(claims, separators=(',', ':')).encode())}"
        mac = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha512).digest()
        return f"{signing_input}.{b64(mac)}"

    claims: Dict[str, Any] = {"iss": "acme", "sub": "u", "ns": "n", "aud": "connect", "iat": IAT, "exp": IAT + 600}
    crit = b'{"alg":"HS512","typ":"JWT","kid":"k1","crit":["exp"]}'
    assert reason_of(signed(crit, claims)) == "critical_header"
    for nbf, refused in ((NOW + 60, True), (NOW + 25, False), (NOW - 60, False)):
        token = signed(HS512, {**claims, "nbf": nbf})
        if refused:
            assert reason_of(token) == "not_yet_valid"
        else:
            assert verify_token(token, apps=APPS, aud="connect", now=NOW)
