//! The participants of group calls and meetings: invite, remove, mute, hold music.

use serde_json::Value;

use super::{Engine, EngineError};
use crate::clock::Timestamp;
use crate::domain::Refusal;
use crate::domain::call::{Rules, party_key};
use crate::domain::conversation::{Kind, Purpose, Scene};
use crate::domain::ids::new_guid;
use crate::domain::operation::{OpKind, OpStatus, Operation, results};
use crate::domain::refusal::ReplaceProblem;
use crate::domain::{CallId, Peer};
use uuid::Uuid;

/// An invitee of `participants/invite`.
#[derive(Clone, Debug)]
pub struct Invitee {
    pub peer: Peer,
    /// A peer-to-peer call of the invitee that ends once it joins.
    pub replaces: Option<CallId>,
    /// The participant id the client chose for the invitee, if any.
    pub participant_id: Option<Uuid>,
}

impl Engine {
    /// Invites parties into the call's conversation (`participants/invite`). A peer-to-peer
    /// call becomes a group call.
    pub async fn invite(
        &self,
        app_id: &str,
        id: CallId,
        invitees: Vec<Invitee>,
        mut participants: Vec<Value>,
        ctx: Option<String>,
    ) -> Result<Operation, EngineError> {
        let replaced = invitees.first().and_then(|i| i.replaces);
        if let Some(old) = replaced {
            self.check_replaceable(app_id, id, old, &invitees[0].peer)
                .await?;
        }
        self.update(Some(app_id), id, move |s, now, _| {
            let c = s.call(id).ok_or(EngineError::NotFound)?;
            c.must_be_up("inviteParticipantsOperation")?;
            s.conversation
                .may_invite(invitees.iter().map(|i| i.peer.id.as_str()))?;
            let mut op = Operation::new(new_guid(), OpKind::InviteParticipants, ctx);
            op.status = OpStatus::Running;
            if s.conversation.kind == Kind::PeerToPeer {
                s.conversation.kind = Kind::Group;
            }
            for (k, inv) in invitees.iter().enumerate() {
                let purpose = Purpose::Invite(Box::new(crate::domain::conversation::Invite {
                    call_id: id,
                    op_id: op.id.clone(),
                    replaces: if k == 0 { inv.replaces } else { None },
                    outcome: None,
                }));
                let mut leg = self.ring(&inv.peer, purpose, now, self.rules.ringing_timeout);
                if k == 0 && inv.replaces.is_some() {
                    // Already in a call with the bot: it moves over at once.
                    leg.start_ringing(Some(now), None, now + self.rules.ringing_timeout);
                }
                if let Some(pid) = inv.participant_id {
                    s.conversation.may_take_id(pid)?;
                    // Another bot's leg id names its call: never the client's to choose.
                    if inv.peer.kind.is_bot() {
                        return Err(Refusal::ParticipantIdForBot.into());
                    }
                    leg.id = pid;
                }
                if let Some(p) = participants.get_mut(k) {
                    crate::graph::participant::name_invitee(p, leg.id);
                }
                s.conversation.add(leg);
            }
            op.participants = Some(Value::Array(participants).to_string());
            if let Some(c) = s.call_mut(id) {
                c.operations.push(op.clone());
            }
            Ok(op)
        })
        .await
        .map(|(_, op)| op)
    }

    /// `replacesCallId` must name a live peer-to-peer call of the same app with the invitee in
    /// it.
    pub(super) async fn check_replaceable(
        &self,
        app_id: &str,
        id: CallId,
        old: CallId,
        invitee: &Peer,
    ) -> Result<(), EngineError> {
        let bad = |problem| Refusal::NotReplaceable { call: old, problem };
        if old == id {
            return Err(bad(ReplaceProblem::SameCall).into());
        }
        // Another bot's end of the call is named by its leg: it cannot move to another call.
        if invitee.kind.is_bot() {
            return Err(bad(ReplaceProblem::NotMovable).into());
        }
        let ok = self
            .with_conversation(app_id, old, |_, c, _| {
                c.kind == Kind::PeerToPeer && c.has_party(&party_key(&invitee.id))
            })
            .await
            .map_err(|_| bad(ReplaceProblem::NoSuchCall))?;
        if !ok {
            return Err(bad(ReplaceProblem::NotPeerToPeerWithInvitee).into());
        }
        Ok(())
    }

    /// Finds a participant of the call's conversation and changes it with `change`, which may
    /// also give an operation to answer with.
    pub(super) async fn participant<T>(
        &self,
        app_id: &str,
        id: CallId,
        participant_id: &str,
        change: impl FnOnce(&mut Scene, usize, Timestamp, &Rules) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        self.update(Some(app_id), id, |s, now, r| {
            let i = s
                .conversation
                .leg(participant_id)
                .ok_or(EngineError::Refused(Refusal::NoSuchParticipant))?;
            change(s, i, now, r)
        })
        .await
        .map(|(_, t)| t)
    }

    /// Removes a participant (`DELETE .../participants/{id}`); a ringing invitee's invite is
    /// cancelled.
    pub async fn remove_participant(
        &self,
        app_id: &str,
        id: CallId,
        participant_id: &str,
    ) -> Result<(), EngineError> {
        self.participant(app_id, id, participant_id, |s, i, now, r| {
            s.conversation.must_be_group("Removing a participant")?;
            s.change_leg(|c| c.remove(i), now, r);
            Ok(())
        })
        .await
    }

    /// Server-mutes a participant.
    pub async fn mute_participant(
        &self,
        app_id: &str,
        id: CallId,
        participant_id: &str,
        ctx: Option<String>,
    ) -> Result<Operation, EngineError> {
        self.participant(app_id, id, participant_id, |s, i, now, r| {
            s.conversation.must_be_group("Muting a participant")?;
            let call = s.call(id).ok_or(EngineError::NotFound)?;
            call.must_be_up("muteParticipantOperation")?;
            s.conversation.must_have_joined(i)?;
            if let Some(bot) = s.conversation.legs[i].bot_call()
                && let Some(c) = s.call_mut(bot)
                && !c.muted
            {
                c.muted = true;
                s.tell_muted(bot, true);
            }
            s.change_leg(|c| c.set_muted(i, true), now, r);
            let mut op = Operation::new(new_guid(), OpKind::Mute, ctx);
            op.result = Some(results::COMPLETED);
            Ok(op)
        })
        .await
    }

    /// Lets a participant waiting in the meeting's lobby in (beta `participant: admit`); the
    /// admitting bot must be in the meeting.
    pub async fn admit_from_lobby(
        &self,
        app_id: &str,
        id: CallId,
        participant_id: &str,
    ) -> Result<(), EngineError> {
        self.participant(app_id, id, participant_id, |s, i, now, r| {
            s.call(id)
                .ok_or(EngineError::NotFound)?
                .must_be_established()?;
            s.conversation.may_admit(i)?;
            s.change_leg(|c| c.admit(i), now, r);
            Ok(())
        })
        .await
    }

    /// Starts or stops hold music for a participant; the operation completes right after.
    pub async fn hold_music(
        &self,
        app_id: &str,
        id: CallId,
        participant_id: &str,
        ctx: Option<String>,
        (start, prompt): (bool, Option<String>),
    ) -> Result<Operation, EngineError> {
        self.participant(app_id, id, participant_id, |s, i, now, r| {
            let kind = if start {
                OpKind::StartHoldMusic
            } else {
                OpKind::StopHoldMusic
            };
            let call = s.call(id).ok_or(EngineError::NotFound)?;
            call.must_be_up(kind.type_name())?;
            s.conversation.may_hold(i, start)?;
            s.change_leg(|c| c.set_on_hold(i, start), now, r);
            let held = s.conversation.legs[i].id;
            s.to_parties(|leg, peer| {
                (leg.leg == held).then(|| crate::domain::FabricCommand::HoldMusic {
                    leg,
                    peer,
                    on: start,
                    prompt: prompt.clone(),
                })
            });
            let mut op = Operation::new(new_guid(), kind, ctx);
            op.status = OpStatus::Running;
            op.result = Some(results::COMPLETED);
            op.completes_at = Some(now);
            if let Some(c) = s.call_mut(id) {
                c.operations.push(op.clone());
            }
            Ok(op)
        })
        .await
    }
}
