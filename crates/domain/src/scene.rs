//! A scene: a conversation with the live calls of its bots, changed together. It applies call
//! events and the conversation's effects to each other until both agree, collects what to
//! notify each call of ([`Emit`]), and what the fabric must be told ([`FabricCommand`]s).

use uuid::Uuid;

use super::call::{Call, Event, Rules, TransitionError, hang_up_reason};
use super::conversation::{Conversation, Effect, Leg, LegState, RingOutcome};
use super::fabric::{FabricCommand, LegRef};
use super::operation::{MediaEnd, OpKind, OpStatus, Operation, results};
use super::{CallId, CallState, EndReason, Notice, Peer};
use crate::Timestamp;

/// Something to notify a bot's call of.
#[derive(Clone, Debug)]
pub enum Emit {
    /// A change of the call's state.
    State(Notice),
    /// An operation finished (`deleted` on its URL).
    Operation(Box<Operation>),
    /// The party pressed a key and the bot subscribed: (tone, sequence id).
    Tone(&'static str, i64),
    /// The roster as it is now (`updated` on `.../participants`); `since`: the roster
    /// sequence number before this change (a delta roster carries what changed after it), or
    /// `None`: everyone (a delta roster's first).
    Roster { since: Option<u32> },
}

impl Emit {
    pub fn operation(op: Operation) -> Self {
        Emit::Operation(Box::new(op))
    }
}

/// A conversation with the live calls of its bots, changed together.
#[derive(Debug)]
pub struct Scene {
    pub conversation: Conversation,
    pub calls: Vec<Call>,
    /// What to notify, per call, in order.
    pub out: Vec<(CallId, Emit)>,
    /// Party legs that ended.
    pub gone: Vec<Leg>,
    /// Calls of other conversations to end (an invitee with `replacesCallId` joined).
    pub replaced: Vec<CallId>,
    /// Party legs whose end the fabric decided (it reported a failure or a hang-up, or the
    /// simulated party's plan said so): nothing is sent back to them. An answer is not an end:
    /// a leg that answers and is ended in the same change is told to hang up.
    pub heard: Vec<Uuid>,
    /// What the fabric must do besides what the legs' changes say (DTMF to send).
    pub commands: Vec<FabricCommand>,
    roster: bool,
    /// The conversation's roster sequence number when the scene was loaded.
    roster_from: u32,
}

impl Scene {
    pub fn new(conversation: Conversation, calls: Vec<Call>) -> Self {
        Scene {
            roster_from: conversation.roster_sequence,
            conversation,
            calls,
            out: vec![],
            gone: vec![],
            replaced: vec![],
            heard: vec![],
            commands: vec![],
            roster: false,
        }
    }

    pub fn call(&self, id: CallId) -> Option<&Call> {
        self.calls.iter().find(|c| c.id == id)
    }

    pub fn call_mut(&mut self, id: CallId) -> Option<&mut Call> {
        self.calls.iter_mut().find(|c| c.id == id)
    }

    pub fn emit(&mut self, call: CallId, emit: Emit) {
        self.out.push((call, emit));
    }

    /// Applies a state event to one of the bots' calls, and whatever follows from it.
    pub fn apply(
        &mut self,
        call: CallId,
        event: Event,
        now: Timestamp,
        rules: &Rules,
    ) -> Result<(), TransitionError> {
        let c = self.call_mut(call).ok_or(TransitionError::Gone)?;
        let was_established = c.state == CallState::Established;
        let notices = c.apply(event, now, rules)?;
        let (state, result) = (c.state, c.result);
        self.out
            .extend(notices.into_iter().map(|n| (call, Emit::State(n))));
        let effects = if !state.is_live() {
            self.conversation
                .bot_left(call, result.unwrap_or(EndReason::BOT_HANG_UP))
        } else if state == CallState::Established
            && !was_established
            && matches!(event, Event::Answered)
        {
            self.conversation.bot_connected(call)
        } else {
            vec![]
        };
        self.follow(effects, now, rules);
        Ok(())
    }

    /// Carries out effects of a change in the conversation.
    pub fn follow(&mut self, effects: Vec<Effect>, now: Timestamp, rules: &Rules) {
        for effect in effects {
            match effect {
                Effect::Call(call, event) => {
                    // A call that has moved on (ended, or in another state) ignores it.
                    let _ = self.apply(call, event, now, rules);
                }
                Effect::InviteDone {
                    call_id,
                    op_id,
                    outcome,
                } => self.finish_invite(call_id, &op_id, outcome),
                Effect::Replaced(call) => self.replaced.push(call),
                Effect::Roster => self.roster = true,
                Effect::PartyGone(leg) => self.gone.push(*leg),
            }
        }
    }

    fn finish_invite(&mut self, call: CallId, op_id: &str, outcome: Result<(), EndReason>) {
        let Some(c) = self.call_mut(call) else {
            return;
        };
        let Some(pos) = c.operations.iter().position(|o| o.id == op_id) else {
            return;
        };
        let mut op = c.operations.remove(pos);
        match outcome {
            Ok(()) => op.finish(OpStatus::Completed, results::COMPLETED),
            Err(reason) => op.finish(OpStatus::Failed, reason),
        }
        self.emit(call, Emit::operation(op));
    }

    /// A party's leg changes as `change` says (connect, fail, leave, remove, mute).
    pub fn change_leg(
        &mut self,
        change: impl FnOnce(&mut Conversation) -> Vec<Effect>,
        now: Timestamp,
        rules: &Rules,
    ) {
        let effects = change(&mut self.conversation);
        self.follow(effects, now, rules);
    }

    /// Runs everything due at `now`: operations, call timers, ring outcomes. Returns how many.
    pub fn run_due(&mut self, now: Timestamp, rules: &Rules) -> usize {
        let mut fired = 0;
        loop {
            let before = fired;
            for k in 0..self.calls.len() {
                let id = self.calls[k].id;
                let done = self.calls[k].complete_due_operations(now);
                fired += done.len();
                for op in done {
                    if op.kind == OpKind::SendDtmfTones {
                        self.tones_received(op.tones.as_deref().unwrap_or_default());
                    }
                    self.emit(id, Emit::operation(op));
                }
                if let Some(event) = self.calls[k].timers.take_due(now) {
                    fired += 1;
                    let _ = self.apply(id, event, now, rules);
                }
            }
            if let Some((i, outcome)) = self.conversation.take_due(now) {
                fired += 1;
                if let RingOutcome::Failed(_) = outcome {
                    // The party's own decline: nothing to tell it back.
                    self.heard.push(self.conversation.legs[i].id);
                }
                self.change_leg(
                    |c| match outcome {
                        RingOutcome::Answered => c.connect(i),
                        RingOutcome::Failed(reason) => c.fail(i, reason),
                        RingOutcome::TimedOut => c.fail(i, EndReason::NO_ANSWER),
                    },
                    now,
                    rules,
                );
            }
            if fired == before {
                return fired;
            }
        }
    }

    /// DTMF keys a bot sent reached the parties.
    fn tones_received(&mut self, keys: &str) {
        for l in &mut self.conversation.legs {
            if l.state == LegState::Connected && l.party().is_some() {
                l.tones_received.push_str(keys);
            }
        }
    }

    /// The party on leg `leg` picked up, or (a caller whose fabric confirms the bot's answer)
    /// acknowledged the bot's answer. Returns whether that changed anything.
    pub fn leg_answers(&mut self, leg: Uuid, now: Timestamp, rules: &Rules) -> bool {
        if let Some(i) = self.ringing(leg) {
            self.change_leg(|c| c.connect(i), now, rules);
            return true;
        }
        if self.waiting_caller(leg).is_none() {
            return false;
        }
        // The bots that answered it connect (which lets the caller in); a bot that has not
        // answered yet refuses the event.
        let bots: Vec<CallId> = self.conversation.bot_calls().collect();
        let mut any = false;
        for id in bots {
            any |= self.apply(id, Event::Answered, now, rules).is_ok();
        }
        any
    }

    /// The caller of an incoming call, while it waits to be let in.
    fn caller(&self) -> Option<usize> {
        self.conversation
            .legs
            .iter()
            .position(|l| l.state == LegState::Ringing && !l.is_dialled() && l.party().is_some())
    }

    fn leg_ref(&self, i: usize) -> LegRef {
        LegRef {
            conversation: self.conversation.id,
            leg: self.conversation.legs[i].id,
        }
    }

    /// The bot answers its incoming call: the fabric accepts the caller. A caller the fabric
    /// signals itself connects once it acknowledges ([`Scene::leg_answers`]); any other at once.
    pub fn answer_caller(
        &mut self,
        call: CallId,
        now: Timestamp,
        rules: &Rules,
    ) -> Result<(), TransitionError> {
        self.apply(call, Event::BotAnswered, now, rules)?;
        let Some(i) = self.caller() else {
            return Ok(());
        };
        let (leg, l) = (self.leg_ref(i), &self.conversation.legs[i]);
        let (dialog, peer) = (l.dialog, l.party().cloned());
        if dialog && let Some(c) = self.call_mut(call) {
            c.timers.answer_at = None;
        }
        self.commands
            .extend(peer.map(|peer| FabricCommand::Accept { leg, peer }));
        Ok(())
    }

    /// The bot redirects its incoming call, from a caller the fabric signals itself: the fabric
    /// sends the caller on to `targets`, and the call ends (`redirecting`, then `terminated`
    /// with 200/5001). Returns `false`, changing nothing, for any other caller: its targets
    /// are rung instead.
    pub fn redirect_caller(
        &mut self,
        call: CallId,
        targets: Vec<Peer>,
        now: Timestamp,
        rules: &Rules,
    ) -> Result<bool, TransitionError> {
        let Some(i) = self.caller().filter(|&i| self.conversation.legs[i].dialog) else {
            return Ok(false);
        };
        let (leg, peer) = (self.leg_ref(i), self.conversation.legs[i].party().cloned());
        self.apply(call, Event::RedirectRequested, now, rules)?;
        self.heard.push(leg.leg);
        self.commands
            .extend(peer.map(|peer| FabricCommand::Redirect { leg, peer, targets }));
        self.apply(call, Event::Failed(EndReason::REDIRECTED), now, rules)?;
        Ok(true)
    }

    /// A caller whose fabric signals it, still waiting to be let in.
    fn waiting_caller(&self, leg: Uuid) -> Option<usize> {
        self.conversation.position(leg).filter(|&i| {
            let l = &self.conversation.legs[i];
            l.dialog && l.state == LegState::Ringing && !l.is_dialled() && l.party().is_some()
        })
    }

    /// The party on leg `leg` declined, was busy or could not be reached; or a caller the
    /// fabric signals cancelled or never acknowledged the bot's answer. Returns whether it was
    /// being rung (or waiting).
    pub fn leg_fails(
        &mut self,
        leg: Uuid,
        reason: EndReason,
        now: Timestamp,
        rules: &Rules,
    ) -> bool {
        let Some(i) = self.ringing(leg).or_else(|| self.waiting_caller(leg)) else {
            return false;
        };
        self.heard.push(leg);
        self.change_leg(|c| c.fail(i, reason), now, rules);
        true
    }

    /// A dialled leg still ringing.
    fn ringing(&self, leg: Uuid) -> Option<usize> {
        self.conversation
            .position(leg)
            .filter(|&i| self.conversation.legs[i].is_dialled())
    }

    /// The party on leg `leg` hangs up (while being rung, it declines). Returns whether the leg
    /// was live.
    pub fn leg_hangs_up(&mut self, leg: Uuid, now: Timestamp, rules: &Rules) -> bool {
        let Some(i) = self
            .conversation
            .position(leg)
            .filter(|&i| self.conversation.legs[i].is_live())
        else {
            return false;
        };
        let Some(peer) = self.conversation.legs[i].party().cloned() else {
            return false;
        };
        let direction = self
            .conversation
            .bot_calls()
            .next()
            .and_then(|c| self.call(c))
            .map(|c| c.direction);
        let result = hang_up_reason(peer.kind, direction);
        self.heard.push(leg);
        self.change_leg(|c| c.leave(i, result), now, rules);
        true
    }

    /// The fabric lost the signalling of leg `leg` (a restart dropped its SIP dialog): a ringing
    /// leg fails and a connected one leaves, with `reason`. Returns whether the leg was live.
    pub fn leg_lost(
        &mut self,
        leg: Uuid,
        reason: EndReason,
        now: Timestamp,
        rules: &Rules,
    ) -> bool {
        let Some(i) = self
            .conversation
            .position(leg)
            .filter(|&i| self.conversation.legs[i].is_live())
        else {
            return false;
        };
        self.heard.push(leg);
        let ringing = self.conversation.legs[i].state == LegState::Ringing;
        self.change_leg(
            |c| {
                if ringing {
                    c.fail(i, reason)
                } else {
                    c.leave(i, reason)
                }
            },
            now,
            rules,
        );
        true
    }

    /// The party on leg `leg` presses `keys`: every bot whose call is established hears them
    /// (a tone notification where it subscribed; a running recording or tone collection may
    /// stop). Returns the bots' calls that heard them; none unless the leg is connected.
    pub fn leg_presses(&mut self, leg: Uuid, keys: &str, now: Timestamp) -> Vec<CallId> {
        let connected = self
            .conversation
            .position(leg)
            .is_some_and(|i| self.conversation.legs[i].state == LegState::Connected);
        if !connected {
            return vec![];
        }
        let mut heard = vec![];
        let bots: Vec<CallId> = self.conversation.bot_calls().collect();
        for id in bots {
            let Some(c) = self
                .call_mut(id)
                .filter(|c| c.state == CallState::Established)
            else {
                continue;
            };
            let mut emits = vec![];
            for k in keys.chars() {
                let (tone, stopped) = c.press(k, now);
                emits.extend(tone.map(|(t, seq)| Emit::Tone(t, seq)));
                emits.extend(stopped.into_iter().map(Emit::operation));
            }
            for e in emits {
                self.emit(id, e);
            }
            heard.push(id);
        }
        heard
    }

    /// The party on leg `leg` puts its call on hold, or takes it off: in a peer-to-peer call
    /// the bots' calls go to `hold` and back to `established`. Returns whether a call changed.
    pub fn leg_holds(&mut self, leg: Uuid, on: bool, now: Timestamp, rules: &Rules) -> bool {
        let connected = self
            .conversation
            .position(leg)
            .is_some_and(|i| self.conversation.legs[i].state == LegState::Connected);
        if !connected || self.conversation.is_group() {
            return false;
        }
        let bots: Vec<CallId> = self.conversation.bot_calls().collect();
        let before = self.out.len();
        for id in bots {
            let _ = self.apply(id, Event::PeerHold(on), now, rules);
        }
        self.out.len() > before
    }

    /// The fabric finished media operation `op` on leg `leg` as `end` says: the bots'
    /// operation completes (or fails). Returns whether one did.
    pub fn leg_media_done(&mut self, leg: Uuid, op: &str, end: &MediaEnd) -> bool {
        if self.conversation.position(leg).is_none() {
            return false;
        }
        let mut done = false;
        for k in 0..self.calls.len() {
            let id = self.calls[k].id;
            if let Some(o) = self.calls[k].media_done(op, end) {
                self.emit(id, Emit::operation(o));
                done = true;
            }
        }
        done
    }

    /// Whether a party the fabric carries for real (a SIP leg) is connected: its media
    /// operations complete when the fabric says.
    pub fn has_real_media(&self) -> bool {
        self.conversation
            .legs
            .iter()
            .any(|l| l.dialog && l.state == LegState::Connected && l.party().is_some())
    }

    /// The bot of call `call` muted or unmuted itself: the parties' lines stop or resume
    /// hearing what it plays.
    pub fn tell_muted(&mut self, call: CallId, muted: bool) {
        self.to_parties(|leg, peer| {
            Some(FabricCommand::Mute {
                leg,
                peer,
                call,
                muted,
            })
        });
    }

    /// A command for each connected party (`None`: none for it): what the bots' media does
    /// reaches all of them.
    pub fn to_parties(&mut self, command: impl Fn(LegRef, Peer) -> Option<FabricCommand>) {
        for l in &self.conversation.legs {
            if let (LegState::Connected, Some(peer)) = (l.state, l.party()) {
                let leg = LegRef {
                    conversation: self.conversation.id,
                    leg: l.id,
                };
                self.commands.extend(command(leg, peer.clone()));
            }
        }
    }

    /// What the fabric must do after this change: the explicit commands, then those the legs'
    /// changes since `before` call for.
    pub fn take_commands(&mut self, before: Option<&Conversation>) -> Vec<FabricCommand> {
        let mut out = std::mem::take(&mut self.commands);
        out.extend(self.conversation.commands_since(before, &self.heard));
        out
    }

    /// When anything of this scene falls due next.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.calls
            .iter()
            .filter(|c| c.state.is_live())
            .filter_map(Call::next_due)
            .chain(self.conversation.next_due())
            .min()
    }

    /// Ends the scene's change: the roster goes to every bot in a group call or meeting; and
    /// once no real line is left to play them out, prompts that waited for one complete on the
    /// call clock (a SIP party left in the middle of a prompt of a call that goes on).
    pub fn settle(&mut self) {
        if !self.has_real_media() {
            for c in &mut self.calls {
                for o in &mut c.operations {
                    o.awaits_media = false;
                }
            }
        }
        if !std::mem::take(&mut self.roster) || !self.conversation.is_group() {
            return;
        }
        let listeners: Vec<CallId> = self
            .conversation
            .legs
            .iter()
            .filter(|l| l.state == LegState::Connected)
            .filter_map(Leg::bot_call)
            .filter(|c| self.call(*c).is_some_and(|c| c.state.is_live()))
            .collect();
        let from = self.roster_from;
        for c in listeners {
            let since = match self.call_mut(c) {
                Some(call) => call.rosters.start(from),
                None => Some(from),
            };
            self.emit(c, Emit::Roster { since });
        }
    }
}
