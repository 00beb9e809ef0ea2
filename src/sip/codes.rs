//! SIP statuses and Graph end reasons, both ways, as `CONTRACT.md` ("Real calls over SIP")
//! tables them. Phone targets over a trunk use Microsoft's PSTN codes (subcode 560000 + status
//! when the bot placed the call, 540000 + status when the phone called in); users reached over
//! SIP use the codes their simulated counterparts give.

use crate::domain::{EndReason, PartyKind};

/// The caller cancelled before the bot answered.
pub const CALLER_CANCELLED: EndReason = EndReason::CALLER_CANCELLED;
/// The trunk gave no response at all to an INVITE in time (a phone target).
pub const TRUNK_TIMEOUT: EndReason = EndReason::TRUNK_TIMEOUT;
/// Media could not be set up: no codec in common (a user over SIP).
pub const NO_COMMON_CODEC_USER: EndReason = EndReason::NO_COMMON_CODEC;
/// Media could not be set up: no codec in common (a phone target).
pub const NO_COMMON_CODEC_PHONE: EndReason = EndReason::new(488, 560488);

/// Why an outgoing INVITE to a party of `kind` failed with final status `status`.
pub fn failure(status: u16, kind: PartyKind) -> EndReason {
    let s = i32::from(status);
    match kind {
        PartyKind::Phone => match status {
            486 | 600 => EndReason::new(486, 560486),
            404 | 604 => EndReason::new(404, 560404),
            _ => EndReason::new(s, 560000 + s),
        },
        _ => match status {
            486 | 600 => EndReason::BUSY,
            603 => EndReason::DECLINED,
            404 | 604 | 484 => EndReason::NOT_FOUND,
            480 => EndReason::UNREACHABLE,
            403 => EndReason::UNROUTABLE,
            488 => NO_COMMON_CODEC_USER,
            _ => EndReason::new(s, 560000 + s),
        },
    }
}

/// Why an INVITE that got no response at all within the trunk timeout failed.
pub fn no_response(kind: PartyKind) -> EndReason {
    match kind {
        PartyKind::Phone => TRUNK_TIMEOUT,
        _ => EndReason::NO_ANSWER,
    }
}

/// Why an outgoing call whose answer shared no codec with our offer failed.
pub fn no_common_codec(kind: PartyKind) -> EndReason {
    match kind {
        PartyKind::Phone => NO_COMMON_CODEC_PHONE,
        _ => NO_COMMON_CODEC_USER,
    }
}

/// The final response a caller gets when its call is refused for `reason`: the bot rejected it
/// (`none` 603, `busy` 486, `forbidden` 403), let the answer window pass (480), or the app could
/// not take it (486).
pub fn refusal_status(reason: EndReason) -> u16 {
    match reason {
        EndReason::DECLINED => 603,
        EndReason::BUSY => 486,
        EndReason::REJECTED_FORBIDDEN => 403,
        _ => 480,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_follow_the_contract_table() {
        let phone = |s| failure(s, PartyKind::Phone);
        let user = |s| failure(s, PartyKind::User);
        let r = EndReason::new;
        assert_eq!(phone(486), r(486, 560486));
        assert_eq!(phone(600), r(486, 560486));
        assert_eq!(phone(603), r(603, 560603));
        assert_eq!(phone(404), r(404, 560404));
        assert_eq!(phone(604), r(404, 560404));
        assert_eq!(phone(484), r(484, 560484));
        assert_eq!(phone(480), r(480, 560480));
        assert_eq!(phone(403), r(403, 560403));
        assert_eq!(phone(503), r(503, 560503));
        assert_eq!(user(486), r(486, 8539));
        assert_eq!(user(600), r(486, 8539));
        assert_eq!(user(603), r(603, 8538));
        assert_eq!(user(404), r(480, 10037));
        assert_eq!(user(484), r(480, 10037));
        assert_eq!(user(480), r(480, 10076));
        assert_eq!(user(403), r(480, 10134));
        assert_eq!(user(500), r(500, 560500));
        assert_eq!(no_response(PartyKind::Phone), r(408, 500001));
        assert_eq!(no_response(PartyKind::User), r(408, 10057));
        assert_eq!(no_common_codec(PartyKind::Phone), r(488, 560488));
        assert_eq!(no_common_codec(PartyKind::User), r(410, 301004));
    }

    #[test]
    fn refusals_answer_as_the_contract_says() {
        assert_eq!(refusal_status(EndReason::DECLINED), 603);
        assert_eq!(refusal_status(EndReason::BUSY), 486);
        assert_eq!(refusal_status(EndReason::REJECTED_FORBIDDEN), 403);
        assert_eq!(refusal_status(EndReason::NOT_ACKNOWLEDGED), 480);
    }
}
