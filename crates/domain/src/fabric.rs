//! What the domain and the telephony fabric say to each other, as data.
//!
//! A fabric (the simulated parties, or SIP) reports what happens on a party's side of a
//! call as [`FabricEvent`]s: the party answered, could not be reached, hung up, pressed keys, or
//! called an app. The domain's changes tell the fabric what to do as [`FabricCommand`]s: ring a
//! party, stop ringing, hang up, send DTMF, play prompts, record, stop media, mute, hold music.
//! The engine applies events and runs commands only once the change that decided them is
//! durable, in commit order.

use uuid::Uuid;

use super::operation::MediaEnd;
use super::{CallId, EndReason, Peer};

/// A party's leg in a conversation: the conversation's id and the leg's participant id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LegRef {
    pub conversation: CallId,
    pub leg: Uuid,
}

/// The app a call is for, as far as the domain and the fabric care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRef {
    pub app_id: String,
    pub tenant_id: String,
    pub display_name: Option<String>,
    pub max_concurrent_calls: usize,
}

/// Something that happened on a party's side of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FabricEvent {
    /// The party being rung picked up.
    Answered(LegRef),
    /// The party being rung declined, was busy or could not be reached.
    Failed(LegRef, EndReason),
    /// The party hung up (while ringing: it declined).
    HungUp(LegRef),
    /// The party pressed keys (`0-9`, `*`, `#`, `A-D`).
    Tones(LegRef, String),
    /// The party put its call on hold (`true`: it stopped listening) or took it off.
    Held(LegRef, bool),
    /// The fabric finished media operation `op` on the party's line: its prompts were played
    /// out (the last packet left), a prompt could not be played, or its recording ended.
    MediaDone(LegRef, String, MediaEnd),
    /// A party calls an app: a new call `call`, `incoming`, notified to `callback_uri`. `leg`
    /// is the participant id the caller's leg takes. With `dialog`, the fabric holds the call's
    /// signalling (a SIP dialog): it confirms the bot's answer itself (reporting the caller's
    /// leg [`FabricEvent::Answered`] or [`FabricEvent::Failed`]), and the leg does not survive
    /// a restart.
    Incoming {
        call: CallId,
        leg: Uuid,
        dialog: bool,
        from: Peer,
        display_name: Option<String>,
        app: AppRef,
        callback_uri: String,
    },
}

impl FabricEvent {
    /// The leg the event is about, if it is about a leg that exists.
    pub fn leg(&self) -> Option<LegRef> {
        match self {
            FabricEvent::Answered(l)
            | FabricEvent::Failed(l, _)
            | FabricEvent::HungUp(l)
            | FabricEvent::Tones(l, _)
            | FabricEvent::Held(l, _)
            | FabricEvent::MediaDone(l, _, _) => Some(*l),
            FabricEvent::Incoming { .. } => None,
        }
    }
}

/// How a recording listens to the party, after its prompts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// At most this long (`maxRecordDurationInSeconds`).
    pub max_ms: u64,
    /// Ends if the party says nothing this long from the start (`initialSilenceTimeoutInSeconds`).
    pub initial_silence_ms: u64,
    /// Ends once the party, having spoken, is silent this long (`maxSilenceTimeoutInSeconds`).
    pub max_silence_ms: u64,
    /// A beep goes to the party before recording starts (`playBeep`).
    pub beep: bool,
    /// Keys that end it (`stopTones`: `#`, `pound`, `tone1`, ...).
    pub stop_tones: Vec<String>,
}

/// What the fabric must do, once the change that decided it is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FabricCommand {
    /// Ring this party on this leg; report [`FabricEvent::Answered`] or
    /// [`FabricEvent::Failed`]. With `via` (a transfer whose transferee's signalling the fabric
    /// holds), a fabric that can asks that party to call the target itself (a SIP REFER) and
    /// reports the outcome on this leg.
    Dial {
        leg: LegRef,
        peer: Peer,
        via: Option<LegRef>,
    },
    /// A caller's leg was taken into a conversation (its call was admitted).
    Attach { leg: LegRef, peer: Peer },
    /// Stop ringing this leg (another target answered, ringing timed out, the bot gave up). If
    /// the party answers all the same (an answer crossing the cancel), the fabric ends that leg
    /// itself, as a SIP user agent must; the engine ignores the late answer. For a caller
    /// waiting to be let in, it is refused: `reason` says why (the bot rejected it, let the
    /// answer window pass, or the app could not take it).
    Cancel {
        leg: LegRef,
        peer: Peer,
        reason: EndReason,
    },
    /// The bot answered this caller: connect it (a SIP fabric answers `200 OK` and reports the
    /// leg [`FabricEvent::Answered`] once the caller acknowledges).
    Accept { leg: LegRef, peer: Peer },
    /// The bot redirected this caller (on a leg the fabric signals itself): send it to
    /// `targets` (a SIP fabric answers `302 Moved Temporarily`).
    Redirect {
        leg: LegRef,
        peer: Peer,
        targets: Vec<Peer>,
    },
    /// End this connected leg: the bot hung up, removed the party, or the call ended around it.
    HangUp {
        leg: LegRef,
        peer: Peer,
        reason: EndReason,
    },
    /// Send these DTMF keys to the party, `gap_ms` apart.
    SendDtmf {
        leg: LegRef,
        peer: Peer,
        keys: String,
        gap_ms: u64,
    },
    /// Play these prompts (their URIs, in order) to the party, after what is playing already,
    /// over and over with `looped` (until stopped); the operation `op_id` is the bot's
    /// `playPrompt` on call `call` (`muted`: that bot is muted now).
    Play {
        leg: LegRef,
        peer: Peer,
        call: CallId,
        op_id: String,
        prompts: Vec<String>,
        looped: bool,
        muted: bool,
    },
    /// Play these prompts, then record what the party says as `listen` says; the operation
    /// `op_id` is the bot's `recordResponse` on call `call`.
    Record {
        leg: LegRef,
        peer: Peer,
        call: CallId,
        op_id: String,
        prompts: Vec<String>,
        listen: Listen,
        muted: bool,
    },
    /// The bot of call `call` muted (or unmuted) itself: the party hears nothing it plays.
    Mute {
        leg: LegRef,
        peer: Peer,
        call: CallId,
        muted: bool,
    },
    /// Hold music starts (`on`) or stops for the party: `prompt` (a URI, the bot's
    /// `customPrompt`), else the fabric's own.
    HoldMusic {
        leg: LegRef,
        peer: Peer,
        on: bool,
        prompt: Option<String>,
    },
    /// Stop these media operations (prompts and recordings) at once: they were cancelled.
    StopMedia {
        leg: LegRef,
        peer: Peer,
        op_ids: Vec<String>,
    },
}

impl FabricCommand {
    /// The party the command is for.
    pub fn peer(&self) -> &Peer {
        match self {
            FabricCommand::Dial { peer, .. }
            | FabricCommand::Attach { peer, .. }
            | FabricCommand::Cancel { peer, .. }
            | FabricCommand::Accept { peer, .. }
            | FabricCommand::Redirect { peer, .. }
            | FabricCommand::HangUp { peer, .. }
            | FabricCommand::SendDtmf { peer, .. }
            | FabricCommand::Play { peer, .. }
            | FabricCommand::Record { peer, .. }
            | FabricCommand::Mute { peer, .. }
            | FabricCommand::HoldMusic { peer, .. }
            | FabricCommand::StopMedia { peer, .. } => peer,
        }
    }

    /// The leg the command is for.
    pub fn leg(&self) -> LegRef {
        match self {
            FabricCommand::Dial { leg, .. }
            | FabricCommand::Attach { leg, .. }
            | FabricCommand::Cancel { leg, .. }
            | FabricCommand::Accept { leg, .. }
            | FabricCommand::Redirect { leg, .. }
            | FabricCommand::HangUp { leg, .. }
            | FabricCommand::SendDtmf { leg, .. }
            | FabricCommand::Play { leg, .. }
            | FabricCommand::Record { leg, .. }
            | FabricCommand::Mute { leg, .. }
            | FabricCommand::HoldMusic { leg, .. }
            | FabricCommand::StopMedia { leg, .. } => *leg,
        }
    }
}
