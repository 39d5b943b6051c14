//! Outbound safety for calls to remote holds (SSRF): a hold's endpoint comes from a DID
//! document anyone can publish, and a user names the hold in their own profile, so the
//! AppView must not become a proxy into its own network. Every URL is checked before a call
//! ([`check_url`]): `https` only, no userinfo, and an IP-literal host must be a public
//! address; host names are resolved by [`GuardedResolver`], which drops every non-public
//! address, so DNS cannot point a hold at `127.0.0.1` or `169.254.169.254` either. Redirects
//! are never followed by the hold client (a redirect target would skip these checks).
//!
//! `allow_private` (config `federation.allow_private_addresses`) lifts the address and
//! scheme rules for tests and LAN setups (`http://localhost:5001`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Most time a DNS lookup of a hold's host may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// A public (globally routable) unicast address: not loopback, private, link-local,
/// shared (CGNAT), documentation, benchmarking, multicast, broadcast or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64: may reach private v4
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard
                || (s[0] == 0x2002) // 6to4: embeds any v4 address
                || v6 == Ipv6Addr::from([0u16, 0, 0, 0, 0, 0, 0, 0]))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// Why a URL may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlRefused(pub String);

/// Checks a URL the AppView is about to call on a hold's behalf: `https` (or `http` with
/// `allow_private`), a host, no credentials in it, and an IP-literal host must be public.
pub fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, UrlRefused> {
    let u = reqwest::Url::parse(url).map_err(|e| UrlRefused(format!("{url:?}: {e}")))?;
    match u.scheme() {
        "https" => {}
        "http" if allow_private => {}
        s => {
            return Err(UrlRefused(format!(
                "{url:?}: a hold must be reached over https, not {s}"
            )))
        }
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(UrlRefused(format!("{url:?}: credentials in a URL")));
    }
    let host = u
        .host_str()
        .ok_or_else(|| UrlRefused(format!("{url:?}: no host")))?;
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let lower = host.to_ascii_lowercase();
    if !allow_private && (lower == "localhost" || lower.ends_with(".localhost")) {
        return Err(UrlRefused(format!(
            "{url:?}: localhost is not a public host"
        )));
    }
    if let Some(ip) = ip {
        if !allow_private && !is_public(ip) {
            return Err(UrlRefused(format!("{url:?}: {ip} is not a public address")));
        }
    }
    Ok(u)
}

/// reqwest's DNS step for hold calls: the system resolver, minus non-public addresses
/// (unless `allow_private`), with a timeout.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found =
                tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host.as_str(), 0)))
                    .await
                    .map_err(|_| format!("DNS lookup of {host} timed out"))??;
            let ok: Vec<SocketAddr> = found.filter(|a| allow || is_public(a.ip())).collect();
            if ok.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(ok.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls() {
        assert!(check_url("https://hold.example.com/", false).is_ok());
        assert!(check_url("http://hold.example.com", false).is_err());
        assert!(check_url("http://localhost:5001", true).is_ok());
        assert!(check_url("https://127.0.0.1", false).is_err());
        assert!(check_url("https://[::1]:443", false).is_err());
        assert!(check_url("https://169.254.169.254/latest", false).is_err());
        assert!(check_url("https://1.1.1.1", false).is_ok());
        assert!(check_url("https://localhost:5001", false).is_err());
        assert!(check_url("https://a.localhost", false).is_err());
        assert!(check_url("https://user:pw@hold.example.com", false).is_err());
        assert!(check_url("ftp://hold.example.com", true).is_err());
        assert!(check_url("not a url", true).is_err());
    }

    #[tokio::test]
    async fn the_resolver_drops_private_answers() {
        use reqwest::dns::Resolve;
        use std::str::FromStr;
        let guarded = GuardedResolver {
            allow_private: false,
        };
        let name = reqwest::dns::Name::from_str("localhost").unwrap();
        let err = guarded.resolve(name).await.err().expect("refused");
        assert!(err.to_string().contains("no public address"), "{err}");
        let open = GuardedResolver {
            allow_private: true,
        };
        let name = reqwest::dns::Name::from_str("localhost").unwrap();
        let addrs: Vec<SocketAddr> = open.resolve(name).await.unwrap().collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()));
    }
}
