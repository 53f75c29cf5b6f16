//! What the connection task does with each frame the relay sends: `connected`,
//! `subscribed` (with its replay bookkeeping), `pub` (position check, decryption, delivery)
//! and `error`.

use super::*;

impl Task {
    /// Handles one frame; false when the subscriber was stopped while delivering.
    pub(super) async fn on_text(&mut self, text: &str, ws: &mut Ws, s: &mut Session) -> bool {
        let frame = match ServerFrame::parse(text) {
            Ok(f) => f,
            Err(_) => {
                self.report(
                    ErrorKind::Protocol,
                    "unexpected frame from the relay ignored".into(),
                    None,
                    None,
                );
                return true;
            }
        };
        match frame {
            ServerFrame::Connected {
                session,
                ns,
                expires_at,
            } => {
                s.connected_at = Some(Instant::now());
                self.set_state(ConnectionState::Connected {
                    session,
                    ns,
                    expires_at,
                });
                self.schedule_refresh(expires_at, s);
                let waiting: Vec<String> = self
                    .channels
                    .iter()
                    .filter(|(_, c)| c.wire == Wire::None)
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in waiting {
                    self.send_subscribe(&name, ws).await;
                }
                true
            }
            ServerFrame::Subscribed {
                id,
                channel,
                epoch,
                offset,
                recovered,
            } => {
                self.on_subscribed(id, &channel, epoch, offset, recovered)
                    .await
            }
            ServerFrame::Pub {
                channel,
                event,
                data,
                offset,
            } => self.on_pub(channel, event, &data, offset).await,
            ServerFrame::Unsubscribed { id, .. } => {
                if let Some(id) = id {
                    self.pending.remove(&id);
                }
                true
            }
            ServerFrame::Refreshed { id, expires_at } => {
                if let Some(id) = id {
                    self.pending.remove(&id);
                }
                let now = self.state.borrow().clone();
                if let ConnectionState::Connected { session, ns, .. } = now {
                    self.set_state(ConnectionState::Connected {
                        session,
                        ns,
                        expires_at,
                    });
                }
                self.schedule_refresh(expires_at, s);
                true
            }
            ServerFrame::Error { id, code, message } => self.on_error(id, code, message).await,
        }
    }

    pub(super) async fn on_subscribed(
        &mut self,
        id: Option<u64>,
        channel: &str,
        epoch: String,
        offset: u64,
        recovered: Option<bool>,
    ) -> bool {
        if let Some(id) = id {
            self.pending.remove(&id);
        }
        let Some(ch) = self.channels.get_mut(channel) else {
            return true; // unsubscribed meanwhile
        };
        if ch.wire != Wire::Pending || (id.is_some() && ch.req_id != id) {
            return true;
        }
        let since = ch.asked.clone();
        let failed = ch.subscribed(epoch.clone(), offset, recovered);
        let position = Position { epoch, offset };
        let mut events = Vec::new();
        for l in &ch.listeners {
            if let (true, Some(since)) = (failed, &since) {
                let info = RecoveryFailed {
                    channel: channel.into(),
                    since: since.clone(),
                    position: position.clone(),
                };
                if let Some(f) = &l.on_recovery_failed {
                    f(&info);
                }
                events.push((l.tx.clone(), Event::RecoveryFailed(info)));
            }
            events.push((
                l.tx.clone(),
                Event::Subscribed {
                    position: position.clone(),
                    recovered,
                },
            ));
        }
        self.deliver(events).await
    }

    pub(super) async fn on_pub(
        &mut self,
        channel: String,
        event: String,
        data: &str,
        offset: u64,
    ) -> bool {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return true;
        };
        if ch.wire != Wire::Active {
            return true;
        }
        let accepted = ch.accept(offset);
        let epoch = ch.epoch.clone().unwrap_or_default();
        let replayed = offset <= ch.replay_until;
        let txs: Vec<_> = ch.listeners.iter().map(|l| l.tx.clone()).collect();
        match accepted {
            Accept::Duplicate => return true,
            Accept::Gap(last) => self.report(
                ErrorKind::Gap,
                format!("offset jumped from {last} to {offset}"),
                Some(&channel),
                None,
            ),
            Accept::Next => {}
        }
        let plaintext = match self.keys.decrypt_bytes(&channel, &event, data) {
            Ok(p) => p,
            Err(_) => {
                self.report(
                    ErrorKind::DecryptFailed,
                    format!(
                        "publication {channel}@{offset} ({event}) failed authentication: dropped"
                    ),
                    Some(&channel),
                    None,
                );
                return true;
            }
        };
        if serde_json::from_slice::<serde::de::IgnoredAny>(&plaintext).is_err() {
            self.report(
                ErrorKind::BadPayload,
                format!("publication {channel}@{offset} ({event}) is not JSON: dropped"),
                Some(&channel),
                None,
            );
            return true;
        }
        let p = Publication {
            channel,
            event,
            offset,
            epoch,
            replayed,
            plaintext,
        };
        let events = txs
            .into_iter()
            .map(|tx| (tx, Event::Publication(p.clone())))
            .collect();
        self.deliver(events).await
    }

    pub(super) async fn on_error(
        &mut self,
        id: Option<u64>,
        code: String,
        message: String,
    ) -> bool {
        let req = id.and_then(|id| self.pending.remove(&id));
        match req {
            Some(PendingReq::Subscribe) => {
                let name = self
                    .channels
                    .iter()
                    .find(|(_, c)| c.wire == Wire::Pending && c.req_id == id)
                    .map(|(n, _)| n.clone());
                let Some(name) = name else { return true };
                // A refusal is final: the channel is forgotten, not retried on reconnect.
                let ch = self.channels.remove(&name).expect("found above");
                self.report(
                    ErrorKind::RelayError,
                    format!("subscribe to {name} refused: {code}: {message}"),
                    Some(&name),
                    Some(code.clone()),
                );
                let events = ch
                    .listeners
                    .iter()
                    .map(|l| {
                        (
                            l.tx.clone(),
                            Event::Refused {
                                code: code.clone(),
                                message: message.clone(),
                            },
                        )
                    })
                    .collect();
                self.deliver(events).await
            }
            Some(PendingReq::Refresh) => {
                self.report(
                    ErrorKind::RelayError,
                    format!("token refresh refused: {code}: {message}"),
                    None,
                    Some(code),
                );
                true
            }
            Some(PendingReq::Unsubscribe) | None => {
                self.report(
                    ErrorKind::RelayError,
                    format!("{code}: {message}"),
                    None,
                    Some(code),
                );
                true
            }
        }
    }
}
