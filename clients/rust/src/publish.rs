//! Publishing over HTTP (PROTOCOL.md 7): `POST /v1/publish`, `/v1/publish/batch` and
//! `/v1/revoke`, with the same retry rules as the TypeScript and Python SDKs:
//!
//! - retried: transport failures (no answer, reset, timeout) and the statuses 408, 425, 429,
//!   500, 502, 503 and 504; in a batch, items refused with `rate_limited` or `unavailable`;
//! - delays: full jitter, uniform in `[0, min(max, base * 2^attempt))`; a `Retry-After`
//!   raises the wait to at least that (capped by `max`);
//! - every attempt carries the same idempotency key(s), so a publication is applied once
//!   however many attempts it takes; the token is minted again before every attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Mutex;

use crate::payload::{self, PayloadError, PayloadKey};
use crate::token::{MintError, Signer};

/// HTTP statuses that are retried.
pub const RETRYABLE_STATUS: [u16; 7] = [408, 425, 429, 500, 502, 503, 504];
/// Batch item error codes that are retried.
pub const RETRYABLE_CODES: [&str; 2] = ["rate_limited", "unavailable"];
/// The most items one batch request carries (the relay's default `http.max_batch`).
pub const BATCH_CHUNK: usize = 1000;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The relay answered with an error (`{"error":{"code","message"}}`) after every retry.
    #[error("{status} {code}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The relay's error code (`unauthorized`, `forbidden`, `rate_limited`, ...), or
        /// `http_error` for a body that is not the relay's.
        code: String,
        /// The relay's message.
        message: String,
        /// The `Retry-After` of the last answer, if any.
        retry_after: Option<Duration>,
    },
    /// The relay could not be reached or did not answer (connection refused or reset, DNS,
    /// TLS, timeout) after every retry: there was no HTTP answer, so an app that forwards
    /// this failure answers its caller 502 or 503.
    #[error("relay unreachable: {0}")]
    Transport(String),
    /// A 2xx answer whose body is not what the protocol says.
    #[error("unexpected answer from the relay: {0}")]
    BadResponse(String),
    /// A token could not be minted (the rule is named).
    #[error("token: {0}")]
    Mint(#[from] MintError),
    /// A payload could not be encrypted.
    #[error("payload: {0}")]
    Payload(#[from] PayloadError),
}

impl Error {
    /// The HTTP status, or 0 for [`Error::Transport`] and errors made before any request.
    pub fn status(&self) -> u16 {
        match self {
            Error::Http { status, .. } => *status,
            _ => 0,
        }
    }
}

/// How requests are retried.
///
/// ```
/// use std::time::Duration;
/// use sealcast_client::RetryPolicy;
/// let r = RetryPolicy { retries: 2, ..RetryPolicy::default() };
/// assert_eq!(r.window(1), Duration::from_millis(400));
/// // A Retry-After of 3 s raises the wait to 3 s (never above `max`).
/// assert_eq!(r.delay(0, Some(Duration::from_secs(3))), Duration::from_secs(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 4).
    pub retries: u32,
    /// First backoff window (default 200 ms).
    pub base: Duration,
    /// Largest backoff window, and cap of a `Retry-After` (default 5 s).
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 4,
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The window the wait before retry `attempt + 1` is drawn from.
    pub fn window(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(attempt.min(30)))
            .min(self.max)
    }

    /// The wait before retry `attempt + 1`: full jitter, raised to `retry_after` (capped).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let d = self.window(attempt).mul_f64(rand::random::<f64>());
        match retry_after {
            Some(ra) => d.max(ra.min(self.max)),
            None => d,
        }
    }
}

/// One publication of ciphertext (`data` from [`payload::encrypt`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Publication {
    /// `<namespace>#<topic>`.
    pub channel: String,
    /// Clear-text event name.
    pub event: String,
    /// Base64 AES-256-GCM envelope.
    pub data: String,
    /// 1 to 64 bytes; generated when absent, and the same on every retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Where a publication landed: its channel's position after it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PublishResult {
    /// The publication's offset in its channel.
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: String,
}

/// The relay's refusal of one batch item.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ItemError {
    /// `bad_request`, `forbidden`, `rate_limited`, ...
    pub code: String,
    /// What was wrong.
    pub message: String,
}

/// One result of a batch, in the order of the request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum BatchItemResult {
    /// Published.
    Published(PublishResult),
    /// Refused (after retries, for a transient code).
    Failed {
        /// The refusal.
        error: ItemError,
    },
}

/// What `POST /v1/revoke` answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Revoked {
    /// Sessions closed on the node that answered.
    pub closed: u64,
    /// Unix seconds until which the revocation holds.
    #[serde(default)]
    pub until: Option<i64>,
}

/// Whose sessions and tokens to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Every connect token with this `sub`.
    Sub(String),
    /// The connect token with this `jti`.
    Jti(String),
}

type TokenFn = Arc<dyn Fn() -> Result<String, MintError> + Send + Sync>;

/// The HTTP API with a token source: the layer under [`Publisher`], for publishing
/// ciphertext made elsewhere.
///
/// ```no_run
/// # async fn demo() -> Result<(), sealcast_client::Error> {
/// use sealcast_client::publish::{HttpClient, Publication};
/// use sealcast_client::{PayloadKey, Signer, payload};
/// let signer = Signer::new("acme", Some("k1"), "an-app-secret-of-at-least-32-bytes-0123")?;
/// let http = HttpClient::new("https://relay.example", move || signer.publish_token(None, 60));
/// let key = PayloadKey::generate();
/// let data = payload::encrypt("site/1#news", "Posted", &serde_json::json!({"id": 1}), &key)?;
/// let p = Publication { channel: "site/1#news".into(), event: "Posted".into(), data, idempotency_key: Some("post-1".into()) };
/// let at = http.publish(&p).await?;
/// # let _ = at;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpClient {
    http: reqwest::Client,
    base: String,
    token: TokenFn,
    retry: RetryPolicy,
    timeout: Duration,
    roots: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

struct Outcome {
    status: u16,
    body: Value,
    retry_after: Option<Duration>,
}

/// The most bytes of an answer that are read.
const MAX_ANSWER_BYTES: usize = 4 << 20;

impl HttpClient {
    /// `url` is the relay's base (`https://relay.example`; `/v1/...` is appended); `token`
    /// is called before every attempt and returns a publish token.
    pub fn new(
        url: &str,
        token: impl Fn() -> Result<String, MintError> + Send + Sync + 'static,
    ) -> HttpClient {
        let timeout = Duration::from_secs(10);
        HttpClient {
            http: build(timeout, &[]),
            base: url.trim_end_matches('/').to_string(),
            token: Arc::new(token),
            retry: RetryPolicy::default(),
            timeout,
            roots: Vec::new(),
        }
    }

    /// The same client with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> HttpClient {
        self.retry = retry;
        self
    }

    /// The same client with another per-attempt timeout (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> HttpClient {
        self.timeout = timeout;
        self.http = build(timeout, &self.roots);
        self
    }

    /// The same client also trusting the CA certificate(s) in `pem` (for a relay whose
    /// certificate chains to a private CA); the Mozilla roots stay trusted.
    pub fn with_root_certificates_pem(mut self, pem: &[u8]) -> Result<HttpClient, Error> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|_| Error::Transport("the CA certificates are not PEM".into()))?;
        self.roots.extend(certs);
        self.http = build(self.timeout, &self.roots);
        Ok(self)
    }

    async fn post_once(&self, path: &str, body: &Value) -> Result<Outcome, Error> {
        let token = (self.token)()?;
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|e| Error::Transport(e.without_url().to_string()))?;
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut raw = Vec::new();
        loop {
            match r.chunk().await {
                Ok(Some(c)) if raw.len() + c.len() <= MAX_ANSWER_BYTES => raw.extend_from_slice(&c),
                Ok(Some(_)) => return Err(Error::BadResponse("answer too large".into())),
                Ok(None) => break,
                // An error status whose body broke off: the status still says it.
                Err(_) if !(200..300).contains(&status) => break,
                Err(e) => return Err(Error::Transport(e.without_url().to_string())),
            }
        }
        let body = serde_json::from_slice(&raw).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&raw[..raw.len().min(200)]).into())
        });
        Ok(Outcome {
            status,
            body,
            retry_after,
        })
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        let mut attempt = 0;
        loop {
            let (retryable, retry_after, err) = match self.post_once(path, body).await {
                Ok(o) if (200..300).contains(&o.status) => return Ok(o.body),
                Ok(o) => (
                    RETRYABLE_STATUS.contains(&o.status),
                    o.retry_after,
                    http_error(o),
                ),
                Err(e @ Error::Transport(_)) => (true, None, e),
                Err(e) => return Err(e),
            };
            if !retryable || attempt >= self.retry.retries {
                return Err(err);
            }
            tokio::time::sleep(self.retry.delay(attempt, retry_after)).await;
            attempt += 1;
        }
    }

    /// `POST /v1/publish`, retried with one idempotency key (generated when absent).
    pub async fn publish(&self, p: &Publication) -> Result<PublishResult, Error> {
        let key = p.idempotency_key.clone().unwrap_or_else(new_key);
        let body =
            json!({"channel": p.channel, "event": p.event, "data": p.data, "idempotency_key": key});
        let v = self.post("/v1/publish", &body).await?;
        serde_json::from_value(v).map_err(|_| Error::BadResponse("expected {offset, epoch}".into()))
    }

    /// `POST /v1/publish/batch` in chunks of [`BATCH_CHUNK`]: one result per publication, in
    /// order. Items refused with a transient code are retried with their same key.
    pub async fn publish_batch(&self, ps: &[Publication]) -> Result<Vec<BatchItemResult>, Error> {
        let items: Vec<Value> = ps
            .iter()
            .map(|p| {
                let key = p.idempotency_key.clone().unwrap_or_else(new_key);
                json!({"channel": p.channel, "event": p.event, "data": p.data, "idempotency_key": key})
            })
            .collect();
        let mut results: Vec<Option<BatchItemResult>> = vec![None; items.len()];
        for start in (0..items.len()).step_by(BATCH_CHUNK) {
            let mut todo: Vec<usize> = (start..items.len().min(start + BATCH_CHUNK)).collect();
            let mut attempt = 0;
            while !todo.is_empty() {
                let body =
                    json!({"publications": todo.iter().map(|&i| &items[i]).collect::<Vec<_>>()});
                let v = self.post("/v1/publish/batch", &body).await?;
                let rs: Vec<BatchItemResult> = serde_json::from_value(v["results"].clone())
                    .map_err(|_| Error::BadResponse("expected {results: [...]}".into()))?;
                if rs.len() != todo.len() {
                    return Err(Error::BadResponse(
                        "batch results do not match the request".into(),
                    ));
                }
                let mut again = Vec::new();
                for (&i, r) in todo.iter().zip(rs) {
                    if let BatchItemResult::Failed { error } = &r {
                        if RETRYABLE_CODES.contains(&error.code.as_str())
                            && attempt < self.retry.retries
                        {
                            again.push(i);
                        }
                    }
                    results[i] = Some(r);
                }
                todo = again;
                if !todo.is_empty() {
                    tokio::time::sleep(self.retry.delay(attempt, None)).await;
                    attempt += 1;
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every item answered"))
            .collect())
    }

    /// `POST /v1/revoke` (needs an app-wide publish token): closes the matching sessions
    /// with 4003 and refuses the tokens until `until` (unix seconds; default: the relay's).
    pub async fn revoke(&self, who: &Revocation, until: Option<i64>) -> Result<Revoked, Error> {
        let mut body = match who {
            Revocation::Sub(s) => json!({"sub": s}),
            Revocation::Jti(j) => json!({"jti": j}),
        };
        if let Some(u) = until {
            body["until"] = json!(u);
        }
        let v = self.post("/v1/revoke", &body).await?;
        serde_json::from_value(v).map_err(|_| Error::BadResponse("expected {closed}".into()))
    }
}

fn build(timeout: Duration, roots: &[reqwest::Certificate]) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        // A redirect would resend the token elsewhere: the relay never redirects.
        .redirect(reqwest::redirect::Policy::none());
    for r in roots {
        b = b.add_root_certificate(r.clone());
    }
    b.build().unwrap_or_default()
}

fn http_error(o: Outcome) -> Error {
    let (code, message) = match o.body["error"]["code"].as_str() {
        Some(c) => (
            c.to_string(),
            o.body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ),
        None => (
            "http_error".to_string(),
            o.body.as_str().unwrap_or("unexpected response").to_string(),
        ),
    };
    Error::Http {
        status: o.status,
        code,
        message,
        retry_after: o.retry_after,
    }
}

/// A fresh idempotency key: 128 random bits in hex.
fn new_key() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// For an app backend: mints publish tokens, encrypts, publishes, revokes.
///
/// ```no_run
/// # async fn demo() -> Result<(), sealcast_client::Error> {
/// use sealcast_client::{PayloadKey, Publisher, Signer};
/// let signer = Signer::new("acme", Some("k1"), std::env::var("ACME_KEY_1").unwrap_or_default())?;
/// let key = PayloadKey::from_base64(&std::env::var("PAYLOAD_KEY").unwrap_or_default())?;
/// let pub_ = Publisher::new("https://relay.example", signer, key);
/// let at = pub_.publish("site/1#absences", "AddAbsence", &serde_json::json!({"who": "ana"})).await?;
/// println!("offset {} of epoch {}", at.offset, at.epoch);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Publisher {
    http: HttpClient,
    key: PayloadKey,
}

impl Publisher {
    /// Publishes to the relay at `url` (its base, `https://relay.example`) with app-wide
    /// publish tokens of `signer` (60 s, each reused for half its life), encrypting with `key`.
    pub fn new(url: &str, signer: Signer, key: PayloadKey) -> Publisher {
        Publisher::with_token_options(url, signer, key, None, 60)
    }

    /// As [`Publisher::new`], with publish tokens limited to `ns` and living `ttl_seconds`.
    pub fn with_token_options(
        url: &str,
        signer: Signer,
        key: PayloadKey,
        ns: Option<&str>,
        ttl_seconds: u64,
    ) -> Publisher {
        let ns = ns.map(str::to_string);
        let cache: Mutex<Option<(String, Instant)>> = Mutex::new(None);
        let token = move || {
            // The data under the lock is a cached token: a poisoned lock is still usable.
            let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((t, until)) = c.as_ref() {
                if Instant::now() < *until {
                    return Ok(t.clone());
                }
            }
            let t = signer.publish_token(ns.as_deref(), ttl_seconds)?;
            *c = Some((
                t.clone(),
                Instant::now() + Duration::from_secs(ttl_seconds) / 2,
            ));
            Ok(t)
        };
        Publisher {
            http: HttpClient::new(url, token),
            key,
        }
    }

    /// The same publisher with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Publisher {
        self.http = self.http.with_retry(retry);
        self
    }

    /// The same publisher also trusting the CA certificate(s) in `pem`.
    pub fn with_root_certificates_pem(mut self, pem: &[u8]) -> Result<Publisher, Error> {
        self.http = self.http.with_root_certificates_pem(pem)?;
        Ok(self)
    }

    /// The HTTP layer (for ciphertext made elsewhere).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Encrypts `payload` (any JSON value) for `channel`/`event` and publishes it.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        event: &str,
        payload: &T,
    ) -> Result<PublishResult, Error> {
        self.publish_with_key(channel, event, payload, None).await
    }

    /// As [`Publisher::publish`] with the app's own idempotency key (1 to 64 bytes): the
    /// same key published twice within the history window is delivered once.
    pub async fn publish_with_key<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        event: &str,
        payload: &T,
        idempotency_key: Option<&str>,
    ) -> Result<PublishResult, Error> {
        let data = payload::encrypt(channel, event, payload, &self.key)?;
        self.http
            .publish(&Publication {
                channel: channel.into(),
                event: event.into(),
                data,
                idempotency_key: idempotency_key.map(Into::into),
            })
            .await
    }

    /// Encrypts and publishes `(channel, event, payload)` items in batch requests.
    pub async fn publish_batch<T: Serialize>(
        &self,
        items: &[(&str, &str, T)],
    ) -> Result<Vec<BatchItemResult>, Error> {
        let ps = items
            .iter()
            .map(|(channel, event, p)| {
                Ok(Publication {
                    channel: (*channel).into(),
                    event: (*event).into(),
                    data: payload::encrypt(channel, event, p, &self.key)?,
                    idempotency_key: None,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        self.http.publish_batch(&ps).await
    }

    /// Revokes every session and connect token of `sub` (they close with 4003).
    pub async fn revoke_sub(&self, sub: &str) -> Result<Revoked, Error> {
        self.http.revoke(&Revocation::Sub(sub.into()), None).await
    }

    /// Revokes the connect token with this `jti`.
    pub async fn revoke_jti(&self, jti: &str) -> Result<Revoked, Error> {
        self.http.revoke(&Revocation::Jti(jti.into()), None).await
    }
}

#[cfg(test)]
mod tests;
