//! Operations on a call (`commsOperation` and its subtypes): prompts, recordings, DTMF, mute.
//!
//! Media operations (prompts and recordings) queue: each starts when the one before it ends.
//! An operation that does not finish at once carries the time it will (`completes_at`) and is
//! completed by the call's timers.

use serde::{Deserialize, Serialize};

use super::EndReason;
use crate::Timestamp;

/// Which operation, and its Graph type name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OpKind {
    PlayPrompt,
    RecordResponse,
    CancelMediaProcessing,
    SubscribeToTone,
    SendDtmfTones,
    Mute,
    Unmute,
    UpdateRecordingStatus,
    InviteParticipants,
    StartHoldMusic,
    StopHoldMusic,
}

impl OpKind {
    /// The `@odata.type` name of the operation.
    pub fn type_name(self) -> &'static str {
        match self {
            OpKind::PlayPrompt => "playPromptOperation",
            OpKind::RecordResponse => "recordOperation",
            OpKind::CancelMediaProcessing => "cancelMediaProcessingOperation",
            OpKind::SubscribeToTone => "subscribeToToneOperation",
            OpKind::SendDtmfTones => "sendDtmfTonesOperation",
            OpKind::Mute => "muteParticipantOperation",
            OpKind::Unmute => "unmuteParticipantOperation",
            OpKind::UpdateRecordingStatus => "updateRecordingStatusOperation",
            OpKind::InviteParticipants => "inviteParticipantsOperation",
            OpKind::StartHoldMusic => "startHoldMusicOperation",
            OpKind::StopHoldMusic => "stopHoldMusicOperation",
        }
    }

    /// Prompts and recordings queue behind each other and can be cancelled.
    pub fn is_media(self) -> bool {
        matches!(self, OpKind::PlayPrompt | OpKind::RecordResponse)
    }
}

/// `operationStatus`. Stored as the schema spells it (PascalCase); on the wire in lower camel
/// case, as the service sends it (spec §0.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpStatus {
    NotStarted,
    Running,
    Completed,
    Failed,
}

impl OpStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OpStatus::NotStarted => "notStarted",
            OpStatus::Running => "running",
            OpStatus::Completed => "completed",
            OpStatus::Failed => "failed",
        }
    }
}

/// What a finished recording holds, enough to serve it as a WAV file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    /// The bearer token that fetches it.
    pub access_token: String,
    /// Length of the recording.
    pub length_ms: u64,
    /// How much of it is the party speaking (the rest is silence).
    pub speech_ms: u64,
    /// Whether the recording begins with a beep.
    pub beep: bool,
    /// The party's WAV file the recording is cut from, when it has one.
    #[serde(default)]
    pub source_wav: Option<String>,
    /// A real line recorded it: its audio is what the line carried (nothing is made up when
    /// that audio is no longer kept).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub real: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub id: String,
    pub kind: OpKind,
    pub status: OpStatus,
    pub client_context: Option<String>,
    pub result: Option<EndReason>,
    /// When it finishes, for one that runs.
    pub completes_at: Option<Timestamp>,
    /// For a media operation: when it starts playing or recording.
    pub starts_at: Option<Timestamp>,
    /// What the finished recording is (set when the operation is created, revealed when done).
    pub recording: Option<Recording>,
    /// For a recording: the keys that stop it early.
    #[serde(default)]
    pub stop_tones: Vec<String>,
    /// For `sendDtmfTones`: the keys the party receives when it completes.
    pub tones: Option<String>,
    /// Why it ended: for `sendDtmfTones` (`completedSuccessfully`, `mediaOperationCanceled`);
    /// for prompts and recordings asked through `/beta` (`playPromptCompletionReason`,
    /// `recordCompletionReason`; for a recording, its planned reason while it runs).
    pub completion_reason: Option<String>,
    /// For an invite: the invitees, as JSON text (`participants`).
    #[serde(default)]
    pub participants: Option<String>,
    /// The fabric says when it is done (prompts played and recordings made on a real line,
    /// [`Call::media_done`]):
    /// `completes_at` is only an estimate that later media queue behind.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaits_media: bool,
    /// Asked for through `/beta`: it is written with beta's properties (`completionReason`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub beta: bool,
}

impl Operation {
    pub fn new(id: String, kind: OpKind, client_context: Option<String>) -> Self {
        Operation {
            id,
            kind,
            status: OpStatus::Completed,
            client_context,
            result: None,
            completes_at: None,
            starts_at: None,
            recording: None,
            stop_tones: vec![],
            tones: None,
            completion_reason: None,
            participants: None,
            awaits_media: false,
            beta: false,
        }
    }

    /// Marks a running operation as finished with `status` and `result`.
    pub fn finish(&mut self, status: OpStatus, result: EndReason) {
        self.status = status;
        self.result = Some(result);
        self.completes_at = None;
    }
}

/// Result codes of finished operations.
pub mod results {
    use super::EndReason;
    pub const COMPLETED: EndReason = EndReason::new(200, 0);
    pub const MAX_RECORD_DURATION: EndReason = EndReason::new(200, 8515);
    pub const CANCELLED: EndReason = EndReason::new(400, 8508);
    /// A prompt's file could not be fetched (Azure Communication Services' media code, which
    /// shares Graph's media subcodes; the Graph docs give none).
    pub const PROMPT_UNAVAILABLE: EndReason = EndReason::new(400, 8536);
    /// A prompt's file is not audio the service can play.
    pub const PROMPT_INVALID: EndReason = EndReason::new(400, 8535);
}

/// `completionReason` values of prompts and recordings (beta's `playPromptCompletionReason`
/// and `recordCompletionReason`).
pub mod reasons {
    pub const PLAYED: &str = "completedSuccessfully";
    pub const PLAY_CANCELLED: &str = "mediaOperationCanceled";
    /// A prompt that could not be played: the enum has no better member.
    pub const PLAY_FAILED: &str = "unknown";
    pub const RECORD_CANCELLED: &str = "operationCanceled";
    pub const STOP_TONE: &str = "stopToneDetected";
    pub const MAX_DURATION: &str = "maxRecordDurationReached";
    pub const INITIAL_SILENCE: &str = "initialSilenceTimeout";
    pub const MAX_SILENCE: &str = "maxSilenceTimeout";
    pub const PROMPT_FAILED: &str = "playPromptFailed";
}

/// How a media operation the fabric carried out on a real line ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaEnd {
    /// Its prompts were played out: the last packet left.
    Played,
    /// A prompt could not be played (fetched or decoded): the operation fails with this.
    Failed(EndReason),
    /// The recording ended, holding `length_ms` of the party's audio.
    Recorded { length_ms: u64, why: RecordEnd },
}

/// Why a recording on a real line ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordEnd {
    MaxDuration,
    /// The party said nothing from the start for `initialSilenceTimeoutInSeconds`.
    InitialSilence,
    /// The party spoke, then was silent for `maxSilenceTimeoutInSeconds`.
    MaxSilence,
    StopTone,
}

impl RecordEnd {
    /// Its `recordCompletionReason`.
    pub fn reason(self) -> &'static str {
        match self {
            RecordEnd::MaxDuration => reasons::MAX_DURATION,
            RecordEnd::InitialSilence => reasons::INITIAL_SILENCE,
            RecordEnd::MaxSilence => reasons::MAX_SILENCE,
            RecordEnd::StopTone => reasons::STOP_TONE,
        }
    }
}

/// The status an operation finishing with `result` ends in.
fn status_for(result: EndReason) -> OpStatus {
    if result.code >= 400 {
        OpStatus::Failed
    } else {
        OpStatus::Completed
    }
}

/// A DTMF key in Graph's `tone` spelling, from a key character (`0`-`9`, `*`, `#`, `A`-`D`).
pub fn tone_name(key: char) -> Option<&'static str> {
    Some(match key.to_ascii_uppercase() {
        '0' => "tone0",
        '1' => "tone1",
        '2' => "tone2",
        '3' => "tone3",
        '4' => "tone4",
        '5' => "tone5",
        '6' => "tone6",
        '7' => "tone7",
        '8' => "tone8",
        '9' => "tone9",
        '*' => "star",
        '#' => "pound",
        'A' => "a",
        'B' => "b",
        'C' => "c",
        'D' => "d",
        _ => return None,
    })
}

/// The key character of a Graph `tone` value, in any casing.
pub fn tone_key(name: &str) -> Option<char> {
    let n = name.to_ascii_lowercase();
    if let Some(d) = n.strip_prefix("tone") {
        return (d.len() == 1 && d.as_bytes()[0].is_ascii_digit()).then(|| d.as_bytes()[0] as char);
    }
    Some(match n.as_str() {
        "star" => '*',
        "pound" => '#',
        "a" => 'A',
        "b" => 'B',
        "c" => 'C',
        "d" => 'D',
        "flash" => '!',
        _ => return None,
    })
}

/// The prompts of a `playPrompt` (or of a recording), as the request gave them.
#[derive(Clone, Debug, Default)]
pub struct PromptPlan {
    /// The URIs to play, in order: those before the first that cannot be had.
    pub uris: Vec<String>,
    /// How long they play in all.
    pub ms: u64,
    /// A prompt could not be had: the operation fails with this once the others played.
    pub failure: Option<EndReason>,
    /// `loop`: they play over and over until cancelled.
    pub looped: bool,
    /// Asked for through `/beta`.
    pub beta: bool,
}

/// How a recording will go, decided when it is asked for.
#[derive(Clone, Debug)]
pub struct RecordPlan {
    /// Prompts played before recording starts.
    pub prompt_ms: u64,
    /// The prompt could not be had: the operation fails with this at its turn, recording
    /// nothing.
    pub prompt_failure: Option<EndReason>,
    pub max_record_ms: u64,
    pub max_silence_ms: u64,
    pub initial_silence_ms: u64,
    pub play_beep: bool,
    pub stop_tones: Vec<String>,
    pub barge_in: bool,
    /// How long the party speaks when recorded.
    pub speech_ms: u64,
    /// The party's WAV file, when it speaks from one.
    pub source_wav: Option<String>,
    pub access_token: String,
    /// Asked for through `/beta`.
    pub beta: bool,
}

/// `ms` after `t`. Durations come from WAV headers and requests, so this saturates at the end of
/// time rather than overflow (an operation that would end there never ends).
fn after(t: Timestamp, ms: u64) -> Timestamp {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::Duration::try_milliseconds)
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

impl super::Call {
    /// When the media queue is free: now, or when the last queued prompt or recording ends.
    fn media_free_at(&self, now: Timestamp) -> Timestamp {
        self.operations
            .iter()
            .filter(|o| o.kind.is_media())
            .filter_map(|o| o.completes_at)
            .max()
            .map_or(now, |t| t.max(now))
    }

    /// Queues prompts that play for `duration_ms` in all (`u64::MAX`: they loop until
    /// cancelled). With `failure` (a prompt that cannot be had), the operation fails with it
    /// once the prompts before that one have played.
    pub fn play_prompt(
        &mut self,
        mut op: Operation,
        duration_ms: u64,
        failure: Option<EndReason>,
        now: Timestamp,
    ) -> Operation {
        let start = self.media_free_at(now);
        op.status = OpStatus::Running;
        op.starts_at = Some(start);
        // A failure is told at its turn, with the call clock standing still if that is now.
        let min = if failure.is_some() { 0 } else { 1 };
        op.completes_at = Some(after(start, duration_ms.max(min)));
        op.result = failure;
        self.operations.push(op.clone());
        op
    }

    /// Queues a recording (or, with barge-in, cancels what plays and records now). Returns the
    /// operation and those it cancelled.
    pub fn record(
        &mut self,
        mut op: Operation,
        plan: RecordPlan,
        now: Timestamp,
    ) -> (Operation, Vec<Operation>) {
        let cancelled = if plan.barge_in {
            self.cancel_media()
        } else {
            vec![]
        };
        let start = after(self.media_free_at(now), plan.prompt_ms);
        let heard = if plan.speech_ms == 0 {
            plan.initial_silence_ms
        } else {
            plan.speech_ms + plan.max_silence_ms
        };
        let beep_ms = if plan.play_beep { 200 } else { 0 };
        let (length_ms, result, reason) = if let Some(failure) = plan.prompt_failure {
            (0, failure, reasons::PROMPT_FAILED)
        } else if heard >= plan.max_record_ms {
            (
                plan.max_record_ms,
                results::MAX_RECORD_DURATION,
                reasons::MAX_DURATION,
            )
        } else if plan.speech_ms == 0 {
            (heard, results::COMPLETED, reasons::INITIAL_SILENCE)
        } else {
            (heard, results::COMPLETED, reasons::MAX_SILENCE)
        };
        op.completion_reason = Some(reason.into());
        op.beta = plan.beta;
        op.status = OpStatus::Running;
        op.starts_at = Some(start);
        let min = if plan.prompt_failure.is_some() { 0 } else { 1 };
        op.completes_at = Some(after(start, length_ms.max(min)));
        op.result = Some(result);
        op.stop_tones = plan.stop_tones.clone();
        op.recording = Some(Recording {
            access_token: if plan.prompt_failure.is_some() {
                String::new()
            } else {
                plan.access_token
            },
            length_ms: length_ms + beep_ms,
            speech_ms: plan.speech_ms.min(length_ms),
            beep: plan.play_beep,
            source_wav: plan.source_wav,
            real: false,
        });
        self.operations.push(op.clone());
        (op, cancelled)
    }

    /// Cancels every running or queued prompt and recording: they finish failed, 400/8508.
    pub fn cancel_media(&mut self) -> Vec<Operation> {
        let (media, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.operations)
            .into_iter()
            .partition(|o| o.kind.is_media());
        self.operations = rest;
        media
            .into_iter()
            .map(|mut o| {
                o.finish(OpStatus::Failed, results::CANCELLED);
                o.completion_reason = Some(
                    match o.kind {
                        OpKind::RecordResponse => reasons::RECORD_CANCELLED,
                        _ => reasons::PLAY_CANCELLED,
                    }
                    .into(),
                );
                if let Some(r) = &mut o.recording {
                    r.access_token.clear();
                }
                o
            })
            .collect()
    }

    /// Sends DTMF keys to the party, one every `delay_ms`.
    pub fn send_dtmf(
        &mut self,
        mut op: Operation,
        keys: String,
        delay_ms: u64,
        now: Timestamp,
    ) -> Operation {
        op.status = OpStatus::Running;
        op.completes_at = Some(after(now, (delay_ms * keys.len() as u64).max(1)));
        op.tones = Some(keys);
        self.operations.push(op.clone());
        op
    }

    /// Finishes every operation due at `now` and returns them (the keys of a finished
    /// `sendDtmfTones` reach the parties: the conversation's business).
    pub fn complete_due_operations(&mut self, now: Timestamp) -> Vec<Operation> {
        let (mut due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.operations)
            .into_iter()
            .partition(|o| !o.awaits_media && o.completes_at.is_some_and(|t| t <= now));
        self.operations = rest;
        due.sort_by_key(|o| o.completes_at);
        due.into_iter()
            .map(|mut o| {
                let result = o.result.unwrap_or(results::COMPLETED);
                match o.kind {
                    OpKind::SendDtmfTones => o.completion_reason = Some(reasons::PLAYED.into()),
                    OpKind::PlayPrompt if result.code >= 400 => {
                        o.completion_reason = Some(reasons::PLAY_FAILED.into())
                    }
                    OpKind::PlayPrompt => o.completion_reason = Some(reasons::PLAYED.into()),
                    _ => {}
                }
                o.finish(status_for(result), result);
                o
            })
            .collect()
    }

    /// The fabric finished operation `op` as `end` says: it completes (or fails) now, a
    /// recording with the length the party's line gave it. `None` if it is not running (it was
    /// cancelled meanwhile) or does not wait for the fabric.
    pub fn media_done(&mut self, op: &str, end: &MediaEnd) -> Option<Operation> {
        let i = self
            .operations
            .iter()
            .position(|o| o.id == op && o.awaits_media)?;
        let mut o = self.operations.remove(i);
        let record = o.kind == OpKind::RecordResponse;
        let (result, reason) = match end {
            MediaEnd::Played => {
                let r = o.result.unwrap_or(results::COMPLETED);
                let played = if r.code >= 400 {
                    reasons::PLAY_FAILED
                } else {
                    reasons::PLAYED
                };
                (r, played)
            }
            MediaEnd::Failed(r) if record => (*r, reasons::PROMPT_FAILED),
            MediaEnd::Failed(r) => (*r, reasons::PLAY_FAILED),
            MediaEnd::Recorded { length_ms, why } => {
                if let Some(r) = &mut o.recording {
                    r.length_ms = *length_ms;
                    r.speech_ms = *length_ms;
                    r.beep = false;
                    r.source_wav = None;
                    r.real = true;
                }
                let result = match why {
                    RecordEnd::MaxDuration => results::MAX_RECORD_DURATION,
                    _ => results::COMPLETED,
                };
                (result, why.reason())
            }
        };
        o.completion_reason = Some(reason.into());
        if result.code >= 400
            && let Some(r) = &mut o.recording
        {
            r.access_token.clear();
        }
        o.finish(status_for(result), result);
        Some(o)
    }

    /// Operations need a call that is up; media ones (and tones, DTMF, cancelling media) also
    /// need service-hosted media.
    pub fn may_operate(&self, kind: OpKind) -> Result<(), crate::Refusal> {
        self.must_be_up(kind.type_name())?;
        let media = kind.is_media()
            || matches!(
                kind,
                OpKind::SubscribeToTone | OpKind::SendDtmfTones | OpKind::CancelMediaProcessing
            );
        if media && self.app_hosted_media {
            return Err(crate::Refusal::AppHostedMedia);
        }
        Ok(())
    }

    /// `subscribeToTone`: from now on, keys the party presses are told to the bot.
    pub fn subscribe_to_tone(&mut self) {
        self.tone_subscribed = true;
    }

    /// `updateRecordingStatus`: what the call says of its recording (`notRecording`,
    /// `recording` or `failed`), kept as the call's `recordingStatus`.
    pub fn set_recording_status(&mut self, status: &str) {
        self.wire
            .insert("recordingStatus", serde_json::Value::String(status.into()));
    }

    /// `changeScreenSharingRole`: `viewer` or `sharer`, kept as the call's `screenSharingRole`.
    pub fn set_screen_sharing_role(&mut self, role: &str) {
        self.wire
            .insert("screenSharingRole", serde_json::Value::String(role.into()));
    }

    /// The party pressed `key`: the tone to report (if the bot subscribed, with its sequence
    /// id), and recordings it stops.
    pub fn press(
        &mut self,
        key: char,
        now: Timestamp,
    ) -> (Option<(&'static str, i64)>, Vec<Operation>) {
        let Some(name) = tone_name(key) else {
            return (None, vec![]);
        };
        let tone = if self.tone_subscribed {
            self.tone_sequence += 1;
            Some((name, self.tone_sequence))
        } else {
            None
        };
        let key_str = key.to_string();
        let mut stopped = vec![];
        // (planned end, actual end) of each recording the key stops early.
        let mut freed: Vec<(Timestamp, Timestamp)> = vec![];
        // A recording on a real line is stopped by the line's media, which hears the key.
        for o in self.operations.iter_mut().filter(|o| !o.awaits_media) {
            let recording =
                o.kind == OpKind::RecordResponse && o.starts_at.is_some_and(|s| s <= now);
            if recording
                && o.stop_tones
                    .iter()
                    .any(|t| t == &key_str || tone_key(t) == Some(key))
            {
                let elapsed = (now - o.starts_at.unwrap_or(now)).num_milliseconds().max(0) as u64;
                if let Some(r) = &mut o.recording {
                    r.length_ms = elapsed.min(r.length_ms);
                    r.speech_ms = r.speech_ms.min(r.length_ms);
                }
                if let Some(end) = o.completes_at {
                    freed.push((end, now));
                }
                o.finish(OpStatus::Completed, results::COMPLETED);
                o.completion_reason = Some(reasons::STOP_TONE.into());
                stopped.push(o.clone());
            }
        }
        // Media queued behind a recording that ended early moves up by the time it freed.
        for (planned, actual) in freed {
            let gain = planned - actual;
            for o in self.operations.iter_mut().filter(|o| o.kind.is_media()) {
                if let (Some(start), Some(end)) = (o.starts_at, o.completes_at)
                    && start >= planned
                {
                    o.starts_at = Some(start - gain);
                    o.completes_at = Some(end - gain);
                }
            }
        }
        self.operations.retain(|o| o.completes_at.is_some());
        (tone, stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn established(now: Timestamp) -> crate::Call {
        use crate::{Call, CallState, Direction};
        Call::new(
            "app",
            "tenant",
            Direction::Outgoing,
            CallState::Established,
            "https://bot.example/api/calls".into(),
            now,
        )
    }

    #[test]
    fn keys_and_tone_names_map_both_ways() {
        for key in "0123456789*#ABCD".chars() {
            let name = tone_name(key).unwrap();
            assert_eq!(tone_key(name), Some(key));
            assert_eq!(tone_key(&name.to_uppercase()), Some(key));
        }
        assert_eq!(tone_name('x'), None);
        assert_eq!(tone_key("tone12"), None);
    }

    #[test]
    fn prompts_queued_past_the_end_of_time_end_there_instead_of_overflowing() {
        let now = chrono::Utc::now();
        let mut call = established(now);
        let prompt = |n: &str| Operation::new(n.into(), OpKind::PlayPrompt, None);
        let first = call.play_prompt(prompt("a"), u64::MAX, None, now);
        assert_eq!(
            first.completes_at,
            Some(chrono::DateTime::<chrono::Utc>::MAX_UTC)
        );
        // The next one starts where the first ends: at the end of time, not past it.
        let second = call.play_prompt(prompt("b"), 4_000_000_000_000, None, now);
        assert_eq!(
            second.completes_at,
            Some(chrono::DateTime::<chrono::Utc>::MAX_UTC)
        );
    }

    #[test]
    fn operation_status_is_written_in_pascal_case() {
        assert_eq!(OpStatus::Running.as_str(), "running");
        assert_eq!(
            serde_json::to_string(&OpStatus::NotStarted).unwrap(),
            "\"NotStarted\""
        );
    }

    #[test]
    fn the_line_decides_how_a_media_operation_ends() {
        let now = chrono::Utc::now();
        let mut call = established(now);
        let waiting = |id: &str, kind| {
            let mut o = Operation::new(id.into(), kind, None);
            o.awaits_media = true;
            o
        };
        let failing = call.play_prompt(
            waiting("p", OpKind::PlayPrompt),
            1000,
            Some(results::PROMPT_UNAVAILABLE),
            now,
        );
        let plan = RecordPlan {
            prompt_ms: 0,
            prompt_failure: None,
            max_record_ms: 5000,
            max_silence_ms: 1000,
            initial_silence_ms: 1000,
            play_beep: true,
            stop_tones: vec![],
            barge_in: false,
            speech_ms: 3000,
            source_wav: None,
            access_token: "t".into(),
            beta: true,
        };
        let (rec, _) = call.record(waiting("r", OpKind::RecordResponse), plan, now);
        // The call clock does not end them, however late it is.
        let late = now + chrono::Duration::hours(1);
        assert!(call.complete_due_operations(late).is_empty());
        // Played out, a prompt whose file could not be had fails as planned.
        let p = call.media_done(&failing.id, &MediaEnd::Played).unwrap();
        assert_eq!(
            (p.status, p.result),
            (OpStatus::Failed, Some(results::PROMPT_UNAVAILABLE))
        );
        // A recording takes the length and reason the line gives.
        let end = MediaEnd::Recorded {
            length_ms: 1234,
            why: RecordEnd::MaxDuration,
        };
        let r = call.media_done(&rec.id, &end).unwrap();
        assert_eq!(r.result, Some(results::MAX_RECORD_DURATION));
        assert_eq!(
            r.completion_reason.as_deref(),
            Some("maxRecordDurationReached")
        );
        let kept = r.recording.unwrap();
        assert_eq!(
            (kept.length_ms, kept.beep, kept.access_token.as_str()),
            (1234, false, "t")
        );
        // Once done, nothing is left to finish.
        assert_eq!(call.media_done(&rec.id, &MediaEnd::Played), None);
    }
}
