//! `allowed_origins`: which web origins may open a WebSocket.
//!
//! A browser always sends `Origin` on a WebSocket upgrade, so checking it stops other
//! sites' pages from using a user's tokens through this relay (tokens are bearer
//! credentials; the origin check is defence in depth, not authentication). Non-browser
//! clients that send no `Origin` are allowed: they are not subject to cross-site attacks
//! and could forge the header anyway.

/// One allowed origin: exact (`https://app.example.com`, port optional) or a wildcard of
/// subdomains (`https://*.example.com`, which does not match `https://example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    /// For a wildcard, the suffix including the leading dot (`.example.com`).
    host: String,
    port: Option<u16>,
    wildcard: bool,
}

/// Splits `scheme://host[:port]` (lowercased), refusing paths, users and queries.
fn split(origin: &str) -> Option<(String, String, Option<u16>)> {
    let origin = origin.to_ascii_lowercase();
    let (scheme, rest) = origin.split_once("://")?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() {
        return None;
    }
    if rest.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
            (h.to_string(), Some(p.parse::<u16>().ok()?))
        }
        _ => (rest.to_string(), None),
    };
    if host.is_empty() {
        return None;
    }
    Some((scheme.to_string(), host, port))
}

impl OriginPattern {
    /// Parses a configured origin; the error says what is wrong.
    pub fn parse(pattern: &str) -> Result<OriginPattern, String> {
        let (scheme, host, port) = split(pattern).ok_or_else(|| {
            format!(
                "{pattern:?} is not an origin like https://app.example.com or https://*.example.com"
            )
        })?;
        if let Some(suffix) = host.strip_prefix('*') {
            if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains('*') {
                return Err(format!(
                    "{pattern:?}: a wildcard must be a whole leading label, as in https://*.example.com"
                ));
            }
            return Ok(OriginPattern {
                scheme,
                host: suffix.to_string(),
                port,
                wildcard: true,
            });
        }
        if host.contains('*') {
            return Err(format!(
                "{pattern:?}: a wildcard must be a whole leading label"
            ));
        }
        Ok(OriginPattern {
            scheme,
            host,
            port,
            wildcard: false,
        })
    }

    /// Whether an `Origin` header value matches.
    pub fn matches(&self, origin: &str) -> bool {
        let Some((scheme, host, port)) = split(origin) else {
            return false;
        };
        if scheme != self.scheme || port != self.port {
            return false;
        }
        if self.wildcard {
            host.len() > self.host.len() && host.ends_with(&self.host)
        } else {
            host == self.host
        }
    }
}

/// The configured policy.
#[derive(Debug, Clone)]
pub enum OriginPolicy {
    /// `allowed_origins` unset: every origin.
    Any,
    /// Only these.
    Only(Vec<OriginPattern>),
}

impl OriginPolicy {
    /// From the config (patterns were validated at load).
    pub fn from_config(origins: Option<&[String]>) -> OriginPolicy {
        match origins {
            None => OriginPolicy::Any,
            Some(list) => OriginPolicy::Only(
                list.iter()
                    .filter_map(|o| OriginPattern::parse(o).ok())
                    .collect(),
            ),
        }
    }

    /// Whether an upgrade with this `Origin` header (if any) may proceed.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (OriginPolicy::Any, _) | (OriginPolicy::Only(_), None) => true,
            (OriginPolicy::Only(list), Some(o)) => list.iter().any(|p| p.matches(o)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_origins() {
        let exact = OriginPattern::parse("https://App.example.com").unwrap();
        assert!(exact.matches("https://app.example.com"));
        assert!(!exact.matches("http://app.example.com"));
        assert!(!exact.matches("https://app.example.com:8443"));
        assert!(!exact.matches("https://app.example.com.evil.io"));
        let wild = OriginPattern::parse("https://*.example.com").unwrap();
        assert!(wild.matches("https://a.example.com"));
        assert!(wild.matches("https://a.b.example.com"));
        assert!(!wild.matches("https://example.com"));
        assert!(!wild.matches("https://evilexample.com"));
        assert!(!wild.matches("https://a.example.com.evil.io"));
        assert!(!wild.matches("null"));
        let port = OriginPattern::parse("http://localhost:5173").unwrap();
        assert!(port.matches("http://localhost:5173") && !port.matches("http://localhost"));
        for bad in [
            "example.com",
            "https://",
            "https://a.com/path",
            "ftp://a.com",
            "https://*example.com",
            "https://a.*.com",
            "https://x:99999",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy() {
        let p = OriginPolicy::from_config(Some(&["https://*.example.com".to_string()]));
        assert!(p.allows(Some("https://x.example.com")));
        assert!(!p.allows(Some("https://x.other.com")));
        assert!(p.allows(None), "non-browser clients send no Origin");
        assert!(OriginPolicy::Any.allows(Some("https://anything.io")));
    }
}
