//! What happens on a party's side of a call, as the fabric reports it: a party answers, fails,
//! hangs up, presses keys, or calls an app.
//!
//! Every [`FabricEvent`] comes through one channel, drained in order by
//! [`Engine::run_fabric_events`]: a fabric sends through [`Engine::event_sink`], and the control
//! API, which must answer with the outcome, through [`Engine::report`]. Each event is applied
//! under the engine lock and staged at once; the drain does not wait for one to be durable before
//! staging the next (commits keep their order), and whoever waits for an outcome gets it once the
//! change is durable.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::bots::Caller;
use super::{AppRef, Engine, EngineError};
use crate::clock::Timestamp;
use crate::domain::{Call, CallId, EndReason};
use crate::fabric::{EventSink, FabricCommand, FabricEvent, LegRef};
use crate::store::committer::{self, Pending};

/// What came of a fabric event.
#[derive(Debug)]
pub enum Outcome {
    /// The leg was not (or no longer) in a state for it: nothing changed.
    Stale,
    /// It was applied; these bots' calls heard it (for a hang-up: the calls that ended).
    Calls(Vec<CallId>),
    /// A party called an app: its new call.
    Created(Box<Call>),
}

/// An event on its way to the engine, with whoever waits for its outcome.
pub(super) struct Inbound {
    event: FabricEvent,
    reply: Option<oneshot::Sender<Result<Outcome, EngineError>>>,
}

pub(super) type Inbox = mpsc::UnboundedReceiver<Inbound>;
pub(super) type Outbox = mpsc::UnboundedSender<Inbound>;

impl Engine {
    /// Where a fabric reports its events.
    pub fn event_sink(&self) -> EventSink {
        let events = self.events.clone();
        Arc::new(move |event| {
            let _ = events.send(Inbound { event, reply: None });
        })
    }

    /// Reports an event and waits until its change is durable: the control API's way in.
    pub async fn report(&self, event: FabricEvent) -> Result<Outcome, EngineError> {
        let (reply, outcome) = oneshot::channel();
        self.events
            .send(Inbound {
                event,
                reply: Some(reply),
            })
            .map_err(|_| self.stopped())?;
        outcome.await.map_err(|_| self.stopped())?
    }

    fn stopped(&self) -> EngineError {
        EngineError::Unavailable("The service is stopping; retry later.".into())
    }

    /// Applies fabric events in the order they come until `stop` is cancelled.
    pub async fn run_fabric_events(self: Arc<Self>, stop: CancellationToken) {
        let Some(mut inbox) = self.inbox.lock().expect("inbox lock").take() else {
            tracing::error!("fabric events are already being applied");
            return;
        };
        loop {
            let Inbound { event, reply } = tokio::select! {
                _ = stop.cancelled() => return,
                next = inbox.recv() => match next {
                    Some(inbound) => inbound,
                    None => return,
                },
            };
            let what = format!("{event:?}");
            let refused = match &event {
                FabricEvent::Incoming {
                    call, leg, from, ..
                } => Some(FabricCommand::Cancel {
                    leg: LegRef {
                        conversation: *call,
                        leg: *leg,
                    },
                    peer: from.clone(),
                    reason: EndReason::BUSY,
                }),
                _ => None,
            };
            // A fabric's event waits while the store cannot take changes (in order: the events
            // behind it wait too); the control API's caller is told to retry instead.
            let staged = loop {
                match self.apply(event.clone()).await {
                    Err(EngineError::Unavailable(_)) if reply.is_none() => {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = self.health.wait_writable() => {}
                        }
                    }
                    other => break other,
                }
            };
            let again = self.events.clone();
            let fabric = self.fabric.clone();
            tokio::spawn(async move {
                let result = match staged {
                    Ok((outcome, Some(pending))) => committer::wait(pending)
                        .await
                        .map(|_| outcome)
                        .map_err(EngineError::from),
                    Ok((outcome, None)) => Ok(outcome),
                    Err(e) => Err(e),
                };
                match reply {
                    Some(reply) => {
                        let _ = reply.send(result);
                    }
                    None => match result {
                        Ok(Outcome::Stale) => tracing::debug!("fabric event ignored: {what}"),
                        Ok(_) => {}
                        // Its commit was refused (the store failed under it): it is applied
                        // again once memory is reloaded, behind the events that came since.
                        Err(EngineError::Store(e)) => {
                            tracing::warn!("fabric event {what} is applied again: {e}");
                            let _ = again.send(Inbound { event, reply: None });
                        }
                        Err(e) => {
                            tracing::warn!("fabric event {what} failed: {e}");
                            // A caller the app cannot take (it is at its limit) is turned away
                            // as busy.
                            fabric.execute(refused.into_iter().collect());
                        }
                    },
                }
            });
        }
    }

    /// Applies one event and stages its change (`None` when nothing changed).
    #[tracing::instrument(level = "debug", name = "fabric_event", skip_all, fields(leg = ?event.leg()))]
    async fn apply(&self, event: FabricEvent) -> Result<(Outcome, Option<Pending>), EngineError> {
        let (leg, change): (LegRef, LegChange) = match event {
            FabricEvent::Incoming {
                call,
                leg,
                dialog,
                from,
                display_name,
                app,
                callback_uri,
            } => {
                let caller = Caller {
                    leg,
                    dialog,
                    peer: from,
                    display_name,
                };
                let (call, pending) = self.incoming(&app, call, caller, callback_uri).await?;
                return Ok((Outcome::Created(Box::new(call)), Some(pending)));
            }
            FabricEvent::Answered(leg) => (leg, LegChange::Answered),
            FabricEvent::Failed(leg, reason) => (leg, LegChange::Failed(reason)),
            FabricEvent::HungUp(leg) => (leg, LegChange::HungUp),
            FabricEvent::Tones(leg, keys) => (leg, LegChange::Pressed(keys)),
            FabricEvent::Held(leg, on) => (leg, LegChange::Held(on)),
            FabricEvent::MediaDone(leg, op, end) => (leg, LegChange::MediaDone(op, end)),
        };
        let mut tx = self.begin().await?;
        let Some(mut scene) = tx.scene(leg.conversation).await? else {
            return Ok((Outcome::Stale, None));
        };
        let (now, rules) = (self.clock.now(), &self.rules);
        let calls = match change {
            LegChange::Answered => scene.leg_answers(leg.leg, now, rules).then(Vec::new),
            // A ringing leg fails; a connected one (its media failed) ends with the reason.
            LegChange::Failed(reason) => (scene.leg_fails(leg.leg, reason, now, rules)
                || scene.leg_lost(leg.leg, reason, now, rules))
            .then(Vec::new),
            LegChange::HungUp => scene.leg_hangs_up(leg.leg, now, rules).then(|| {
                let ended = scene.calls.iter().filter(|c| !c.state.is_live());
                ended.map(|c| c.id).collect()
            }),
            LegChange::MediaDone(op, end) => {
                scene.leg_media_done(leg.leg, &op, &end).then(Vec::new)
            }
            LegChange::Held(on) => scene
                .leg_holds(leg.leg, on, now, rules)
                .then(|| scene.conversation.bot_calls().collect()),
            LegChange::Pressed(keys) => {
                Some(scene.leg_presses(leg.leg, &keys, now)).filter(|heard| !heard.is_empty())
            }
        };
        let Some(calls) = calls else {
            return Ok((Outcome::Stale, None));
        };
        let pending = tx.stage(vec![scene], &[]);
        Ok((Outcome::Calls(calls), Some(pending)))
    }

    /// A party calls an app: a call `id` in state `incoming`, notified to `callback_uri`.
    async fn incoming(
        &self,
        app: &AppRef,
        id: CallId,
        caller: Caller,
        callback_uri: String,
    ) -> Result<(Call, Pending), EngineError> {
        let scene = self.incoming_scene(app, id, caller, callback_uri, self.clock.now());
        let call = scene.calls[0].clone();
        let mut tx = self.begin().await?;
        Self::admit(&mut *tx, app).await?;
        let pending = tx.stage(vec![scene], &[&app.app_id]);
        Ok((call, pending))
    }

    /// Ends, with 410/301005, every live leg whose signalling only the fabric held (SIP dialogs):
    /// after a restart they are gone. Run once at start, before anything else changes calls;
    /// returns how many legs ended.
    pub async fn end_lost_dialogs(&self) -> Result<usize, EngineError> {
        let lost: Vec<(CallId, Vec<Uuid>)> = {
            let st = self.read_state().await?;
            st.conversations
                .values()
                .map(|c| {
                    let legs = c.legs.iter().filter(|l| l.dialog && l.is_live());
                    (c.id, legs.map(|l| l.id).collect::<Vec<_>>())
                })
                .filter(|(_, legs)| !legs.is_empty())
                .collect()
        };
        let mut ended = 0;
        for (conversation, legs) in lost {
            let mut tx = self.begin().await?;
            let Some(mut scene) = tx.scene(conversation).await? else {
                continue;
            };
            let now = self.clock.now();
            for leg in legs {
                if scene.leg_lost(leg, EndReason::MEDIA_FAILURE, now, &self.rules) {
                    ended += 1;
                }
            }
            committer::wait(tx.stage(vec![scene], &[])).await?;
        }
        Ok(ended)
    }

    /// The live legs a party has, oldest conversation first.
    pub async fn live_legs_of(&self, party_id: &str) -> Result<Vec<LegRef>, EngineError> {
        let key = crate::domain::call::party_key(party_id);
        let mut out = vec![];
        for conv in self.conversations_of(&key).await? {
            let st = self.read_state().await?;
            if let Some(c) = st.conversations.get(&conv) {
                out.extend(c.party_legs(&key).map(|i| LegRef {
                    conversation: conv,
                    leg: c.legs[i].id,
                }));
            }
        }
        Ok(out)
    }

    /// The live conversations a party is in, oldest first.
    pub(super) async fn conversations_of(&self, key: &str) -> Result<Vec<CallId>, EngineError> {
        let st = self.read_state().await?;
        let mut found: Vec<(Timestamp, CallId)> = st
            .conversations
            .values()
            .filter(|c| c.has_party(key))
            .map(|c| (c.created_at, c.id))
            .collect();
        found.sort();
        let ticket = self.open_ticket()?;
        drop(st);
        self.settled(found.into_iter().map(|(_, id)| id).collect(), ticket)
            .await
    }
}

/// A change on a party's leg.
enum LegChange {
    Answered,
    Failed(crate::domain::EndReason),
    HungUp,
    Pressed(String),
    Held(bool),
    MediaDone(String, crate::domain::operation::MediaEnd),
}
