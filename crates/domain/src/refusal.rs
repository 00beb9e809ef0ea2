//! Why the domain refuses a request that is well formed but not possible now: typed, so that the
//! rules are tested without a server and the words a client reads are written in one place (the
//! server's `http::error`, which renders each refusal as a Graph error).

use uuid::Uuid;

use crate::call::TransitionError;
use crate::{CallId, CallState};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `what` (an operation's type name) needs a call that is established or on hold.
    #[error("{what} while the call is {}", state.as_str())]
    NotUp {
        what: &'static str,
        state: CallState,
    },
    /// A change of the call itself that needs it established.
    #[error("the call is {}, not established", state.as_str())]
    NotEstablished { state: CallState },
    /// A media action on a call whose media the app hosts.
    #[error("a media action on a call with app-hosted media")]
    AppHostedMedia,
    /// Only incoming calls are answered, rejected or redirected.
    #[error("not an incoming call")]
    NotIncoming,
    /// `what` is for group calls and meetings.
    #[error("{what} in a peer-to-peer call")]
    NotGroup { what: &'static str },
    /// The same identity twice in one invitation.
    #[error("{0} invited twice")]
    InvitedTwice(String),
    /// The invitee is in the call already.
    #[error("{0} already in the call")]
    AlreadyInCall(String),
    /// A client chose the participant id of another bot's leg (it names that bot's call).
    #[error("participant id chosen for a bot")]
    ParticipantIdForBot,
    /// The participant id the client chose is someone else's.
    #[error("participant id {0} taken")]
    ParticipantIdTaken(Uuid),
    /// `replacesCallId` does not name a call the invitee (or transfer target) can move over
    /// from.
    #[error("replacesCallId {call}: {problem:?}")]
    NotReplaceable {
        call: CallId,
        problem: ReplaceProblem,
    },
    /// The participant has not joined.
    #[error("participant not joined")]
    NotJoined,
    /// Hold music is for a party that has joined.
    #[error("hold music for a leg that is not a joined party")]
    HoldMusicNotForParty,
    /// One participant at a time is on hold.
    #[error("another participant on hold")]
    AnotherOnHold,
    /// Stopping hold music for a participant not on hold.
    #[error("participant not on hold")]
    NotOnHold,
    /// No meeting has this join id.
    #[error("no meeting {0}")]
    NoSuchMeeting(String),
    /// The meeting's passcode is not the one given.
    #[error("wrong passcode")]
    WrongPasscode,
    /// A join names an organizer other than the meeting's.
    #[error("wrong organizer")]
    WrongOrganizer,
    /// Admitting a participant that is not in the lobby.
    #[error("participant not in the lobby")]
    NotInLobby,
    /// No participant of the call has this id.
    #[error("no such participant")]
    NoSuchParticipant,
    /// The call's state machine does not take this event now.
    #[error(transparent)]
    Transition(TransitionError),
}

/// What is wrong with a `replacesCallId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplaceProblem {
    /// It names the call being invited into (or transferred).
    SameCall,
    /// No live call of this app has that id.
    NoSuchCall,
    /// The call is not peer-to-peer with the invitee (or transfer target) in it.
    NotPeerToPeerWithInvitee,
    /// The transfer target has not joined that call yet.
    NotJoined,
    /// The transfer target's signalling cannot move to another call here (a SIP dialog, or
    /// another bot): not built.
    NotMovable,
    /// A consultative transfer out of a group call: not built.
    FromGroup,
}
