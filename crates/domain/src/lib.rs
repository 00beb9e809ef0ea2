//! The pure domain: call identity, the call state machine, conversations and their legs, operations
//! (media, recordings, DTMF) and the end-reason catalogue.
//!
//! Nothing here does I/O or reads a clock; time comes in as an argument. The engine applies these
//! transitions and commits their effects.
//!
//! This is a crate of its own (`switchboard-domain`, used by the server as `switchboard::domain`)
//! so that the compiler holds it to that: it depends on serde, serde_json, chrono, uuid and
//! thiserror only, with no async runtime and no I/O crate among them.

#![forbid(unsafe_code)]

pub mod call;
pub mod conversation;
pub mod end_reason;
pub mod fabric;
pub mod ids;
pub mod operation;
pub mod refusal;
pub mod scene;

pub use call::{Call, CallState, ChangeType, Direction, Event, Notice, PartyKind, Peer, Timers};
pub use end_reason::EndReason;
pub use fabric::{AppRef, FabricCommand, FabricEvent, LegRef};
pub use ids::CallId;
pub use refusal::Refusal;

/// A point in time on the call clock (the server's `clock` module reads it; the domain is given it).
pub type Timestamp = chrono::DateTime<chrono::Utc>;
