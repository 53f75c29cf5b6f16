//! The close codes of PROTOCOL.md 5 (`tests/fixtures/protocol.json`) and what a subscriber
//! does after each.

/// What a client does after the relay closes with a given code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Report and stop: retrying cannot help (a client bug, a bad or revoked token).
    Never,
    /// Reconnect with backoff and recover every subscription.
    Recover,
    /// Fetch a new token, reconnect and recover.
    NewToken,
}

/// The named close codes with their retry rule. Codes outside it (1000, 1005, 1006 = a
/// network drop, ...) are transient: [`Retry::Recover`].
pub const CLOSE_CODES: [(u16, &str, Retry); 12] = [
    (1001, "going_away", Retry::Recover),
    (1002, "protocol_error", Retry::Never),
    (1003, "unsupported_data", Retry::Never),
    (1007, "invalid_payload", Retry::Never),
    (1008, "protocol_violation", Retry::Never),
    (1009, "frame_too_large", Retry::Never),
    (1011, "internal_error", Retry::Recover),
    (4001, "unauthorized", Retry::Never),
    (4002, "token_expired", Retry::NewToken),
    (4003, "token_revoked", Retry::Never),
    (4008, "slow_consumer", Retry::Recover),
    (4029, "rate_limited", Retry::Recover),
];

/// The rule for `code`, and its name (`transient` outside the table).
///
/// ```
/// use sealcast_client::subscriber::{close_policy, Retry};
/// assert_eq!(close_policy(4002), (Retry::NewToken, "token_expired"));
/// assert_eq!(close_policy(1006), (Retry::Recover, "transient"));
/// ```
pub fn close_policy(code: u16) -> (Retry, &'static str) {
    CLOSE_CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or((Retry::Recover, "transient"), |(_, name, r)| (*r, name))
}

/// Close code 4029: the relay is at a connection limit, so the next attempt waits longer.
pub(crate) const RATE_LIMITED: u16 = 4029;
