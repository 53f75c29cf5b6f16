//! Unit tests of token verification: every rule of PROTOCOL.md 2.1 to 2.3.

use serde_json::json;

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-k1";
const SECRET2: &[u8] = b"0123456789abcdef0123456789abcdef-k2";
const NOW: i64 = 1_700_000_100;

fn auth() -> Authenticator {
    let k1 = Secret::new(SECRET.to_vec());
    let k2 = Secret::new(SECRET2.to_vec());
    let app = AppId::parse("acme").unwrap();
    Authenticator::new(
        [(
            app,
            vec![(Some("k1".to_string()), &k1), (Some("k2".to_string()), &k2)],
        )],
        TokenPolicy::default(),
    )
}

fn connect_claims() -> serde_json::Value {
    json!({"iss":"acme","sub":"user-1","ns":"site/1/dash/1","aud":"connect","iat":NOW-100,"exp":NOW+3500})
}

fn hs512(claims: &serde_json::Value, kid: Option<&str>, secret: &[u8]) -> String {
    let mut h = json!({"alg":"HS512","typ":"JWT"});
    if let Some(k) = kid {
        h["kid"] = json!(k);
    }
    sign_with_header(&h, claims, secret)
}

fn reason(r: Result<ConnectClaims, Rejection>) -> TokenError {
    r.expect_err("must be refused").reason
}

#[test]
fn accepts_a_good_connect_token_with_or_without_kid() {
    let a = auth();
    let c = a
        .verify_connect(&hs512(&connect_claims(), Some("k1"), SECRET), NOW)
        .unwrap();
    assert_eq!(c.app.as_str(), "acme");
    assert_eq!(c.sub, "user-1");
    assert_eq!(c.ns.as_str(), "site/1/dash/1");
    assert_eq!(c.exp, NOW + 3500);
    assert_eq!(c.kid.as_deref(), Some("k1"));
    // No kid: each active key is tried.
    assert!(
        a.verify_connect(&hs512(&connect_claims(), None, SECRET2), NOW)
            .is_ok()
    );
    // The minting helper makes tokens the verifier accepts.
    let t = MintClaims::connect("acme", "site/1/dash/1", "u", NOW, 60).sign(Some("k2"), SECRET2);
    assert!(a.verify_connect(&t, NOW).is_ok());
}

#[test]
fn refuses_other_algorithms_and_types() {
    let a = auth();
    for alg in ["HS256", "none", "RS256", "hs512", "HS384", ""] {
        let t = sign_with_header(&json!({"alg":alg,"typ":"JWT"}), &connect_claims(), SECRET);
        assert_eq!(
            reason(a.verify_connect(&t, NOW)),
            TokenError::UnsupportedAlgorithm,
            "{alg}"
        );
    }
    // A real HS256 MAC over the same input is still refused on alg alone.
    let t = sign_with_header(
        &json!({"alg":"HS512","typ":"JWS"}),
        &connect_claims(),
        SECRET,
    );
    assert_eq!(reason(a.verify_connect(&t, NOW)), TokenError::BadType);
    let t = sign_with_header(&json!({"typ":"JWT"}), &connect_claims(), SECRET);
    assert_eq!(reason(a.verify_connect(&t, NOW)), TokenError::Malformed);
}

#[test]
fn refuses_bad_signatures_keys_and_apps() {
    let a = auth();
    let good = hs512(&connect_claims(), Some("k1"), SECRET);
    // Tampered payload, signature kept.
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut c = connect_claims();
    c["ns"] = json!("site/1/dash/2");
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        c.to_string(),
    );
    parts[1] = &forged;
    let r = a.verify_connect(&parts.join("."), NOW).unwrap_err();
    assert_eq!(r.reason, TokenError::BadSignature);
    assert_eq!(r.app.as_ref().map(AppId::as_str), Some("acme"));
    assert_eq!(r.kid.as_deref(), Some("k1"));
    // Wrong key under a right kid; wrong key without kid.
    assert_eq!(
        reason(a.verify_connect(&hs512(&connect_claims(), Some("k1"), SECRET2), NOW)),
        TokenError::BadSignature
    );
    assert_eq!(
        reason(a.verify_connect(
            &hs512(&connect_claims(), None, b"another-secret-another-secret-xx"),
            NOW
        )),
        TokenError::BadSignature
    );
    assert_eq!(
        reason(a.verify_connect(&hs512(&connect_claims(), Some("k9"), SECRET), NOW)),
        TokenError::UnknownKey
    );
    let mut c = connect_claims();
    c["iss"] = json!("other");
    assert_eq!(
        reason(a.verify_connect(&hs512(&c, None, SECRET), NOW)),
        TokenError::UnknownApp
    );
    // Truncated signature.
    let cut = reason(a.verify_connect(&good[..good.len() - 4], NOW));
    assert!(
        matches!(cut, TokenError::BadSignature | TokenError::Malformed),
        "{cut:?}"
    );
}

#[test]
fn refuses_time_violations() {
    let a = auth();
    let mut c = connect_claims();
    c["exp"] = json!(NOW - 31);
    c["iat"] = json!(NOW - 600);
    assert_eq!(
        reason(a.verify_connect(&hs512(&c, None, SECRET), NOW)),
        TokenError::Expired
    );
    // Within the leeway it is still good.
    c["exp"] = json!(NOW - 29);
    assert!(a.verify_connect(&hs512(&c, None, SECRET), NOW).is_ok());
    let mut c = connect_claims();
    c["iat"] = json!(NOW + 31);
    c["exp"] = json!(NOW + 3600);
    assert_eq!(
        reason(a.verify_connect(&hs512(&c, None, SECRET), NOW)),
        TokenError::IssuedInFuture
    );
    let mut c = connect_claims();
    c["iat"] = json!(NOW);
    c["exp"] = json!(NOW + 24 * 3600 + 1);
    assert_eq!(
        reason(a.verify_connect(&hs512(&c, None, SECRET), NOW)),
        TokenError::LifetimeTooLong
    );
    c["exp"] = json!(NOW + 24 * 3600);
    assert!(a.verify_connect(&hs512(&c, None, SECRET), NOW).is_ok());
    let mut c = connect_claims();
    c["exp"] = json!(1.5e9);
    assert_eq!(
        reason(a.verify_connect(&hs512(&c, None, SECRET), NOW)),
        TokenError::Malformed
    );
}

#[test]
fn refuses_missing_and_invalid_claims() {
    let a = auth();
    for (claim, want) in [
        ("iss", TokenError::MissingClaim("iss")),
        ("sub", TokenError::MissingClaim("sub")),
        ("ns", TokenError::MissingClaim("ns")),
        ("aud", TokenError::MissingClaim("aud")),
        ("exp", TokenError::MissingClaim("exp")),
        ("iat", TokenError::MissingClaim("iat")),
    ] {
        let mut c = connect_claims();
        c.as_object_mut().unwrap().remove(claim);
        assert_eq!(
            reason(a.verify_connect(&hs512(&c, None, SECRET), NOW)),
            want,
            "{claim}"
        );
    }
    for (claim, value) in [
        ("sub", json!("")),
        ("sub", json!("x".repeat(129))),
        ("ns", json!("a b")),
        ("jti", json!("j".repeat(129))),
    ] {
        let mut c = connect_claims();
        c[claim] = value;
        assert!(
            matches!(
                reason(a.verify_connect(&hs512(&c, None, SECRET), NOW)),
                TokenError::InvalidClaim(_)
            ),
            "{claim}"
        );
    }
    let mut c = connect_claims();
    c["aud"] = json!(["connect"]);
    assert_eq!(
        reason(a.verify_connect(&hs512(&c, None, SECRET), NOW)),
        TokenError::Malformed
    );
}

#[test]
fn audiences_never_cross() {
    let a = auth();
    let connect = hs512(&connect_claims(), None, SECRET);
    assert_eq!(
        a.verify_publish(&connect, NOW).unwrap_err().reason,
        TokenError::WrongAudience
    );
    let publish = MintClaims::publish("acme", None, NOW, 60).sign(None, SECRET);
    assert_eq!(
        reason(a.verify_connect(&publish, NOW)),
        TokenError::WrongAudience
    );
    let p = a.verify_publish(&publish, NOW).unwrap();
    assert_eq!(p.ns, None);
    let p = a
        .verify_publish(
            &MintClaims::publish("acme", Some("a/b"), NOW, 300).sign(None, SECRET),
            NOW,
        )
        .unwrap();
    assert_eq!(p.ns.unwrap().as_str(), "a/b");
    let long = MintClaims::publish("acme", None, NOW, 301).sign(None, SECRET);
    assert_eq!(
        a.verify_publish(&long, NOW).unwrap_err().reason,
        TokenError::LifetimeTooLong
    );
}

#[test]
fn refuses_garbage_and_oversized() {
    let a = auth();
    for g in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "..",
        "!!!.###.$$$",
        "eyJ.eyJ.sig",
        "a.b.c",
    ] {
        assert!(a.verify_connect(g, NOW).is_err(), "{g}");
    }
    let mut c = connect_claims();
    c["pad"] = json!("x".repeat(4000));
    let big = hs512(&c, None, SECRET);
    assert!(big.len() > MAX_TOKEN_BYTES);
    assert_eq!(reason(a.verify_connect(&big, NOW)), TokenError::TooLarge);
}
