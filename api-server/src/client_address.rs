//! Which address a request comes from, for the per-source limits: the TCP
//! peer, or, when the peer is a configured trusted proxy (an ingress, a load
//! balancer), the client it names in `X-Forwarded-For`.
//!
//! The header is read from the right: each trusted proxy appends the
//! address it received from, so the rightmost entry that is not itself a
//! trusted proxy is the first hop nobody vouches for: the client. Entries
//! further left were written by that client and are ignored, and so is the
//! whole header when the peer is not a trusted proxy.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;

use crate::error::Error;

/// Networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<(IpAddr, u8)>,
}

impl FromStr for TrustedProxies {
    type Err = Error;

    /// Comma-separated CIDRs (`10.0.0.0/8,fd00::/8`) or single addresses.
    fn from_str(list: &str) -> Result<Self, Error> {
        let networks = list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let invalid = || Error::Config(format!("trusted proxy '{entry}' is not an address or CIDR"));
                let (address, prefix) = entry.split_once('/').unwrap_or((entry, ""));
                let address: IpAddr = address.parse().map_err(|_| invalid())?;
                let width = if address.is_ipv4() { 32 } else { 128 };
                let prefix = if prefix.is_empty() { width } else { prefix.parse().map_err(|_| invalid())? };
                if prefix > width {
                    return Err(invalid());
                }
                Ok((address, prefix))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { networks })
    }
}

fn bits(address: IpAddr) -> (u128, u8) {
    match address {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

impl TrustedProxies {
    fn trusts(&self, address: IpAddr) -> bool {
        let (value, width) = bits(address.to_canonical());
        self.networks.iter().any(|&(network, prefix)| {
            let (network, network_width) = bits(network);
            let shift = u32::from(width - prefix.min(width));
            network_width == width && (prefix == 0 || (value >> shift) == (network >> shift))
        })
    }

    /// The client address of a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map_while(|hop| hop.trim().parse().ok())
            .collect();
        hops.iter().rev().find(|&&hop| !self.trusts(hop)).or(hops.first()).copied().unwrap_or(peer)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_trusted_peers_are_believed_and_the_rightmost_untrusted_hop_wins() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.168.1.5, fd00::/8".parse().unwrap();
        let spoofed = headers(&["6.6.6.6, 203.0.113.9"]);
        // A client talking directly: its header is its own word, ignored.
        assert_eq!(trusted.client(ip("198.51.100.1"), &spoofed), ip("198.51.100.1"));
        // Through the ingress: the hop it appended, not the client's spoofed prefix.
        assert_eq!(trusted.client(ip("10.1.2.3"), &spoofed), ip("203.0.113.9"));
        // Two trusted proxies in a row, the header split over two lines.
        let chained = headers(&["6.6.6.6, 203.0.113.9", "192.168.1.5"]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &chained), ip("203.0.113.9"));
        // No header, or garbage: the proxy itself.
        assert_eq!(trusted.client(ip("10.1.2.3"), &HeaderMap::new()), ip("10.1.2.3"));
        assert_eq!(trusted.client(ip("10.1.2.3"), &headers(&["not-an-ip"])), ip("10.1.2.3"));
        assert_eq!(trusted.client(ip("fd00::1"), &headers(&["2001:db8::7"])), ip("2001:db8::7"));
        // Nothing trusted by default.
        assert_eq!(TrustedProxies::default().client(ip("10.1.2.3"), &spoofed), ip("10.1.2.3"));
    }

    #[test]
    fn bad_entries_are_configuration_errors() {
        for bad in ["10.0.0.0/33", "banana", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
        assert!("".parse::<TrustedProxies>().unwrap().networks.is_empty());
        assert!("0.0.0.0/0".parse::<TrustedProxies>().unwrap().trusts(ip("8.8.8.8")));
    }
}
