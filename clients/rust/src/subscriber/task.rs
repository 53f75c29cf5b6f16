//! The connection loop: one task owns the socket, the channels and the timers; the
//! [`super::Subscriber`] handle talks to it through commands, and its subscriptions receive
//! their events through bounded queues, in the order the relay sent them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::channels::{Accept, Chan, Listener, Wire};
use super::close::{Retry, close_policy};
use super::timing::{jitter, refresh_delay};
use super::{
    ConnectionState, ErrorKind, Event, Options, Position, Publication, RecoveryFailed,
    SubscriberError,
};
use crate::frames::{ClientFrame, ServerFrame};
use crate::payload::KeyRing;
use crate::token::lifetime_seconds;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The local code of a socket dropped by [`super::Subscriber::reconnect`].
const CLIENT_RECONNECT: u16 = 4000;
/// The code of a connection that ended without a close frame.
const ABNORMAL: u16 = 1006;
/// How soon a failed in-band refresh is tried again.
const REFRESH_RETRY: Duration = Duration::from_secs(2);
/// After a 4002 on a session that was up, the new token is used within this.
const NEW_TOKEN_WINDOW: Duration = Duration::from_millis(250);

/// What the handle asks of the task.
pub(crate) enum Command {
    Subscribe {
        channel: String,
        listener: Listener,
        since: Option<Position>,
    },
    Unsubscribe {
        channel: String,
        id: u64,
    },
    SetKeys(KeyRing),
    Reconnect,
}

enum PendingReq {
    Subscribe,
    Unsubscribe,
    Refresh,
}

/// How a socket ended.
struct End {
    code: u16,
    reason: String,
    /// How long it had been authenticated, if it was.
    connected_for: Option<Duration>,
}

enum Flow {
    Ended(End),
    Stopped,
}

/// The socket's session: when it was authenticated and when the token is refreshed.
struct Session {
    token: String,
    connected_at: Option<Instant>,
    refresh_at: Option<Instant>,
}

pub(crate) struct Task {
    opts: Options,
    keys: KeyRing,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    state: watch::Sender<ConnectionState>,
    stop: watch::Receiver<bool>,
    channels: HashMap<String, Chan>,
    pending: HashMap<u64, PendingReq>,
    next_id: u64,
    attempt: u32,
}

/// Resolves once the subscriber is asked to stop (or its handle is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Task {
    pub(crate) fn new(
        opts: Options,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
        state: watch::Sender<ConnectionState>,
        stop: watch::Receiver<bool>,
    ) -> Task {
        Task {
            keys: opts.keys.clone(),
            opts,
            cmd_rx,
            state,
            stop,
            channels: HashMap::new(),
            pending: HashMap::new(),
            next_id: 1,
            attempt: 0,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            self.set_state(ConnectionState::Connecting {
                attempt: self.attempt,
            });
            let stop = self.stop.clone();
            let opened = tokio::select! {
                opened = self.open() => Some(opened),
                _ = stopped(stop) => None,
            };
            let flow = match opened {
                Some(Ok((ws, token))) => self.session(ws, token).await,
                Some(Err(end)) => Flow::Ended(end),
                None => Flow::Stopped,
            };
            let end = match flow {
                Flow::Ended(end) => end,
                Flow::Stopped => return self.disconnected(1000, "client closed".into(), None),
            };
            self.reset_wire();
            if end
                .connected_for
                .is_some_and(|d| d >= self.opts.backoff.healthy_after)
            {
                self.attempt = 0;
            }
            let delay = if end.code == CLIENT_RECONNECT {
                Duration::ZERO
            } else {
                match close_policy(end.code) {
                    (Retry::Never, name) => {
                        let mut message =
                            format!("relay closed the connection: {} {name}", end.code);
                        if !end.reason.is_empty() {
                            message.push_str(&format!(" ({})", end.reason));
                        }
                        self.report(ErrorKind::Closed, message, None, Some(end.code.to_string()));
                        return self.disconnected(end.code, end.reason, None);
                    }
                    // getToken is called on every connect: reconnect promptly with a fresh
                    // token; if that fails again, the backoff below applies.
                    (Retry::NewToken, _) if end.connected_for.is_some() && self.attempt == 0 => {
                        self.attempt += 1;
                        jitter(NEW_TOKEN_WINDOW)
                    }
                    _ => {
                        let w = self.opts.backoff.window(self.attempt, end.code);
                        self.attempt = self.attempt.saturating_add(1);
                        jitter(w)
                    }
                }
            };
            self.set_state(ConnectionState::Disconnected {
                code: end.code,
                reason: end.reason,
                will_retry: true,
                retry_in: Some(delay),
            });
            if !self.wait(delay).await {
                return self.disconnected(1000, "client closed".into(), None);
            }
        }
    }

    /// Records a state: the callback first (in order, every change), then the watch.
    fn set_state(&self, s: ConnectionState) {
        if let Some(f) = &self.opts.on_state {
            f(&s);
        }
        self.state.send_replace(s);
    }

    fn disconnected(&mut self, code: u16, reason: String, retry_in: Option<Duration>) {
        self.set_state(ConnectionState::Disconnected {
            code,
            reason,
            will_retry: false,
            retry_in,
        });
    }

    /// Waits `delay`, serving commands; false when asked to stop.
    async fn wait(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                _ = stopped(self.stop.clone()) => return false,
                cmd = self.cmd_rx.recv() => match cmd {
                    None => return false,
                    Some(Command::Reconnect) => return true,
                    Some(c) => self.command(c, None).await,
                },
            }
        }
    }

    /// Fetches a token and opens the socket, each within the timeout.
    async fn open(&mut self) -> Result<(Ws, String), End> {
        let t = self.opts.timeout;
        let fail = |reason: &str| End {
            code: ABNORMAL,
            reason: reason.into(),
            connected_for: None,
        };
        let token = match tokio::time::timeout(t, (self.opts.get_token)()).await {
            Ok(Ok(token)) if !token.is_empty() => token,
            Ok(Ok(_)) => {
                self.report(
                    ErrorKind::Token,
                    "the token source returned no token".into(),
                    None,
                    None,
                );
                return Err(fail("token unavailable"));
            }
            Ok(Err(e)) => {
                self.report(
                    ErrorKind::Token,
                    format!("token source failed: {e}"),
                    None,
                    None,
                );
                return Err(fail("token unavailable"));
            }
            Err(_) => {
                self.report(
                    ErrorKind::Token,
                    "token source timed out".into(),
                    None,
                    None,
                );
                return Err(fail("token unavailable"));
            }
        };
        let url = self.opts.url.as_str();
        let connecting = match &self.opts.tls {
            Some(tls) => {
                let connector = tokio_tungstenite::Connector::Rustls(Arc::clone(tls));
                tokio::time::timeout(
                    t,
                    tokio_tungstenite::connect_async_tls_with_config(
                        url,
                        None,
                        false,
                        Some(connector),
                    ),
                )
                .await
            }
            None => tokio::time::timeout(t, tokio_tungstenite::connect_async(url)).await,
        };
        match connecting {
            Ok(Ok((ws, _))) => Ok((ws, token)),
            Ok(Err(_)) => Err(fail("cannot connect")),
            Err(_) => Err(fail("connect timed out")),
        }
    }

    /// One socket, from `connect` to its end.
    async fn session(&mut self, mut ws: Ws, token: String) -> Flow {
        let connect = ClientFrame::connect(&token).to_json();
        let mut s = Session {
            token,
            connected_at: None,
            refresh_at: None,
        };
        if ws.send(Message::text(connect)).await.is_err() {
            return Flow::Ended(End {
                code: ABNORMAL,
                reason: String::new(),
                connected_for: None,
            });
        }
        let auth_deadline = Instant::now() + self.opts.timeout;
        loop {
            let refresh_at = s.refresh_at;
            let authenticating = s.connected_at.is_none();
            let end = |code: u16, reason: String, s: &Session| {
                Flow::Ended(End {
                    code,
                    reason,
                    connected_for: s.connected_at.map(|t| t.elapsed()),
                })
            };
            tokio::select! {
                msg = ws.next() => match msg {
                    None | Some(Err(_)) => return end(ABNORMAL, String::new(), &s),
                    Some(Ok(Message::Text(t))) => {
                        if !self.on_text(&t, &mut ws, &mut s).await {
                            close(&mut ws, 1000, "client closed").await;
                            return Flow::Stopped;
                        }
                    }
                    Some(Ok(Message::Close(f))) => {
                        let (code, reason) = f.map_or((1005, String::new()), |f: CloseFrame| {
                            (u16::from(f.code), f.reason.to_string())
                        });
                        return end(code, reason, &s);
                    }
                    Some(Ok(Message::Binary(_))) => {
                        self.report(ErrorKind::Protocol, "binary frame from the relay ignored".into(), None, None);
                    }
                    // Pings are answered by tungstenite as it reads.
                    Some(Ok(_)) => {}
                },
                cmd = self.cmd_rx.recv() => match cmd {
                    None => {
                        close(&mut ws, 1000, "client closed").await;
                        return Flow::Stopped;
                    }
                    Some(Command::Reconnect) => {
                        close(&mut ws, CLIENT_RECONNECT, "client reconnect").await;
                        return end(CLIENT_RECONNECT, "client reconnect".into(), &s);
                    }
                    Some(c) => {
                        let live = s.connected_at.is_some();
                        self.command(c, live.then_some(&mut ws)).await;
                    }
                },
                _ = stopped(self.stop.clone()) => {
                    close(&mut ws, 1000, "client closed").await;
                    return Flow::Stopped;
                }
                _ = sleep_until_some(refresh_at) => self.refresh(&mut ws, &mut s).await,
                _ = tokio::time::sleep_until(auth_deadline), if authenticating => {
                    close(&mut ws, 1000, "no answer to connect").await;
                    return end(ABNORMAL, "no answer to connect".into(), &s);
                }
            }
        }
    }

    /// Queues events for their subscriptions, in order, waiting while a queue is full;
    /// false when the subscriber was stopped meanwhile. A subscription whose handle is gone
    /// is skipped (its unsubscribe command follows).
    async fn deliver(&mut self, events: Vec<(mpsc::Sender<Event>, Event)>) -> bool {
        for (tx, ev) in events {
            tokio::select! {
                _ = tx.send(ev) => {}
                _ = stopped(self.stop.clone()) => return false,
            }
        }
        true
    }

    async fn command(&mut self, cmd: Command, ws: Option<&mut Ws>) {
        match cmd {
            Command::Subscribe {
                channel,
                listener,
                since,
            } => {
                let ch = self
                    .channels
                    .entry(channel.clone())
                    .or_insert_with(|| Chan::new(since));
                // A channel that already exists: the handle reads its position.
                *listener.position.lock().unwrap_or_else(|p| p.into_inner()) = ch.position();
                let tx = listener.tx.clone();
                ch.listeners.push(listener);
                match (ch.wire, ws) {
                    (Wire::Active, _) => {
                        // Already live: tell the new listener where the stream stands.
                        if let Some(position) = ch.position() {
                            let ev = Event::Subscribed {
                                position,
                                recovered: None,
                            };
                            self.deliver(vec![(tx, ev)]).await;
                        }
                    }
                    (Wire::None, Some(ws)) => self.send_subscribe(&channel, ws).await,
                    _ => {}
                }
            }
            Command::Unsubscribe { channel, id } => {
                let Some(ch) = self.channels.get_mut(&channel) else {
                    return;
                };
                ch.listeners.retain(|l| l.id != id);
                if !ch.listeners.is_empty() {
                    return;
                }
                let wire = ch.wire;
                self.channels.remove(&channel);
                if let (Some(ws), true) = (ws, wire != Wire::None) {
                    let id = self.request_id(PendingReq::Unsubscribe);
                    send(ws, ClientFrame::unsubscribe(id, &channel)).await;
                }
            }
            Command::SetKeys(keys) => self.keys = keys,
            Command::Reconnect => {}
        }
    }

    fn request_id(&mut self, req: PendingReq) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, req);
        id
    }

    async fn send_subscribe(&mut self, name: &str, ws: &mut Ws) {
        let id = self.request_id(PendingReq::Subscribe);
        let Some(ch) = self.channels.get_mut(name) else {
            return;
        };
        ch.wire = Wire::Pending;
        ch.req_id = Some(id);
        ch.asked = ch.position();
        let frame = ClientFrame::subscribe(id, name, ch.asked.clone());
        send(ws, frame).await;
    }

    fn schedule_refresh(&mut self, expires_at: i64, s: &mut Session) {
        s.refresh_at = self.opts.refresh_at.and_then(|ratio| {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            refresh_delay(expires_at, lifetime_seconds(&s.token), ratio, now_ms)
                .map(|d| Instant::now() + d)
        });
    }

    /// The in-band refresh: a new token in a `refresh` frame on the same socket.
    async fn refresh(&mut self, ws: &mut Ws, s: &mut Session) {
        s.refresh_at = None;
        match tokio::time::timeout(self.opts.timeout, (self.opts.get_token)()).await {
            Ok(Ok(token)) if !token.is_empty() => {
                let id = self.request_id(PendingReq::Refresh);
                send(ws, ClientFrame::refresh(id, &token)).await;
                s.token = token;
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "no token".into(),
                    Err(_) => "timed out".into(),
                };
                self.report(
                    ErrorKind::Token,
                    format!("token source failed during refresh: {why}"),
                    None,
                    None,
                );
                s.refresh_at = Some(Instant::now() + REFRESH_RETRY);
            }
        }
    }

    /// Forgets the relay subscriptions of a socket that ended; positions are kept.
    fn reset_wire(&mut self) {
        self.pending.clear();
        for ch in self.channels.values_mut() {
            ch.wire = Wire::None;
            ch.req_id = None;
            ch.asked = None;
        }
    }

    fn report(
        &self,
        kind: ErrorKind,
        message: String,
        channel: Option<&str>,
        code: Option<String>,
    ) {
        let e = SubscriberError {
            kind,
            message,
            channel: channel.map(Into::into),
            code,
        };
        match &self.opts.on_error {
            Some(f) => f(&e),
            None => tracing::warn!(kind = ?e.kind, "sealcast subscriber: {}", e.message),
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Sends a frame; a failure shows as the socket's end on the next read.
async fn send(ws: &mut Ws, frame: ClientFrame) {
    let _ = ws.send(Message::text(frame.to_json())).await;
}

/// Closes politely, without waiting long for the relay's answer.
async fn close(ws: &mut Ws, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
}

mod inbound;
