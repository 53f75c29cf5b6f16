//! Secret bytes: zeroized on drop, never printed.

use std::fmt;

use zeroize::Zeroizing;

/// An app signing secret or a payload key. `Debug` and `Display` print a fixed
/// placeholder, so a secret cannot reach a log through a derived `Debug` of a config.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps the bytes; the caller's copy should be zeroized by the caller if it lingers.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// The secret bytes, for keying a MAC or cipher.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn never_prints_its_bytes() {
        let s = Secret::new(b"super-secret-value-0123456789abcdef".to_vec());
        assert!(!format!("{s:?} {s}").contains("super"));
        assert_eq!(s.len(), 35);
    }
}
