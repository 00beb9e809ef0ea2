//! Switchboard: a self-hosted call-control server that speaks the Microsoft Graph calls API.
//!
//! The crate is laid out by layer (see `ARCHITECTURE.md`):
//! - [`domain`]: the pure call state machine, conversations, operations and the end-reason
//!   catalogue; the crate `switchboard-domain` in `crates/domain`, so the compiler checks that it
//!   does no I/O;
//! - [`graph`]: Graph wire types: parsing requests leniently, rendering calls and notifications
//!   exactly;
//! - [`store`]: storage behind one trait, with the memory and SQLite backends;
//! - [`fabric`]: the telephony fabric: events in, commands out after commit (simulated parties
//!   today);
//! - [`media`]: WAV files, how long a prompt plays (fetched within limits), what a recording
//!   holds;
//! - [`engine`]: applies domain transitions, commits them with their notifications, runs timers;
//! - [`delivery`]: the worker that POSTs notifications from the durable outbox;
//! - [`auth`]: signing keys, app tokens, token validation;
//! - [`net_policy`]: where outbound requests may connect (the callback policy's address
//!   rules) and the HTTP clients that enforce it;
//! - [`http`]: the HTTP layer (Graph routes, token endpoint, control API);
//! - [`connections`]: the connection limit, shedding the connection idle longest;
//! - [`app`]: builds everything from [`config::Settings`] and runs it until stopped;
//! - [`telemetry`]: the log subscriber (and, later, metrics).

#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod connections;
pub mod delivery;
pub mod engine;
pub mod exec;
pub mod fabric;
pub mod faults;
pub mod graph;
pub mod http;
pub mod media;
pub mod net_policy;
pub mod sip;
pub mod store;
pub mod telemetry;
pub mod tls;

/// The pure domain lives in its own crate, `crates/domain`; every `crate::domain::…` path
/// goes on working through this name.
pub use switchboard_domain as domain;
