//! The session's answers to `subscribe`, `unsubscribe` and `refresh`: namespace, rate and
//! quota checks, the hub's subscribe (register, then replay), and the in-band token refresh.

use super::*;

impl Session {
    pub(super) async fn subscribe<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        id: Option<u64>,
        channel: Channel,
        since: Option<Since>,
    ) -> Next {
        // First: refused attempts (and their audit records) count too.
        if self.state.limits.admit_subscribe(self.id).is_err() {
            return self
                .reply_error(
                    conn,
                    id,
                    ErrorCode::LimitExceeded,
                    "subscribing too fast on this connection (limits.subscribe_rate_per_connection)",
                )
                .await;
        }
        if !channel.in_namespace(&self.ns) {
            self.state.metrics.forbidden.inc();
            tracing::warn!(
                target: "audit",
                event = "namespace_violation",
                app = self.handle.app.as_str(),
                sub = self.handle.sub.as_str(),
                ns = self.ns.as_str(),
                channel = channel.as_str(),
                session = hex::encode(self.public_id).as_str(),
                peer = %self.peer,
                "subscribe outside the token's namespace refused"
            );
            return self
                .reply_error(
                    conn,
                    id,
                    ErrorCode::Forbidden,
                    "channel outside the token's namespace",
                )
                .await;
        }
        if self.subs.iter().any(|s| s.channel == channel) {
            return self
                .reply_error(
                    conn,
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
                    conn,
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
            .subscribe(&key, self.id, &self.handle.outbox, since_pos)
            .await
        {
            Ok(s) => s,
            Err(crate::broker::BrokerError::Hub(e)) => {
                let message = match e {
                    crate::hub::HubError::TooManyChannels => {
                        "channel limit reached (history.max_channels)"
                    }
                    crate::hub::HubError::AppChannelQuota => {
                        "the app's channel quota is reached (limits.max_channels_per_app)"
                    }
                };
                return self
                    .reply_error(conn, id, ErrorCode::LimitExceeded, message)
                    .await;
            }
            Err(crate::broker::BrokerError::Unavailable) => {
                return Next::End(End::Close(CloseCode::BrokerUnavailable));
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
        if let Err(end) = self.send(conn, reply).await {
            return Next::End(end);
        }
        if !sub.replay.is_empty() {
            self.state.metrics.replayed.inc_by(sub.replay.len() as u64);
            let timeout = self.state.config.websocket.write_timeout;
            let sent = tokio::time::timeout(timeout, async {
                for p in &sub.replay {
                    conn.feed(&p.frame).await?;
                }
                conn.flush().await
            })
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Next::End(End::Gone),
                Err(_) => {
                    self.state.metrics.limit_hit("write_timeout");
                    return Next::End(End::Close(CloseCode::SlowConsumer));
                }
            }
        }
        Next::Continue
    }

    pub(super) async fn unsubscribe<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        id: Option<u64>,
        channel: Channel,
    ) -> Next {
        let Some(at) = self.subs.iter().position(|s| s.channel == channel) else {
            return self
                .reply_error(
                    conn,
                    id,
                    ErrorCode::BadRequest,
                    "not subscribed to this channel",
                )
                .await;
        };
        self.subs.swap_remove(at);
        self.state.broker.unsubscribe(&self.key(&channel), self.id);
        let reply = ServerFrame::Unsubscribed {
            id,
            channel: channel.as_str(),
        };
        Self::reply(self.send(conn, reply).await)
    }

    pub(super) async fn refresh<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        id: Option<u64>,
        token: &str,
    ) -> Next {
        let claims = match self.state.auth.load().verify_connect(token, unix_now()) {
            Ok(c) => c,
            Err(r) => {
                audit_rejection(&self.state, self.peer, Some(&r), r.reason.label());
                // Dev mode names the exact reason; otherwise it is only in the audit log.
                let message = if self.state.config.dev {
                    format!("refresh token refused: {} (dev mode)", r.reason)
                } else {
                    "refresh token refused".to_owned()
                };
                return self
                    .reply_error(conn, id, ErrorCode::Unauthorized, &message)
                    .await;
            }
        };
        if claims.app != self.handle.app || claims.sub != self.handle.sub || claims.ns != self.ns {
            tracing::warn!(
                target: "audit",
                event = "refresh_mismatch",
                app = self.handle.app.as_str(),
                sub = self.handle.sub.as_str(),
                ns = self.ns.as_str(),
                session = hex::encode(self.public_id).as_str(),
                peer = %self.peer,
                "refresh token for another app, user or namespace refused"
            );
            return self
                .reply_error(
                    conn,
                    id,
                    ErrorCode::Forbidden,
                    "refresh token must have the same iss, sub and ns",
                )
                .await;
        }
        tracing::info!(
            target: "audit",
            event = "refresh",
            app = self.handle.app.as_str(),
            sub = self.handle.sub.as_str(),
            session = hex::encode(self.public_id).as_str(),
            expires_at = claims.exp,
            "session token refreshed"
        );
        self.expires = expiry_instant(claims.exp, self.state.config.tokens.leeway);
        self.expires_at = claims.exp;
        self.handle.set_token(
            claims.jti.clone(),
            claims.kid.clone(),
            claims.key_fingerprint,
        );
        // After the new ids are visible to a revocation's scan (see `refuse_revoked`).
        let check = RevocationCheck {
            app: &claims.app,
            sub: &claims.sub,
            jti: claims.jti.as_deref(),
            kid: claims.kid.as_deref(),
        };
        if let Err(code) = refuse_revoked(&self.state, &check, self.peer) {
            return Next::End(End::Close(code));
        }
        let reply = ServerFrame::Refreshed {
            id,
            expires_at: claims.exp,
        };
        Self::reply(self.send(conn, reply).await)
    }
}
