//! The telephony fabric: who is at the other end of a call and how they respond.
//!
//! [`Fabric`] is the seam between the engine and the world of endpoints. Today it has one
//! implementation, [`simulated::SimulatedFabric`], whose parties come from the config file and
//! answer on the call clock. A SIP fabric will implement the same trait, placing real calls and
//! reporting their progress back to the engine.

pub mod simulated;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{EndReason, PartyKind, Peer};

/// How a simulated party responds when called.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behavior {
    #[default]
    Answer,
    NoAnswer,
    Reject,
    Busy,
    NotFound,
    Unreachable,
    Unroutable,
    PrivateCallingDisabled,
}

/// What will happen when a call is placed to a target, on the call clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialPlan {
    /// The party picks up after this long.
    Answer { after: Duration },
    /// The call fails after this long with this reason.
    Fail { after: Duration, reason: EndReason },
    /// It rings until the ringing timeout.
    Ring,
}

/// A party as the control API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartyInfo {
    pub id: String,
    pub kind: PartyKind,
    pub display_name: Option<String>,
    pub behavior: Behavior,
    /// How long the party speaks when recorded.
    pub speech_ms: u64,
    /// The WAV file the party speaks from, when it has one (its length is the speech).
    pub record_wav: Option<String>,
}

pub trait Fabric: Send + Sync + 'static {
    /// What happens when the bot calls `target`.
    fn dial(&self, target: &Peer) -> DialPlan;
    /// The party with this id (a user id in any case, or a phone number in any common spelling).
    fn party(&self, id: &str) -> Option<PartyInfo>;
    /// Every known party.
    fn parties(&self) -> Vec<PartyInfo>;
}
