//! The subscriber: one WebSocket to the relay shared by every subscription, on
//! tokio-tungstenite, that behaves like the TypeScript SDK (PROTOCOL.md 10):
//!
//! - it reconnects by itself with full-jitter backoff, per close code ([`close_policy`]):
//!   1002, 1003, 1007, 1008, 1009, 4001 and 4003 are never retried (reported as
//!   [`ErrorKind::Closed`]); after a 4002 on a session that was up it fetches a new token and
//!   reconnects within 250 ms; after 4029 it waits at least 5 s; any other end (1006, ...)
//!   means "reconnect with backoff";
//! - on every reconnect it resubscribes each channel with `since` = the last position it saw
//!   there, so nothing is missed and nothing is delivered twice; when the relay cannot vouch
//!   for continuity (`recovered:false`) the subscription gets [`Event::RecoveryFailed`] and
//!   its [`SubscribeOptions::on_recovery_failed`] callback runs: reload from the app;
//! - it refreshes the token in-band (a `refresh` frame) at 80% of its remaining lifetime;
//! - it decrypts every publication with a [`KeyRing`] and delivers the plaintext, which must
//!   be JSON; one that fails authentication with every key is dropped and reported.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sealcast_client::subscriber::{Event, Options, SubscribeOptions, Subscriber};
//! use sealcast_client::{PayloadKey, Signer};
//! let signer = Signer::new("acme", Some("k1"), std::env::var("ACME_KEY_1")?)?;
//! let key = PayloadKey::from_base64(&std::env::var("PAYLOAD_KEY")?)?;
//! let sub = Subscriber::start(Options::new("wss://relay.example/v1/ws", key, move || {
//!     let token = signer.connect_token("site/1/dashboard/7", "user-42", 3600);
//!     async move { token } // called on every (re)connect and before expiry
//! }));
//! let mut absences = sub.subscribe("site/1/dashboard/7#absences", SubscribeOptions::default())?;
//! while let Some(event) = absences.next().await {
//!     match event {
//!         Event::Publication(p) => println!("{} at {}: {}", p.event, p.offset, p.json::<serde_json::Value>()?),
//!         Event::RecoveryFailed(_) => { /* publications were lost: reload state from the app */ }
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

mod channels;
mod close;
mod task;
mod timing;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use close::{CLOSE_CODES, Retry, close_policy};
pub use timing::Backoff;

use crate::names::{self, NameError};
use crate::payload::KeyRing;

/// Any error a token source returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TokenFuture = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;
type TokenFn = Arc<dyn Fn() -> TokenFuture + Send + Sync>;
type ErrorFn = Arc<dyn Fn(&SubscriberError) + Send + Sync>;
type RecoveryFn = Arc<dyn Fn(&RecoveryFailed) + Send + Sync>;
type StateFn = Arc<dyn Fn(&ConnectionState) + Send + Sync>;

/// A position in a channel's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The channel's epoch.
    pub epoch: String,
    /// The last offset.
    pub offset: u64,
}

/// One decrypted publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Its channel.
    pub channel: String,
    /// Its event name.
    pub event: String,
    /// Its offset in the channel.
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: String,
    /// True while publications missed during a disconnection are replayed.
    pub replayed: bool,
    /// The authenticated plaintext (UTF-8 JSON).
    pub plaintext: Vec<u8>,
}

impl Publication {
    /// The plaintext parsed as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.plaintext)
    }
}

/// Continuity was lost: publications between `since` and `position` may be missing, so the
/// app reloads its state up to `position`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryFailed {
    /// The channel.
    pub channel: String,
    /// Where the subscriber asked to resume from.
    pub since: Position,
    /// The channel's position now; live publications follow from here.
    pub position: Position,
}

/// What a subscription receives, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A publication, decrypted.
    Publication(Publication),
    /// The subscription is live (again, after each reconnect), at `position`. `recovered`
    /// is the relay's answer to `since`: `None` when none was asked.
    Subscribed {
        /// Where the stream stands.
        position: Position,
        /// `Some(true)`: every publication after the asked position follows.
        recovered: Option<bool>,
    },
    /// Publications may be missing: reload from the app. Comes before its `Subscribed`.
    RecoveryFailed(RecoveryFailed),
    /// The relay refused the subscription (`forbidden`, `limit_exceeded`, ...); it is not
    /// retried and the subscription ends.
    Refused {
        /// The error frame's code.
        code: String,
        /// Its message.
        message: String,
    },
}

/// The connection, as a UI would show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not started.
    Idle,
    /// Opening a socket and authenticating.
    Connecting {
        /// Reconnect attempt number (0 on a healthy start).
        attempt: u32,
    },
    /// Authenticated.
    Connected {
        /// The relay's session id.
        session: String,
        /// The namespace the token grants.
        ns: String,
        /// When the token expires, unix seconds (moved by each refresh).
        expires_at: i64,
    },
    /// Not connected.
    Disconnected {
        /// The close code (1006: no close frame; 4000: [`Subscriber::reconnect`]).
        code: u16,
        /// The close reason.
        reason: String,
        /// Whether the subscriber reconnects by itself.
        will_retry: bool,
        /// The delay before the next attempt, when it does.
        retry_in: Option<Duration>,
    },
}

/// The kinds of [`SubscriberError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A publication failed authentication with every key of the ring: dropped.
    DecryptFailed,
    /// Decrypted, but not JSON: dropped.
    BadPayload,
    /// An `error` frame from the relay.
    RelayError,
    /// The relay closed with a code that is not retried; the subscriber has stopped.
    Closed,
    /// The token source failed.
    Token,
    /// An unexpected frame from the relay.
    Protocol,
    /// Offsets jumped (never, with a conforming relay).
    Gap,
}

/// What the subscriber reports through [`Options::on_error`]. Never carries plaintext or a
/// token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SubscriberError {
    /// What happened.
    pub kind: ErrorKind,
    /// In words.
    pub message: String,
    /// The channel concerned, if any.
    pub channel: Option<String>,
    /// The relay's error code, or the close code, if any.
    pub code: Option<String>,
}

/// How a [`Subscriber`] connects.
#[derive(Clone)]
pub struct Options {
    url: String,
    get_token: TokenFn,
    keys: KeyRing,
    backoff: Backoff,
    refresh_at: Option<f64>,
    on_error: Option<ErrorFn>,
    on_state: Option<StateFn>,
    buffer: usize,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("url", &self.url)
            .field("backoff", &self.backoff)
            .field("refresh_at", &self.refresh_at)
            .field("buffer", &self.buffer)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Connects to `url` (`wss://relay.example/v1/ws`; an `http(s)://` base gets `/v1/ws`),
    /// decrypts with `keys`, and calls `get_token` for a connect token on every (re)connect
    /// and before the token expires.
    pub fn new<F, Fut, E>(url: &str, keys: impl Into<KeyRing>, get_token: F) -> Options
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let get_token: TokenFn = Arc::new(move || {
            let fut = get_token();
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        Options {
            url: ws_url(url),
            get_token,
            keys: keys.into(),
            backoff: Backoff::default(),
            refresh_at: Some(0.8),
            on_error: None,
            on_state: None,
            buffer: 1024,
            timeout: Duration::from_secs(10),
            tls: None,
        }
    }

    /// Reconnect backoff (default [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Options {
        self.backoff = backoff;
        self
    }

    /// Fraction of the token's remaining lifetime after which it is refreshed in-band
    /// (default `Some(0.8)`); `None` never refreshes (the relay then closes with 4002 at
    /// expiry, and the subscriber reconnects with a new token).
    pub fn refresh_at(mut self, ratio: Option<f64>) -> Options {
        self.refresh_at = ratio.map(|r| r.clamp(0.0, 1.0));
        self
    }

    /// Called for every [`SubscriberError`] (default: a `tracing` warning).
    pub fn on_error(mut self, f: impl Fn(&SubscriberError) + Send + Sync + 'static) -> Options {
        self.on_error = Some(Arc::new(f));
        self
    }

    /// Called on every change of the [`ConnectionState`], in order (a UI's badge; the
    /// [`Subscriber::watch_state`] receiver may skip states that pass quickly).
    pub fn on_state(mut self, f: impl Fn(&ConnectionState) + Send + Sync + 'static) -> Options {
        self.on_state = Some(Arc::new(f));
        self
    }

    /// Events buffered per subscription (default 1024, at least 1). A subscription that is
    /// not read holds the connection back, and the relay then closes it as a slow consumer
    /// (4008), after which it recovers.
    pub fn buffer(mut self, events: usize) -> Options {
        self.buffer = events.max(1);
        self
    }

    /// The TLS settings of `wss://` connections (for a relay whose certificate chains to a
    /// private CA); by default the Mozilla roots of `webpki-roots` are trusted.
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Options {
        self.tls = Some(config);
        self
    }

    /// Time allowed to fetch a token, open the socket and be authenticated (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Options {
        self.timeout = timeout;
        self
    }
}

/// `ws(s)://.../v1/ws` from a WebSocket URL or an `http(s)://` base.
fn ws_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", r)) => ("ws", r),
        Some(("https", r)) => ("wss", r),
        Some((s, r)) => (s, r),
        None => return url.to_string(),
    };
    if rest.contains('/') && !rest.ends_with('/') {
        format!("{scheme}://{rest}")
    } else {
        format!("{scheme}://{}/v1/ws", rest.trim_end_matches('/'))
    }
}

/// Options of one subscription.
#[derive(Clone, Default)]
pub struct SubscribeOptions {
    since: Option<Position>,
    on_recovery_failed: Option<RecoveryFn>,
}

impl std::fmt::Debug for SubscribeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscribeOptions")
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

impl SubscribeOptions {
    /// Start after this position (for example the one the app's snapshot was taken at)
    /// rather than now: everything after it is replayed, or recovery fails.
    pub fn since(mut self, position: Position) -> SubscribeOptions {
        self.since = Some(position);
        self
    }

    /// Called when the relay answers `recovered:false` (before the event is queued).
    pub fn on_recovery_failed(
        mut self,
        f: impl Fn(&RecoveryFailed) + Send + Sync + 'static,
    ) -> SubscribeOptions {
        self.on_recovery_failed = Some(Arc::new(f));
        self
    }
}

/// A connection to the relay, shared by its subscriptions. Dropping it (or [`close`]) stops
/// it; the subscriptions then end.
///
/// [`close`]: Subscriber::close
#[derive(Debug)]
pub struct Subscriber {
    cmd: mpsc::UnboundedSender<task::Command>,
    state: watch::Receiver<ConnectionState>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    next_listener: std::sync::atomic::AtomicU64,
    buffer: usize,
}

impl Subscriber {
    /// Starts connecting, on the current tokio runtime.
    pub fn start(options: Options) -> Subscriber {
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(ConnectionState::Idle);
        let (stop, stop_rx) = watch::channel(false);
        let buffer = options.buffer;
        let task = tokio::spawn(task::Task::new(options, cmd_rx, state_tx, stop_rx).run());
        Subscriber {
            cmd,
            state,
            stop,
            task: Some(task),
            next_listener: std::sync::atomic::AtomicU64::new(1),
            buffer,
        }
    }

    /// Subscribes to `channel` (`<namespace>#<topic>`, in the token's namespace). Several
    /// subscriptions to one channel share one relay subscription.
    pub fn subscribe(
        &self,
        channel: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, NameError> {
        names::check_channel(channel)?;
        let (tx, rx) = mpsc::channel(self.buffer);
        let id = self
            .next_listener
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let position = Arc::new(Mutex::new(options.since.clone()));
        // A send fails only once the subscriber has stopped; the subscription then ends.
        let _ = self.cmd.send(task::Command::Subscribe {
            channel: channel.into(),
            listener: channels::Listener {
                id,
                tx,
                on_recovery_failed: options.on_recovery_failed,
                position: Arc::clone(&position),
            },
            since: options.since,
        });
        Ok(Subscription {
            channel: channel.into(),
            id,
            rx,
            cmd: self.cmd.clone(),
            position,
        })
    }

    /// The connection state now.
    pub fn state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    /// A receiver of every state change.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Replaces the payload key ring (key rotation).
    pub fn set_keys(&self, keys: KeyRing) {
        let _ = self.cmd.send(task::Command::SetKeys(keys));
    }

    /// Drops the socket and reconnects at once, recovering every subscription.
    pub fn reconnect(&self) {
        let _ = self.cmd.send(task::Command::Reconnect);
    }

    /// Closes the connection (code 1000) and waits for the subscriber to stop.
    pub async fn close(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// One subscription: its events, in order. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    channel: String,
    id: u64,
    rx: mpsc::Receiver<Event>,
    cmd: mpsc::UnboundedSender<task::Command>,
    position: Arc<Mutex<Option<Position>>>,
}

impl Subscription {
    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next event; `None` once the subscription has ended (refused, or the subscriber
    /// stopped).
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The last position the subscriber saw on this channel (where it would resume).
    pub fn position(&self) -> Option<Position> {
        self.position
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.cmd.send(task::Command::Unsubscribe {
            channel: std::mem::take(&mut self.channel),
            id: self.id,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(ws_url("http://127.0.0.1:8080"), "ws://127.0.0.1:8080/v1/ws");
        assert_eq!(
            ws_url("https://relay.example/"),
            "wss://relay.example/v1/ws"
        );
        assert_eq!(
            ws_url("wss://relay.example/v1/ws"),
            "wss://relay.example/v1/ws"
        );
        assert_eq!(ws_url("ws://h:1/custom"), "ws://h:1/custom");
    }

    #[test]
    fn the_close_code_table_is_the_protocols() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/protocol.json"
        );
        let f: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for c in f["close_codes"].as_array().unwrap() {
            let code = c["code"].as_u64().unwrap() as u16;
            let (rule, name) = close_policy(code);
            assert_eq!(name, c["name"].as_str().unwrap());
            let want = match c["retry"].as_str().unwrap() {
                "never" => Retry::Never,
                "new_token" => Retry::NewToken,
                _ => Retry::Recover,
            };
            assert_eq!(rule, want, "{code}");
        }
        for code in [1002, 1003, 1007, 1008, 1009, 4001, 4003] {
            assert_eq!(close_policy(code).0, Retry::Never, "{code}");
        }
        for code in [1000, 1005, 1006, 1001, 1011, 4008, 4029, 4999] {
            assert_eq!(close_policy(code).0, Retry::Recover, "{code}");
        }
    }
}
