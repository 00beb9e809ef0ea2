//! Calls: create (outgoing, group, meeting join), answer, reject, redirect, transfer, keep-alive
//! and hang-up.

use serde_json::Value;

use super::{AppRef, Engine, EngineError, transition_error};
use crate::clock::Timestamp;
use crate::domain::Refusal;
use crate::domain::call::Wire;
use crate::domain::call::party_key;
use crate::domain::conversation::{Conversation, Emit, Kind, Leg, LegState, Purpose, Scene, Who};
use crate::domain::refusal::ReplaceProblem;
use crate::domain::{
    Call, CallId, CallState, ChangeType, Direction, EndReason, Event, Notice, Peer,
};
use crate::fabric::DialPlan;
use crate::graph::call::{CreateCall, fill_source};
use crate::store::committer::{self};
use crate::store::scenes::SceneTx;
use uuid::Uuid;

impl Engine {
    pub(super) fn new_call(
        &self,
        app: &AppRef,
        direction: Direction,
        state: CallState,
        callback_uri: String,
        now: Timestamp,
    ) -> Call {
        let mut call = Call::new(
            &app.app_id,
            &app.tenant_id,
            direction,
            state,
            callback_uri,
            now,
        );
        call.timers.keep_alive_deadline = Some(now + self.rules.keep_alive_window);
        call
    }

    /// The bot's own leg of a conversation, waiting to connect.
    pub(super) fn bot_leg(call: &Call) -> Leg {
        let who = Who::Bot { call_id: call.id };
        Leg::new(call.my_participant_id, who, LegState::Ringing)
    }

    /// A party's leg, rung now: it answers, fails or rings out as the fabric says, and gives up
    /// after `timeout`.
    pub(super) fn ring(
        &self,
        peer: &Peer,
        purpose: Purpose,
        now: Timestamp,
        timeout: chrono::Duration,
    ) -> Leg {
        let mut leg = Leg::new(Uuid::new_v4(), Who::Party(peer.clone()), LegState::Ringing);
        leg.purpose = purpose;
        let at = |d: std::time::Duration| now + chrono::Duration::from_std(d).unwrap_or_default();
        let plan = match peer.kind.is_bot() {
            // Another bot rings while its app can take calls; it answers or refuses itself.
            true => match self.callee(peer).and_then(|c| c.incoming_call_uri.as_ref()) {
                Some(_) => DialPlan::Ring,
                None => DialPlan::Fail {
                    after: std::time::Duration::ZERO,
                    reason: EndReason::NOT_FOUND,
                },
            },
            false => self.fabric.plan(peer),
        };
        match plan {
            DialPlan::Answer { after } => leg.start_ringing(Some(at(after)), None, now + timeout),
            DialPlan::Fail { after, reason } => {
                leg.start_ringing(None, Some((at(after), reason)), now + timeout)
            }
            DialPlan::Ring => leg.start_ringing(None, None, now + timeout),
            DialPlan::Dialog => {
                leg.start_ringing(None, None, now + timeout);
                leg.dialog = true;
            }
        }
        leg
    }

    /// Places an outgoing call: to one party (peer-to-peer), several (a group call), or into a
    /// meeting (`meeting`: its join id and the passcode given).
    #[tracing::instrument(level = "debug", name = "create_call", skip_all, fields(app = %app.app_id))]
    pub async fn create_call(
        &self,
        app: &AppRef,
        req: CreateCall,
        targets: Vec<Peer>,
        meeting: Option<(String, Option<String>)>,
    ) -> Result<Call, EngineError> {
        let now = self.clock.now();
        let mut call = self.new_call(
            app,
            Direction::Outgoing,
            CallState::Establishing,
            req.callback_uri,
            now,
        );
        if let Some(chain) = req.call_chain_id {
            call.call_chain_id = chain;
        }
        call.app_hosted_media = req.app_hosted_media;
        if req.delta_roster {
            call.rosters = crate::domain::call::Rosters::Delta;
        }
        let mut wire = req.wire;
        let source = fill_source(
            wire.get("source"),
            &app.app_id,
            app.display_name.as_deref(),
            &call.my_participant_id.to_string(),
        );
        wire.insert("source".into(), source);
        let mut tx = self.begin().await?;
        Self::admit(&mut *tx, app).await?;
        let mut scene = match meeting {
            Some((join_id, passcode)) => {
                let (conv, expected) = tx
                    .meeting(&join_id)
                    .await?
                    .ok_or_else(|| Refusal::NoSuchMeeting(join_id.clone()))?;
                if expected.is_some() && expected != passcode {
                    return Err(Refusal::WrongPasscode.into());
                }
                let mut scene = tx.scene(conv).await?.ok_or(EngineError::NotFound)?;
                call.conversation = conv;
                let config = self.meetings.iter().find(|m| m.join_meeting_id == join_id);
                // The meeting lets the bot in at once, or a guest waits in its lobby.
                let lobby = req.guest && config.is_some_and(|m| m.lobby_for_guests);
                if !lobby {
                    call.timers.answer_at = Some(now);
                }
                let thread =
                    config.map_or_else(|| scene.conversation.thread_id(), |m| m.thread_id());
                wire.insert(
                    "chatInfo".into(),
                    crate::graph::call::chat_info(wire.get("chatInfo"), &thread),
                );
                let i = scene.conversation.add(Self::bot_leg(&call));
                if lobby {
                    scene.change_leg(|c| c.to_lobby(i), now, &self.rules);
                }
                scene
            }
            None => {
                let kind = if targets.len() > 1 {
                    Kind::Group
                } else {
                    Kind::PeerToPeer
                };
                let mut conv = Conversation::new(call.id, kind, now);
                if conv.is_group() {
                    let thread = conv.thread_id();
                    wire.insert(
                        "chatInfo".into(),
                        crate::graph::call::chat_info(wire.get("chatInfo"), &thread),
                    );
                }
                conv.add(Self::bot_leg(&call));
                for t in &targets {
                    let leg = self.ring(t, Purpose::Member, now, self.rules.ringing_timeout);
                    conv.add(leg);
                }
                Scene::new(conv, vec![])
            }
        };
        call.wire = Wire::from_map(wire);
        scene.calls.push(call.clone());
        let first = Notice {
            change: ChangeType::Updated,
            state: CallState::Establishing,
        };
        scene.emit(call.id, Emit::State(first));
        committer::wait(tx.stage(vec![scene], &[&app.app_id])).await?;
        Ok(call)
    }

    /// The bot redirected the call's notifications from `from` to `to` (302 on its first
    /// incoming-call notification): while the call still sends to `from`, it sends to `to`.
    pub async fn redirect_callback(&self, id: CallId, from: String, to: String) {
        let moved = self
            .update(None, id, |s, _, _| {
                if let Some(c) = s.call_mut(id).filter(|c| c.callback_uri == from) {
                    c.callback_uri = to;
                }
                Ok(())
            })
            .await;
        if let Err(e) = moved {
            tracing::debug!(%id, "a redirected call's callback stays: {e}");
        }
    }

    /// Changes the call's audio routing groups with `f` (stored with the call; no
    /// notification).
    pub async fn change_routing_groups<T: Send>(
        &self,
        app_id: &str,
        id: CallId,
        f: impl FnOnce(&mut Vec<crate::domain::call::RoutingGroup>) -> T + Send,
    ) -> Result<T, EngineError> {
        self.update(Some(app_id), id, |s, _, _| {
            let c = s.call_mut(id).ok_or(EngineError::NotFound)?;
            let groups = c.routing_groups.get_or_insert_with(Box::default);
            let out = f(groups);
            if groups.is_empty() {
                c.routing_groups = None;
            }
            Ok(out)
        })
        .await
        .map(|(_, out)| out)
    }

    /// Whether the app may have one more live call: decided before anything rings.
    pub(super) async fn admit(tx: &mut dyn SceneTx, app: &AppRef) -> Result<(), EngineError> {
        if tx.live_calls(&app.app_id).await? >= app.max_concurrent_calls {
            return Err(EngineError::TooManyCalls(app.max_concurrent_calls));
        }
        Ok(())
    }

    /// Applies one state event to a call (owned by `owner`, or by anyone).
    pub(super) async fn event(
        &self,
        owner: Option<&str>,
        id: CallId,
        event: Event,
    ) -> Result<Call, EngineError> {
        self.update(owner, id, |s, now, r| {
            s.apply(id, event, now, r).map_err(transition_error)
        })
        .await
        .map(|(c, _)| c)
    }

    /// The bot hangs up (`DELETE`): in a group call or meeting only its own leg ends.
    pub async fn hang_up(&self, app_id: &str, id: CallId) -> Result<Call, EngineError> {
        self.event(Some(app_id), id, Event::BotHungUp).await
    }

    /// The bot proves it is alive.
    pub async fn keep_alive(&self, app_id: &str, id: CallId) -> Result<Call, EngineError> {
        self.event(Some(app_id), id, Event::KeepAlive).await
    }

    /// Ends a call now with `reason` (fault injection), whoever owns it.
    pub async fn fail_call(&self, id: CallId, reason: EndReason) -> Result<Call, EngineError> {
        self.event(None, id, Event::Failed(reason)).await
    }

    /// The bot acts on an incoming call (answer, reject, redirect): only incoming calls, an
    /// optional new callback URL, then `act`.
    pub(super) async fn incoming_action(
        &self,
        app_id: &str,
        id: CallId,
        callback_uri: Option<String>,
        act: impl FnOnce(&mut Scene, Timestamp, &crate::domain::call::Rules) -> Result<(), EngineError>,
    ) -> Result<Call, EngineError> {
        self.update(Some(app_id), id, move |s, now, r| {
            let c = s.call_mut(id).ok_or(EngineError::NotFound)?;
            c.must_be_incoming()?;
            if let Some(cb) = callback_uri {
                c.callback_uri = cb;
            }
            // On error the scene is dropped, with whatever was done to it.
            act(s, now, r)
        })
        .await
        .map(|(c, _)| c)
    }

    /// The bot answers an incoming call.
    pub async fn answer(
        &self,
        app_id: &str,
        id: CallId,
        callback_uri: Option<String>,
        media_config: Value,
        app_hosted: bool,
        call_options: Option<(Value, bool)>,
    ) -> Result<Call, EngineError> {
        self.incoming_action(app_id, id, callback_uri, |s, now, r| {
            if let Some(c) = s.call_mut(id) {
                c.wire.insert("mediaConfig", media_config);
                c.app_hosted_media = app_hosted;
                if let Some((options, delta)) = call_options {
                    c.wire.insert("callOptions", options);
                    if delta {
                        c.rosters = crate::domain::call::Rosters::Delta;
                    }
                }
            }
            s.answer_caller(id, now, r).map_err(transition_error)
        })
        .await
    }

    /// The bot rejects an incoming call.
    pub async fn reject(
        &self,
        app_id: &str,
        id: CallId,
        reason: EndReason,
        callback_uri: Option<String>,
    ) -> Result<Call, EngineError> {
        self.incoming_action(app_id, id, callback_uri, |s, now, r| {
            s.apply(id, Event::BotRejected(reason), now, r)
                .map_err(transition_error)
        })
        .await
    }

    /// The bot redirects an incoming call to `targets`: a caller the fabric signals itself
    /// (SIP) is sent on to them by the fabric; for any other, they are rung at once and the
    /// first that answers wins.
    pub async fn redirect(
        &self,
        app_id: &str,
        id: CallId,
        targets: Vec<Peer>,
        timeout: chrono::Duration,
        callback_uri: Option<String>,
    ) -> Result<Call, EngineError> {
        self.incoming_action(app_id, id, callback_uri, |s, now, r| {
            if s.redirect_caller(id, targets.clone(), now, r)
                .map_err(transition_error)?
            {
                return Ok(());
            }
            for t in &targets {
                let leg = self.ring(t, Purpose::Dial { call_id: id }, now, timeout);
                s.conversation.add(leg);
            }
            s.apply(id, Event::RedirectRequested, now, r)
                .map_err(transition_error)
        })
        .await
    }

    /// The bot transfers the other party to `target`.
    pub async fn transfer(
        &self,
        app_id: &str,
        id: CallId,
        target: Peer,
    ) -> Result<Call, EngineError> {
        self.update(Some(app_id), id, move |s, now, r| {
            let mut leg = self.ring(
                &target,
                Purpose::Dial { call_id: id },
                now,
                r.ringing_timeout,
            );
            // A transferee whose signalling the fabric holds (SIP) is asked to call the target
            // itself: the fabric reports how that goes, whatever the target's own plan.
            if !target.kind.is_bot() && s.conversation.transferee_of(&leg).is_some() {
                leg.start_ringing(None, None, now + r.ringing_timeout);
                leg.dialog = true;
            }
            s.conversation.add(leg);
            s.apply(id, Event::TransferRequested, now, r)
                .map_err(transition_error)
        })
        .await
        .map(|(c, _)| c)
    }

    /// A consultative transfer: the bot's peer-to-peer call `id` is transferred to `target`,
    /// whom the bot is talking to in call `consultation` (`replacesCallId`). The target moves
    /// over at once (it does not ring again): `id` goes `transferring`, `transferAccepted`,
    /// then `terminated` with `terminationReason: "AppTransferred"`, the consultation call ends
    /// for the bot (200/7015), and the two parties are left talking. One change.
    pub async fn transfer_replacing(
        &self,
        app_id: &str,
        id: CallId,
        target: Peer,
        consultation: CallId,
    ) -> Result<Call, EngineError> {
        let bad = |problem| Refusal::NotReplaceable {
            call: consultation,
            problem,
        };
        if consultation == id {
            return Err(bad(ReplaceProblem::SameCall).into());
        }
        let mut tx = self.begin().await?;
        let mut scene = self.live_scene(&mut *tx, app_id, id).await?;
        let mut old = self
            .live_scene(&mut *tx, app_id, consultation)
            .await
            .map_err(|_| bad(ReplaceProblem::NoSuchCall))?;
        if scene.conversation.kind != Kind::PeerToPeer {
            return Err(bad(ReplaceProblem::FromGroup).into());
        }
        scene
            .call(id)
            .ok_or(EngineError::NotFound)?
            .must_be_established()?;
        let key = party_key(&target.id);
        let was = (old.conversation.kind == Kind::PeerToPeer)
            .then(|| old.conversation.party_legs(&key).next())
            .flatten()
            .ok_or(bad(ReplaceProblem::NotPeerToPeerWithInvitee))?;
        let leg = &old.conversation.legs[was];
        if leg.state != LegState::Connected {
            return Err(bad(ReplaceProblem::NotJoined).into());
        }
        if leg.dialog || target.kind.is_bot() {
            return Err(bad(ReplaceProblem::NotMovable).into());
        }
        let (now, r) = (self.clock.now(), &self.rules);
        // The target's leg in the consultation call goes without a word to it: it moved.
        old.heard.push(leg.id);
        old.apply(consultation, Event::Failed(EndReason::TRANSFERRED), now, r)
            .map_err(transition_error)?;
        let mut moved = Leg::new(Uuid::new_v4(), Who::Party(target), LegState::Ringing);
        moved.purpose = Purpose::Dial { call_id: id };
        let i = scene.conversation.add(moved);
        scene
            .apply(id, Event::TransferRequested, now, r)
            .map_err(transition_error)?;
        if let Some(c) = scene.call_mut(id) {
            c.wire
                .insert("terminationReason", Value::from("AppTransferred"));
        }
        scene.change_leg(|c| c.connect(i), now, r);
        let call = scene.call(id).cloned().ok_or(EngineError::NotFound)?;
        committer::wait(tx.stage(vec![scene, old], &[])).await?;
        Ok(call)
    }

    /// The scene of `app_id`'s live call `id`.
    async fn live_scene(
        &self,
        tx: &mut dyn SceneTx,
        app_id: &str,
        id: CallId,
    ) -> Result<Scene, EngineError> {
        let conv = tx
            .call(id)
            .await?
            .filter(|c| *c.app_id == *app_id && c.live)
            .map(|c| c.conversation)
            .ok_or(EngineError::NotFound)?;
        tx.scene(conv).await?.ok_or(EngineError::NotFound)
    }
}
