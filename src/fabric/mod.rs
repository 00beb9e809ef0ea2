//! The telephony fabric: the parties at the other end of calls, and how the engine talks to them.
//!
//! The seam has two directions. Events come in: a fabric reports what happens on a party's side
//! ([`FabricEvent`]: answered, failed, hung up, pressed keys, called an app) through an
//! [`EventSink`], which the engine drains in order (`engine/legs.rs`). Commands go out: the
//! domain's changes become [`FabricCommand`]s (ring, attach a caller, cancel, hang up, send DTMF)
//! that the engine hands to [`Fabric::execute`] only once the change that decided them is
//! durable, in commit order.
//!
//! Two implement it: [`simulated::SimulatedFabric`], parties from the config file driven by the
//! control API, and the SIP fabric (`crate::sip`), which places and takes real calls. With a
//! `[sip]` section, [`router::Router`] sends each party to one of them.

pub mod router;
pub mod simulated;

use std::sync::Arc;
use std::time::Duration;

pub use crate::domain::fabric::{AppRef, FabricCommand, FabricEvent, LegRef};
use crate::domain::{EndReason, PartyKind, Peer};

/// How a fabric reports events; the engine gives each fabric one (`Engine::event_sink`).
pub type EventSink = Arc<dyn Fn(FabricEvent) + Send + Sync>;

/// What a fabric can say in advance about a party it is about to ring, on the call clock.
///
/// The simulated parties know their answer ahead (it keeps them deterministic under the virtual
/// clock, and their plan is stored with the leg, so a restart keeps it); a real trunk always
/// says [`DialPlan::Ring`] and reports the outcome later as an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialPlan {
    /// The party picks up after this long.
    Answer { after: Duration },
    /// The call fails after this long with this reason.
    Fail { after: Duration, reason: EndReason },
    /// It rings until it answers, fails or the ringing times out: the fabric will say.
    Ring,
    /// As [`DialPlan::Ring`], on a real call whose signalling (a SIP dialog) the fabric holds in
    /// memory: a restart loses it (`Leg::dialog`).
    Dialog,
}

/// A party as the control API and rosters show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartyInfo {
    pub id: String,
    pub kind: PartyKind,
    pub display_name: Option<String>,
}

pub trait Fabric: Send + Sync + 'static {
    /// What is known in advance of ringing `target`. Pure: the engine calls it under its lock,
    /// after admission, while it builds the change; nothing rings until [`Fabric::execute`].
    fn plan(&self, target: &Peer) -> DialPlan;
    /// Carries out commands of a change that is durable, in commit order. It must not block:
    /// what takes time runs elsewhere and reports back as events.
    fn execute(&self, commands: Vec<FabricCommand>);
    /// The party with this id (a user id in any case, or a phone number in any common spelling).
    fn party(&self, id: &str) -> Option<PartyInfo>;
}
