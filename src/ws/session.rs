//! One WebSocket session: the only task that touches its socket.
//!
//! The task authenticates the first frame, then loops over five event sources (inbound
//! frames, its outbox, the ping timer, the idle and expiry deadlines, and shutdown) and
//! ends with exactly one close code. Publishers reach it only through its
//! [`Outbox`](crate::hub::Outbox).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use tokio::time::{Instant, Sleep, sleep, sleep_until};

use crate::AppState;
use crate::auth::{ConnectClaims, unix_now};
use crate::history::Publication;
use crate::hub::{ChannelKey, Outbox, SessionId};
use crate::limits::OpenGuard;
use crate::protocol::{Channel, ClientFrame, CloseCode, ErrorCode, FrameError, ServerFrame, Since};
use crate::ws::handshake::{
    admit, audit_rejection, authenticate, close, expiry_instant, is_too_large,
};
use crate::ws::registry::SessionHandle;

/// Runs a session to its end. `_open` holds the socket's place in `max_connections`.
pub async fn run(mut socket: WebSocket, state: Arc<AppState>, peer: SocketAddr, _open: OpenGuard) {
    let metrics = Arc::clone(&state.metrics);
    metrics.connections.inc();
    metrics.connections_total.inc();
    // Boxed: its state is freed once authenticated, and the idle session future stays small.
    let code = match Box::pin(authenticate(&mut socket, &state, peer)).await {
        Ok(claims) => match admit(&state, &claims, peer) {
            Ok(_places) => {
                let registered = state.registry.register(
                    state.next_session_id(),
                    claims.app.clone(),
                    claims.sub.clone(),
                    claims.jti.clone(),
                    claims.kid.clone(),
                );
                let mut session = Session::new(
                    Arc::clone(&state),
                    claims,
                    peer,
                    registered.id(),
                    Arc::clone(&registered.handle),
                );
                let code = Box::pin(session.serve(&mut socket)).await;
                session.leave();
                code
            }
            Err(code) => Some(code),
        },
        Err(code) => code,
    };
    if let Some(code) = code {
        close(&mut socket, code).await;
        metrics.disconnected(code.name());
    } else {
        metrics.disconnected("client_closed");
    }
    metrics.connections.dec();
}

struct Subscription {
    /// The hub's id of the channel, as carried by queued publications.
    channel_id: u64,
    channel: Channel,
    last_offset: u64,
}

struct Session {
    handle: Arc<SessionHandle>,
    state: Arc<AppState>,
    claims: ConnectClaims,
    peer: SocketAddr,
    id: SessionId,
    /// Random, shown to the client and in audit records (hex).
    public_id: [u8; 8],
    outbox: Arc<Outbox>,
    /// A session holds few subscriptions (at most `max_subscriptions`), so a small vector
    /// scanned linearly is both faster and far smaller than maps when idle.
    subs: Vec<Subscription>,
    expires: Instant,
    batch: VecDeque<Arc<Publication>>,
}

/// What the frame handler wants the loop to do next.
enum Next {
    Continue,
    Close(CloseCode),
    Gone,
}

impl Session {
    fn new(
        state: Arc<AppState>,
        claims: ConnectClaims,
        peer: SocketAddr,
        id: SessionId,
        handle: Arc<SessionHandle>,
    ) -> Self {
        let outbox = Arc::new(Outbox::new(state.config.outbox()));
        let expires = expiry_instant(claims.exp, state.config.tokens.leeway);
        Session {
            handle,
            id,
            public_id: rand::random(),
            state,
            claims,
            peer,
            outbox,
            subs: Vec::new(),
            expires,
            batch: VecDeque::new(),
        }
    }

    fn key(&self, channel: &Channel) -> ChannelKey {
        ChannelKey {
            app: self.claims.app.clone(),
            channel: channel.clone(),
        }
    }

    /// Removes every subscription from the broker.
    fn leave(&mut self) {
        self.outbox.close();
        for sub in self.subs.drain(..) {
            let key = ChannelKey {
                app: self.claims.app.clone(),
                channel: sub.channel,
            };
            self.state.broker.unsubscribe(&key, self.id);
        }
    }

    async fn send(&self, socket: &mut WebSocket, frame: ServerFrame<'_>) -> Result<(), ()> {
        let text = frame.encode();
        match tokio::time::timeout(
            self.state.config.websocket.write_timeout,
            socket.send(Message::Text(text.into())),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    /// The main loop. Returns the close code to send, or `None` if the client went away.
    async fn serve(&mut self, socket: &mut WebSocket) -> Option<CloseCode> {
        let ws = self.state.config.websocket.clone();
        let connected = ServerFrame::Connected {
            session: &hex::encode(self.public_id),
            ns: self.claims.ns.as_str(),
            expires_at: self.claims.exp,
        };
        self.send(socket, connected).await.ok()?;
        // One timer for pings, the idle timeout and token expiry: an idle session then
        // holds one timer entry, and an inbound frame only records the time.
        let start = Instant::now();
        let mut next_ping = start + ws.ping_interval;
        let mut last_inbound = start;
        let deadline = |next_ping: Instant, last_inbound: Instant, expires: Instant| {
            next_ping.min(last_inbound + ws.idle_timeout).min(expires)
        };
        let timer = sleep_until(deadline(next_ping, last_inbound, self.expires));
        tokio::pin!(timer);
        let shutdown = self.state.shutdown.clone();
        let mut drain: Option<std::pin::Pin<Box<Sleep>>> = None;
        let outbox = Arc::clone(&self.outbox);
        let handle = Arc::clone(&self.handle);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if drain.is_none() => {
                    // Close at a random moment of the drain window (PROTOCOL.md 3.4, 1001).
                    let window = self.state.config.shutdown.drain;
                    let delay = window.mul_f64(rand::random::<f64>());
                    drain = Some(Box::pin(sleep(delay)));
                }
                _ = async { drain.as_mut().expect("guarded").await }, if drain.is_some() => {
                    return Some(CloseCode::GoingAway);
                }
                code = handle.closed() => return Some(code),
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= self.expires {
                        return Some(CloseCode::TokenExpired);
                    }
                    if now >= last_inbound + ws.idle_timeout {
                        return Some(CloseCode::GoingAway);
                    }
                    if now >= next_ping {
                        let sent = tokio::time::timeout(ws.write_timeout, socket.send(Message::Ping(Default::default()))).await;
                        if !matches!(sent, Ok(Ok(()))) {
                            return None;
                        }
                        next_ping = now + ws.ping_interval;
                    }
                    timer.as_mut().reset(deadline(next_ping, last_inbound, self.expires));
                }
                _ = outbox.ready() => {
                    if let Err(code) = Box::pin(self.flush_outbox(socket)).await {
                        return code;
                    }
                }
                msg = socket.recv() => {
                    let msg = match msg {
                        None => return None,
                        Some(Err(e)) if is_too_large(&e) => return Some(CloseCode::FrameTooLarge),
                        Some(Err(_)) => return None,
                        Some(Ok(m)) => m,
                    };
                    last_inbound = Instant::now();
                    let next = match msg {
                        // Boxed: rare and large; keeps the idle session future small.
                        Message::Text(t) => Box::pin(self.on_frame(socket, &t)).await,
                        Message::Binary(_) => Next::Close(CloseCode::ProtocolViolation),
                        Message::Ping(_) | Message::Pong(_) => Next::Continue,
                        Message::Close(_) => Next::Gone,
                    };
                    match next {
                        Next::Continue => {
                            // A refresh may have moved the expiry earlier than the timer.
                            if self.expires < timer.deadline() {
                                timer.as_mut().reset(self.expires);
                            }
                        }
                        Next::Close(code) => return Some(code),
                        Next::Gone => return None,
                    }
                }
            }
        }
    }

    /// Writes everything queued, in one flush. Drops frames of channels no longer
    /// subscribed and frames at or below the last offset sent (the replay overlap).
    async fn flush_outbox(&mut self, socket: &mut WebSocket) -> Result<(), Option<CloseCode>> {
        if self.outbox.drain_into(&mut self.batch).is_err() {
            // Counted by the hub when the push overflowed.
            return Err(Some(CloseCode::SlowConsumer));
        }
        let write_timeout = self.state.config.websocket.write_timeout;
        let subs = &mut self.subs;
        let batch = &mut self.batch;
        let written = tokio::time::timeout(write_timeout, async {
            let mut any = false;
            for p in batch.drain(..) {
                let Some(sub) = subs.iter_mut().find(|s| s.channel_id == p.channel_id) else {
                    continue;
                };
                if p.offset <= sub.last_offset {
                    continue;
                }
                sub.last_offset = p.offset;
                socket.feed(Message::Text(p.frame.clone())).await?;
                any = true;
            }
            if any {
                socket.flush().await?;
            }
            Ok::<(), axum::Error>(())
        })
        .await;
        if self.batch.capacity() > 64 {
            self.batch = VecDeque::new();
        }
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(None),
            Err(_) => {
                self.state.metrics.limit_hit("write_timeout");
                Err(Some(CloseCode::SlowConsumer))
            }
        }
    }

    async fn reply_error(
        &self,
        socket: &mut WebSocket,
        id: Option<u64>,
        code: ErrorCode,
        message: &str,
    ) -> Next {
        match self
            .send(socket, ServerFrame::Error { id, code, message })
            .await
        {
            Ok(()) => Next::Continue,
            Err(()) => Next::Gone,
        }
    }

    async fn on_frame(&mut self, socket: &mut WebSocket, text: &str) -> Next {
        match ClientFrame::parse(text) {
            Err(FrameError::Violation) => Next::Close(CloseCode::ProtocolViolation),
            Err(FrameError::BadRequest { id, message }) => {
                self.reply_error(socket, id, ErrorCode::BadRequest, &message)
                    .await
            }
            // A second connect on an authenticated session is a protocol violation.
            Ok(ClientFrame::Connect { .. }) => Next::Close(CloseCode::ProtocolViolation),
            Ok(ClientFrame::Subscribe { id, channel, since }) => {
                self.subscribe(socket, id, channel, since).await
            }
            Ok(ClientFrame::Unsubscribe { id, channel }) => {
                self.unsubscribe(socket, id, channel).await
            }
            Ok(ClientFrame::Refresh { id, token }) => self.refresh(socket, id, &token).await,
        }
    }

    async fn subscribe(
        &mut self,
        socket: &mut WebSocket,
        id: Option<u64>,
        channel: Channel,
        since: Option<Since>,
    ) -> Next {
        if !channel.in_namespace(&self.claims.ns) {
            self.state.metrics.forbidden.inc();
            tracing::warn!(
                target: "audit",
                event = "namespace_violation",
                app = self.claims.app.as_str(),
                sub = self.claims.sub.as_str(),
                ns = self.claims.ns.as_str(),
                channel = channel.as_str(),
                session = hex::encode(self.public_id).as_str(),
                peer = %self.peer,
                "subscribe outside the token's namespace refused"
            );
            return self
                .reply_error(
                    socket,
                    id,
                    ErrorCode::Forbidden,
                    "channel outside the token's namespace",
                )
                .await;
        }
        if self.subs.iter().any(|s| s.channel == channel) {
            return self
                .reply_error(
                    socket,
                    id,
                    ErrorCode::BadRequest,
                    "already subscribed to this channel",
                )
                .await;
        }
        if self.subs.len() >= self.state.config.websocket.max_subscriptions {
            self.state.metrics.limit_hit("subscriptions_per_connection");
            return self
                .reply_error(
                    socket,
                    id,
                    ErrorCode::LimitExceeded,
                    "too many subscriptions on this connection",
                )
                .await;
        }
        let key = self.key(&channel);
        let since_pos = since.as_ref().map(|s| (s.epoch.as_str(), s.offset));
        let sub = match self
            .state
            .broker
            .subscribe(&key, self.id, &self.outbox, since_pos)
            .await
        {
            Ok(s) => s,
            Err(crate::broker::BrokerError::Hub(_)) => {
                return self
                    .reply_error(
                        socket,
                        id,
                        ErrorCode::LimitExceeded,
                        "channel limit reached",
                    )
                    .await;
            }
            Err(crate::broker::BrokerError::Unavailable) => {
                return Next::Close(CloseCode::InternalError);
            }
        };
        self.subs.push(Subscription {
            channel_id: sub.channel_id,
            channel: channel.clone(),
            last_offset: sub.offset,
        });
        let reply = ServerFrame::Subscribed {
            id,
            channel: channel.as_str(),
            epoch: &sub.epoch,
            offset: sub.offset,
            recovered: sub.recovered,
        };
        if self.send(socket, reply).await.is_err() {
            return Next::Gone;
        }
        if !sub.replay.is_empty() {
            self.state.metrics.replayed.inc_by(sub.replay.len() as u64);
            let timeout = self.state.config.websocket.write_timeout;
            let sent = tokio::time::timeout(timeout, async {
                for p in &sub.replay {
                    socket.feed(Message::Text(p.frame.clone())).await?;
                }
                socket.flush().await
            })
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Next::Gone,
                Err(_) => return Next::Close(CloseCode::SlowConsumer),
            }
        }
        Next::Continue
    }

    async fn unsubscribe(
        &mut self,
        socket: &mut WebSocket,
        id: Option<u64>,
        channel: Channel,
    ) -> Next {
        let Some(at) = self.subs.iter().position(|s| s.channel == channel) else {
            return self
                .reply_error(
                    socket,
                    id,
                    ErrorCode::BadRequest,
                    "not subscribed to this channel",
                )
                .await;
        };
        self.subs.swap_remove(at);
        self.state.broker.unsubscribe(&self.key(&channel), self.id);
        match self
            .send(
                socket,
                ServerFrame::Unsubscribed {
                    id,
                    channel: channel.as_str(),
                },
            )
            .await
        {
            Ok(()) => Next::Continue,
            Err(()) => Next::Gone,
        }
    }

    async fn refresh(&mut self, socket: &mut WebSocket, id: Option<u64>, token: &str) -> Next {
        let claims = match self.state.auth.load().verify_connect(token, unix_now()) {
            Ok(c) => c,
            Err(r) => {
                audit_rejection(&self.state, self.peer, Some(&r), r.reason.label());
                return self
                    .reply_error(socket, id, ErrorCode::Unauthorized, "refresh token refused")
                    .await;
            }
        };
        if self.state.revocations.is_revoked(
            &claims.app,
            &claims.sub,
            claims.jti.as_deref(),
            unix_now(),
        ) {
            self.state.metrics.token_rejected("revoked");
            return Next::Close(CloseCode::TokenRevoked);
        }
        if claims.app != self.claims.app
            || claims.sub != self.claims.sub
            || claims.ns != self.claims.ns
        {
            tracing::warn!(
                target: "audit",
                event = "refresh_mismatch",
                app = self.claims.app.as_str(),
                sub = self.claims.sub.as_str(),
                ns = self.claims.ns.as_str(),
                session = hex::encode(self.public_id).as_str(),
                peer = %self.peer,
                "refresh token for another app, user or namespace refused"
            );
            return self
                .reply_error(
                    socket,
                    id,
                    ErrorCode::Forbidden,
                    "refresh token must have the same iss, sub and ns",
                )
                .await;
        }
        tracing::info!(
            target: "audit",
            event = "refresh",
            app = self.claims.app.as_str(),
            sub = self.claims.sub.as_str(),
            session = hex::encode(self.public_id).as_str(),
            expires_at = claims.exp,
            "session token refreshed"
        );
        self.expires = expiry_instant(claims.exp, self.state.config.tokens.leeway);
        self.handle
            .set_token(claims.jti.clone(), claims.kid.clone());
        let exp = claims.exp;
        self.claims = claims;
        match self
            .send(
                socket,
                ServerFrame::Refreshed {
                    id,
                    expires_at: exp,
                },
            )
            .await
        {
            Ok(()) => Next::Continue,
            Err(()) => Next::Gone,
        }
    }
}
