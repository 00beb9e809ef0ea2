//! Checking settings: every mistake `serve` refuses at start and `switchboard config check`
//! reports, found by one function ([`findings`]) and placed in the file, line and column, by
//! [`locate`]. TOML syntax, unknown keys and values of the wrong type are found by serde while the
//! file is read (toml gives their place); the rules here are those serde cannot state: roles
//! that do not exist, ids given twice (party ids compared as the simulated fabric compares them,
//! [`party_key`]), URLs that are not http(s), meetings naming parties nobody configured,
//! durations beyond ten years, and what the callback policy refuses on a URL's text.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{ALL_ROLES, Settings};
use crate::fabric::simulated::party_key;
use crate::net_policy::{PolicyRefusal, literal_refusal, redact_url};

/// One step of a key path: a key, or an index into an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Key(&'static str),
    Index(usize),
}

/// Where a value is in the settings, as `apps[1].roles[0]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Step>);

impl KeyPath {
    fn key(&self, key: &'static str) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key));
        KeyPath(steps)
    }

    fn index(&self, i: usize) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(Step::Index(i));
        KeyPath(steps)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(k) if n == 0 => f.write_str(k)?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// A mistake in settings, before it is placed in a file.
#[derive(Clone, Debug)]
pub struct Finding {
    at: KeyPath,
    message: String,
    /// Where the same id was given first, for an id given twice.
    first: Option<KeyPath>,
}

/// One mistake, as reported: `FILE:LINE:COLUMN: KEY: MESSAGE`, with what is known of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file, or the environment variable, the value came from.
    pub source: Option<String>,
    /// Line and column in the file, from 1.
    pub position: Option<(usize, usize)>,
    /// The key, as `apps[1].roles[0]`; empty for a mistake toml found (its message says).
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.source, self.position) {
            (Some(s), Some((line, col))) => write!(f, "{s}:{line}:{col}: ")?,
            (Some(s), None) => write!(f, "{s}: ")?,
            (None, Some((line, col))) => write!(f, "line {line}, column {col}: ")?,
            (None, None) => {}
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Why settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {reason}")]
    Read { path: String, reason: String },
    /// Every mistake found, in the order of the file's sections.
    #[error("{}", list(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The mistakes, one per line as `config check` prints them.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(problems) => problems.iter().map(Problem::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn list(problems: &[Problem]) -> String {
    match problems {
        [one] => format!("invalid configuration: {one}"),
        many => {
            let mut s = format!("invalid configuration ({} problems):", many.len());
            for p in many {
                s.push_str("\n  ");
                s.push_str(&p.to_string());
            }
            s
        }
    }
}

/// What the file's text could not be read as (TOML syntax, an unknown key, a value of the wrong
/// type), where toml says it is.
pub(super) fn unreadable(text: &str, source: Option<&str>, e: &toml::de::Error) -> ConfigError {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    ConfigError::Invalid(vec![Problem {
        source: source.map(str::to_string),
        position: e.span().map(|s| line_col(text, s.start)),
        key: String::new(),
        message,
    }])
}

/// Places each finding in the file `text` (its source named `source`).
pub(super) fn locate(text: &str, source: Option<&str>, findings: Vec<Finding>) -> Vec<Problem> {
    let doc = DeTable::parse(text).ok();
    let place = |at: &KeyPath| doc.as_ref().map(|d| line_col(text, span_of(d, at).start));
    findings
        .into_iter()
        .map(|f| {
            let mut message = f.message;
            if let Some(first) = &f.first {
                match place(first) {
                    Some((line, _)) => message.push_str(&format!(" (first at line {line})")),
                    None => message.push_str(&format!(" (first at {first})")),
                }
            }
            Problem {
                source: source.map(str::to_string),
                position: place(&f.at),
                key: f.at.to_string(),
                message,
            }
        })
        .collect()
}

/// Findings of settings that are not from a file: no place but the key.
pub(super) fn unplaced(findings: Vec<Finding>) -> Vec<Problem> {
    findings
        .into_iter()
        .map(|f| {
            let mut message = f.message;
            if let Some(first) = &f.first {
                message.push_str(&format!(" (first at {first})"));
            }
            Problem {
                source: None,
                position: None,
                key: f.at.to_string(),
                message,
            }
        })
        .collect()
}

/// The span of the value at `at`; as far as the path goes when a key is not in the file (a
/// default), and the file's start for a path not in it at all.
fn span_of(root: &Spanned<DeTable<'_>>, at: &KeyPath) -> Range<usize> {
    let mut span = 0..0;
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for step in &at.0 {
        let next = match (step, value) {
            (Step::Key(k), None) => root.get_ref().get(*k),
            (Step::Key(k), Some(v)) => v.get_ref().as_table().and_then(|t| t.get(*k)),
            (Step::Index(i), Some(v)) => v.get_ref().as_array().and_then(|a| a.get(*i)),
            (Step::Index(_), None) => None,
        };
        let Some(next) = next else { break };
        span = next.span();
        value = Some(next);
    }
    span
}

/// Line and column (in characters), from 1, of a byte offset into `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// Why `uri` cannot be used where an http(s) URL is needed, if it cannot.
pub(super) fn not_http_url(uri: &str) -> Option<String> {
    // `localhost:8080` parses as a URL of the scheme `localhost`: say what was likely meant.
    let head = uri.split([':', '/']).next().unwrap_or("");
    let hostlike = head == "localhost" || head.contains('.');
    let hint = if !uri.contains("://") && hostlike {
        format!("; did you mean \"http://{uri}\"?")
    } else {
        String::new()
    };
    match url::Url::parse(uri) {
        Err(e) => Some(format!("{uri:?} is not a URL ({e}){hint}")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => Some(format!(
            "{} is not an http or https URL{hint}",
            redact_url(uri)
        )),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            Some(format!("{} has no host", redact_url(uri)))
        }
        Ok(_) => None,
    }
}

/// The refusal the callback policy would give a URL on its text alone, if any.
fn private_literal(uri: &str) -> Option<PolicyRefusal> {
    url::Url::parse(uri).ok().and_then(|u| literal_refusal(&u))
}

/// The findings of one rule set, collected in the file's order of sections.
#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, at: KeyPath, message: impl Into<String>) {
        self.0.push(Finding {
            at,
            message: message.into(),
            first: None,
        });
    }

    fn twice(&mut self, at: KeyPath, message: impl Into<String>, first: KeyPath) {
        self.0.push(Finding {
            at,
            message: message.into(),
            first: Some(first),
        });
    }
}

/// Every mistake in `s` that serve refuses at start.
pub(super) fn findings(s: &Settings) -> Vec<Finding> {
    let top = KeyPath::default();
    let mut out = Findings::default();
    if let Some(u) = &s.public_url
        && let Some(why) = not_http_url(u)
    {
        out.add(top.key("public_url"), why);
    }
    if s.admin
        .token
        .as_ref()
        .is_some_and(|t| t.expose().is_empty())
    {
        out.add(
            top.key("admin").key("token"),
            "is empty: give a token, or leave the key out to serve loopback clients only",
        );
    }
    if let Some(why) = s.faults.problem() {
        out.add(top.key("faults"), why);
    }
    apps(s, &mut out);
    trusted_issuers(s, &mut out);
    parties(s, &mut out);
    meetings(s, &mut out);
    sip(s, &mut out);
    tls(s, &mut out);
    let media = &s.media;
    if !(media.fetch_timeout_secs > 0.0 && media.fetch_timeout_secs <= 3600.0) {
        out.add(
            top.key("media").key("fetch_timeout_secs"),
            "must be more than 0 and at most 3600",
        );
    }
    if media.fetch_concurrency == 0 {
        out.add(
            top.key("media").key("fetch_concurrency"),
            "must be at least 1",
        );
    }
    if s.limits.max_connections == Some(0) {
        out.add(
            top.key("limits").key("max_connections"),
            "must be at least 1",
        );
    }
    durations(s, &mut out);
    out.0
}

fn apps(s: &Settings, out: &mut Findings) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, a) in s.apps.iter().enumerate() {
        let at = KeyPath::default().key("apps").index(i);
        if let Some(&first) = seen.get(&a.app_id.to_ascii_lowercase()) {
            out.twice(
                at.key("app_id"),
                format!("app {} is configured twice", a.app_id),
                KeyPath::default().key("apps").index(first).key("app_id"),
            );
        } else {
            seen.insert(a.app_id.to_ascii_lowercase(), i);
        }
        if a.client_secret.expose().is_empty() {
            out.add(at.key("client_secret"), "is empty");
        }
        for (j, role) in a.roles.iter().enumerate() {
            if !ALL_ROLES.iter().any(|r| r.eq_ignore_ascii_case(role)) {
                out.add(at.key("roles").index(j), unknown_role(role));
            }
        }
        if let Some(uri) = &a.incoming_call_uri {
            if let Some(why) = not_http_url(uri) {
                out.add(at.key("incoming_call_uri"), why);
            } else if s.callbacks.forbids_private()
                && let Some(r) = private_literal(uri)
            {
                out.add(
                    at.key("incoming_call_uri"),
                    format!(
                        "{}: {r}, so no incoming call could be delivered",
                        redact_url(uri)
                    ),
                );
            }
        }
    }
}

/// `unknown role "…"`, with the closest role when one is close, and the roles there are.
fn unknown_role(role: &str) -> String {
    let closest = ALL_ROLES
        .iter()
        .map(|r| {
            (
                edit_distance(&r.to_ascii_lowercase(), &role.to_ascii_lowercase()),
                r,
            )
        })
        .min()
        .filter(|(d, _)| *d <= 3);
    let roles = ALL_ROLES.join(", ");
    match closest {
        Some((_, r)) => format!("unknown role {role:?}; did you mean {r:?}? The roles are {roles}"),
        None => format!("unknown role {role:?}; the roles are {roles}"),
    }
}

/// Levenshtein distance, for suggestions among a handful of short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn trusted_issuers(s: &Settings, out: &mut Findings) {
    for (i, t) in s.trusted_issuers.iter().enumerate() {
        let at = KeyPath::default().key("trusted_issuers").index(i);
        if t.jwks_file.is_none() == t.jwks_uri.is_none() {
            out.add(
                at.clone(),
                format!(
                    "trusted issuer {}: give exactly one of jwks_file and jwks_uri",
                    t.issuer
                ),
            );
        }
        if let Some(uri) = &t.jwks_uri {
            if let Some(why) = not_http_url(uri) {
                out.add(at.key("jwks_uri"), why);
            } else if s.callbacks.forbids_private()
                && !t.allow_private_network
                && let Some(r) = private_literal(uri)
            {
                out.add(
                    at.key("jwks_uri"),
                    format!(
                        "{}: {r}; set allow_private_network = true on this issuer if it is meant",
                        redact_url(uri)
                    ),
                );
            }
        }
        for (j, id) in t.app_ids.iter().flatten().enumerate() {
            if !s.apps.iter().any(|a| a.app_id.eq_ignore_ascii_case(id)) {
                out.add(
                    at.key("app_ids").index(j),
                    format!("names {id}, which is not a configured app"),
                );
            }
        }
    }
}

fn parties(s: &Settings, out: &mut Findings) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, p) in s.parties.iter().enumerate() {
        let at = KeyPath::default().key("parties").index(i);
        if p.kind.is_bot() {
            out.add(
                at.key("kind"),
                "must be user or phone: another bot is called by its [[apps]] entry",
            );
        }
        let key = party_key(&p.id);
        match seen.get(&key) {
            Some(&first) => {
                let earlier = &s.parties[first].id;
                let same = if *earlier == p.id {
                    String::new()
                } else {
                    format!(" ({:?} and {:?} are the same party)", earlier, p.id)
                };
                out.twice(
                    at.key("id"),
                    format!("party {} is configured twice{same}", p.id),
                    KeyPath::default().key("parties").index(first).key("id"),
                );
            }
            None => {
                seen.insert(key, i);
            }
        }
    }
}

/// `[tls]`: both files or neither, each readable; names that a certificate can hold.
fn tls(s: &Settings, out: &mut Findings) {
    let at = KeyPath::default().key("tls");
    let t = &s.tls;
    match (&t.cert_file, &t.key_file) {
        (Some(_), None) => out.add(at.key("cert_file"), "needs key_file beside it (or neither)"),
        (None, Some(_)) => out.add(at.key("key_file"), "needs cert_file beside it (or neither)"),
        _ => {}
    }
    for (key, file) in [("cert_file", &t.cert_file), ("key_file", &t.key_file)] {
        let Some(f) = file else { continue };
        let path = s
            .config_dir
            .as_deref()
            .map_or_else(|| std::path::PathBuf::from(f), |d| d.join(f));
        if let Err(e) = std::fs::metadata(&path) {
            out.add(at.key(key), format!("{}: {e}", path.display()));
        }
    }
    for (i, name) in t.names.iter().enumerate() {
        let dns = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
            });
        let ip = name
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok();
        if !(dns || ip) {
            out.add(
                at.key("names").index(i),
                format!("{name:?} is neither a DNS name nor an IP address"),
            );
        }
    }
}

fn meetings(s: &Settings, out: &mut Findings) {
    let configured: HashMap<String, usize> = s
        .parties
        .iter()
        .enumerate()
        .map(|(i, p)| (party_key(&p.id), i))
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut threads: HashMap<String, usize> = HashMap::new();
    let mut tokens: HashMap<&str, usize> = HashMap::new();
    for (i, m) in s.meetings.iter().enumerate() {
        let at = KeyPath::default().key("meetings").index(i);
        let here = |key: &'static str| KeyPath::default().key("meetings").index(i).key(key);
        let there =
            |j: usize, key: &'static str| KeyPath::default().key("meetings").index(j).key(key);
        let thread = m.thread_id();
        if !thread.starts_with("19:") {
            out.add(
                here("thread_id"),
                format!("a Teams chat thread id starts with \"19:\", not {thread:?}"),
            );
        }
        // Threads made from join ids differ unless the join ids do (reported below).
        match threads.get(&thread) {
            Some(&j) if m.thread_id.is_some() || s.meetings[j].thread_id.is_some() => out.twice(
                here("thread_id"),
                format!("two meetings have the thread {thread}"),
                there(j, "thread_id"),
            ),
            Some(_) => {}
            None => {
                threads.insert(thread, i);
            }
        }
        if let Some(t) = m.token.as_deref() {
            match tokens.get(t) {
                Some(&j) => out.twice(
                    here("token"),
                    "two meetings have the same token".to_string(),
                    there(j, "token"),
                ),
                None => {
                    tokens.insert(t, i);
                }
            }
        }
        match seen.get(m.join_meeting_id.as_str()) {
            Some(&first) => out.twice(
                at.key("join_meeting_id"),
                format!("meeting {} is configured twice", m.join_meeting_id),
                KeyPath::default()
                    .key("meetings")
                    .index(first)
                    .key("join_meeting_id"),
            ),
            None => {
                seen.insert(&m.join_meeting_id, i);
            }
        }
        let mut present: HashMap<String, KeyPath> = HashMap::new();
        let listed = (m
            .parties
            .iter()
            .enumerate()
            .map(|(j, id)| ("parties", j, id)))
        .chain(m.lobby.iter().enumerate().map(|(j, id)| ("lobby", j, id)));
        for (list, j, id) in listed {
            let key = party_key(id);
            let here = at.key(list).index(j);
            if !configured.contains_key(&key) {
                out.add(here, format!("no [[parties]] entry has the id {id:?}"));
            } else if let Some(first) = present.get(&key) {
                out.twice(
                    here,
                    format!("party {id} is in this meeting twice"),
                    first.clone(),
                );
            } else {
                present.insert(key, here);
            }
        }
    }
}

/// Every configured duration is at most ten years ([`crate::clock::MAX_SPAN_SECS`]), so timers
/// computed from the call clock stay far inside the range of time arithmetic.
fn durations(s: &Settings, out: &mut Findings) {
    let max = crate::clock::MAX_SPAN_SECS;
    let top = KeyPath::default();
    let mut spans = vec![
        (
            top.key("calls").key("ringing_timeout_secs"),
            s.calls.ringing_timeout_secs,
        ),
        (
            top.key("calls").key("keep_alive_timeout_secs"),
            s.calls.keep_alive_timeout_secs,
        ),
        (
            top.key("delivery").key("max_backoff_secs"),
            s.delivery.max_backoff_secs,
        ),
        (
            top.key("delivery").key("initial_backoff_ms"),
            s.delivery.initial_backoff_ms / 1000,
        ),
        (
            top.key("notifications").key("token_lifetime_secs"),
            s.notifications.token_lifetime_secs,
        ),
    ];
    for (i, p) in s.parties.iter().enumerate() {
        if let Some(ms) = p.answer_after_ms {
            spans.push((
                top.key("parties").index(i).key("answer_after_ms"),
                ms / 1000,
            ));
        }
    }
    for (at, secs) in spans {
        if secs > max {
            out.add(at, format!("is longer than ten years ({max} s)"));
        }
    }
}

/// `[sip]`: addresses that parse, numbers in E.164 for apps that exist, each number once, and
/// `sip_uri`s with an IP address.
fn sip(s: &Settings, out: &mut Findings) {
    let top = KeyPath::default();
    for (i, p) in s.parties.iter().enumerate() {
        if let Some(uri) = &p.sip_uri {
            let at = top.key("parties").index(i).key("sip_uri");
            if crate::sip::uri_address(uri).is_none() {
                out.add(
                    at,
                    "must be a sip: URI with an IP address, like \"sip:alice@127.0.0.1:5090\"",
                );
            } else if s.sip.is_none() {
                out.add(
                    at,
                    "needs a [sip] section: without one, no SIP call can be placed",
                );
            }
        }
    }
    let Some(sip) = &s.sip else {
        return;
    };
    let at = top.key("sip");
    if sip.listen.parse::<std::net::SocketAddr>().is_err() {
        out.add(
            at.key("listen"),
            "must be IP:PORT, like \"127.0.0.1:5060\" (port 0 picks one)",
        );
    }
    if sip.trunk_timeout_secs == 0 {
        out.add(at.key("trunk_timeout_secs"), "must be at least 1");
    }
    let (min, max) = (sip.rtp_port_min, sip.rtp_port_max);
    if (min, max) != (0, 0) && !(1024 <= min && min < max) {
        out.add(
            at.key("rtp_port_max"),
            "rtp_port_min and rtp_port_max must both be 0 (any port), or 1024 ≤ rtp_port_min < rtp_port_max",
        );
    }
    if sip.rtt_estimate_ms == 0 || sip.rtt_estimate_ms > 10_000 {
        out.add(at.key("rtt_estimate_ms"), "must be between 1 and 10000");
    }
    for (i, t) in sip.trunks.iter().enumerate() {
        if t.address.parse::<std::net::SocketAddr>().is_err() {
            out.add(
                at.key("trunks").index(i).key("address"),
                "must be IP:PORT, like \"127.0.0.1:5080\"",
            );
        }
        if t.username.is_some() != t.password.is_some() {
            out.add(
                at.key("trunks").index(i),
                "give both username and password, or neither",
            );
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, n) in sip.numbers.iter().enumerate() {
        let here = at.key("numbers").index(i);
        match crate::sip::numbers::e164(&n.number) {
            None => out.add(
                here.key("number"),
                "must be a phone number in E.164, like \"+15550123\"",
            ),
            Some(e) => {
                if let Some(first) = seen.insert(e, i) {
                    out.add(
                        here.key("number"),
                        format!("is already taken by [[sip.numbers]] entry {}", first + 1),
                    );
                }
            }
        }
        if !s
            .apps
            .iter()
            .any(|a| a.app_id.eq_ignore_ascii_case(&n.app_id))
        {
            out.add(
                here.key("app_id"),
                format!("no [[apps]] entry has the app_id {:?}", n.app_id),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_takes_both_files_or_neither_and_names_a_certificate_can_hold() {
        let mut s = Settings::default();
        s.tls.cert_file = Some("/nowhere/cert.pem".into());
        s.tls.names = vec!["bot.internal".into(), "10.1.2.3".into(), "bad name!".into()];
        let said: Vec<String> = findings(&s)
            .iter()
            .map(|f| format!("{}: {}", f.at, f.message))
            .collect();
        let tls: Vec<&String> = said.iter().filter(|f| f.starts_with("tls")).collect();
        assert_eq!(tls.len(), 3, "{said:#?}");
        assert!(tls[0].contains("needs key_file"), "{tls:?}");
        assert!(tls[1].contains("/nowhere/cert.pem"), "{tls:?}");
        assert!(
            tls[2].starts_with("tls.names[2]") && tls[2].contains("bad name!"),
            "{tls:?}"
        );
    }

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\nb = \"é\"\nc = 3";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, text.find('c').unwrap()), (3, 1));
        let after = text.find('é').unwrap() + 'é'.len_utf8();
        assert_eq!(line_col(text, after), (2, 7));
    }

    #[test]
    fn a_role_one_typo_away_is_suggested() {
        let said = unknown_role("Calls.Initate.All");
        assert!(
            said.contains("did you mean \"Calls.Initiate.All\"?"),
            "{said}"
        );
        let said = unknown_role("Calls.Everything");
        assert!(!said.contains("did you mean"), "{said}");
        assert!(said.contains("Calls.AccessMedia.All"), "{said}");
    }

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        assert!(not_http_url("https://bot.example.com/api/calls").is_none());
        assert!(not_http_url("http://127.0.0.1:9000").is_none());
        assert!(
            not_http_url("bot.example.com/api")
                .unwrap()
                .contains("not a URL")
        );
        assert!(
            not_http_url("ftp://bot.example.com/")
                .unwrap()
                .contains("not an http or https URL")
        );
        assert!(
            !not_http_url("mailto:x@example.com")
                .unwrap()
                .contains("did you mean")
        );
        assert!(
            not_http_url("localhost:8080")
                .unwrap()
                .contains("did you mean \"http://localhost:8080\"?")
        );
    }

    #[test]
    fn key_paths_read_as_written_in_toml() {
        let at = KeyPath::default()
            .key("apps")
            .index(1)
            .key("roles")
            .index(0);
        assert_eq!(at.to_string(), "apps[1].roles[0]");
    }
}
