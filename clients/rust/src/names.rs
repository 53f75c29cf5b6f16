//! The name rules of the protocol (app ids, namespaces, channels, events), checked before
//! anything is signed or sent, with the relay's own wording, so that a mistake fails where it
//! is made rather than as a bare 401 or close code later.

/// Why a name was refused; the message names the rule and never echoes the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Zero bytes, or more than the kind allows.
    #[error("{kind} must be 1 to {max} bytes")]
    Length {
        /// Which kind of name (`app id`, `namespace`, `topic`, `event`).
        kind: &'static str,
        /// Its maximum length in bytes.
        max: usize,
    },
    /// A byte outside the kind's alphabet.
    #[error("{kind} has a character outside {alphabet}")]
    Alphabet {
        /// Which kind of name.
        kind: &'static str,
        /// The allowed alphabet.
        alphabet: &'static str,
    },
    /// A channel without the `#` between namespace and topic.
    #[error("channel must be <namespace>#<topic>")]
    NoSeparator,
}

fn check(
    s: &str,
    kind: &'static str,
    max: usize,
    alphabet: &'static str,
    ok: impl Fn(u8) -> bool,
) -> Result<(), NameError> {
    if s.is_empty() || s.len() > max {
        return Err(NameError::Length { kind, max });
    }
    if !s.bytes().all(ok) {
        return Err(NameError::Alphabet { kind, alphabet });
    }
    Ok(())
}

/// Checks an app id: 1 to 64 bytes of `[A-Za-z0-9._-]`.
///
/// ```
/// assert!(sealcast_client::names::check_app("acme-prod").is_ok());
/// assert!(sealcast_client::names::check_app("acme prod").is_err());
/// ```
pub fn check_app(s: &str) -> Result<(), NameError> {
    check(s, "app id", 64, "[A-Za-z0-9._-]", |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
    })
}

/// Checks a namespace: 1 to 256 bytes of printable ASCII without space and `#`.
///
/// ```
/// assert!(sealcast_client::names::check_namespace("site/1/dashboard/7").is_ok());
/// assert!(sealcast_client::names::check_namespace("site/1#x").is_err());
/// ```
pub fn check_namespace(s: &str) -> Result<(), NameError> {
    check(
        s,
        "namespace",
        256,
        "printable ASCII without space and '#'",
        |b| (0x21..=0x7e).contains(&b) && b != b'#',
    )
}

/// Checks a channel, `<namespace>#<topic>`; the topic is 1 to 128 bytes of
/// `[A-Za-z0-9._:@/-]`.
///
/// ```
/// assert!(sealcast_client::names::check_channel("site/1#absences").is_ok());
/// assert!(sealcast_client::names::check_channel("site/1").is_err());
/// ```
pub fn check_channel(s: &str) -> Result<(), NameError> {
    let (ns, topic) = s.split_once('#').ok_or(NameError::NoSeparator)?;
    check_namespace(ns)?;
    check(topic, "topic", 128, "[A-Za-z0-9._:@/-]", |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'/' | b'-')
    })
}

/// Checks an event name: 1 to 64 bytes of `[A-Za-z0-9._:-]`.
///
/// ```
/// assert!(sealcast_client::names::check_event("AddAbsence").is_ok());
/// assert!(sealcast_client::names::check_event("add absence").is_err());
/// ```
pub fn check_event(s: &str) -> Result<(), NameError> {
    check(s, "event", 64, "[A-Za-z0-9._:-]", |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relays_rules() {
        assert!(check_channel("ari:cloud:jira::site/7f3c0d2e/dashboard/10001#gadget-2").is_ok());
        assert_eq!(check_channel("nohash"), Err(NameError::NoSeparator));
        for bad in ["#t", "ns#", "ns#a#b", "n s#t", "ns#t t", "ns#é"] {
            assert!(check_channel(bad).is_err(), "{bad}");
        }
        assert!(check_channel(&format!("{}#t", "n".repeat(256))).is_ok());
        assert!(check_channel(&format!("{}#t", "n".repeat(257))).is_err());
        assert!(check_channel(&format!("ns#{}", "t".repeat(129))).is_err());
        assert!(check_namespace("a\u{7f}").is_err());
        assert!(check_namespace("a\tb").is_err());
        assert!(check_event("a.b_c:d-e").is_ok());
        assert!(check_event("a/b").is_err());
        assert!(check_event(&"e".repeat(65)).is_err());
        assert!(check_app("acme-prod_1.x").is_ok());
        assert_eq!(
            check_app("").unwrap_err().to_string(),
            "app id must be 1 to 64 bytes"
        );
        assert_eq!(
            check_namespace("a b").unwrap_err().to_string(),
            "namespace has a character outside printable ASCII without space and '#'"
        );
    }
}
