//! Phone numbers and SIP addresses: E.164 from the spellings trunks and phones use, and which
//! trunk carries a number.

/// A phone number in E.164 (`+` and digits) from any common spelling: `+1 555 0100`,
/// `tel:+1-555-0100`, or the user part of `sip:+15550100@host;user=phone`. A user part of bare
/// digits (as many trunks send) is taken as E.164 without its `+`. `None` if it is not a number.
pub fn e164(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s.strip_prefix("tel:").unwrap_or(s);
    // A tel: URI may carry parameters (`;phone-context=...`): the number is before them.
    let s = s.split(';').next().unwrap_or_default();
    let rest = s.strip_prefix('+').unwrap_or(s);
    let mut digits = String::with_capacity(rest.len() + 1);
    digits.push('+');
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            // Visual separators (RFC 3966 §5.1.1).
            '-' | '.' | ' ' | '(' | ')' => {}
            _ => return None,
        }
    }
    (2..=16).contains(&digits.len()).then_some(digits)
}

/// The user part of a `sip:`/`sips:`/`tel:` URI (`sip:+15550123@10.0.0.1;user=phone` →
/// `+15550123`), without the scheme, host or parameters.
pub fn uri_user(uri: &str) -> &str {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let rest = ["sips:", "sip:", "tel:"]
        .iter()
        .find_map(|p| uri.strip_prefix(p))
        .unwrap_or(uri);
    let user = rest.split('@').next().unwrap_or_default();
    user.split(';').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_any_common_spelling_are_e164() {
        for s in [
            "+15550123",
            "+1 555 0123",
            "tel:+1-555-0123",
            "15550123",
            "+1 (555) 0123",
        ] {
            assert_eq!(e164(s).as_deref(), Some("+15550123"), "{s}");
        }
        assert_eq!(
            e164("tel:+15550123;phone-context=example.com").as_deref(),
            Some("+15550123")
        );
        assert_eq!(e164("alice"), None);
        assert_eq!(e164("+"), None);
        assert_eq!(e164("+12345678901234567"), None, "longer than E.164 allows");
    }

    #[test]
    fn the_user_part_of_a_uri_is_found() {
        assert_eq!(
            uri_user("sip:+15550123@127.0.0.1:5060;user=phone"),
            "+15550123"
        );
        assert_eq!(uri_user("<sip:alice@example.com>"), "alice");
        assert_eq!(uri_user("tel:+15550123"), "+15550123");
        assert_eq!(uri_user("sips:bob;x=1@h"), "bob");
    }
}
