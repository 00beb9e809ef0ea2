//! Identifiers. Call ids are GUIDs, compared case-insensitively and always written in one
//! canonical form: lower-case and hyphenated, as real Graph traffic shows them.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A call id in canonical form. Built by [`CallId::new`], [`CallId::parse`], or from a leg id
/// ([`CallId::of_leg`]: the two ends of a bot-to-bot call name each other so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CallId(Uuid);

impl CallId {
    /// A fresh random id.
    pub fn new() -> Self {
        CallId(Uuid::new_v4())
    }

    /// Reads an id in any case, with or without hyphens (the docs show both forms).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.len() != 32 && s.len() != 36 {
            return None;
        }
        Uuid::parse_str(s).ok().map(CallId)
    }

    /// The id of the call (and conversation) on the other end of leg `leg` of a bot-to-bot
    /// call: a bot's leg in the other bot's conversation has that conversation's id.
    pub fn of_leg(leg: Uuid) -> Self {
        CallId(leg)
    }

    /// The id as a participant id: a conversation's id is its leg's id in the other bot's
    /// conversation.
    pub fn as_leg(self) -> Uuid {
        self.0
    }
}

impl Default for CallId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl TryFrom<String> for CallId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        CallId::parse(&s).ok_or_else(|| format!("not a call id: {s}"))
    }
}

impl From<CallId> for String {
    fn from(id: CallId) -> String {
        id.to_string()
    }
}

/// A fresh lower-case GUID string, for participant ids, chain ids, operation ids.
pub fn new_guid() -> String {
    Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_in_any_case_and_written_lower_case_hyphenated() {
        let id = CallId::parse("57DAB8B1894C409AB240BD8BEAE78896").unwrap();
        assert_eq!(id.to_string(), "57dab8b1-894c-409a-b240-bd8beae78896");
        assert_eq!(
            CallId::parse("57DAB8B1-894C-409A-B240-BD8BEAE78896"),
            Some(id)
        );
    }

    #[test]
    fn things_that_are_not_guids_are_not_call_ids() {
        for s in [
            "",
            "abc",
            "57dab8b1-894c-409a-b240",
            "{57dab8b1-894c-409a-b240-bd8beae78896}",
        ] {
            assert_eq!(CallId::parse(s), None, "{s}");
        }
    }
}
