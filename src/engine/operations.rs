//! Operations on a call: prompts, recording, tones, DTMF, cancelling media, muting itself.

use super::{Engine, EngineError};
use crate::clock::Timestamp;
use crate::domain::conversation::Emit;
use crate::domain::fabric::Listen;
use crate::domain::ids::new_guid;
use crate::domain::operation::{OpKind, Operation, PromptPlan, RecordPlan, results};
use crate::domain::{Call, CallId, FabricCommand, LegRef, Peer};

impl Engine {
    /// Starts an operation on a call that is up. `start` fills it in and gives the
    /// notifications it causes at once.
    pub async fn operate(
        &self,
        app_id: &str,
        id: CallId,
        kind: OpKind,
        client_context: Option<String>,
        start: impl FnOnce(
            &mut Call,
            Operation,
            Timestamp,
        ) -> Result<(Operation, Vec<Emit>), EngineError>,
    ) -> Result<Operation, EngineError> {
        self.operate_and_tell(app_id, id, kind, client_context, start, |_, _, _, _| None)
            .await
    }

    /// [`Engine::operate`], and what the parties' side must do about the new operation
    /// (`tell`: play, record, send DTMF). Media operations it cancelled are stopped there too.
    async fn operate_and_tell(
        &self,
        app_id: &str,
        id: CallId,
        kind: OpKind,
        client_context: Option<String>,
        start: impl FnOnce(
            &mut Call,
            Operation,
            Timestamp,
        ) -> Result<(Operation, Vec<Emit>), EngineError>,
        tell: impl Fn(&Operation, bool, LegRef, Peer) -> Option<FabricCommand>,
    ) -> Result<Operation, EngineError> {
        self.update(Some(app_id), id, move |s, now, _| {
            let c = s.call_mut(id).ok_or(EngineError::NotFound)?;
            c.may_operate(kind)?;
            let muted = c.muted;
            let (mut op, emits) = start(c, Operation::new(new_guid(), kind, client_context), now)?;
            // Prompts and recordings on a real line complete when the fabric has played or
            // recorded them (a recording whose prompt failed records nothing: it fails on the
            // call clock).
            let failed = op.result.is_some_and(|r| r.code >= 400);
            let by_fabric = match kind {
                OpKind::PlayPrompt => true,
                OpKind::RecordResponse => !failed,
                _ => false,
            };
            if by_fabric && s.has_real_media() {
                op.awaits_media = true;
                if let Some(o) = s
                    .call_mut(id)
                    .and_then(|c| c.operations.iter_mut().find(|o| o.id == op.id))
                {
                    o.awaits_media = true;
                }
            }
            let cancelled: Vec<String> = emits
                .iter()
                .filter_map(|e| match e {
                    Emit::Operation(o) if o.kind.is_media() => Some(o.id.clone()),
                    _ => None,
                })
                .collect();
            for e in emits {
                s.emit(id, e);
            }
            if !cancelled.is_empty() {
                s.to_parties(|leg, peer| {
                    Some(FabricCommand::StopMedia {
                        leg,
                        peer,
                        op_ids: cancelled.clone(),
                    })
                });
            }
            s.to_parties(|leg, peer| tell(&op, muted, leg, peer));
            Ok(op)
        })
        .await
        .map(|(_, op)| op)
    }

    /// Queues the prompts of `plan`.
    pub async fn play_prompt(
        &self,
        app_id: &str,
        id: CallId,
        ctx: Option<String>,
        plan: PromptPlan,
    ) -> Result<Operation, EngineError> {
        // Prompts with no audio at all do not loop: there is nothing to play again.
        let looped = plan.looped && plan.failure.is_none() && plan.ms > 0;
        let ms = if looped { u64::MAX } else { plan.ms };
        self.operate_and_tell(
            app_id,
            id,
            OpKind::PlayPrompt,
            ctx,
            |c, mut op, now| {
                op.beta = plan.beta;
                Ok((c.play_prompt(op, ms, plan.failure, now), vec![]))
            },
            |op, muted, leg, peer| {
                Some(FabricCommand::Play {
                    leg,
                    peer,
                    call: id,
                    op_id: op.id.clone(),
                    prompts: plan.uris.clone(),
                    looped,
                    muted,
                })
            },
        )
        .await
    }

    /// Records the party's answer after `prompts` (their URIs). `plan` is completed with the
    /// party's speech.
    pub async fn record(
        &self,
        app_id: &str,
        id: CallId,
        ctx: Option<String>,
        prompts: Vec<String>,
        plan: RecordPlan,
    ) -> Result<Operation, EngineError> {
        let listen = Listen {
            max_ms: plan.max_record_ms,
            initial_silence_ms: plan.initial_silence_ms,
            max_silence_ms: plan.max_silence_ms,
            beep: plan.play_beep,
            stop_tones: plan.stop_tones.clone(),
        };
        let failed = plan.prompt_failure.is_some();
        self.operate_and_tell(
            app_id,
            id,
            OpKind::RecordResponse,
            ctx,
            |c, op, now| {
                let (op, cancelled) = c.record(op, plan, now);
                Ok((op, cancelled.into_iter().map(Emit::operation).collect()))
            },
            |op, muted, leg, peer| {
                (!failed).then(|| FabricCommand::Record {
                    leg,
                    peer,
                    call: id,
                    op_id: op.id.clone(),
                    prompts: prompts.clone(),
                    listen: listen.clone(),
                    muted,
                })
            },
        )
        .await
    }

    /// Cancels running and queued prompts and recordings.
    pub async fn cancel_media(
        &self,
        app_id: &str,
        id: CallId,
        ctx: Option<String>,
    ) -> Result<Operation, EngineError> {
        self.operate(
            app_id,
            id,
            OpKind::CancelMediaProcessing,
            ctx,
            |c, op, _| {
                Ok((
                    op,
                    c.cancel_media().into_iter().map(Emit::operation).collect(),
                ))
            },
        )
        .await
    }

    /// Sends DTMF keys to the parties.
    pub async fn send_dtmf(
        &self,
        app_id: &str,
        id: CallId,
        ctx: Option<String>,
        keys: String,
        delay_ms: u64,
    ) -> Result<Operation, EngineError> {
        // The fabric sends them now; they count as heard once the operation completes.
        self.operate_and_tell(
            app_id,
            id,
            OpKind::SendDtmfTones,
            ctx,
            |c, op, now| Ok((c.send_dtmf(op, keys.clone(), delay_ms, now), vec![])),
            |_, _, leg, peer| {
                Some(FabricCommand::SendDtmf {
                    leg,
                    peer,
                    keys: keys.clone(),
                    gap_ms: delay_ms,
                })
            },
        )
        .await
    }

    /// Operations that complete at once and change a flag of the call.
    async fn instant(
        &self,
        app_id: &str,
        id: CallId,
        kind: OpKind,
        ctx: Option<String>,
        change: impl FnOnce(&mut Call) + Send,
    ) -> Result<Operation, EngineError> {
        self.operate(app_id, id, kind, ctx, |c, mut op, _| {
            change(c);
            op.result = Some(results::COMPLETED);
            Ok((op, vec![]))
        })
        .await
    }

    /// The bot mutes or unmutes itself; in a group call or meeting the others see it.
    pub async fn mute_self(
        &self,
        app_id: &str,
        id: CallId,
        ctx: Option<String>,
        muted: bool,
    ) -> Result<Operation, EngineError> {
        let kind = if muted { OpKind::Mute } else { OpKind::Unmute };
        self.update(Some(app_id), id, move |s, now, r| {
            let c = s.call_mut(id).ok_or(EngineError::NotFound)?;
            c.may_operate(kind)?;
            let changed = c.muted != muted;
            c.muted = muted;
            let mut op = Operation::new(new_guid(), kind, ctx);
            op.result = Some(results::COMPLETED);
            if let Some(i) = s.conversation.bot_leg(id) {
                s.change_leg(|c| c.set_muted(i, muted), now, r);
            }
            if changed {
                s.tell_muted(id, muted);
            }
            Ok(op)
        })
        .await
        .map(|(_, op)| op)
    }

    /// Changes something about a call that is up without an operation or a notification.
    async fn modify(
        &self,
        app_id: &str,
        id: CallId,
        change: impl FnOnce(&mut Call) + Send,
    ) -> Result<Call, EngineError> {
        self.update(Some(app_id), id, |s, _, _| {
            let c = s.call_mut(id).ok_or(EngineError::NotFound)?;
            c.must_be_established()?;
            change(c);
            Ok(())
        })
        .await
        .map(|(c, _)| c)
    }

    /// `subscribeToTone`: the bot hears the keys the party presses from now on.
    pub async fn subscribe_to_tone(
        &self,
        app_id: &str,
        id: CallId,
        ctx: Option<String>,
    ) -> Result<Operation, EngineError> {
        self.instant(
            app_id,
            id,
            OpKind::SubscribeToTone,
            ctx,
            Call::subscribe_to_tone,
        )
        .await
    }

    /// `updateRecordingStatus` (`notRecording`, `recording` or `failed`).
    pub async fn update_recording_status(
        &self,
        app_id: &str,
        id: CallId,
        ctx: Option<String>,
        status: &str,
    ) -> Result<Operation, EngineError> {
        let kind = OpKind::UpdateRecordingStatus;
        self.instant(app_id, id, kind, ctx, |c| c.set_recording_status(status))
            .await
    }

    /// `changeScreenSharingRole` (`viewer` or `sharer`).
    pub async fn change_screen_sharing_role(
        &self,
        app_id: &str,
        id: CallId,
        role: &str,
    ) -> Result<Call, EngineError> {
        self.modify(app_id, id, |c| c.set_screen_sharing_role(role))
            .await
    }
}
