//! The JSON frames of PROTOCOL.md 3.1 and 3.2.
//!
//! Client frames are parsed in two steps so that the two kinds of bad input get the
//! protocol's two different answers: a frame that is not a JSON object, or has no known
//! `type`, is a protocol violation (close 1008); a known frame with a bad field is a
//! refused request (`error` / `bad_request`) and the connection stays open. Unknown extra
//! fields are ignored, so that a newer client can talk to an older relay.

use serde::{Deserialize, Serialize};

use super::names::{Channel, NameError};

/// A recovery position: the last offset a client saw, in the channel epoch it saw it in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Since {
    /// The epoch the offset belongs to.
    pub epoch: String,
    /// The last offset the client received.
    pub offset: u64,
}

/// A frame from the client, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Authenticate; must be first.
    Connect {
        /// The connect token.
        token: String,
    },
    /// Subscribe, optionally recovering from a position.
    Subscribe {
        /// Echoed in the reply.
        id: Option<u64>,
        /// The channel.
        channel: Channel,
        /// Where to recover from.
        since: Option<Since>,
    },
    /// Stop receiving a channel.
    Unsubscribe {
        /// Echoed in the reply.
        id: Option<u64>,
        /// The channel.
        channel: Channel,
    },
    /// Replace the session's token.
    Refresh {
        /// Echoed in the reply.
        id: Option<u64>,
        /// The new connect token.
        token: String,
    },
}

/// Why a client frame was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a JSON object with a known `type`: close 1008.
    #[error("frame is not a JSON object with a known type")]
    Violation,
    /// A known frame with a missing or invalid field: `error` / `bad_request`.
    #[error("{message}")]
    BadRequest {
        /// The request id, when it could be read.
        id: Option<u64>,
        /// What was wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ConnectBody {
    token: String,
}

#[derive(Deserialize)]
struct SubscribeBody {
    #[serde(default)]
    id: Option<u64>,
    channel: String,
    #[serde(default)]
    since: Option<Since>,
}

#[derive(Deserialize)]
struct UnsubscribeBody {
    #[serde(default)]
    id: Option<u64>,
    channel: String,
}

#[derive(Deserialize)]
struct RefreshBody {
    #[serde(default)]
    id: Option<u64>,
    token: String,
}

impl ClientFrame {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        // Step 1: a JSON object with a string `type` we know. serde_json refuses nesting
        // deeper than 128 levels, so hostile depth costs a bounded amount of work.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| FrameError::Violation)?;
        if !value.is_object() {
            return Err(FrameError::Violation);
        }
        let head = Head::deserialize(&value).map_err(|_| FrameError::Violation)?;
        let kind = head.kind.into_owned();
        // Step 2: the fields of that type.
        let id = || {
            IdOnly::deserialize(&value)
                .ok()
                .and_then(|i| i.id)
                .and_then(|v| v.as_u64())
        };
        let bad = |e: serde_json::Error| FrameError::BadRequest {
            id: id(),
            message: field_error(&e),
        };
        let bad_name = |e: NameError, id: Option<u64>| FrameError::BadRequest {
            id,
            message: e.to_string(),
        };
        match kind.as_str() {
            "connect" => {
                let b = ConnectBody::deserialize(&value).map_err(bad)?;
                Ok(ClientFrame::Connect { token: b.token })
            }
            "subscribe" => {
                let b = SubscribeBody::deserialize(&value).map_err(bad)?;
                let channel = Channel::parse(&b.channel).map_err(|e| bad_name(e, b.id))?;
                Ok(ClientFrame::Subscribe {
                    id: b.id,
                    channel,
                    since: b.since,
                })
            }
            "unsubscribe" => {
                let b = UnsubscribeBody::deserialize(&value).map_err(bad)?;
                let channel = Channel::parse(&b.channel).map_err(|e| bad_name(e, b.id))?;
                Ok(ClientFrame::Unsubscribe { id: b.id, channel })
            }
            "refresh" => {
                let b = RefreshBody::deserialize(&value).map_err(bad)?;
                Ok(ClientFrame::Refresh {
                    id: b.id,
                    token: b.token,
                })
            }
            _ => Err(FrameError::Violation),
        }
    }
}

/// serde's message names the field and the expected type, and may quote the offending
/// value: cap it so a reply never grows with the input.
fn field_error(e: &serde_json::Error) -> String {
    clip(e.to_string(), 160)
}

/// Cuts `text` to at most `max` bytes at a character boundary (a plain `truncate` panics
/// inside a multi-byte character, and error messages can quote non-ASCII input).
pub fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The codes of a refused request (`error` frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed or invalid request.
    BadRequest,
    /// Outside the token's namespace.
    Forbidden,
    /// A limit was reached.
    LimitExceeded,
    /// The token in a `refresh` was refused.
    Unauthorized,
}

/// A frame from the relay. `pub` frames are not here: they are encoded once per
/// publication by [`encode_pub`] and shared by every subscriber.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// Auth accepted.
    Connected {
        /// Session id.
        session: &'a str,
        /// The token's namespace.
        ns: &'a str,
        /// The token's `exp`.
        expires_at: i64,
    },
    /// Subscription live.
    Subscribed {
        /// Echo of the request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: &'a str,
        /// The channel's epoch.
        epoch: &'a str,
        /// The last offset the client will have once the replay is done.
        offset: u64,
        /// Present only when `since` was given.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    /// Subscription ended.
    Unsubscribed {
        /// Echo of the request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: &'a str,
    },
    /// Token replaced.
    Refreshed {
        /// Echo of the request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The new token's `exp`.
        expires_at: i64,
    },
    /// A refused request; the connection stays open.
    Error {
        /// Echo of the request id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The error code.
        code: ErrorCode,
        /// A human-readable reason (never an echo of a token or payload).
        message: &'a str,
    },
}

impl ServerFrame<'_> {
    /// The frame as JSON text.
    pub fn encode(&self) -> String {
        // Serializing these plain structs of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct PubFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: &'a str,
    event: &'a str,
    data: &'a str,
    offset: u64,
}

/// Encodes one publication's `pub` frame. Called once per publication; the resulting
/// bytes are shared by every subscriber and by the history.
pub fn encode_pub(channel: &str, event: &str, data: &str, offset: u64) -> String {
    serde_json::to_string(&PubFrame {
        kind: "pub",
        channel,
        event,
        data,
        offset,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_client_frame() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"connect","token":"t"}"#),
            Ok(ClientFrame::Connect { token: "t".into() })
        );
        let f = ClientFrame::parse(
            r#"{"type":"subscribe","id":7,"channel":"ns#t","since":{"epoch":"e","offset":3},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            ClientFrame::Subscribe {
                id: Some(7),
                channel: Channel::parse("ns#t").unwrap(),
                since: Some(Since {
                    epoch: "e".into(),
                    offset: 3
                })
            }
        );
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"unsubscribe","channel":"ns#t"}"#),
            Ok(ClientFrame::Unsubscribe { id: None, .. })
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"refresh","id":1,"token":"x"}"#),
            Ok(ClientFrame::Refresh { id: Some(1), .. })
        ));
    }

    #[test]
    fn violations_versus_bad_requests() {
        for v in [
            "",
            "[]",
            "1",
            "\"connect\"",
            "{}",
            r#"{"type":1}"#,
            r#"{"type":"nope"}"#,
            "{",
            "null",
        ] {
            assert_eq!(ClientFrame::parse(v), Err(FrameError::Violation), "{v}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(ClientFrame::parse(&deep), Err(FrameError::Violation));
        match ClientFrame::parse(r#"{"type":"subscribe","id":4,"channel":"no-hash"}"#) {
            Err(FrameError::BadRequest { id: Some(4), .. }) => {}
            other => panic!("{other:?}"),
        }
        match ClientFrame::parse(r#"{"type":"subscribe","id":5}"#) {
            Err(FrameError::BadRequest {
                id: Some(5),
                message,
            }) => assert!(message.contains("channel")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"subscribe","id":-1,"channel":"a#b"}"#),
            Err(FrameError::BadRequest { id: None, .. })
        ));
    }

    #[test]
    fn clip_never_splits_a_character() {
        assert_eq!(clip("é".repeat(100), 161).len(), 160);
        assert_eq!(clip("abc".into(), 160), "abc");
        // serde quotes a wrongly typed value in its message: a long non-ASCII one.
        let long = format!(
            r#"{{"type":"subscribe","channel":"a#b","id":"{}"}}"#,
            "é".repeat(200)
        );
        assert!(matches!(
            ClientFrame::parse(&long),
            Err(FrameError::BadRequest { .. })
        ));
    }

    #[test]
    fn server_frames_encode_as_the_protocol_says() {
        let s = ServerFrame::Subscribed {
            id: Some(1),
            channel: "a#b",
            epoch: "e1",
            offset: 9,
            recovered: None,
        }
        .encode();
        assert_eq!(
            s,
            r#"{"type":"subscribed","id":1,"channel":"a#b","epoch":"e1","offset":9}"#
        );
        let e = ServerFrame::Error {
            id: None,
            code: ErrorCode::LimitExceeded,
            message: "m",
        }
        .encode();
        assert_eq!(
            e,
            r#"{"type":"error","code":"limit_exceeded","message":"m"}"#
        );
        assert_eq!(
            encode_pub("a#b", "E", "AAAA", 3),
            r#"{"type":"pub","channel":"a#b","event":"E","data":"AAAA","offset":3}"#
        );
    }
}
