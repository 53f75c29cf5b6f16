//! Validated names: every string that routes a message becomes one of these newtypes at
//! the edge, so the hub never sees an unchecked name.
//!
//! Names are `Arc<str>`: a channel name is cloned into every subscription and every
//! history entry's key, and an `Arc` clone is one atomic increment instead of a copy.

use std::fmt;
use std::sync::Arc;

/// Why a name was refused. The message names the rule, never echoes the input (which may
/// be attacker-controlled and huge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Zero bytes, or more than the kind allows.
    #[error("{kind} must be 1 to {max} bytes")]
    Length {
        /// Which kind of name.
        kind: &'static str,
        /// Its maximum length in bytes.
        max: usize,
    },
    /// A byte outside the kind's alphabet.
    #[error("{kind} has a character outside {alphabet}")]
    Alphabet {
        /// Which kind of name.
        kind: &'static str,
        /// The allowed alphabet, for the message.
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

fn is_namespace_byte(b: u8) -> bool {
    // Printable ASCII without space (0x20) and without '#', which separates the topic.
    (0x21..=0x7e).contains(&b) && b != b'#'
}

fn is_topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'/' | b'-')
}

fn is_event_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

fn is_app_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

name_type!(
    /// An app (tenant) id: 1 to 64 bytes of `[A-Za-z0-9._-]`.
    AppId
);
name_type!(
    /// The unit of access a connect token grants: 1 to 256 bytes of printable ASCII, no
    /// space, no `#`.
    Namespace
);
name_type!(
    /// A clear-text event type: 1 to 64 bytes of `[A-Za-z0-9._:-]`.
    EventName
);
name_type!(
    /// `<namespace>#<topic>`; the topic is 1 to 128 bytes of `[A-Za-z0-9._:@/-]`.
    Channel
);

impl AppId {
    /// Validates an app id.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check(s, "app id", 64, "[A-Za-z0-9._-]", is_app_byte)?;
        Ok(Self(s.into()))
    }
}

impl Namespace {
    /// Validates a namespace.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check(
            s,
            "namespace",
            256,
            "printable ASCII without space and '#'",
            is_namespace_byte,
        )?;
        Ok(Self(s.into()))
    }
}

impl EventName {
    /// Validates an event name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check(s, "event", 64, "[A-Za-z0-9._:-]", is_event_byte)?;
        Ok(Self(s.into()))
    }
}

impl Channel {
    /// Validates `<namespace>#<topic>`. The namespace cannot contain `#`, so the first `#`
    /// is the separator and the topic's alphabet forbids another.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let (ns, topic) = s.split_once('#').ok_or(NameError::NoSeparator)?;
        check(
            ns,
            "namespace",
            256,
            "printable ASCII without space and '#'",
            is_namespace_byte,
        )?;
        check(topic, "topic", 128, "[A-Za-z0-9._:@/-]", is_topic_byte)?;
        Ok(Self(s.into()))
    }

    /// The namespace part, before the `#`.
    pub fn namespace(&self) -> &str {
        // Validated at construction: the separator is present.
        self.0.split_once('#').map_or("", |(ns, _)| ns)
    }

    /// The topic part, after the `#`.
    pub fn topic(&self) -> &str {
        self.0.split_once('#').map_or("", |(_, t)| t)
    }

    /// Whether this channel lies in `ns`: exact equality of the namespace part, never a
    /// prefix match (`a/b` does not grant `a/bc#x` nor `a#x`).
    pub fn in_namespace(&self, ns: &Namespace) -> bool {
        self.namespace() == ns.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_splits_on_first_hash_and_checks_both_parts() {
        let c =
            Channel::parse("ari:cloud:jira::site/7f3c0d2e/dashboard/10001#gadget-20002").unwrap();
        assert_eq!(
            c.namespace(),
            "ari:cloud:jira::site/7f3c0d2e/dashboard/10001"
        );
        assert_eq!(c.topic(), "gadget-20002");
        assert_eq!(Channel::parse("nohash"), Err(NameError::NoSeparator));
        assert!(Channel::parse("#topic").is_err());
        assert!(Channel::parse("ns#").is_err());
        assert!(Channel::parse("ns#a#b").is_err());
        assert!(Channel::parse("n s#t").is_err());
        assert!(Channel::parse("ns#t t").is_err());
        assert!(Channel::parse(&format!("{}#t", "n".repeat(257))).is_err());
        assert!(Channel::parse(&format!("{}#t", "n".repeat(256))).is_ok());
        assert!(Channel::parse(&format!("ns#{}", "t".repeat(129))).is_err());
        assert!(Channel::parse("ns#é").is_err());
    }

    #[test]
    fn namespace_match_is_exact_never_prefix() {
        let ns = Namespace::parse("site/1/dashboard/1").unwrap();
        assert!(
            Channel::parse("site/1/dashboard/1#g")
                .unwrap()
                .in_namespace(&ns)
        );
        assert!(
            !Channel::parse("site/1/dashboard/10#g")
                .unwrap()
                .in_namespace(&ns)
        );
        assert!(
            !Channel::parse("site/1/dashboard#g")
                .unwrap()
                .in_namespace(&ns)
        );
        assert!(
            !Channel::parse("xsite/1/dashboard/1#g")
                .unwrap()
                .in_namespace(&ns)
        );
    }

    #[test]
    fn event_and_app_alphabets() {
        assert!(EventName::parse("AddAbsence").is_ok());
        assert!(EventName::parse("a.b_c:d-e").is_ok());
        assert!(EventName::parse("a/b").is_err());
        assert!(EventName::parse("").is_err());
        assert!(EventName::parse(&"e".repeat(65)).is_err());
        assert!(AppId::parse("acme-prod_1.x").is_ok());
        assert!(AppId::parse("acme prod").is_err());
        assert!(Namespace::parse("a\u{7f}").is_err());
        assert!(Namespace::parse("a\tb").is_err());
    }
}
