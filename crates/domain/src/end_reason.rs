//! The catalogue of end reasons (`resultInfo` code and subcode) that Switchboard emits, with the
//! English sentence that says what happened. Codes follow the Graph "Delete call" page.

use serde::{Deserialize, Serialize};

/// Why a call (or a call leg) ended: a `resultInfo` code and subcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndReason {
    pub code: i32,
    pub subcode: i32,
}

impl EndReason {
    pub const fn new(code: i32, subcode: i32) -> Self {
        EndReason { code, subcode }
    }

    /// The bot hung up (`DELETE` call), P2P or its own leg of a group call.
    pub const BOT_HANG_UP: Self = Self::new(200, 5001);
    /// The other user in a P2P call hung up.
    pub const PEER_HANG_UP: Self = Self::new(200, 4521);
    /// The phone (PSTN) party hung up a call the bot placed.
    pub const PSTN_HANG_UP_OUTGOING: Self = Self::new(200, 560000);
    /// The phone (PSTN) party hung up a call it placed to the bot.
    pub const PSTN_HANG_UP_INCOMING: Self = Self::new(200, 540000);
    pub const EVERYONE_LEFT: Self = Self::new(200, 5002);
    pub const NOBODY_JOINED: Self = Self::new(200, 5013);
    pub const REMOVED: Self = Self::new(200, 5300);
    pub const TRANSFERRED: Self = Self::new(200, 7015);
    /// The bot's incoming call was redirected and a target answered (the docs give no code).
    pub const REDIRECTED: Self = Self::new(200, 5001);
    /// A transfer whose target did not answer; the call goes on.
    pub const TRANSFER_FAILED: Self = Self::new(500, 7000);
    /// The bot rejected an incoming call with reason `forbidden` (the docs give no code).
    pub const REJECTED_FORBIDDEN: Self = Self::new(403, 8540);
    pub const KEEP_ALIVE_TIMEOUT: Self = Self::new(408, 8537);
    pub const NOT_ACKNOWLEDGED: Self = Self::new(408, 1106);
    pub const NO_ANSWER: Self = Self::new(408, 10057);
    pub const DECLINED: Self = Self::new(603, 8538);
    pub const BUSY: Self = Self::new(486, 8539);
    pub const NOT_FOUND: Self = Self::new(480, 10037);
    pub const UNREACHABLE: Self = Self::new(480, 10076);
    pub const UNROUTABLE: Self = Self::new(480, 10134);
    pub const PRIVATE_CALLING_DISABLED: Self = Self::new(480, 10199);
    pub const MEDIA_FAILURE: Self = Self::new(410, 301005);
    /// A connectivity error with the bot's media (only injected, with `POST /calls/{id}/fail`).
    pub const BOT_MEDIA_FAILURE: Self = Self::new(500, 1005);
    /// A caller over SIP cancelled before the bot answered.
    pub const CALLER_CANCELLED: Self = Self::new(487, 540487);
    /// A SIP trunk gave no response at all to an INVITE in time (a phone target).
    pub const TRUNK_TIMEOUT: Self = Self::new(408, 500001);
    /// Media could not be set up with a user over SIP: no codec in common.
    pub const NO_COMMON_CODEC: Self = Self::new(410, 301004);

    /// Every reason named above: the catalogue `docs/END-REASONS.md` tabulates.
    pub const ALL: [Self; 25] = [
        Self::BOT_HANG_UP,
        Self::PEER_HANG_UP,
        Self::PSTN_HANG_UP_OUTGOING,
        Self::PSTN_HANG_UP_INCOMING,
        Self::EVERYONE_LEFT,
        Self::NOBODY_JOINED,
        Self::REMOVED,
        Self::TRANSFERRED,
        Self::REDIRECTED,
        Self::TRANSFER_FAILED,
        Self::REJECTED_FORBIDDEN,
        Self::KEEP_ALIVE_TIMEOUT,
        Self::NOT_ACKNOWLEDGED,
        Self::NO_ANSWER,
        Self::DECLINED,
        Self::BUSY,
        Self::NOT_FOUND,
        Self::UNREACHABLE,
        Self::UNROUTABLE,
        Self::PRIVATE_CALLING_DISABLED,
        Self::MEDIA_FAILURE,
        Self::BOT_MEDIA_FAILURE,
        Self::CALLER_CANCELLED,
        Self::TRUNK_TIMEOUT,
        Self::NO_COMMON_CODEC,
    ];

    /// The sentence sent as `resultInfo.message`.
    pub fn message(&self) -> String {
        let known = match (self.code, self.subcode) {
            // Operations' results, as Graph (and, for prompts, Azure Communication Services)
            // word them.
            (200, 0) => "Action completed successfully.",
            (200, 8515) => "Action completed, max record duration reached.",
            (400, 8508) => "Action failed, the operation was cancelled.",
            (400, 8535) => "Action failed, file format is invalid.",
            (400, 8536) => "Action failed, file could not be downloaded.",
            (200, 5001) => "The conversation has ended.",
            (200, 4521) => "The other participant ended the peer-to-peer call.",
            (200, 560000) | (200, 540000) => "The PSTN user ended the call.",
            (200, 5002) => "The call ended because every other participant left.",
            (200, 5013) => "The group call ended because nobody else joined it.",
            (200, 5300) => {
                "The participant was removed from the conversation by another participant."
            }
            (200, 7015) => "The call ended because the transfer completed.",
            (500, 7000) => "The transfer failed: the transfer target did not answer.",
            (403, 8540) => "The call was rejected: forbidden.",
            (408, 8537) => "Keep Alive timeout, cleaned up inactive call.",
            (408, 1106) => {
                "The call was not answered, rejected or redirected within the allowed time."
            }
            (408, 10057) => "The call timed out: the callee never answered.",
            (603, 8538) => "The callee declined the call.",
            (486, 8539) => "The callee is busy.",
            (480, 10037) => "No callee endpoints were found.",
            (480, 10076) => "The callee could not be reached.",
            (480, 10134) => "The call was rejected: it could not be routed.",
            (480, 10199) => "The call was rejected: private calling is disabled for the user.",
            (410, 301005) => "The call ended after a media connectivity failure.",
            (500, 1005) => "The service hit a connectivity error with the bot's media.",
            (487, 540487) => "The caller cancelled the call before it was answered.",
            (408, 500001) => "The call could not be set up: the SIP trunk did not respond in time.",
            (410, 301004) => "The call could not be set up: there was no audio codec in common.",
            (c, s) if (300..700).contains(&c) && (s == 560000 + c || s == 540000 + c) => {
                return format!("The call could not be set up: the far end answered SIP {c}.");
            }
            _ => "",
        };
        if known.is_empty() {
            format!(
                "The call ended with code {} and subcode {}.",
                self.code, self.subcode
            )
        } else {
            known.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogued_reason_has_its_own_sentence() {
        let all = EndReason::ALL;
        for r in all {
            assert!(!r.message().contains("ended with code"), "{r:?}");
            assert!(r.message().ends_with('.'));
        }
        assert_eq!(
            EndReason::BOT_HANG_UP.message(),
            "The conversation has ended."
        );
    }

    #[test]
    fn the_end_reasons_document_has_a_row_for_every_catalogued_reason_with_its_sentence() {
        // Rows are written `| code | subcode | when | message |`.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/END-REASONS.md");
        let doc = std::fs::read_to_string(path).expect("docs/END-REASONS.md");
        for r in EndReason::ALL {
            let start = format!("| {} | {} |", r.code, r.subcode);
            let row = doc
                .lines()
                .find(|l| l.starts_with(&start))
                .unwrap_or_else(|| panic!("no row `{start}` in docs/END-REASONS.md"));
            assert!(
                row.ends_with(&format!("| {} |", r.message())),
                "the row for {}/{} does not end with its message {:?}: {row}",
                r.code,
                r.subcode,
                r.message()
            );
        }
    }

    #[test]
    fn an_unknown_reason_still_gets_a_sentence_naming_its_codes() {
        assert_eq!(
            EndReason::new(500, 7117).message(),
            "The call ended with code 500 and subcode 7117."
        );
    }
}
