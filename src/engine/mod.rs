//! The engine: applies domain transitions to live conversations and the bots' calls in them,
//! commits each change together with the notifications it causes, hands those to the delivery
//! worker, and runs the timers. One concept per file:
//!
//! - `state.rs`: the live registry in memory (calls, conversations, meetings, the timer index,
//!   tickets of changes not yet durable, memory-only views);
//! - `stage.rs`: how a change is made: load a [`Scene`], let the domain change it, stage the
//!   result into memory and one store [`Change`] (with its notifications), wait until durable;
//! - `calls.rs`: creating, answering, rejecting, redirecting, transferring and ending calls;
//! - `operations.rs`: media and other operations on a call (prompts, recording, tones, mute);
//! - `participants.rs`: the participants of group calls and meetings (invite, remove, mute,
//!   hold music);
//! - `legs.rs`: fabric events: what happens on a party's side (it answers, fails, hangs up,
//!   presses keys, calls an app), drained in order from one channel;
//! - `timers.rs`: timers falling due, and the virtual clock's advance;
//! - `views.rs`: what readers are told (a call, an operation, a party's legs, a meeting, a
//!   recording, the deliveries log), never ahead of the store;
//! - `recovery.rs`: what the engine does about its store over time (reload after a failed
//!   commit, resume, retention rounds).
//!
//! Live calls and conversations are held in memory and written through the [`Store`] before any
//! answer goes out; one lock orders every change, so the store, memory and the outbox always
//! agree. When a commit fails, memory may be ahead of the store: [`Engine::watch_store`] then
//! reloads it from the store, probes the store, and resumes by itself once a write succeeds.
//!
//! [`Scene`]: crate::domain::conversation::Scene
//! [`Change`]: crate::store::Change
//! [`Store`]: crate::store::Store

use std::sync::Arc;

use tokio::sync::{Mutex, Notify};

use crate::clock::Clock;
use crate::config::MeetingConfig;
use crate::delivery::Delivery;
use crate::domain::Refusal;
use crate::domain::call::{Rules, TransitionError};
use crate::domain::conversation::Who;
use crate::domain::{Call, CallId};
use crate::fabric::Fabric;
use crate::store::committer::Committer;
use crate::store::scenes::SceneTx;
use crate::store::{Health, Retention, Snapshot, Store, StoreError};
use crate::telemetry::Metrics;

mod bots;
mod calls;
mod legs;
mod operations;
mod participants;
mod recovery;
mod stage;
mod state;
mod timers;
mod views;

pub use bots::Callee;
pub use legs::Outcome;
pub use participants::Invitee;
pub use views::{MeetingView, PartyLeg};

use state::State;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such call, or not this app's call: the two answer the same.
    #[error("Call not found.")]
    NotFound,
    /// The request is well formed, but the domain refuses it now (its rules, typed; the words a
    /// client reads are `http::error`'s).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("The application has reached its limit of {0} concurrent calls.")]
    TooManyCalls(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store cannot take changes now (or memory is being reloaded from it).
    #[error("{0}")]
    Unavailable(String),
}

/// The app a request acts for, as far as the engine cares.
pub use crate::domain::AppRef;

pub struct Engine {
    state: Mutex<State>,
    store: Arc<dyn Store>,
    committer: Committer,
    health: Arc<Health>,
    retention: Retention,
    meetings: Vec<MeetingConfig>,
    /// The apps other bots can call.
    callees: Vec<Callee>,
    clock: Clock,
    fabric: Arc<dyn Fabric>,
    rules: Rules,
    delivery: Arc<Delivery>,
    metrics: Arc<Metrics>,
    public_url: String,
    recordings: Arc<crate::media::recordings::Archive>,
    timers_changed: Notify,
    /// Fabric events on their way in, and (until the drain starts) where they wait.
    events: legs::Outbox,
    inbox: std::sync::Mutex<Option<legs::Inbox>>,
}

/// What the engine is built from, besides the snapshot.
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub committer: Committer,
    pub clock: Clock,
    pub fabric: Arc<dyn Fabric>,
    pub rules: Rules,
    pub delivery: Arc<Delivery>,
    pub metrics: Arc<Metrics>,
    /// Base URL of recordings.
    pub public_url: String,
    /// The meetings bots can join.
    pub meetings: Vec<MeetingConfig>,
    /// The apps other bots can call.
    pub callees: Vec<Callee>,
    /// What is kept of ended calls' deliveries logs.
    pub retention: Retention,
    /// Finished recordings kept beyond memory (and real recordings' audio).
    pub recordings: Arc<crate::media::recordings::Archive>,
}

fn transition_error(e: TransitionError) -> EngineError {
    match e {
        TransitionError::Gone => EngineError::NotFound,
        e @ TransitionError::NotAllowed { .. } => Refusal::Transition(e).into(),
    }
}

impl Engine {
    /// Builds the engine from what the store held at start.
    pub fn new(snapshot: &Snapshot, parts: Parts) -> Self {
        let Parts {
            store,
            committer,
            clock,
            fabric,
            rules,
            delivery,
            metrics,
            public_url,
            meetings,
            callees,
            retention,
            recordings,
        } = parts;
        let state = State::build(snapshot, &meetings, fabric.as_ref(), clock.now());
        let (events, inbox) = tokio::sync::mpsc::unbounded_channel();
        Engine {
            state: Mutex::new(state),
            store,
            health: committer.health().clone(),
            committer,
            retention,
            meetings,
            callees,
            clock,
            fabric,
            rules,
            delivery,
            metrics,
            public_url,
            recordings,
            timers_changed: Notify::new(),
            events,
            inbox: std::sync::Mutex::new(Some(inbox)),
        }
    }

    /// Whether the store can write now.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The state, to read: refused while memory may be ahead of the store.
    async fn read_state(&self) -> Result<tokio::sync::MutexGuard<'_, State>, EngineError> {
        let st = self.state.lock().await;
        if !self.health.readable() {
            return Err(self.unavailable());
        }
        Ok(st)
    }

    /// Begins a change (see [`SceneTx`]): refused while the store cannot write.
    async fn begin(&self) -> Result<Box<dyn SceneTx + '_>, EngineError> {
        let st = self.state.lock().await;
        if !self.health.writable() {
            return Err(self.unavailable());
        }
        Ok(Box::new(state::LocalTx { st, engine: self }))
    }

    fn unavailable(&self) -> EngineError {
        let why = self
            .health
            .failure()
            .map(|f| f.error)
            .unwrap_or_else(|| "the store failed".into());
        EngineError::Unavailable(format!(
            "The service cannot store changes right now ({why}); retry later."
        ))
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Prometheus text of the metrics, with the number of live calls now.
    pub async fn render_metrics(&self) -> String {
        let live = self.state.lock().await.calls.len();
        self.metrics.render(live)
    }

    /// Where a finished recording is served.
    pub fn recording_url(&self, op_id: &str) -> String {
        format!("{}/recordings/{op_id}.wav", self.public_url)
    }

    /// A leg's identity on a roster: a party's id and configured name (another bot's: its
    /// app's), or a bot's app id and display name (`call` finds the bot's call).
    fn names<'a>(
        &self,
        who: &Who,
        call: impl Fn(CallId) -> Option<&'a Call>,
    ) -> (String, Option<String>) {
        match who {
            Who::Party(p) if p.kind.is_bot() => (p.id.clone(), self.bot_name(p)),
            Who::Party(p) => (
                p.id.clone(),
                self.fabric.party(&p.id).and_then(|i| i.display_name),
            ),
            Who::Bot { call_id } => match call(*call_id) {
                Some(c) => (c.app_id.to_string(), c.app_display_name()),
                None => (String::new(), None),
            },
        }
    }
}
