//! `sealcast token verify`: checks a token exactly as the relay does, and says why it
//! would be refused. The relay itself answers every token fault with a bare 401 / 4001
//! (the reason goes to the audit log only, so a client learns nothing about the keys);
//! whoever holds the app secret can ask here.

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, ValueEnum};
use sealcast::auth::{Audience, Authenticator, Secret, TokenError, TokenPolicy, unix_now};
use sealcast::protocol::AppId;
use serde_json::Value;

use crate::SecretSource;

/// The token kinds, as `--aud` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AudArg {
    /// A connect token (WebSocket sessions).
    Connect,
    /// A publish token (HTTP API).
    Publish,
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The app the token must be for (its `iss`, an `[[apps]] id` of the relay).
    #[arg(long)]
    pub(crate) app: String,
    /// The key id the secret belongs to (`[[apps.keys]] kid`). A token naming another kid
    /// is refused as the relay refuses it (unknown key id); without --kid, the secret is
    /// taken to be the key the token names.
    #[arg(long)]
    pub(crate) kid: Option<String>,
    /// The kind the token must be (default: the kind its `aud` claims).
    #[arg(long, value_enum)]
    pub(crate) aud: Option<AudArg>,
    /// Clock-skew allowance, as the relay's `tokens.leeway`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) leeway: Duration,
    /// Longest connect token lifetime, as the relay's `tokens.max_connect_lifetime`.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub(crate) max_connect_lifetime: Duration,
    /// Longest publish token lifetime, as the relay's `tokens.max_publish_lifetime`.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub(crate) max_publish_lifetime: Duration,
    #[command(flatten)]
    pub(crate) secret: SecretSource,
    /// The token (a JWT: header.claims.signature).
    pub(crate) token: String,
}

/// A token's header and claims, decoded without checking anything: for explanations only.
struct Peek {
    header: Value,
    claims: Value,
}

fn peek(token: &str) -> Option<Peek> {
    let mut parts = token.split('.');
    let mut json = || -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()
    };
    Some(Peek {
        header: json()?,
        claims: json()?,
    })
}

/// Verifies; on success prints the claims (JSON) on stdout and a summary on stderr.
pub(crate) fn run(args: VerifyArgs, secret: Vec<u8>) -> anyhow::Result<()> {
    let app = AppId::parse(&args.app).context("--app")?;
    let policy = TokenPolicy {
        leeway: args.leeway,
        max_connect_lifetime: args.max_connect_lifetime,
        max_publish_lifetime: args.max_publish_lifetime,
    };
    let peeked = peek(&args.token);
    let token_kid = peeked
        .as_ref()
        .and_then(|p| p.header.get("kid")?.as_str().map(str::to_owned));
    let aud = match args.aud {
        Some(AudArg::Connect) => Audience::Connect,
        Some(AudArg::Publish) => Audience::Publish,
        None => match peeked.as_ref().and_then(|p| p.claims.get("aud")?.as_str()) {
            Some("publish") => Audience::Publish,
            _ => Audience::Connect,
        },
    };
    let secret = Secret::new(secret);
    let kid = args.kid.clone().or(token_kid.clone());
    let auth = Authenticator::new([(app.clone(), vec![(kid, &secret)])], policy);
    let now = unix_now();
    let verified = match aud {
        Audience::Connect => auth.verify_connect(&args.token, now).map(|c| c.exp),
        Audience::Publish => auth.verify_publish(&args.token, now).map(|c| c.exp),
    };
    match verified {
        Ok(exp) => {
            let claims = peeked.map(|p| p.claims).unwrap_or(Value::Null);
            println!("{}", serde_json::to_string_pretty(&claims)?);
            let left = Duration::from_secs(exp.saturating_sub(now).max(0).unsigned_abs());
            eprintln!(
                "valid {} token of app {app}{}; expires in {}",
                aud.as_str(),
                token_kid.map(|k| format!(" (kid {k})")).unwrap_or_default(),
                humantime::format_duration(left)
            );
            Ok(())
        }
        Err(r) => bail!(
            "token refused ({}): {}",
            r.reason.label(),
            explain(r.reason, &args, aud, &policy, peeked.as_ref(), now)
        ),
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn text(v: Option<&Value>) -> String {
    match v {
        None => "absent".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
    }
}

/// The refusal in words, with the values that caused it and what the relay would answer.
fn explain(
    reason: TokenError,
    args: &VerifyArgs,
    aud: Audience,
    policy: &TokenPolicy,
    p: Option<&Peek>,
    now: i64,
) -> String {
    let header = |k: &str| p.and_then(|p| p.header.get(k));
    let claim = |k: &str| p.and_then(|p| p.claims.get(k));
    let int = |k: &str| claim(k).and_then(Value::as_i64).unwrap_or(0);
    let answer = if reason == TokenError::Expired {
        "the relay closes a WebSocket with 4002 and answers HTTP with 401"
    } else {
        "the relay closes a WebSocket with 4001 and answers HTTP with 401"
    };
    let why = match reason {
        TokenError::TooLarge => format!(
            "{} bytes; a token has at most {}",
            args.token.len(),
            sealcast::auth::MAX_TOKEN_BYTES
        ),
        TokenError::Malformed => {
            "not three base64url parts (header.claims.signature) of JSON objects".into()
        }
        TokenError::UnsupportedAlgorithm => format!(
            "header alg is {}; only \"HS512\" is accepted",
            text(header("alg"))
        ),
        TokenError::BadType => format!(
            "header typ is {}; only \"JWT\" (or no typ) is accepted",
            text(header("typ"))
        ),
        TokenError::UnknownApp => format!(
            "iss is {}, not the app {:?} (--app)",
            text(claim("iss")),
            args.app
        ),
        TokenError::UnknownKey => format!(
            "the token names key {}, but the secret is for key {:?} (--kid): the relay has no such key for this app",
            text(header("kid")),
            args.kid.as_deref().unwrap_or("")
        ),
        TokenError::BadSignature => {
            "the HMAC-SHA512 signature does not verify with this secret: a different secret signed it, or the token was altered".into()
        }
        TokenError::MissingClaim(c) => format!("the claim {c} is required"),
        TokenError::InvalidClaim(c) => match c {
            "exp" => format!(
                "exp ({}) must be after iat ({})",
                int("exp"),
                int("iat")
            ),
            "sub" | "jti" => format!("{c} must be 1 to 128 bytes"),
            "ns" => format!(
                "ns {} is not a namespace (1 to 256 bytes of printable ASCII, no space, no '#')",
                text(claim("ns"))
            ),
            other => format!("the claim {other} has a wrong value or type"),
        },
        TokenError::WrongAudience => format!(
            "aud is {}; a {} token is needed (a connect token never publishes, a publish token never connects)",
            text(claim("aud")),
            aud.as_str()
        ),
        TokenError::Expired => format!(
            "exp {} was {} s ago, beyond the {} s leeway (tokens.leeway): mint a new token",
            int("exp"),
            now.saturating_sub(int("exp")),
            secs(policy.leeway)
        ),
        TokenError::IssuedInFuture => format!(
            "iat {} is {} s in the future, beyond the {} s leeway (tokens.leeway): check the clock of the host that minted it",
            int("iat"),
            int("iat").saturating_sub(now),
            secs(policy.leeway)
        ),
        TokenError::LifetimeTooLong => {
            let (max, key) = match aud {
                Audience::Connect => (policy.max_connect_lifetime, "tokens.max_connect_lifetime"),
                Audience::Publish => (policy.max_publish_lifetime, "tokens.max_publish_lifetime"),
            };
            let lifetime = int("exp").saturating_sub(int("iat"));
            format!(
                "exp - iat is {lifetime} s; a {} token may live at most {} s ({key})",
                aud.as_str(),
                secs(max)
            )
        }
        TokenError::NotYetValid => format!(
            "nbf {} is {} s in the future, beyond the {} s leeway (tokens.leeway): the token is not valid yet",
            int("nbf"),
            int("nbf").saturating_sub(now),
            secs(policy.leeway)
        ),
        TokenError::CriticalHeader => {
            "the header has crit, naming extensions the relay does not implement (RFC 7515 4.1.11): mint without crit".into()
        }
    };
    format!("{why}; {answer}")
}
