//! One WebSocket session: the only task that touches its socket.
//!
//! The task authenticates the first frame, then loops over three event sources (inbound
//! frames, its outbox, and one timer for pings, the idle timeout and token expiry) and
//! ends with exactly one [`End`]. Publishers, revocation, key removal and shutdown reach
//! it only through its [`Outbox`](crate::hub::Outbox), so an idle session waits on its
//! socket, one `Notify` and one timer entry, and holds no buffer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

use crate::AppState;
use crate::auth::{ConnectClaims, unix_now};
use crate::http::proxy::ClientAddr;
use crate::hub::{ChannelKey, Outbox, SessionId, Stop};
use crate::limits::OpenGuard;
use crate::limits::SessionGuard;
use crate::protocol::{
    Channel, ClientFrame, CloseCode, ErrorCode, FrameError, Namespace, ServerFrame, Since,
};
use crate::ws::codec::{self, Inbound};
use crate::ws::conn::{Conn, RecvError};
use crate::ws::handshake::{
    End, RevocationCheck, admit, audit_rejection, authenticate, codec_close, expiry_instant,
    finish, refuse_revoked,
};
use crate::ws::registry::{Registered, SessionHandle, TokenIds};

/// Starts the session of an upgraded connection in a task of its own. The socket is
/// taken back out of hyper's boxed IO when its type is known (plain TCP or TLS), so the
/// session holds the stream itself; and the task is spawned here, once the stream's type
/// is known, so that it holds exactly that session's state and nothing of the upgrade
/// (a plain-TCP session does not reserve room for a TLS stream).
pub fn start(upgraded: Upgraded, state: Arc<AppState>, peer: ClientAddr, open: OpenGuard) {
    let max = state.config.websocket.max_frame_bytes;
    let tracker = state.sessions.clone();
    // The bytes hyper read past the request are copied out at once: they share the
    // allocation of hyper's whole read buffer (8 KiB), which must not outlive the upgrade.
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(hyper::upgrade::Parts { io, read_buf, .. }) => {
            let conn = Conn::new(io.into_inner(), &read_buf, max);
            tracker.spawn(run(conn, state, peer, open));
        }
        Err(up) => match up.downcast::<TokioIo<crate::tls::TlsStream>>() {
            Ok(hyper::upgrade::Parts { io, read_buf, .. }) => {
                let conn = Conn::new(io.into_inner(), &read_buf, max);
                tracker.spawn(run(conn, state, peer, open));
            }
            Err(up) => {
                tracker.spawn(run(
                    Conn::new(TokioIo::new(up), &[], max),
                    state,
                    peer,
                    open,
                ));
            }
        },
    }
}

/// Runs a session to its end. `open` holds the socket's place in `max_connections`.
///
/// The rare, large steps (authentication, closing) are boxed and admission is a plain
/// function, so that what an idle session keeps is the connection, the [`Session`] and
/// the loop's own state: the `idle_session_state_stays_small` test below holds it to that.
///
/// Not an `async fn`: those keep a second copy of their arguments for the future's whole
/// life (rust-lang/rust#62958); an `async move` block keeps just the one (1,016 against
/// 848 bytes for a plain-TCP session, measured with the test below).
#[allow(clippy::manual_async_fn)]
fn run<S>(
    mut conn: Conn<S>,
    state: Arc<AppState>,
    peer: ClientAddr,
    open: OpenGuard,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async move {
        state.metrics.connections.inc();
        state.metrics.connections_total.inc();
        // Written as statements, not as nested matches: a match's scrutinee (the claims,
        // the admitted session) would otherwise stay in the future while it is served.
        let end = 'end: {
            let claims = match Box::pin(authenticate(&mut conn, &state, peer)).await {
                Ok(c) => c,
                Err(end) => break 'end end,
            };
            let mut entered = match enter(&state, claims, peer) {
                Ok(e) => e,
                Err(end) => break 'end end,
            };
            let end = entered.session.serve(&mut conn).await;
            entered.session.leave();
            end
        };
        Box::pin(finish(&mut conn, &state, end)).await;
        state.metrics.connections.dec();
        drop(open);
    }
}

/// An admitted session with what it holds while it lives.
struct Entered<'a> {
    session: Session,
    /// Unregisters on drop.
    _registered: Registered<'a>,
    /// Its places in the per-app and per-namespace counts.
    _places: SessionGuard,
}

/// Admits an authenticated session (revocation, per-app and per-namespace limits) and
/// registers it.
fn enter<'a>(
    state: &'a Arc<AppState>,
    claims: ConnectClaims,
    peer: ClientAddr,
) -> Result<Entered<'a>, End> {
    let places = admit(state, &claims).map_err(End::Close)?;
    let ConnectClaims {
        app,
        sub,
        ns,
        exp,
        jti,
        kid,
        key_fingerprint,
        ..
    } = claims;
    let outbox = Arc::new(Outbox::new(state.config.outbox()));
    let registered = state.registry.register(
        state.next_session_id(),
        app,
        sub,
        TokenIds {
            jti,
            kid,
            key: key_fingerprint,
        },
        outbox,
    );
    // Only now, see `refuse_revoked`.
    {
        let h = &registered.handle;
        let ids = h.token_ids();
        let check = RevocationCheck {
            app: &h.app,
            sub: &h.sub,
            jti: ids.0.as_deref(),
            kid: ids.1.as_deref(),
        };
        refuse_revoked(state, &check, peer).map_err(End::Close)?;
    }
    // Shutdown closes the sessions it finds in the registry; one registered after it
    // looked closes here.
    if state.shutdown.is_cancelled() {
        return Err(End::Close(CloseCode::GoingAway));
    }
    let session = Session {
        expires: expiry_instant(exp, state.config.tokens.leeway),
        expires_at: exp,
        state: Arc::clone(state),
        handle: Arc::clone(&registered.handle),
        id: registered.id(),
        public_id: rand::random(),
        ns,
        peer,
        subs: Vec::new(),
    };
    Ok(Entered {
        session,
        _registered: registered,
        _places: places,
    })
}

struct Subscription {
    /// The hub's id of the channel, as carried by queued publications.
    channel_id: u64,
    channel: Channel,
    last_offset: u64,
}

struct Session {
    /// App, `sub`, token ids and the outbox, shared with the registry.
    handle: Arc<SessionHandle>,
    state: Arc<AppState>,
    /// The token's namespace: the only one this session may subscribe in.
    ns: Namespace,
    peer: ClientAddr,
    id: SessionId,
    /// Random, shown to the client and in audit records (hex).
    public_id: [u8; 8],
    /// A session holds few subscriptions (at most `max_subscriptions`), so a small vector
    /// scanned linearly is both faster and far smaller than maps when idle.
    subs: Vec<Subscription>,
    /// When the session ends with 4002: the token's `exp` + leeway.
    expires: Instant,
    /// The token's `exp`, as told to the client.
    expires_at: i64,
}

/// What the frame handler wants the loop to do next.
enum Next {
    Continue,
    End(End),
}

impl Session {
    fn key(&self, channel: &Channel) -> ChannelKey {
        ChannelKey {
            app: self.handle.app.clone(),
            channel: channel.clone(),
        }
    }

    fn outbox(&self) -> &Outbox {
        &self.handle.outbox
    }

    /// Removes every subscription from the broker.
    fn leave(&mut self) {
        self.outbox().close();
        for sub in self.subs.drain(..) {
            let key = ChannelKey {
                app: self.handle.app.clone(),
                channel: sub.channel,
            };
            self.state.broker.unsubscribe(&key, self.id);
        }
    }

    /// Sends one reply frame within the write timeout.
    async fn send<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: &mut Conn<S>,
        frame: ServerFrame<'_>,
    ) -> Result<(), End> {
        let text = frame.encode();
        match tokio::time::timeout(
            self.state.config.websocket.write_timeout,
            conn.send_text(text.as_bytes()),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => {
                self.state.metrics.limit_hit("write_timeout");
                Err(End::Close(CloseCode::SlowConsumer))
            }
        }
    }

    fn reply(sent: Result<(), End>) -> Next {
        match sent {
            Ok(()) => Next::Continue,
            Err(end) => Next::End(end),
        }
    }

    /// The main loop, until the session must end.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&mut self, conn: &mut Conn<S>) -> End {
        let connected = ServerFrame::Connected {
            session: &hex::encode(self.public_id),
            ns: self.ns.as_str(),
            expires_at: self.expires_at,
        };
        // Boxed, like every rare step below: the loop's idle state is then only the
        // timer, the outbox's wake-up and the socket read.
        if let Err(end) = Box::pin(self.send(conn, connected)).await {
            return end;
        }
        let state = Arc::clone(&self.state);
        let ws = &state.config.websocket;
        // One timer for pings, the idle timeout and token expiry: an idle session then
        // holds one timer entry, and an inbound frame only records the time.
        let mut last_inbound = Instant::now();
        // The first ping comes at a random point of the second half of the interval, so
        // that sessions which connected together (a reconnect storm, a load test) do not
        // ping together every interval ever after: a burst of thousands of pings and
        // pongs at once is a latency spike for every publication in flight.
        let mut next_ping = last_inbound + first_ping_after(ws.ping_interval);
        let deadline = |next_ping: Instant, last_inbound: Instant, expires: Instant| {
            next_ping.min(last_inbound + ws.idle_timeout).min(expires)
        };
        let timer = sleep_until(deadline(next_ping, last_inbound, self.expires));
        tokio::pin!(timer);
        let handle = Arc::clone(&self.handle);
        loop {
            tokio::select! {
                biased;
                _ = handle.outbox.ready() => {
                    if let Err(end) = Box::pin(self.flush_outbox(conn)).await {
                        return end;
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= self.expires {
                        return End::Close(CloseCode::TokenExpired);
                    }
                    if now >= last_inbound + ws.idle_timeout {
                        return End::Close(CloseCode::GoingAway);
                    }
                    if now >= next_ping {
                        let sent = Box::pin(tokio::time::timeout(ws.write_timeout, conn.send_frame(&codec::PING))).await;
                        if !matches!(sent, Ok(Ok(()))) {
                            return End::Gone;
                        }
                        next_ping = now + ws.ping_interval;
                    }
                    timer.as_mut().reset(deadline(next_ping, last_inbound, self.expires));
                }
                msg = conn.recv() => {
                    let msg = match msg {
                        Ok(m) => m,
                        Err(RecvError::Gone) => return End::Gone,
                        Err(RecvError::Codec(e)) => return End::Close(codec_close(e)),
                    };
                    last_inbound = Instant::now();
                    let next = match msg {
                        // Boxed: rare and large; keeps the idle session future small.
                        Inbound::Text(t) => Box::pin(self.on_frame(conn, &t)).await,
                        Inbound::Binary(_) => Next::End(End::Close(CloseCode::UnsupportedData)),
                        Inbound::Ping(p) => {
                            let pong = codec::pong_frame(&p);
                            match Box::pin(tokio::time::timeout(ws.write_timeout, conn.send_frame(&pong))).await {
                                Ok(Ok(())) => Next::Continue,
                                _ => Next::End(End::Gone),
                            }
                        }
                        Inbound::Pong => Next::Continue,
                        Inbound::Close(code) => Next::End(End::Answer(code)),
                    };
                    match next {
                        Next::Continue => {
                            // A refresh may have moved the expiry earlier than the timer.
                            if self.expires < timer.deadline() {
                                timer.as_mut().reset(self.expires);
                            }
                        }
                        Next::End(end) => return end,
                    }
                }
            }
        }
    }

    /// Writes everything queued, in one flush. Drops frames of channels no longer
    /// subscribed and frames at or below the last offset sent (the replay overlap).
    async fn flush_outbox<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
    ) -> Result<(), End> {
        // Swapped with the outbox's queue: the queue's allocation comes here and is freed
        // when this returns, so an idle session keeps no queue memory.
        let mut batch = VecDeque::new();
        match self.handle.outbox.drain_into(&mut batch) {
            Ok(()) => {}
            // Counted by the hub when the push overflowed.
            Err(Stop::Overflowed) => return Err(End::Close(CloseCode::SlowConsumer)),
            Err(Stop::Close(code)) => return Err(End::Close(code)),
        }
        let write_timeout = self.state.config.websocket.write_timeout;
        let subs = &mut self.subs;
        let written = tokio::time::timeout(write_timeout, async {
            // The oldest frame written, for the (sampled) delivery latency.
            let mut oldest = None;
            for p in batch.drain(..) {
                let Some(sub) = subs.iter_mut().find(|s| s.channel_id == p.channel_id) else {
                    continue;
                };
                if p.offset <= sub.last_offset {
                    continue;
                }
                sub.last_offset = p.offset;
                conn.feed(&p.frame).await?;
                oldest.get_or_insert(p.accepted);
            }
            if oldest.is_some() {
                conn.flush().await?;
            }
            Ok::<_, std::io::Error>(oldest)
        })
        .await;
        match written {
            Ok(Ok(oldest)) => {
                if let Some(accepted) = oldest {
                    let m = &self.state.metrics;
                    m.delivery_latency.observe(accepted.elapsed().as_secs_f64());
                }
                Ok(())
            }
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => {
                self.state.metrics.limit_hit("write_timeout");
                Err(End::Close(CloseCode::SlowConsumer))
            }
        }
    }

    async fn reply_error<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: &mut Conn<S>,
        id: Option<u64>,
        code: ErrorCode,
        message: &str,
    ) -> Next {
        Self::reply(
            self.send(conn, ServerFrame::Error { id, code, message })
                .await,
        )
    }

    async fn on_frame<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        text: &str,
    ) -> Next {
        match ClientFrame::parse(text) {
            Err(FrameError::Violation) => Next::End(End::Close(CloseCode::ProtocolViolation)),
            Err(FrameError::BadRequest { id, message }) => {
                self.reply_error(conn, id, ErrorCode::BadRequest, &message)
                    .await
            }
            // A second connect on an authenticated session is a protocol violation.
            Ok(ClientFrame::Connect { .. }) => Next::End(End::Close(CloseCode::ProtocolViolation)),
            Ok(ClientFrame::Subscribe { id, channel, since }) => {
                self.subscribe(conn, id, channel, since).await
            }
            Ok(ClientFrame::Unsubscribe { id, channel }) => {
                self.unsubscribe(conn, id, channel).await
            }
            Ok(ClientFrame::Refresh { id, token }) => self.refresh(conn, id, &token).await,
        }
    }
}

mod requests;

/// When a new session sends its first ping: uniformly in the second half of `interval`
/// (never later than `interval`, so a proxy's idle timeout sized for it still holds).
fn first_ping_after(interval: Duration) -> Duration {
    interval.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_pings_spread_over_the_second_half_of_the_interval() {
        let interval = Duration::from_secs(25);
        let mut quarters = [0usize; 2];
        for _ in 0..2000 {
            let d = first_ping_after(interval);
            assert!(d >= interval / 2 && d <= interval, "{d:?}");
            quarters[usize::from(d >= interval.mul_f64(0.75))] += 1;
        }
        // Spread, not one instant: both quarters get a fair share (p < 1e-40 to fail by
        // chance for a uniform draw).
        assert!(quarters.iter().all(|&n| n > 600), "{quarters:?}");
    }

    /// What one idle connection costs is mostly this future (the task's state) plus a
    /// few small allocations: BENCHMARKS.md measures about 2.2 KB of RSS per idle
    /// subscribed connection in all. A change that puts a buffer, a second timer or a
    /// rarely used step's state into the idle future shows up here first. The bounds
    /// leave room for compiler changes, not for a new field of hundreds of bytes.
    #[tokio::test]
    async fn idle_session_state_stays_small() {
        let text = "listen = \"127.0.0.1:0\"\n[[apps]]\nid = \"a\"\n[[apps.keys]]\nkid = \"k\"\nsecret_env = \"S\"\n";
        let config =
            crate::config::Config::parse(text, |_| Some("0123456789abcdef0123456789abcdef".into()))
                .unwrap();
        let server = crate::Server::bind(config).await.unwrap();
        let state = Arc::clone(server.state());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let peer = tcp.local_addr().unwrap();
        let conn = Conn::new(tcp, &[], 1024);
        let conn_size = std::mem::size_of_val(&conn);
        let open = state.limits.admit_upgrade(peer.ip()).unwrap();
        let task = run(conn, Arc::clone(&state), ClientAddr::direct(peer), open);
        let task_size = std::mem::size_of_val(&task);
        let session = std::mem::size_of::<Session>();
        eprintln!("conn {conn_size} B, session {session} B, task future {task_size} B");
        assert!(conn_size <= 160, "Conn<TcpStream> is {conn_size} B");
        assert!(session <= 192, "Session is {session} B");
        assert!(
            task_size <= 1024,
            "the session task's future is {task_size} B"
        );
    }
}
