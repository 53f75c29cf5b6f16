//! Property tests of token parsing and verification (PROTOCOL.md 2).
//!
//! Properties: nothing panics; `jwt::split` accepts only three non-empty base64url parts
//! within the size limit; a valid token verifies to exactly the claims it was minted with;
//! any single change to a valid token (a character of its text, or a byte of its decoded
//! header, payload or signature) makes it refused; arbitrary text never verifies; and the
//! time and audience rules hold for every accepted token (checked against an oracle over
//! arbitrary `iat`, `exp` and `now`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::jwt;
use super::*;

const K1: &[u8] = b"proptest-key-one-0123456789abcdefghij";
const K2: &[u8] = b"proptest-key-two-0123456789abcdefghij";
const OTHER: &[u8] = b"proptest-key-other-0123456789abcdefgh";
const NOW: i64 = 1_800_000_000;

fn auth() -> Authenticator {
    let k1 = Secret::new(K1.to_vec());
    let k2 = Secret::new(K2.to_vec());
    let o = Secret::new(OTHER.to_vec());
    Authenticator::new(
        [
            (
                AppId::parse("acme").unwrap(),
                vec![(Some("k1".to_string()), &k1), (Some("k2".to_string()), &k2)],
            ),
            (
                AppId::parse("other").unwrap(),
                vec![(Some("k1".to_string()), &o)],
            ),
        ],
        TokenPolicy::default(),
    )
}

const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A valid token's ingredients.
#[derive(Debug, Clone)]
struct Minted {
    app: &'static str,
    kid: Option<&'static str>,
    secret: &'static [u8],
    aud: Audience,
    sub: String,
    ns: Option<String>,
    iat: i64,
    ttl: i64,
    jti: Option<String>,
}

impl Minted {
    fn claims(&self) -> Value {
        let mut c = json!({
            "iss": self.app, "aud": self.aud.as_str(), "iat": self.iat, "exp": self.iat + self.ttl,
        });
        if self.aud == Audience::Connect {
            c["sub"] = json!(self.sub);
        }
        if let Some(ns) = &self.ns {
            c["ns"] = json!(ns);
        }
        if let Some(j) = &self.jti {
            c["jti"] = json!(j);
        }
        c
    }

    fn header(&self) -> Value {
        let mut h = json!({"alg":"HS512","typ":"JWT"});
        if let Some(k) = self.kid {
            h["kid"] = json!(k);
        }
        h
    }

    fn token(&self) -> String {
        sign_with_header(&self.header(), &self.claims(), self.secret)
    }
}

fn minted() -> impl Strategy<Value = Minted> {
    let key = prop_oneof![
        Just(("acme", Some("k1"), K1)),
        Just(("acme", Some("k2"), K2)),
        Just(("acme", None, K1)),
        Just(("acme", None, K2)),
        Just(("other", Some("k1"), OTHER)),
        Just(("other", None, OTHER)),
    ];
    (
        key,
        any::<bool>(),
        "[ -~]{1,128}",
        "[!-\"$-~]{1,256}",
        any::<bool>(),
        -29i64..29,
        1i64..=300,
        proptest::option::of("[ -~]{1,128}"),
    )
        .prop_map(
            |((app, kid, secret), connect, sub, ns, with_ns, skew, ttl, jti)| Minted {
                app,
                kid,
                secret,
                aud: if connect {
                    Audience::Connect
                } else {
                    Audience::Publish
                },
                sub,
                ns: (connect || with_ns).then_some(ns),
                iat: NOW + skew,
                ttl,
                jti,
            },
        )
}

fn verify(a: &Authenticator, token: &str, aud: Audience, now: i64) -> Result<(), TokenError> {
    match aud {
        Audience::Connect => a.verify_connect(token, now).map(|_| ()),
        Audience::Publish => a.verify_publish(token, now).map(|_| ()),
    }
    .map_err(|r| r.reason)
}

fn assert_never_verifies(a: &Authenticator, token: &str) {
    for now in [NOW, 0, i64::MIN, i64::MAX] {
        assert!(a.verify_connect(token, now).is_err(), "{token}");
        assert!(a.verify_publish(token, now).is_err(), "{token}");
    }
}

/// Replaces the decoded bytes of part `part` (0 header, 1 payload, 2 signature).
fn with_part(token: &str, part: usize, f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut bytes = URL_SAFE_NO_PAD.decode(&parts[part]).unwrap();
    f(&mut bytes);
    parts[part] = URL_SAFE_NO_PAD.encode(&bytes);
    parts.join(".")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn split_accepts_only_three_nonempty_base64url_parts(s in prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_=+/.-]{0,200}",
        proptest::collection::vec("[A-Za-z0-9_-]{0,40}", 0..5).prop_map(|v| v.join(".")),
    ]) {
        match jwt::split(&s) {
            Ok(p) => {
                let parts: Vec<&str> = s.split('.').collect();
                prop_assert_eq!(parts.len(), 3);
                prop_assert!(s.len() <= MAX_TOKEN_BYTES);
                for part in &parts {
                    prop_assert!(!part.is_empty());
                    prop_assert!(part.bytes().all(|b| B64URL.as_bytes().contains(&b)), "{}", part);
                }
                let input = format!("{}.{}", parts[0], parts[1]);
                prop_assert_eq!(p.signing_input, input.as_bytes());
                prop_assert_eq!(URL_SAFE_NO_PAD.encode(&p.header_json), parts[0]);
                prop_assert_eq!(URL_SAFE_NO_PAD.encode(&p.claims_json), parts[1]);
                // Canonical: re-encoding the decoded signature gives the same text, so two
                // texts never carry the same MAC.
                prop_assert_eq!(URL_SAFE_NO_PAD.encode(&p.signature), parts[2]);
            }
            Err(e) => prop_assert!(matches!(e, TokenError::Malformed | TokenError::TooLarge)),
        }
        assert_never_verifies(&auth(), &s);
    }

    #[test]
    fn arbitrary_strings_never_verify(s in any::<String>(), dotted in proptest::collection::vec("[A-Za-z0-9_-]{1,120}", 3)) {
        let a = auth();
        assert_never_verifies(&a, &s);
        assert_never_verifies(&a, &dotted.join("."));
    }

    #[test]
    fn structurally_valid_unsigned_tokens_never_verify(
        m in minted(),
        sig in proptest::collection::vec(any::<u8>(), 0..100),
        alg in prop_oneof![Just("HS512"), Just("none"), Just("HS256"), Just("hs512"), Just("HS512 ")],
    ) {
        let mut h = m.header();
        h["alg"] = json!(alg);
        let text = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            URL_SAFE_NO_PAD.encode(m.claims().to_string()),
            URL_SAFE_NO_PAD.encode(&sig)
        );
        assert_never_verifies(&auth(), &text);
        // An empty signature part is a structure error, not a MAC check.
        let unsigned = text.rsplit_once('.').unwrap().0.to_string() + ".";
        assert_never_verifies(&auth(), &unsigned);
    }

    #[test]
    fn valid_tokens_verify_to_their_claims(m in minted()) {
        let a = auth();
        let t = m.token();
        match m.aud {
            Audience::Connect => {
                let c = a.verify_connect(&t, NOW).expect("valid connect token refused");
                prop_assert_eq!(c.app.as_str(), m.app);
                prop_assert_eq!(&c.sub, &m.sub);
                prop_assert_eq!(Some(c.ns.as_str()), m.ns.as_deref());
                prop_assert_eq!(c.iat, m.iat);
                prop_assert_eq!(c.exp, m.iat + m.ttl);
                prop_assert_eq!(c.jti, m.jti.clone());
                // Without a header kid, the verifier reports the key that matched.
                match m.kid {
                    Some(k) => prop_assert_eq!(c.kid.as_deref(), Some(k)),
                    None => prop_assert_eq!(
                        c.kid.as_deref(),
                        Some(if m.secret == K2 { "k2" } else { "k1" })
                    ),
                }
                // A connect token never publishes.
                prop_assert_eq!(a.verify_publish(&t, NOW).unwrap_err().reason, TokenError::WrongAudience);
            }
            Audience::Publish => {
                let p = a.verify_publish(&t, NOW).expect("valid publish token refused");
                prop_assert_eq!(p.app.as_str(), m.app);
                prop_assert_eq!(p.ns.as_ref().map(Namespace::as_str), m.ns.as_deref());
                prop_assert_eq!(p.exp, m.iat + m.ttl);
                prop_assert_eq!(p.jti, m.jti.clone());
                // A publish token never connects.
                prop_assert_eq!(a.verify_connect(&t, NOW).unwrap_err().reason, TokenError::WrongAudience);
            }
        }
    }

    #[test]
    fn any_changed_character_is_refused(m in minted(), pos in any::<usize>(), with in any::<char>()) {
        let a = auth();
        let t = m.token();
        prop_assume!(verify(&a, &t, m.aud, NOW).is_ok());
        let i = pos % t.len();
        let old = t.as_bytes()[i] as char;
        prop_assume!(old != with);
        let mut changed = String::with_capacity(t.len() + 4);
        changed.push_str(&t[..i]);
        changed.push(with);
        changed.push_str(&t[i + 1..]);
        assert_never_verifies(&a, &changed);
        // Deleting or duplicating that character is refused too.
        let deleted = format!("{}{}", &t[..i], &t[i + 1..]);
        assert_never_verifies(&a, &deleted);
        let doubled = format!("{}{}{}", &t[..i], old, &t[i..]);
        assert_never_verifies(&a, &doubled);
    }

    #[test]
    fn any_changed_decoded_byte_is_refused(
        m in minted(),
        part in 0usize..3,
        pos in any::<usize>(),
        flip in 1u8..=255,
    ) {
        let a = auth();
        let t = m.token();
        let changed = with_part(&t, part, |b| {
            let i = pos % b.len();
            b[i] ^= flip;
        });
        prop_assert_ne!(&changed, &t);
        assert_never_verifies(&a, &changed);
        // Truncated and extended parts are refused as well.
        let shorter = with_part(&t, part, |b| { b.pop(); });
        if shorter.split('.').all(|p| !p.is_empty()) {
            assert_never_verifies(&a, &shorter);
        }
        let longer = with_part(&t, part, |b| b.push(flip));
        assert_never_verifies(&a, &longer);
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused(m in minted()) {
        let a = auth();
        let wrong: &[u8] = if m.secret == K1 { K2 } else { K1 };
        let mut forged = m.clone();
        forged.secret = wrong;
        // Same app, another of its keys named as this kid, or another app's key.
        if !(m.app == "acme" && m.kid.is_none()) {
            assert_never_verifies(&a, &forged.token());
        }
        forged.secret = OTHER;
        if m.app == "acme" {
            assert_never_verifies(&a, &forged.token());
        }
    }

    #[test]
    fn accepted_tokens_obey_the_time_and_audience_rules(
        iat in prop_oneof![any::<i64>(), (NOW - 200_000)..(NOW + 200_000)],
        life in prop_oneof![any::<i64>(), -10i64..100_000],
        now in prop_oneof![any::<i64>(), (NOW - 200_000)..(NOW + 200_000)],
        aud in prop_oneof![Just("connect"), Just("publish"), Just("Connect"), Just("")],
        want_connect in any::<bool>(),
    ) {
        let a = auth();
        let exp = iat.wrapping_add(life);
        let claims = json!({"iss":"acme","sub":"u","ns":"n/1","aud":aud,"iat":iat,"exp":exp});
        let t = sign_with_header(&json!({"alg":"HS512","typ":"JWT","kid":"k1"}), &claims, K1);
        let kind = if want_connect { Audience::Connect } else { Audience::Publish };
        let got = verify(&a, &t, kind, now);
        let p = TokenPolicy::default();
        let max = i64::try_from(match kind {
            Audience::Connect => p.max_connect_lifetime,
            Audience::Publish => p.max_publish_lifetime,
        }.as_secs()).unwrap();
        let leeway = i64::try_from(p.leeway.as_secs()).unwrap();
        // The oracle, in i128 so that it cannot overflow.
        let (iat_w, exp_w, now_w) = (i128::from(iat), i128::from(exp), i128::from(now));
        let valid = aud == kind.as_str()
            && exp_w > iat_w
            && exp_w - iat_w <= i128::from(max)
            && now_w < exp_w + i128::from(leeway)
            && iat_w <= now_w + i128::from(leeway);
        prop_assert_eq!(got.is_ok(), valid, "iat={} exp={} now={} aud={} -> {:?}", iat, exp, now, aud, got);
    }

    #[test]
    fn claims_of_the_wrong_shape_are_refused(
        field in prop_oneof![Just("iss"), Just("sub"), Just("ns"), Just("aud"), Just("iat"), Just("exp"), Just("jti")],
        value in prop_oneof![
            Just(Value::Null),
            Just(json!(["connect"])),
            Just(json!({"a":1})),
            Just(json!(1.5)),
            Just(json!("")),
            Just(json!(true)),
            Just(json!(u64::MAX)),
            Just(json!("x".repeat(129))),
            Just(json!("a b#c")),
        ],
        drop_it in any::<bool>(),
    ) {
        let a = auth();
        let mut claims = json!({"iss":"acme","sub":"u","ns":"n/1","aud":"connect","iat":NOW,"exp":NOW+60,"jti":"j"});
        if drop_it {
            claims.as_object_mut().unwrap().remove(field);
        } else {
            claims[field] = value.clone();
        }
        let t = sign_with_header(&json!({"alg":"HS512","typ":"JWT","kid":"k1"}), &claims, K1);
        let got = a.verify_connect(&t, NOW);
        // jti is optional: dropping it, or null, is fine. Every other change is refused.
        let harmless = field == "jti" && (drop_it || value.is_null());
        if harmless {
            prop_assert!(got.is_ok(), "{:?}", got);
        } else if let Ok(c) = got {
            // The only changes that may pass are those that leave the claim valid.
            let ok_string = |v: &Value, max: usize| v.as_str().is_some_and(|s| !s.is_empty() && s.len() <= max);
            prop_assert!(!drop_it, "{} dropped yet accepted", field);
            match field {
                "sub" => prop_assert!(ok_string(&value, 128) && c.sub == value.as_str().unwrap()),
                "jti" => prop_assert!(ok_string(&value, 128)),
                "ns" => prop_assert!(value.as_str().is_some_and(|s| Namespace::parse(s).is_ok())),
                other => prop_assert!(false, "{} = {} accepted", other, value),
            }
        }
    }
}
