//! Where Switchboard may connect: the address rules of the callback policy's `forbid_private`,
//! and the HTTP clients that enforce them for every outbound request (notification deliveries,
//! prompt fetches, trusted issuers' JWKS).
//!
//! The rules are enforced at three points, because each alone has a gap:
//! - on the URL text, when a request names it ([`literal_refusal`]): a clear `400` for literal
//!   non-public addresses (every spelling the URL parser accepts, IPv4-mapped and NAT64 forms
//!   included) and the `localhost` names;
//! - when a name is resolved ([`GuardedResolver`]): every address is checked and non-public ones
//!   are dropped; a name left with none fails before any connection is made, so a name that
//!   resolves to loopback or a private range is never connected to;
//! - after a connection is made ([`PeerCheck`]): the peer address itself, which catches literal
//!   addresses (reqwest does not resolve those, so the resolver never sees them) whatever path
//!   they came by. Nothing is sent on such a connection.
//!
//! Redirects, where a client follows them, are checked per hop ([`redirect_policy`]).
//! A refusal is a [`PolicyRefusal`], findable in a `reqwest::Error` with [`policy_refusal`].

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connection, HttpInfo};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Deserialize;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Redirects a fetch client follows at most.
pub const MAX_REDIRECTS: usize = 5;

/// Why an IPv4 address is not public, or `None` when it is.
fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified",
        (10, _, _) => "private",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local",
        (172, 16..=31, _) => "private",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 168, _) => "private",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (255, 255, 255) if ip.is_broadcast() => "broadcast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address carries, for the forms that route to it: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        // `::` and `::1` are IPv6's own unspecified and loopback addresses, not IPv4-compatible.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// Why an IPv6 address is not public, or `None` when it is.
fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return non_public_v4(v4);
    }
    let s = ip.segments();
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified",
        [0, 0, 0, 0, 0, 0, 0, 1] => "loopback",
        [0x64, 0xff9b, 1, ..] => "local-use NAT64",
        [0x100, 0, 0, 0, ..] => "discard-only",
        // Teredo hides its IPv4 addresses behind a relay; nothing legitimate calls back over it.
        [0x2001, 0, ..] => "Teredo",
        [0x2001, 0xdb8, ..] => "documentation",
        [0x3fff, y, ..] if y & 0xf000 == 0 => "documentation",
        [x, ..] if x & 0xfe00 == 0xfc00 => "unique local",
        [x, ..] if x & 0xffc0 == 0xfe80 => "link-local",
        [x, ..] if x & 0xffc0 == 0xfec0 => "site-local",
        [x, ..] if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// Why an address is not one Switchboard calls when private addresses are forbidden (loopback,
/// private, link-local, unspecified, multicast, carrier-grade NAT, unique local, site-local,
/// documentation, benchmarking, reserved, and IPv6 forms embedding any of those), or `None` for
/// a public address.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

/// `localhost` and its subdomains, in any case, with or without trailing dots: names that are
/// loopback by definition (RFC 6761), refused without asking DNS.
pub fn is_localhost_name(host: &str) -> bool {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// A connection the callback policy does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused by the callback policy: {host} {why}")]
pub struct PolicyRefusal {
    /// The host as the URL named it (or the address connected to).
    pub host: String,
    why: String,
}

impl PolicyRefusal {
    fn new(host: &str, why: impl Into<String>) -> Self {
        PolicyRefusal {
            host: host.to_string(),
            why: why.into(),
        }
    }
}

/// The refusal in an error's chain (for any error: a `reqwest::Error` from a guarded client,
/// or the refusal itself).
pub fn policy_refusal<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a PolicyRefusal> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<PolicyRefusal>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// Whether a request failed because the callback policy refused where it would have connected.
pub fn is_policy_refusal(e: &reqwest::Error) -> bool {
    policy_refusal(e).is_some()
}

/// What the URL text alone shows the policy refuses: no host, a `localhost` name, or a literal
/// non-public address. Names are checked when they are resolved.
pub fn literal_refusal(url: &url::Url) -> Option<PolicyRefusal> {
    match url.host() {
        None => Some(PolicyRefusal::new("(none)", "is not a host")),
        Some(url::Host::Domain(d)) if is_localhost_name(d) => {
            Some(PolicyRefusal::new(d, "is a loopback name"))
        }
        Some(url::Host::Domain(_)) => None,
        Some(url::Host::Ipv4(ip)) => refusal_for_address(&ip.to_string(), IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => refusal_for_address(&format!("[{ip}]"), IpAddr::V6(ip)),
    }
}

fn refusal_for_address(host: &str, ip: IpAddr) -> Option<PolicyRefusal> {
    non_public(ip).map(|kind| PolicyRefusal::new(host, format!("is a {kind} address")))
}

/// Resolves a host name to addresses (the system resolver, or one a test injects).
pub type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system resolver (`getaddrinfo`, on tokio's blocking pool).
pub fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    })
}

/// Resolves `host` and keeps only the addresses the policy allows; a `localhost` name, or a
/// name with no allowed address, is a [`PolicyRefusal`].
pub async fn resolve_allowed(host: &str, lookup: &Lookup) -> Result<Vec<IpAddr>, BoxError> {
    if is_localhost_name(host) {
        return Err(Box::new(PolicyRefusal::new(host, "is a loopback name")));
    }
    let all = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => lookup(host.to_string()).await?,
    };
    let allowed: Vec<IpAddr> = all
        .iter()
        .copied()
        .filter(|ip| non_public(*ip).is_none())
        .collect();
    if allowed.is_empty() {
        let why = if all.is_empty() {
            "resolves to no address".to_string()
        } else {
            let kinds: Vec<_> = all.iter().filter_map(|ip| non_public(*ip)).collect();
            format!(
                "resolves only to non-public addresses ({})",
                dedup(kinds).join(", ")
            )
        };
        return Err(Box::new(PolicyRefusal::new(host, why)));
    }
    Ok(allowed)
}

fn dedup(mut v: Vec<&'static str>) -> Vec<&'static str> {
    v.sort_unstable();
    v.dedup();
    v
}

/// A reqwest DNS resolver that drops non-public addresses ([`resolve_allowed`]).
#[derive(Clone)]
pub struct GuardedResolver {
    lookup: Lookup,
}

impl GuardedResolver {
    pub fn new(lookup: Lookup) -> Self {
        GuardedResolver { lookup }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.lookup.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let ips = resolve_allowed(&host, &lookup).await?;
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// A connector layer that checks the peer address of every new connection and drops the
/// connection, before anything is sent on it, when that address is not public. It is what
/// catches literal IP URLs, which reqwest connects to without resolving.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerCheck;

impl<S> tower::Layer<S> for PeerCheck {
    type Service = PeerChecked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerChecked { inner }
    }
}

/// The service of [`PeerCheck`].
#[derive(Clone, Debug)]
pub struct PeerChecked<S> {
    inner: S,
}

impl<S, R> tower::Service<R> for PeerChecked<S>
where
    S: tower::Service<R, Error = BoxError>,
    S::Response: Connection + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let connecting = self.inner.call(req);
        Box::pin(async move {
            let conn = connecting.await?;
            let mut extras = axum::http::Extensions::new();
            conn.connected().get_extras(&mut extras);
            let Some(info) = extras.get::<HttpInfo>() else {
                // Fail closed: a connection whose peer cannot be told is not used.
                return Err(
                    Box::new(PolicyRefusal::new("(unknown peer)", "cannot be checked")) as BoxError,
                );
            };
            let ip = info.remote_addr().ip();
            match refusal_for_address(&ip.to_string(), ip) {
                Some(r) => Err(Box::new(r) as BoxError),
                None => Ok(conn),
            }
        })
    }
}

/// The redirect policy of fetch clients: at most [`MAX_REDIRECTS`] hops, each to `http` or
/// `https` but never from `https` down to `http` (with `strict`, `https` only), and, when
/// private addresses are forbidden, none to a literal non-public address or `localhost` name
/// (names are checked by the resolver when the hop connects).
pub fn redirect_policy(policy: &CallbackPolicy) -> reqwest::redirect::Policy {
    let strict = policy.strict;
    let forbid = policy.forbids_private();
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let url = attempt.url();
        let was_https = attempt
            .previous()
            .last()
            .is_some_and(|u| u.scheme() == "https");
        let scheme_ok = match url.scheme() {
            "https" => true,
            "http" => !strict && !was_https,
            _ => false,
        };
        let refusal = if !scheme_ok {
            Some(PolicyRefusal::new(
                url.host_str().unwrap_or_default(),
                format!(
                    "is a redirect to a {} URL, which is not followed",
                    url.scheme()
                ),
            ))
        } else if forbid {
            literal_refusal(url)
        } else {
            None
        };
        match refusal {
            Some(r) => attempt.error(r),
            None => attempt.follow(),
        }
    })
}

/// The outbound HTTP clients, built from the callback policy. When the policy forbids private
/// addresses, both resolve names with [`GuardedResolver`], check every connection's peer with
/// [`PeerCheck`], and ignore proxy settings from the environment (a proxy would resolve names
/// itself, out of the policy's sight).
#[derive(Clone)]
pub struct Outbound {
    /// For notification deliveries: follows no redirect (a 3xx answer is a failed delivery,
    /// except a 302 to a call's first incoming-call notification, which `delivery` handles).
    pub deliveries: reqwest::Client,
    /// For prompts and JWKS documents: follows redirects, each hop checked.
    pub fetches: reqwest::Client,
    policy: CallbackPolicy,
    unguarded: Arc<OnceLock<reqwest::Client>>,
}

impl Outbound {
    /// The clients for `policy`, resolving names with the system resolver.
    pub fn new(policy: &CallbackPolicy) -> reqwest::Result<Self> {
        Self::with_lookup(policy, system_lookup())
    }

    /// The clients for `policy`, resolving names with `lookup` (tests inject one).
    pub fn with_lookup(policy: &CallbackPolicy, lookup: Lookup) -> reqwest::Result<Self> {
        let guard = policy.forbids_private().then_some(lookup);
        Ok(Outbound {
            deliveries: client(reqwest::redirect::Policy::none(), guard.clone())?,
            fetches: client(redirect_policy(policy), guard)?,
            policy: policy.clone(),
            unguarded: Arc::new(OnceLock::new()),
        })
    }

    /// The fetch client for a trusted issuer's JWKS: [`Outbound::fetches`], or, for an issuer
    /// allowed on a private network, one that does not check addresses.
    pub fn jwks_client(&self, allow_private_network: bool) -> reqwest::Client {
        if !allow_private_network || !self.policy.forbids_private() {
            return self.fetches.clone();
        }
        self.unguarded
            .get_or_init(|| {
                let lax = CallbackPolicy {
                    forbid_private: false,
                    ..self.policy.clone()
                };
                // Building can only fail where building the guarded clients already did.
                client(redirect_policy(&lax), None).unwrap_or_else(|_| reqwest::Client::new())
            })
            .clone()
    }
}

fn client(
    redirect: reqwest::redirect::Policy,
    guard: Option<Lookup>,
) -> reqwest::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .redirect(redirect)
        .http1_title_case_headers()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(30));
    if let Some(lookup) = guard {
        b = b
            .no_proxy()
            .dns_resolver(GuardedResolver::new(lookup))
            .connector_layer(PeerCheck);
    }
    b.build()
}

/// A URL fit for a log line: no user name or password, no query, no fragment (they can carry
/// secrets). Text that is not a URL is not echoed.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "<not a URL>".into();
    };
    let had_query = url.query().is_some();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    let mut out = url.to_string();
    if had_query {
        out.push_str("?<redacted>");
    }
    out
}

/// The `[callbacks]` section: where callbacks and prompts may point.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbackPolicy {
    /// Require `https` callback URLs.
    pub strict: bool,
    /// With `strict`, also refuse loopback, private, link-local and other non-public addresses
    /// (`net_policy`): in callback and prompt URLs, and in every address a name resolves to.
    pub forbid_private: bool,
}

impl CallbackPolicy {
    /// Whether outbound requests must stay off non-public addresses (`strict` and
    /// `forbid_private`).
    pub fn forbids_private(&self) -> bool {
        self.strict && self.forbid_private
    }
}

/// Why the callback policy refuses `uri` as a callback or prompt URL, in words for the client;
/// `None` when it may be used. With `strict`, https only, and with `forbid_private` no
/// `localhost` name and no literal non-public address in any spelling ([`literal_refusal`]).
/// Names are checked again, on every address they resolve to, when Switchboard connects.
pub fn callback_refusal(policy: &CallbackPolicy, uri: &str) -> Option<String> {
    if !policy.strict {
        return None;
    }
    let Ok(url) = url::Url::parse(uri) else {
        return Some("The callbackUri is not a URL.".into());
    };
    if url.scheme() != "https" {
        return Some("The callbackUri must be an https URL.".into());
    }
    let refusal = literal_refusal(&url).filter(|_| policy.forbids_private())?;
    Some(format!(
        "The callbackUri points at a loopback, private or otherwise non-public address, which this server does not call ({refusal})."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn refused(url: &str) -> bool {
        literal_refusal(&url::Url::parse(url).unwrap()).is_some()
    }

    #[test]
    fn every_non_public_ipv4_range_is_refused() {
        for (addr, kind) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("10.0.0.1", "private"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("100.127.255.254", "shared (carrier-grade NAT)"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "link-local"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "IETF protocol assignment"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
        ] {
            assert_eq!(non_public(ip(addr)), Some(kind), "{addr}");
        }
    }

    #[test]
    fn public_ipv4_addresses_pass_including_the_neighbours_of_private_ranges() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(non_public(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn every_non_public_ipv6_range_and_embedded_form_is_refused() {
        for (addr, kind) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:0:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::10.0.0.1", "private"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b:1::1.2.3.4", "local-use NAT64"),
            ("2002:a00:1::", "private"),
            ("2002:7f00:1:1::1", "loopback"),
            ("2002:c0a8:101::1", "private"),
            ("2001::1", "Teredo"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("100::1", "discard-only"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(non_public(ip(addr)), Some(kind), "{addr}");
        }
    }

    #[test]
    fn public_ipv6_addresses_and_embeddings_of_public_ipv4_pass() {
        for addr in [
            "2606:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "2001:4860::8888",
        ] {
            assert_eq!(non_public(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn localhost_is_refused_in_any_case_and_with_trailing_dots() {
        for host in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "LocalHost..",
            "foo.localhost",
            "foo.localhost.",
            "a.b.LOCALHOST.",
        ] {
            assert!(is_localhost_name(host), "{host}");
        }
        for host in [
            "localhost.example.com",
            "notlocalhost",
            "mylocalhost.",
            "local",
        ] {
            assert!(!is_localhost_name(host), "{host}");
        }
    }

    #[test]
    fn every_url_spelling_of_a_private_host_is_refused_on_its_text() {
        for url in [
            "https://localhost/cb",
            "https://localhost./cb",
            "https://LOCALHOST./cb",
            "https://foo.localhost./cb",
            "https://loc%61lhost/cb",
            "https://127.0.0.1/cb",
            "https://127.1/cb",
            "https://0x7f.0.0.1/cb",
            "https://2130706433/cb",
            "https://0177.0.0.1/cb",
            "https://0.0.0.0/cb",
            "https://10.1.2.3/cb",
            "https://100.64.1.1/cb",
            "https://169.254.169.254/latest",
            "https://[::1]/cb",
            "https://[::]/cb",
            "https://[::ffff:127.0.0.1]/cb",
            "https://[::ffff:7f00:1]/cb",
            "https://[::FFFF:10.0.0.1]/cb",
            "https://[64:ff9b::10.0.0.1]/cb",
            "https://[64:ff9b::a00:1]/cb",
            "https://[2002:a00:1::1]/cb",
            "https://[fd00::1]/cb",
            "https://[fe80::1]/cb",
            "https://user:pw@127.0.0.1:8443/cb",
        ] {
            assert!(refused(url), "{url}");
        }
        for url in [
            "https://bot.example.com/cb",
            "https://8.8.8.8/cb",
            "https://[2606:4700::1111]/cb",
            "https://localhost.example.com/cb",
        ] {
            assert!(!refused(url), "{url}");
        }
    }

    #[test]
    fn refusals_say_what_was_refused_and_why() {
        let r = literal_refusal(&url::Url::parse("https://[::ffff:10.0.0.1]/").unwrap()).unwrap();
        assert_eq!(
            r.to_string(),
            "refused by the callback policy: [::ffff:10.0.0.1] is a private address"
        );
    }

    fn fixed(answers: &'static [&'static str]) -> Lookup {
        Arc::new(move |_host| {
            Box::pin(async move { Ok(answers.iter().map(|a| a.parse().unwrap()).collect()) })
        })
    }

    #[tokio::test]
    async fn a_name_that_resolves_only_to_private_addresses_is_refused_and_says_so() {
        let e = resolve_allowed("bot.example.test", &fixed(&["127.0.0.1", "10.0.0.7"]))
            .await
            .unwrap_err();
        let r = policy_refusal(&*e).expect("a policy refusal");
        assert_eq!(r.host, "bot.example.test");
        assert_eq!(
            r.to_string(),
            "refused by the callback policy: bot.example.test resolves only to non-public addresses (loopback, private)"
        );
    }

    #[tokio::test]
    async fn a_name_with_public_and_private_addresses_keeps_only_the_public_ones() {
        let ok = resolve_allowed(
            "bot.example.test",
            &fixed(&[
                "10.0.0.7",
                "93.184.216.34",
                "::ffff:127.0.0.1",
                "2606:4700::1111",
            ]),
        )
        .await
        .unwrap();
        assert_eq!(ok, vec![ip("93.184.216.34"), ip("2606:4700::1111")]);
    }

    #[tokio::test]
    async fn localhost_names_are_refused_without_a_lookup() {
        let never: Lookup = Arc::new(|h| panic!("looked up {h}"));
        for host in ["localhost.", "FOO.localhost."] {
            let e = resolve_allowed(host, &never).await.unwrap_err();
            assert!(policy_refusal(&*e).is_some(), "{host}");
        }
    }

    #[test]
    fn logged_urls_lose_their_credentials_query_and_fragment() {
        assert_eq!(
            redact_url("https://user:pw@idp.example.com/keys?code=s3cret#frag"),
            "https://idp.example.com/keys?<redacted>"
        );
        assert_eq!(
            redact_url("https://idp.example.com/keys"),
            "https://idp.example.com/keys"
        );
        assert_eq!(redact_url("not a url s3cret"), "<not a URL>");
    }

    fn arb_v4() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>().prop_map(Ipv4Addr::from)
    }

    proptest! {
        #[test]
        fn an_ipv4_address_and_its_mapped_translated_nat64_and_6to4_forms_agree(v4 in arb_v4()) {
            let o = v4.octets();
            let hi = u16::from_be_bytes([o[0], o[1]]);
            let lo = u16::from_be_bytes([o[2], o[3]]);
            let expected = non_public(IpAddr::V4(v4));
            for v6 in [
                v4.to_ipv6_mapped(),
                Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo),
                Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
                Ipv6Addr::new(0x2002, hi, lo, 1, 2, 3, 4, 5),
            ] {
                prop_assert_eq!(non_public(IpAddr::V6(v6)), expected, "{}", v6);
            }
        }

        #[test]
        fn every_address_in_the_private_ranges_is_refused(host in any::<u32>()) {
            for (base, bits) in [(0x0a00_0000u32, 8), (0xac10_0000, 12), (0xc0a8_0000, 16),
                                 (0x7f00_0000, 8), (0xa9fe_0000, 16), (0x6440_0000, 10)] {
                let addr = Ipv4Addr::from(base | (host >> bits));
                prop_assert!(non_public(IpAddr::V4(addr)).is_some(), "{}", addr);
            }
        }

        #[test]
        fn what_the_resolver_keeps_is_never_refused(raw in proptest::collection::vec(any::<u128>(), 0..8),
                                                    v4s in proptest::collection::vec(arb_v4(), 0..8)) {
            let answers: Vec<IpAddr> = raw.into_iter().map(|r| IpAddr::V6(Ipv6Addr::from(r)))
                .chain(v4s.into_iter().map(IpAddr::V4)).collect();
            let expected: Vec<IpAddr> =
                answers.iter().copied().filter(|a| non_public(*a).is_none()).collect();
            let lookup: Lookup = {
                let answers = answers.clone();
                Arc::new(move |_| { let a = answers.clone(); Box::pin(async move { Ok(a) }) })
            };
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = rt.block_on(resolve_allowed("bot.example.test", &lookup));
            match got {
                Ok(kept) => prop_assert_eq!(kept, expected),
                Err(e) => {
                    prop_assert!(expected.is_empty());
                    prop_assert!(policy_refusal(&*e).is_some());
                }
            }
        }
    }
}
