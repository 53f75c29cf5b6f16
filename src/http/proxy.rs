//! `[http] trusted_proxies`: which client address a request stands for.
//!
//! Behind a load balancer or a TLS-terminating ingress every TCP connection comes from the
//! proxy, so the per-IP connect limit would throttle every user at once (a rolling deploy
//! reconnects them all through one address) and audit records would name only the
//! proxy. Proxies append the address they received a request from to `X-Forwarded-For`.
//! That header is a client's word, so it is believed only hop by hop from our side: the
//! relay reads it only when the TCP peer is a configured proxy, and walks it from the
//! right, skipping further trusted proxies, to the first address no trusted proxy would
//! have written. Anything that does not parse stops the walk at the last trusted hop, so
//! a client can never pick the address it is counted under; it can at worst be counted as
//! its proxy.
//!
//! With no trusted proxy configured (the default) the header is ignored entirely.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The header proxies append the client address to.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// Where a WebSocket client connects from, as limits count it and audit records show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The TCP peer: the client itself, or the proxy in front of it.
    pub tcp: SocketAddr,
    /// The client's address as forwarded by trusted proxies.
    pub forwarded: Option<IpAddr>,
}

impl ClientAddr {
    /// A client connected directly.
    pub fn direct(tcp: SocketAddr) -> ClientAddr {
        ClientAddr {
            tcp,
            forwarded: None,
        }
    }

    /// The address per-IP limits count.
    pub fn ip(&self) -> IpAddr {
        self.forwarded.unwrap_or(self.tcp.ip())
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.forwarded {
            None => write!(f, "{}", self.tcp),
            Some(ip) => write!(f, "{ip} via {}", self.tcp),
        }
    }
}

/// The configured proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// Parses one entry: a network (`10.0.0.0/8`, `fd00::/8`) or a single address.
pub fn parse_entry(entry: &str) -> Result<IpNet, String> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("{entry:?} is not an address or network like 10.0.0.0/8, fd00::/8 or 10.1.2.3")
        })
}

impl TrustedProxies {
    /// From validated config entries (see [`parse_entry`]); an entry that does not parse is
    /// skipped, but config validation has refused it already.
    pub fn from_config(entries: &[String]) -> TrustedProxies {
        TrustedProxies(entries.iter().filter_map(|e| parse_entry(e).ok()).collect())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client a request with these headers, arriving from `tcp`, stands for.
    pub fn client(&self, tcp: SocketAddr, headers: &HeaderMap) -> ClientAddr {
        let direct = ClientAddr::direct(tcp);
        if self.0.is_empty() || !self.trusts(tcp.ip()) {
            return direct;
        }
        // Every X-Forwarded-For line, in order, as one list (RFC 9110 5.3), split on raw
        // bytes: a non-ASCII byte spoils only the element it is in (which then ends the
        // walk from the right, as any other garbage does), never the whole header.
        let mut hops: Vec<&[u8]> = Vec::new();
        for line in headers.get_all(FORWARDED_FOR) {
            hops.extend(line.as_bytes().split(|&b| b == b','));
        }
        let mut client = None;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else { break };
            client = Some(ip);
            if !self.trusts(ip) {
                break;
            }
        }
        ClientAddr {
            tcp,
            forwarded: client,
        }
    }
}

/// One entry of `X-Forwarded-For`: an address, optionally with a port (`1.2.3.4:5678`,
/// `[::1]:5678`), as some proxies write it.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, as a dual-stack socket reports IPv4
/// peers) compare as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        for e in &entries {
            parse_entry(e).unwrap();
        }
        TrustedProxies::from_config(&entries)
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(FORWARDED_FOR, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_are_networks_or_single_addresses() {
        assert_eq!(
            parse_entry("10.0.0.0/8").unwrap(),
            "10.0.0.0/8".parse().unwrap()
        );
        assert_eq!(
            parse_entry(" 10.1.2.3 ").unwrap(),
            "10.1.2.3/32".parse().unwrap()
        );
        assert_eq!(
            parse_entry("fd00::/8").unwrap(),
            "fd00::/8".parse().unwrap()
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "example.com",
            "10.0.0.0/8,10.1.0.0/16",
            "*",
        ] {
            let e = parse_entry(bad).unwrap_err();
            assert!(e.contains("not an address or network"), "{bad}: {e}");
        }
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let none = TrustedProxies::default();
        let c = none.client(peer("127.0.0.1:4000"), &headers(&["127.9.9.9"]));
        assert_eq!(c, ClientAddr::direct(peer("127.0.0.1:4000")));
        assert_eq!(c.ip(), peer("127.0.0.1:4000").ip());
        assert_eq!(c.to_string(), "127.0.0.1:4000");
    }

    #[test]
    fn a_peer_that_is_not_a_trusted_proxy_cannot_claim_another_address() {
        let p = proxies(&["10.0.0.0/8"]);
        let c = p.client(peer("192.0.2.7:4000"), &headers(&["10.1.1.1"]));
        assert_eq!(c.ip(), "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(c.forwarded, None);
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let p = proxies(&["10.0.0.0/8", "fd00::/8"]);
        let from = peer("10.0.0.2:4000");
        // A client-supplied left part cannot win over what the proxies appended.
        let c = p.client(from, &headers(&["203.0.113.66, 198.51.100.4, 10.0.0.9"]));
        assert_eq!(c.ip(), "198.51.100.4".parse::<IpAddr>().unwrap());
        assert_eq!(c.to_string(), "198.51.100.4 via 10.0.0.2:4000");
        // Several header lines are one list, in order.
        let c = p.client(from, &headers(&["203.0.113.66", "198.51.100.5", "fd00::1"]));
        assert_eq!(c.ip(), "198.51.100.5".parse::<IpAddr>().unwrap());
        // Ports, IPv6 in brackets, mapped IPv4.
        let c = p.client(from, &headers(&["[2001:db8::1]:443"]));
        assert_eq!(c.ip(), "2001:db8::1".parse::<IpAddr>().unwrap());
        let c = p.client(from, &headers(&["198.51.100.6:5555"]));
        assert_eq!(c.ip(), "198.51.100.6".parse::<IpAddr>().unwrap());
        let c = p.client(from, &headers(&["::ffff:198.51.100.8"]));
        assert_eq!(c.ip(), "198.51.100.8".parse::<IpAddr>().unwrap());
        let mapped = p.client(peer("[::ffff:10.0.0.2]:4000"), &headers(&["198.51.100.9"]));
        assert_eq!(mapped.ip(), "198.51.100.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop_and_no_header_means_the_proxy() {
        let p = proxies(&["10.0.0.0/8"]);
        let from = peer("10.0.0.2:4000");
        let c = p.client(from, &headers(&["198.51.100.4, unknown, 10.0.0.9"]));
        assert_eq!(c.ip(), "10.0.0.9".parse::<IpAddr>().unwrap());
        let c = p.client(from, &headers(&["198.51.100.4, not-an-ip"]));
        assert_eq!(
            c.ip(),
            from.ip(),
            "nothing trusted parsed: the proxy itself"
        );
        assert_eq!(c.forwarded, None);
        let c = p.client(from, &HeaderMap::new());
        assert_eq!(c, ClientAddr::direct(from));
        // All hops trusted: the leftmost one.
        let c = p.client(from, &headers(&["10.3.3.3, 10.0.0.9"]));
        assert_eq!(c.ip(), "10.3.3.3".parse::<IpAddr>().unwrap());
        // A header that is not visible ASCII.
        let mut h = HeaderMap::new();
        h.insert(
            FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.4\xff").unwrap(),
        );
        assert_eq!(p.client(from, &h), ClientAddr::direct(from));
        // A non-ASCII byte spoils only its own element: walked from the right, the client
        // is still found when the byte is to its left, and garbage on the right ends the
        // walk at the proxy, as ASCII garbage does.
        h.insert(
            FORWARDED_FOR,
            HeaderValue::from_bytes("caf\u{e9}, 198.51.100.4".as_bytes()).unwrap(),
        );
        assert_eq!(
            p.client(from, &h).ip(),
            "198.51.100.4".parse::<IpAddr>().unwrap()
        );
        h.insert(
            FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.4, 10.0.0.9\xff").unwrap(),
        );
        assert_eq!(p.client(from, &h), ClientAddr::direct(from));
    }
}
