//! The WebSocket frames of protocol v1 as types (PROTOCOL.md 3.1 and 3.2): [`ClientFrame`],
//! what a client sends, and [`ServerFrame`], what the relay sends. The [`crate::Subscriber`]
//! speaks through them, and the recorded session every implementation checks
//! (`tests/fixtures/interop/session.json`) is decoded and re-encoded with them.
//!
//! Optional fields (`id`, `since`, `recovered`) are left out when absent, as the protocol
//! writes them; unknown fields of a relay frame are ignored, so a newer relay's additions
//! do not break an older client.
//!
//! ```
//! use sealcast_client::frames::{ClientFrame, ServerFrame};
//! use sealcast_client::subscriber::Position;
//! let f = ClientFrame::subscribe(1, "site/1#news", Some(Position { epoch: "e1".into(), offset: 4 }));
//! assert_eq!(
//!     f.to_json(),
//!     r#"{"type":"subscribe","id":1,"channel":"site/1#news","since":{"epoch":"e1","offset":4}}"#
//! );
//! let reply = ServerFrame::parse(r#"{"type":"unsubscribed","id":2,"channel":"site/1#news"}"#)?;
//! assert_eq!(reply, ServerFrame::Unsubscribed { id: Some(2), channel: "site/1#news".into() });
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::subscriber::Position;

/// A frame a client sends to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// The first frame of a connection: authenticates it.
    Connect {
        /// A connect token.
        token: String,
    },
    /// Subscribes to a channel, recovering from `since` when given.
    Subscribe {
        /// Echoed in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// `<namespace>#<topic>`.
        channel: String,
        /// The last position the client saw: everything after it is replayed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Position>,
    },
    /// Stops receiving a channel.
    Unsubscribe {
        /// Echoed in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: String,
    },
    /// Replaces the session's token (same `iss`, `sub` and `ns`) before it expires.
    Refresh {
        /// Echoed in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The new connect token.
        token: String,
    },
}

impl ClientFrame {
    /// `{"type":"connect","token":T}`.
    pub fn connect(token: &str) -> ClientFrame {
        ClientFrame::Connect {
            token: token.into(),
        }
    }

    /// `{"type":"subscribe","id":N,"channel":C}`, with `"since"` when recovering.
    pub fn subscribe(id: u64, channel: &str, since: Option<Position>) -> ClientFrame {
        ClientFrame::Subscribe {
            id: Some(id),
            channel: channel.into(),
            since,
        }
    }

    /// `{"type":"unsubscribe","id":N,"channel":C}`.
    pub fn unsubscribe(id: u64, channel: &str) -> ClientFrame {
        ClientFrame::Unsubscribe {
            id: Some(id),
            channel: channel.into(),
        }
    }

    /// `{"type":"refresh","id":N,"token":T}`.
    pub fn refresh(id: u64, token: &str) -> ClientFrame {
        ClientFrame::Refresh {
            id: Some(id),
            token: token.into(),
        }
    }

    /// The JSON text of the frame, as sent.
    pub fn to_json(&self) -> String {
        // A derived Serialize of strings, integers and options cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A frame the relay sends to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The connect token was accepted.
    Connected {
        /// The relay's id of this session.
        session: String,
        /// The namespace the token grants.
        ns: String,
        /// The token's `exp`, unix seconds.
        expires_at: i64,
    },
    /// A subscription is live; a replay (if any) follows, then live publications.
    Subscribed {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: String,
        /// The channel's epoch.
        epoch: String,
        /// The channel's last offset this client will have once the replay is done.
        offset: u64,
        /// Present when `since` was asked: whether every publication after it follows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    /// One publication.
    Pub {
        /// The channel.
        channel: String,
        /// The clear-text event name.
        event: String,
        /// The ciphertext: base64 of nonce, ciphertext and tag.
        data: String,
        /// Its offset in the channel.
        offset: u64,
    },
    /// A subscription ended at the client's request.
    Unsubscribed {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: String,
    },
    /// The session's token was replaced.
    Refreshed {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The new token's `exp`, unix seconds.
        expires_at: i64,
    },
    /// A request was refused; the connection stays open.
    Error {
        /// The request's id, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// `bad_request`, `forbidden`, `limit_exceeded` or `unauthorized`.
        code: String,
        /// In words.
        message: String,
    },
}

impl ServerFrame {
    /// Parses the JSON text of a relay frame.
    pub fn parse(text: &str) -> Result<ServerFrame, serde_json::Error> {
        serde_json::from_str(text)
    }
}
