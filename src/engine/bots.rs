//! Bot-to-bot calls: a party that is another bot (an `application` or `applicationInstance`
//! target) is reached through the engine itself, not through a fabric.
//!
//! The two ends are two conversations that name each other: the caller's conversation has a
//! leg for the callee bot whose id is the callee's call (and conversation) id, and the callee's
//! conversation has a leg for the caller whose id is the caller's conversation id. So the other
//! end of leg `l` in conversation `c` is leg `c` in conversation `l`, and nothing but the two
//! conversations is stored. What one end's change would tell a fabric about such a leg (ring
//! it, cancel it, accept it, hang it up, send it keys) is carried out on the other end in the
//! same change ([`Engine::relay`]), so both ends commit together.

use std::collections::VecDeque;

use super::state::State;
use super::{AppRef, Engine};
use crate::clock::Timestamp;
use crate::domain::conversation::{Conversation, Emit, Kind, Leg, LegState, Purpose, Scene, Who};
use crate::domain::{
    CallId, CallState, ChangeType, Direction, EndReason, FabricCommand, Notice, PartyKind, Peer,
};
use crate::fabric::LegRef;

/// An app other bots can call.
#[derive(Clone, Debug)]
pub struct Callee {
    pub app: AppRef,
    /// Where its incoming calls are notified; without one it cannot be called.
    pub incoming_call_uri: Option<String>,
    /// Its application instances (resource accounts), which reach it too.
    pub instances: Vec<String>,
}

impl From<&crate::config::AppConfig> for Callee {
    fn from(a: &crate::config::AppConfig) -> Self {
        Callee {
            app: a.app_ref(),
            incoming_call_uri: a.incoming_call_uri.clone(),
            instances: a.application_instances.clone(),
        }
    }
}

/// The party calling an app: its leg, whether a fabric signals it, who it is.
pub(super) struct Caller {
    pub leg: uuid::Uuid,
    pub dialog: bool,
    pub peer: Peer,
    pub display_name: Option<String>,
}

impl Engine {
    /// The app a bot party is (an `application` by its app id, an `applicationInstance` by one of
    /// its instances or its app id).
    pub(super) fn callee(&self, peer: &Peer) -> Option<&Callee> {
        let id = peer.id.trim();
        self.callees.iter().find(|c| {
            c.app.app_id.eq_ignore_ascii_case(id)
                || (peer.kind == PartyKind::ApplicationInstance
                    && c.instances.iter().any(|i| i.eq_ignore_ascii_case(id)))
        })
    }

    /// The display name of a bot party.
    pub(super) fn bot_name(&self, peer: &Peer) -> Option<String> {
        self.callee(peer).and_then(|c| c.app.display_name.clone())
    }

    /// A new incoming call `id` of `app` from `caller`, waiting in state `incoming` (notified
    /// `created` to `callback_uri`), in a conversation of its own.
    pub(super) fn incoming_scene(
        &self,
        app: &AppRef,
        id: CallId,
        caller: Caller,
        callback_uri: String,
        now: Timestamp,
    ) -> Scene {
        let mut call = self.new_call(
            app,
            Direction::Incoming,
            CallState::Incoming,
            callback_uri,
            now,
        );
        (call.id, call.conversation) = (id, id);
        call.timers.acknowledge_deadline = Some(now + chrono::Duration::seconds(15));
        let Caller {
            leg,
            dialog,
            peer,
            display_name,
        } = caller;
        let wire = crate::graph::call::incoming(
            (&peer, display_name.as_deref(), leg),
            (
                &app.app_id,
                app.display_name.as_deref(),
                call.my_participant_id,
            ),
        );
        call.wire = crate::domain::call::Wire::from_map(wire);
        let mut conv = Conversation::new(call.id, Kind::PeerToPeer, now);
        conv.add(Self::bot_leg(&call));
        let mut caller = Leg::new(leg, Who::Party(peer), LegState::Ringing);
        caller.dialog = dialog;
        conv.legs.push(caller);
        let id = call.id;
        let mut scene = Scene::new(conv, vec![call]);
        let first = Notice {
            change: ChangeType::Created,
            state: CallState::Incoming,
        };
        scene.emit(id, Emit::State(first));
        scene
    }

    /// Carries out, on the other end of a bot-to-bot call, a command one end's change gave for
    /// its leg of the other bot: the other end's scene (waiting in `queue`, or loaded from
    /// memory) changes and joins `queue`, to be staged in the same change.
    pub(super) fn relay(
        &self,
        st: &mut State,
        queue: &mut VecDeque<Scene>,
        command: FabricCommand,
        now: Timestamp,
    ) {
        let from = command.leg();
        let to = LegRef {
            conversation: CallId::of_leg(from.leg),
            leg: from.conversation.as_leg(),
        };
        let rules = &self.rules;
        if let FabricCommand::Dial { peer, .. } = &command {
            match self.ring_bot(st, from, peer, now) {
                Ok(scene) => queue.push_back(scene),
                Err(reason) => {
                    // The callee cannot take it: the caller's leg fails at once.
                    if let Some(s) = scene_in(st, queue, from.conversation) {
                        s.leg_fails(from.leg, reason, now, rules);
                    }
                }
            }
            return;
        }
        let Some(s) = scene_in(st, queue, to.conversation) else {
            return;
        };
        match command {
            FabricCommand::Accept { .. } => {
                s.leg_answers(to.leg, now, rules);
            }
            FabricCommand::Cancel { reason, .. } | FabricCommand::HangUp { reason, .. } => {
                let dialled = s
                    .conversation
                    .position(to.leg)
                    .is_some_and(|i| s.conversation.legs[i].ring.is_some());
                if dialled {
                    // The callee refused, or let its answer window pass.
                    s.leg_fails(to.leg, callers_reason(reason), now, rules);
                } else {
                    s.leg_hangs_up(to.leg, now, rules);
                }
            }
            FabricCommand::SendDtmf { keys, .. } => {
                s.leg_presses(to.leg, &keys, now);
            }
            // A bot hears no media from another: prompts and recordings run on the call clock.
            _ => {}
        }
    }

    /// Rings the bot `peer` for leg `from`: its new incoming call, from the bot that rang it.
    /// `Err`: why it cannot be rung.
    fn ring_bot(
        &self,
        st: &mut State,
        from: LegRef,
        peer: &Peer,
        now: Timestamp,
    ) -> Result<Scene, EndReason> {
        let callee = self.callee(peer).ok_or(EndReason::NOT_FOUND)?;
        let uri = callee
            .incoming_call_uri
            .clone()
            .ok_or(EndReason::NOT_FOUND)?;
        let id = CallId::of_leg(from.leg);
        // The leg's id names the callee's call and conversation: never one that exists.
        if st.calls.contains_key(&id) || st.conversations.contains_key(&id) {
            return Err(EndReason::NOT_FOUND);
        }
        let live = st
            .live_per_app
            .entry(callee.app.app_id.clone())
            .or_default();
        if *live >= callee.app.max_concurrent_calls {
            return Err(EndReason::BUSY);
        }
        *live += 1;
        let caller_call = st
            .conversations
            .get(&from.conversation)
            .and_then(|c| ringing_bot(c, from.leg))
            .and_then(|c| st.calls.get(&c));
        let (caller_app, caller_name) = caller_call
            .map(|c| (c.app_id.to_string(), c.app_display_name()))
            .unwrap_or_default();
        let caller = Caller {
            leg: from.conversation.as_leg(),
            dialog: false,
            peer: Peer {
                id: caller_app,
                kind: PartyKind::Application,
            },
            display_name: caller_name,
        };
        Ok(self.incoming_scene(&callee.app, id, caller, uri, now))
    }
}

/// The bot whose call rang leg `leg` of `conversation`: the inviter, the transferring or
/// redirecting bot, or (a target of the call itself) the bot that placed it.
fn ringing_bot(conversation: &Conversation, leg: uuid::Uuid) -> Option<CallId> {
    let l = conversation.legs.iter().find(|l| l.id == leg)?;
    match &l.purpose {
        Purpose::Invite(i) => Some(i.call_id),
        Purpose::Dial { call_id } => Some(*call_id),
        Purpose::Member => conversation
            .bot_calls()
            .find(|c| *c == conversation.id)
            .or_else(|| conversation.bot_calls().next()),
    }
}

/// What the caller's leg fails with when the callee bot's end of the call went before it
/// answered: its rejection as it gave it; a callee that let the answer window pass or hung up
/// is a callee that did not answer, or declined.
fn callers_reason(reason: EndReason) -> EndReason {
    match reason {
        EndReason::NOT_ACKNOWLEDGED => EndReason::NO_ANSWER,
        EndReason::BOT_HANG_UP => EndReason::DECLINED,
        other => other,
    }
}

/// The scene of conversation `id` in this change: the one waiting in `queue`, or a fresh one
/// from memory added to it.
fn scene_in<'q>(st: &State, queue: &'q mut VecDeque<Scene>, id: CallId) -> Option<&'q mut Scene> {
    match queue.iter().position(|s| s.conversation.id == id) {
        Some(i) => queue.get_mut(i),
        None => {
            queue.push_back(st.scene(id)?);
            queue.back_mut()
        }
    }
}
