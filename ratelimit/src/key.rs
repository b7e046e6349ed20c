//! Who a request counts against: the key, and how to take it from a request.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;
use ipnet::IpNet;

use crate::error::{ConfigError, ConfigErrorKind};

/// How the Redis store names a hashed text key: `k:` and 16 bytes of its SHA-256 in hex.
#[cfg(feature = "redis")]
fn digest_id(digest: &[u8; 32]) -> String {
    // A table per byte, not `write!` per byte: the formatter was most of a key's cost.
    let mut digits = [0u8; 32];
    hex::encode_to_slice(&digest[..16], &mut digits).expect("32 digits for 16 bytes");
    let mut id = String::with_capacity(34);
    id.push_str("k:");
    id.push_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"));
    id
}

/// The caller a request counts against.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RateLimitKey(KeyRepr);

#[derive(Clone, PartialEq, Eq)]
enum KeyRepr {
    Global,
    /// The shared bucket of keys that found a full memory table.
    Overflow,
    Ip(IpAddr),
    Text(Arc<str>),
    /// A text key longer than [`MAX_TEXT_KEY_LEN`], kept as its SHA-256 (behind a pointer,
    /// so the key stays 24 bytes in every table).
    Digest(Arc<[u8; 32]>),
}

impl Hash for KeyRepr {
    /// One hasher write for an address, where the derived impl made four or five
    /// (discriminants, a length prefix, the octets): hashing is on every decision.
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            KeyRepr::Global => state.write_u8(0),
            KeyRepr::Overflow => state.write_u8(1),
            // Tagged above the 32 address bits, so no IPv4 key hashes as `::a.b.c.d` does.
            KeyRepr::Ip(IpAddr::V4(v4)) => state.write_u64(u64::from(v4.to_bits()) | 1 << 32),
            KeyRepr::Ip(IpAddr::V6(v6)) => state.write_u128(v6.to_bits()),
            KeyRepr::Text(text) => {
                state.write_u8(2);
                text.hash(state);
            }
            KeyRepr::Digest(digest) => {
                state.write_u8(3);
                state.write(&digest[..]);
            }
        }
    }
}

/// The longest text key kept as it is, in bytes. A longer one (a client can send any header
/// up to the server's limit) is kept as its 32-byte SHA-256, so that every key costs the
/// memory store a bounded number of bytes.
pub const MAX_TEXT_KEY_LEN: usize = 64;

impl RateLimitKey {
    /// The one key every caller shares.
    pub const fn global() -> Self {
        RateLimitKey(KeyRepr::Global)
    }

    /// A client address. IPv6 addresses are grouped by their /56 prefix, the smallest block
    /// an ISP commonly assigns to one customer: otherwise one host could rotate through
    /// 2^72 addresses.
    pub fn ip(addr: IpAddr) -> Self {
        let addr = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 72) - 1);
                    IpAddr::V6(Ipv6Addr::from(bits))
                }
            },
            v4 @ IpAddr::V4(_) => v4,
        };
        RateLimitKey(KeyRepr::Ip(addr))
    }

    /// Any other identity: an API key, a tenant id, a user id. Keys longer than
    /// [`MAX_TEXT_KEY_LEN`] bytes are kept as their SHA-256 ([`as_text`](Self::as_text) then
    /// answers `None`); two keys are the same caller exactly when their texts are equal.
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        let text: Arc<str> = key.into();
        if text.len() > MAX_TEXT_KEY_LEN {
            use sha2::{Digest, Sha256};
            let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            return RateLimitKey(KeyRepr::Digest(Arc::new(digest)));
        }
        RateLimitKey(KeyRepr::Text(text))
    }

    pub(crate) const fn overflow() -> Self {
        RateLimitKey(KeyRepr::Overflow)
    }

    /// The address, for an IP key (IPv6 already grouped by /56).
    pub fn as_ip(&self) -> Option<IpAddr> {
        match self.0 {
            KeyRepr::Ip(ip) => Some(ip),
            _ => None,
        }
    }

    /// The text, for a key made with [`RateLimitKey::new`] from at most
    /// [`MAX_TEXT_KEY_LEN`] bytes.
    pub fn as_text(&self) -> Option<&str> {
        match &self.0 {
            KeyRepr::Text(text) => Some(text),
            _ => None,
        }
    }

    /// How the Redis store names this key: no braces (they would break hash tags) and no
    /// secrets (text keys are hashed).
    #[cfg(feature = "redis")]
    pub(crate) fn redis_id(&self) -> String {
        use sha2::{Digest, Sha256};
        match &self.0 {
            KeyRepr::Global => "global".to_owned(),
            KeyRepr::Overflow => "overflow".to_owned(),
            KeyRepr::Ip(ip) => format!("ip:{ip}"),
            // A long key's digest is the one its text would get: its Redis state is the same.
            KeyRepr::Text(text) => digest_id(&Sha256::digest(text.as_bytes()).into()),
            KeyRepr::Digest(digest) => digest_id(digest),
        }
    }

    /// Whether this is the [`global`](Self::global) key.
    pub fn is_global(&self) -> bool {
        matches!(self.0, KeyRepr::Global)
    }
}

impl fmt::Debug for RateLimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            KeyRepr::Global => f.write_str("RateLimitKey::Global"),
            KeyRepr::Overflow => f.write_str("RateLimitKey::Overflow"),
            KeyRepr::Ip(ip) => write!(f, "RateLimitKey::Ip({ip})"),
            // API keys are secrets: never print them.
            KeyRepr::Text(_) | KeyRepr::Digest(_) => f.write_str("RateLimitKey::Text(<redacted>)"),
        }
    }
}

type ExtractFn = dyn Fn(&Parts) -> Option<RateLimitKey> + Send + Sync;

/// Takes the [`RateLimitKey`] from a request.
///
/// A request it finds no key in is refused with the layer's missing-key problem, never a 500.
#[derive(Clone)]
pub struct KeyExtractor {
    extract: Arc<ExtractFn>,
    describe: Arc<str>,
    /// Whether the key is a credential (a header), so a missing one is a 401.
    credential: bool,
}

impl KeyExtractor {
    /// The value of a header, typically an API key (`x-api-key`). An absent or empty header
    /// has no key; several lines of it are refused as ambiguous.
    pub fn header(name: HeaderName) -> Self {
        let describe = format!("the `{name}` header");
        let mut extractor = KeyExtractor::from_fn_described(describe, move |parts: &Parts| {
            let mut values = parts.headers.get_all(&name).iter();
            let value = values.next()?;
            if values.next().is_some() {
                return None;
            }
            let value = value.to_str().ok()?.trim();
            (!value.is_empty()).then(|| RateLimitKey::new(value))
        });
        extractor.credential = true;
        extractor
    }

    /// The client's IP address: the connection's peer address (axum's
    /// `ConnectInfo<SocketAddr>` with the `axum` feature, or a `SocketAddr` in the request
    /// extensions), or, when that peer is a trusted proxy, the address the proxies report.
    pub fn peer_ip(proxies: TrustedProxies) -> Self {
        KeyExtractor::from_fn_described("the connection's peer address", move |parts: &Parts| {
            let peer = peer_addr(parts)?;
            Some(RateLimitKey::ip(proxies.client_ip(peer, parts)))
        })
    }

    /// One key for every request: a limit on the whole service.
    pub fn global() -> Self {
        KeyExtractor::from_fn_described(
            "nothing (global)",
            |_: &Parts| Some(RateLimitKey::global()),
        )
    }

    /// Any other rule, for example the tenant an authentication layer put in the extensions.
    pub fn from_fn<F>(extract: F) -> Self
    where
        F: Fn(&Parts) -> Option<RateLimitKey> + Send + Sync + 'static,
    {
        KeyExtractor::from_fn_described("the request (custom rule)", extract)
    }

    fn from_fn_described<F>(describe: impl Into<Arc<str>>, extract: F) -> Self
    where
        F: Fn(&Parts) -> Option<RateLimitKey> + Send + Sync + 'static,
    {
        KeyExtractor {
            extract: Arc::new(extract),
            describe: describe.into(),
            credential: false,
        }
    }

    /// The key of a request, if it has one.
    pub fn extract(&self, parts: &Parts) -> Option<RateLimitKey> {
        (self.extract)(parts)
    }

    pub(crate) fn describe(&self) -> &str {
        &self.describe
    }

    pub(crate) fn is_credential(&self) -> bool {
        self.credential
    }
}

impl fmt::Debug for KeyExtractor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyExtractor").field(&self.describe).finish()
    }
}

fn peer_addr(parts: &Parts) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(info.0.ip());
    }
    parts.extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

/// Which header trusted proxies report client addresses in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// The proxies whose reports of the client address are believed.
///
/// The address chain is read from the right (the hop nearest to this server): each address
/// that belongs to a trusted proxy is skipped, and the first one that does not is the client.
/// The leftmost entry is never believed on its own, since any client can send it. Only the one
/// configured header is read; a proxy must append to it. An entry that is not an address
/// (`unknown`, an obfuscated identifier) stops the walk at the last trusted hop.
#[derive(Clone, Debug)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Trusts no proxy: the peer address is the client.
    pub fn none() -> Self {
        TrustedProxies {
            networks: Vec::new(),
            header: ForwardedHeader::XForwardedFor,
        }
    }

    /// Also trusts `entry`, an address (`10.0.0.7`) or a network (`10.0.0.0/8`, `fd00::/8`).
    ///
    /// # Errors
    ///
    /// Fails when `entry` is neither.
    pub fn trust(mut self, entry: &str) -> Result<Self, ConfigError> {
        let network = entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| ConfigError::new(ConfigErrorKind::TrustedProxy(entry.to_owned())))?;
        self.networks.push(network);
        Ok(self)
    }

    /// Reads `header` (default `X-Forwarded-For`).
    #[must_use]
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        self.networks.iter().any(|network| network.contains(&ip))
    }

    /// The client address for a request that arrived from `peer`.
    pub fn client_ip(&self, peer: IpAddr, parts: &Parts) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in self.reported_hops(parts).into_iter().rev() {
            let Some(ip) = hop else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }

    /// The reported chain, leftmost first; `None` for an entry that is not an address.
    fn reported_hops(&self, parts: &Parts) -> Vec<Option<IpAddr>> {
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        let mut hops = Vec::new();
        for value in parts.headers.get_all(name) {
            let Ok(value) = value.to_str() else {
                hops.push(None);
                continue;
            };
            for element in value.split(',') {
                let node = match self.header {
                    ForwardedHeader::XForwardedFor => Some(element.trim()),
                    ForwardedHeader::Forwarded => forwarded_for(element),
                };
                hops.push(node.and_then(parse_node));
            }
        }
        hops
    }
}

/// The `for=` parameter of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .and_then(|ip| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_24_bytes() {
        assert_eq!(size_of::<RateLimitKey>(), 24);
    }

    /// The names Redis keeps state under: a change would reset every caller's limits.
    #[cfg(feature = "redis")]
    #[test]
    fn redis_names_are_stable() {
        // The first 16 bytes of SHA-256("abc"), in lower-case hex.
        let text = RateLimitKey::new("abc").redis_id();
        assert_eq!(text, "k:ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(RateLimitKey::new("a".repeat(100)).redis_id().len(), 34);
        let ip = RateLimitKey::ip("10.0.0.1".parse().expect("an address"));
        assert_eq!(ip.redis_id(), "ip:10.0.0.1");
        assert_eq!(RateLimitKey::global().redis_id(), "global");
    }

    #[test]
    fn a_long_text_key_is_kept_as_its_digest_and_stays_one_caller() {
        let long = "k".repeat(10_000);
        let key = RateLimitKey::new(long.as_str());
        assert_eq!(key.as_text(), None);
        assert!(matches!(key.0, KeyRepr::Digest(_)), "no 10 kB copy is kept");
        assert_eq!(key, RateLimitKey::new(long.as_str()));
        assert_ne!(key, RateLimitKey::new(format!("{long}x")));
        let short = "k".repeat(MAX_TEXT_KEY_LEN);
        assert_eq!(
            RateLimitKey::new(short.as_str()).as_text(),
            Some(short.as_str())
        );
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_long_key_has_the_redis_name_its_text_would_have() {
        let long = "k".repeat(MAX_TEXT_KEY_LEN + 1);
        let text = RateLimitKey(KeyRepr::Text(Arc::from(long.as_str())));
        assert_eq!(RateLimitKey::new(long.as_str()).redis_id(), text.redis_id());
    }

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::builder();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn ipv6_is_grouped_by_56_and_mapped_v4_is_v4() {
        let a = RateLimitKey::ip("2001:db8:aa:bbcc:1::1".parse().unwrap());
        let b = RateLimitKey::ip("2001:db8:aa:bbff:ffff::9".parse().unwrap());
        let c = RateLimitKey::ip("2001:db8:aa:cc00::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.as_ip(), Some("2001:db8:aa:bb00::".parse().unwrap()));
        let mapped = RateLimitKey::ip("::ffff:192.0.2.1".parse().unwrap());
        assert_eq!(mapped.as_ip(), Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let proxies = TrustedProxies::none().trust("10.0.0.0/8").unwrap();
        let parts = parts(&[("x-forwarded-for", "1.1.1.1")]);
        let peer = "203.0.113.9".parse().unwrap();
        assert_eq!(proxies.client_ip(peer, &parts), peer);
    }

    #[test]
    fn the_chain_is_walked_from_the_right_past_trusted_hops() {
        let proxies = TrustedProxies::none().trust("10.0.0.0/8").unwrap();
        let parts = parts(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.4"),
            ("x-forwarded-for", "10.1.2.3:8080"),
        ]);
        let peer = "10.0.0.1".parse().unwrap();
        // 6.6.6.6 is what the client claimed; 198.51.100.4 is who reached our proxies.
        assert_eq!(
            proxies.client_ip(peer, &parts),
            "198.51.100.4".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarded_elements_and_unknown_nodes() {
        let proxies = TrustedProxies::none()
            .trust("10.0.0.0/8")
            .unwrap()
            .header(ForwardedHeader::Forwarded);
        let parts = parts(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.9",
        )]);
        let peer = "10.0.0.1".parse().unwrap();
        assert_eq!(
            proxies.client_ip(peer, &parts),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        let hidden = self::parts(&[("forwarded", "for=_hidden, for=10.0.0.9")]);
        assert_eq!(
            proxies.client_ip(peer, &hidden),
            "10.0.0.9".parse::<IpAddr>().unwrap(),
            "an obfuscated node stops at the last trusted hop"
        );
    }

    #[test]
    fn header_keys_need_exactly_one_non_empty_line() {
        let extractor = KeyExtractor::header(HeaderName::from_static("x-api-key"));
        assert!(extractor.extract(&parts(&[])).is_none());
        assert!(extractor.extract(&parts(&[("x-api-key", " ")])).is_none());
        assert!(
            extractor
                .extract(&parts(&[("x-api-key", "a"), ("x-api-key", "b")]))
                .is_none()
        );
        let key = extractor.extract(&parts(&[("x-api-key", "k1")])).unwrap();
        assert_eq!(key.as_text(), Some("k1"));
        assert_eq!(format!("{key:?}"), "RateLimitKey::Text(<redacted>)");
    }
}
