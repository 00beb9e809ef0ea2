//! The engine: applies domain transitions to live calls, commits each change together with the
//! notifications it causes, hands those to the delivery worker, and runs the call timers.
//!
//! Live calls are held in memory and written through the [`Store`] before any answer goes out;
//! one lock orders every change, so the store, memory and the outbox always agree.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Timestamp};
use crate::delivery::Delivery;
use crate::domain::call::{Rules, Timers, TransitionError};
use crate::domain::ids::new_guid;
use crate::domain::{Call, CallId, CallState, Direction, EndReason, Event, Notice, Peer};
use crate::fabric::{DialPlan, Fabric, simulated::party_key};
use crate::graph::call::{CreateCall, fill_source, resource_data};
use crate::graph::notification::Notification;
use crate::store::{
    Change, DeliveryRecord, DeliveryStatus, OutboxItem, Snapshot, Store, StoreError,
};

/// How many ended calls are remembered for `GET /_switchboard/v1/parties/{id}`.
const ENDED_MEMORY: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such call, or not this app's call: the two answer the same.
    #[error("Call not found.")]
    NotFound,
    #[error("{0}")]
    NotAllowed(String),
    #[error("The application has reached its limit of {0} concurrent calls.")]
    TooManyCalls(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The app a request acts for, as far as the engine cares.
#[derive(Clone, Debug)]
pub struct AppRef {
    pub app_id: String,
    pub tenant_id: String,
    pub display_name: Option<String>,
    pub max_concurrent_calls: usize,
}

/// A call leg as a party sees it (the control API's `GET /parties/{id}`).
#[derive(Clone, Debug)]
pub struct PartyLeg {
    pub call_id: CallId,
    pub state: CallState,
    pub result: Option<EndReason>,
}

struct State {
    calls: HashMap<CallId, Call>,
    /// (due time, call) for every call with a pending timer.
    timers: BTreeSet<(Timestamp, CallId)>,
    live_per_app: HashMap<String, usize>,
    ended: VecDeque<(String, PartyLeg)>,
    next_seq: i64,
}

pub struct Engine {
    state: Mutex<State>,
    store: Arc<dyn Store>,
    clock: Clock,
    fabric: Arc<dyn Fabric>,
    rules: Rules,
    delivery: Arc<Delivery>,
    timers_changed: Notify,
}

fn transition_error(e: TransitionError) -> EngineError {
    match e {
        TransitionError::Gone => EngineError::NotFound,
        e @ TransitionError::NotAllowed { .. } => EngineError::NotAllowed(e.to_string()),
    }
}

impl Engine {
    /// Builds the engine from what the store held at start.
    pub fn new(
        snapshot: &Snapshot,
        store: Arc<dyn Store>,
        clock: Clock,
        fabric: Arc<dyn Fabric>,
        rules: Rules,
        delivery: Arc<Delivery>,
    ) -> Self {
        let mut state = State {
            calls: HashMap::new(),
            timers: BTreeSet::new(),
            live_per_app: HashMap::new(),
            ended: VecDeque::new(),
            next_seq: snapshot.next_seq,
        };
        for call in &snapshot.calls {
            state.index(call);
            *state.live_per_app.entry(call.app_id.clone()).or_default() += 1;
            state.calls.insert(call.id, call.clone());
        }
        Engine {
            state: Mutex::new(state),
            store,
            clock,
            fabric,
            rules,
            delivery,
            timers_changed: Notify::new(),
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn fabric(&self) -> &dyn Fabric {
        self.fabric.as_ref()
    }

    /// Places an outgoing peer-to-peer call.
    pub async fn create_call(
        &self,
        app: &AppRef,
        req: CreateCall,
        peer: Peer,
    ) -> Result<Call, EngineError> {
        let mut st = self.state.lock().await;
        let live = st.live_per_app.get(&app.app_id).copied().unwrap_or(0);
        if live >= app.max_concurrent_calls {
            return Err(EngineError::TooManyCalls(app.max_concurrent_calls));
        }
        let now = self.clock.now();
        let my_participant_id = new_guid();
        let mut wire = req.wire;
        let source = fill_source(
            wire.get("source"),
            &app.app_id,
            app.display_name.as_deref(),
            &my_participant_id,
        );
        wire.insert("source".into(), source);
        let mut timers = Timers {
            keep_alive_deadline: Some(now + self.rules.keep_alive_window),
            ..Timers::default()
        };
        let after =
            |d: std::time::Duration| now + chrono::Duration::from_std(d).unwrap_or_default();
        match self.fabric.dial(&peer) {
            DialPlan::Answer { after: d } => {
                timers.answer_at = Some(after(d));
                timers.ringing_deadline = Some(now + self.rules.ringing_timeout);
            }
            DialPlan::Fail { after: d, reason } => timers.setup_fails_at = Some((after(d), reason)),
            DialPlan::Ring => timers.ringing_deadline = Some(now + self.rules.ringing_timeout),
        }
        let call = Call {
            id: CallId::new(),
            app_id: app.app_id.clone(),
            tenant_id: app.tenant_id.clone(),
            direction: Direction::Outgoing,
            state: CallState::Establishing,
            result: None,
            callback_uri: req.callback_uri,
            my_participant_id,
            call_chain_id: req.call_chain_id.unwrap_or_else(new_guid),
            peer,
            created_at: now,
            version: 1,
            timers,
            wire,
        };
        let notice = Notice {
            change: crate::domain::ChangeType::Updated,
            state: CallState::Establishing,
        };
        let item = st.outbox_item(&call, notice, now);
        self.store
            .commit(Change {
                put_calls: vec![call.clone()],
                enqueue: vec![item.clone()],
                ..Change::default()
            })
            .await?;
        *st.live_per_app.entry(app.app_id.clone()).or_default() += 1;
        st.index(&call);
        st.calls.insert(call.id, call.clone());
        self.delivery.enqueue(vec![item]);
        drop(st);
        self.timers_changed.notify_one();
        Ok(call)
    }

    /// The call, if it is live and `app_id` owns it.
    pub async fn get_call(&self, app_id: &str, id: CallId) -> Result<Call, EngineError> {
        let st = self.state.lock().await;
        st.calls
            .get(&id)
            .filter(|c| c.app_id == app_id)
            .cloned()
            .ok_or(EngineError::NotFound)
    }

    /// The bot hangs up (`DELETE`).
    pub async fn hang_up(&self, app_id: &str, id: CallId) -> Result<Call, EngineError> {
        self.apply(Some(app_id), id, |_| Event::BotHungUp).await
    }

    /// The bot proves it is alive.
    pub async fn keep_alive(&self, app_id: &str, id: CallId) -> Result<Call, EngineError> {
        self.apply(Some(app_id), id, |_| Event::KeepAlive).await
    }

    /// Ends a call now with `reason` (fault injection), whoever owns it.
    pub async fn fail_call(&self, id: CallId, reason: EndReason) -> Result<Call, EngineError> {
        self.apply(None, id, |_| Event::Failed(reason)).await
    }

    /// A party hangs up every call leg it is in. Returns the calls that ended.
    pub async fn party_hang_up(&self, party_id: &str) -> Result<Vec<CallId>, EngineError> {
        let key = party_key(party_id);
        let ids: Vec<CallId> = {
            let st = self.state.lock().await;
            st.calls
                .values()
                .filter(|c| party_key(&c.peer.id) == key)
                .map(|c| c.id)
                .collect()
        };
        let mut ended = vec![];
        for id in ids {
            match self
                .apply(None, id, |c| Event::PeerHungUp(c.peer_hang_up_reason()))
                .await
            {
                Ok(_) => ended.push(id),
                Err(EngineError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ended)
    }

    /// The calls a party is or was in (live ones, then recently ended ones).
    pub async fn party_legs(&self, party_id: &str) -> Vec<PartyLeg> {
        let key = party_key(party_id);
        let st = self.state.lock().await;
        let mut legs: Vec<(Timestamp, PartyLeg)> = st
            .calls
            .values()
            .filter(|c| party_key(&c.peer.id) == key)
            .map(|c| {
                (
                    c.created_at,
                    PartyLeg {
                        call_id: c.id,
                        state: c.state,
                        result: c.result,
                    },
                )
            })
            .collect();
        legs.sort_by_key(|(t, _)| *t);
        let mut out: Vec<PartyLeg> = st
            .ended
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, l)| l.clone())
            .collect();
        out.extend(legs.into_iter().map(|(_, l)| l));
        out
    }

    /// Every notification of a call with its delivery attempts, ended calls included.
    pub async fn deliveries(&self, id: CallId) -> Result<Vec<DeliveryRecord>, EngineError> {
        Ok(self.store.deliveries(id).await?)
    }

    /// Applies one event to one call and commits it with its notifications.
    async fn apply(
        &self,
        owner: Option<&str>,
        id: CallId,
        event: impl FnOnce(&Call) -> Event,
    ) -> Result<Call, EngineError> {
        let mut st = self.state.lock().await;
        let mut call = st
            .calls
            .get(&id)
            .filter(|c| owner.is_none_or(|o| c.app_id == o))
            .cloned()
            .ok_or(EngineError::NotFound)?;
        let now = self.clock.now();
        let event = event(&call);
        let notices = call
            .apply(event, now, &self.rules)
            .map_err(transition_error)?;
        let items: Vec<OutboxItem> = notices
            .iter()
            .map(|n| st.outbox_item(&call, *n, now))
            .collect();
        self.commit(&mut st, vec![call.clone()], items).await?;
        Ok(call)
    }

    /// Commits changed calls and their notifications, then updates memory and the outbox.
    async fn commit(
        &self,
        st: &mut State,
        calls: Vec<Call>,
        items: Vec<OutboxItem>,
    ) -> Result<(), EngineError> {
        let mut change = Change {
            enqueue: items.clone(),
            ..Change::default()
        };
        for call in &calls {
            if call.state.is_live() {
                change.put_calls.push(call.clone());
            } else {
                change.remove_calls.push(call.id);
            }
        }
        self.store.commit(change).await?;
        for call in calls {
            st.unindex(call.id);
            if call.state.is_live() {
                st.index(&call);
                st.calls.insert(call.id, call);
            } else {
                st.calls.remove(&call.id);
                if let Some(n) = st.live_per_app.get_mut(&call.app_id) {
                    *n = n.saturating_sub(1);
                }
                st.remember_ended(&call);
            }
        }
        if !items.is_empty() {
            self.delivery.enqueue(items);
        }
        self.timers_changed.notify_one();
        Ok(())
    }

    /// Runs every timer due at the clock's current time. Returns how many fired.
    pub async fn run_due_timers(&self) -> Result<usize, EngineError> {
        let mut st = self.state.lock().await;
        let now = self.clock.now();
        let due: Vec<CallId> = st
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let mut calls = vec![];
        let mut items = vec![];
        let mut fired = 0;
        for id in due {
            let Some(mut call) = st.calls.get(&id).cloned() else {
                continue;
            };
            while let Some(event) = call.timers.take_due(now) {
                fired += 1;
                match call.apply(event, now, &self.rules) {
                    Ok(notices) => {
                        for n in notices {
                            let item = st.outbox_item(&call, n, now);
                            items.push(item);
                        }
                    }
                    Err(e) => tracing::debug!(call = %id, "timer event {event:?} ignored: {e}"),
                }
            }
            calls.push(call);
        }
        self.commit(&mut st, calls, items).await?;
        Ok(fired)
    }

    /// Moves a virtual clock and runs every timer that fell due; returns the new time.
    pub async fn advance(&self, by: chrono::Duration) -> Result<Timestamp, anyhow::Error> {
        let now = self.clock.advance(by)?;
        self.run_due_timers().await?;
        Ok(now)
    }

    /// Runs timers as they fall due until `stop` is cancelled.
    pub async fn run_timers(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Err(e) = self.run_due_timers().await {
                tracing::error!("running timers failed: {e}");
            }
            let next = self.state.lock().await.timers.first().map(|(t, _)| *t);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.timers_changed.notified() => {}
                _ = async {
                    match next {
                        Some(t) => self.clock.sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
}

impl State {
    fn index(&mut self, call: &Call) {
        if let Some(t) = call.timers.next_due() {
            self.timers.insert((t, call.id));
        }
    }

    fn unindex(&mut self, id: CallId) {
        if let Some(call) = self.calls.get(&id)
            && let Some(t) = call.timers.next_due()
        {
            self.timers.remove(&(t, id));
        }
    }

    fn remember_ended(&mut self, call: &Call) {
        if self.ended.len() >= ENDED_MEMORY {
            self.ended.pop_front();
        }
        self.ended.push_back((
            party_key(&call.peer.id),
            PartyLeg {
                call_id: call.id,
                state: call.state,
                result: call.result,
            },
        ));
    }

    /// Builds the outbox entry for one notice about `call`, taking the next sequence number.
    fn outbox_item(&mut self, call: &Call, notice: Notice, now: Timestamp) -> OutboxItem {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut data = resource_data(call);
        data["state"] = json!(notice.state.as_str());
        if notice.state != CallState::Terminated {
            data["resultInfo"] = Value::Null;
        }
        let n = Notification::for_call(notice.change, call.id, &call.callback_uri, data);
        OutboxItem {
            seq,
            call_id: call.id,
            app_id: call.app_id.clone(),
            tenant_id: call.tenant_id.clone(),
            callback_uri: call.callback_uri.clone(),
            change_type: notice.change.as_str().into(),
            resource_url: n.resource_url(),
            body: n.envelope().to_string(),
            created_at: now,
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: now,
        }
    }
}
