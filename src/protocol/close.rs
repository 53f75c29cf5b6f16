//! WebSocket close codes of PROTOCOL.md 3.4, shared with the TypeScript SDK through
//! `tests/fixtures/protocol.json`.

/// Why the relay closes a WebSocket. Each variant is one close code; the reason text sent
/// with it is short, fixed, and never contains client input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1001: shutting down or draining; reconnect after a jittered delay and recover.
    GoingAway,
    /// 1002: WebSocket framing that RFC 6455 forbids (unmasked frame, reserved bits or
    /// opcodes, fragmented or over-long control frame, malformed close payload or code).
    ProtocolError,
    /// 1003: a binary frame (this protocol is text only).
    UnsupportedData,
    /// 1007: a text frame or close reason that is not valid UTF-8.
    InvalidPayload,
    /// 1008: application protocol violation (first frame not `connect`, a frame that is not
    /// a JSON object, unknown `type`, a second `connect`).
    ProtocolViolation,
    /// 1009: a frame over the size limit.
    FrameTooLarge,
    /// 1011: internal error; reconnect with backoff.
    InternalError,
    /// 1011 too, with the reason `broker_unavailable`: the broker (Redis) was lost, so what
    /// is published meanwhile cannot reach this session; reconnect with backoff and recover.
    /// Not in [`CloseCode::ALL`], which lists each wire code once.
    BrokerUnavailable,
    /// 4001: token missing, malformed, badly signed, wrong audience, unknown app, or auth timeout.
    Unauthorized,
    /// 4002: the session's token expired.
    TokenExpired,
    /// 4003: the session's token was revoked.
    TokenRevoked,
    /// 4008: the client could not keep up and its outbound queue filled.
    SlowConsumer,
    /// 4029: rate limited.
    RateLimited,
}

impl CloseCode {
    /// Every code, in protocol order.
    pub const ALL: [CloseCode; 12] = [
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::UnsupportedData,
        CloseCode::InvalidPayload,
        CloseCode::ProtocolViolation,
        CloseCode::FrameTooLarge,
        CloseCode::InternalError,
        CloseCode::Unauthorized,
        CloseCode::TokenExpired,
        CloseCode::TokenRevoked,
        CloseCode::SlowConsumer,
        CloseCode::RateLimited,
    ];

    /// The numeric code on the wire.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::UnsupportedData => 1003,
            CloseCode::InvalidPayload => 1007,
            CloseCode::ProtocolViolation => 1008,
            CloseCode::FrameTooLarge => 1009,
            CloseCode::InternalError | CloseCode::BrokerUnavailable => 1011,
            CloseCode::Unauthorized => 4001,
            CloseCode::TokenExpired => 4002,
            CloseCode::TokenRevoked => 4003,
            CloseCode::SlowConsumer => 4008,
            CloseCode::RateLimited => 4029,
        }
    }

    /// The stable name, as in the fixture and the metrics label.
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::GoingAway => "going_away",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::UnsupportedData => "unsupported_data",
            CloseCode::InvalidPayload => "invalid_payload",
            CloseCode::ProtocolViolation => "protocol_violation",
            CloseCode::FrameTooLarge => "frame_too_large",
            CloseCode::InternalError => "internal_error",
            CloseCode::BrokerUnavailable => "broker_unavailable",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::TokenRevoked => "token_revoked",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::RateLimited => "rate_limited",
        }
    }

    /// The code for a number received on the wire, if it is one of the protocol's.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::CloseCode;

    #[test]
    fn matches_the_shared_fixture() {
        let text = include_str!("../../tests/fixtures/protocol.json");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let listed = v["close_codes"].as_array().unwrap();
        assert_eq!(listed.len(), CloseCode::ALL.len());
        for (entry, code) in listed.iter().zip(CloseCode::ALL) {
            assert_eq!(entry["code"].as_u64().unwrap(), u64::from(code.code()));
            assert_eq!(entry["name"].as_str().unwrap(), code.name());
            assert_eq!(CloseCode::from_code(code.code()), Some(code));
        }
        assert_eq!(CloseCode::from_code(1000), None);
    }
}
