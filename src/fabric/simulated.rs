//! Simulated parties from the config file. Each answers, declines, is busy or cannot be reached,
//! as its `behavior` says, after `answer_after_ms` on the call clock; an identity that no party
//! names behaves as `not_found`. What the control API makes a party do (hang up, press keys, call
//! an app) becomes the [`FabricEvent`]s a trunk would report; the commands the engine sends it
//! are kept, per party, as what the party heard (`GET /_switchboard/v1/parties/{id}`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DialPlan, Fabric, FabricCommand, PartyInfo};
use crate::clock::{Clock, Timestamp};
pub use crate::domain::call::party_key;
use crate::domain::{EndReason, PartyKind, Peer};

/// How a simulated party responds when called.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behavior {
    #[default]
    Answer,
    NoAnswer,
    Reject,
    Busy,
    NotFound,
    Unreachable,
    Unroutable,
    PrivateCallingDisabled,
}

/// A `[[parties]]` entry of the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyConfig {
    pub id: String,
    #[serde(default = "default_kind")]
    pub kind: PartyKind,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub behavior: Behavior,
    #[serde(default)]
    pub answer_after_ms: Option<u64>,
    /// How long the party speaks when the bot records it (generated voice-like tones).
    #[serde(default)]
    pub record_seconds: Option<f64>,
    /// A WAV file the party speaks when the bot records it (instead of generated tones).
    #[serde(default)]
    pub record_wav: Option<String>,
    /// Reached over SIP at this address instead of simulated (with a `[sip]` section).
    #[serde(default)]
    pub sip_uri: Option<String>,
}

fn default_kind() -> PartyKind {
    PartyKind::User
}

/// A simulated party.
#[derive(Clone, Debug)]
pub struct Party {
    pub info: PartyInfo,
    pub behavior: Behavior,
    answer_after: Duration,
    /// What the party says when recorded.
    pub speech: Speech,
}

/// What a party says when the bot records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Speech {
    /// Voice-like tones this long.
    Generated { ms: u64 },
    /// This WAV file (its length is the speech).
    Wav(String),
}

/// A command the party received, as the control API shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Heard {
    pub at: Timestamp,
    /// `dial`, `attach`, `accept`, `cancel`, `redirect`, `hangUp`, `sendDtmf`, `play`, `record`
    /// or `stopMedia`.
    pub command: &'static str,
    /// The conversation's id (the first bot call's id).
    pub call_id: String,
    /// The party's participant id in it.
    pub participant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tones: Option<String>,
    /// For `play`, `record` and `stopMedia`: the bot's operation ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operation_ids: Vec<String>,
    /// For `play` and `record`: the prompts' URIs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// For `hangUp` and `cancel`: the end reason's code and subcode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<(i32, i32)>,
}

/// How many received commands are kept per party.
const HEARD_PER_PARTY: usize = 50;

pub struct SimulatedFabric {
    parties: HashMap<String, Party>,
    order: Vec<String>,
    clock: Clock,
    heard: Mutex<HashMap<String, VecDeque<Heard>>>,
}

impl SimulatedFabric {
    pub fn new(parties: &[PartyConfig], clock: Clock) -> Self {
        let mut map = HashMap::new();
        let mut order = vec![];
        for p in parties {
            let key = party_key(&p.id);
            let speech = match &p.record_wav {
                Some(path) => Speech::Wav(path.clone()),
                None => Speech::Generated {
                    ms: (p.record_seconds.unwrap_or(3.0).clamp(0.0, 600.0) * 1000.0) as u64,
                },
            };
            let party = Party {
                info: PartyInfo {
                    id: p.id.clone(),
                    kind: p.kind,
                    display_name: p.display_name.clone(),
                },
                behavior: p.behavior,
                answer_after: Duration::from_millis(p.answer_after_ms.unwrap_or(0)),
                speech,
            };
            if map.insert(key.clone(), party).is_none() {
                order.push(key);
            }
        }
        SimulatedFabric {
            parties: map,
            order,
            clock,
            heard: Mutex::default(),
        }
    }

    /// The configured party with this id, in any common spelling.
    pub fn get(&self, id: &str) -> Option<&Party> {
        self.parties.get(&party_key(id))
    }

    /// Every configured party, in the config file's order.
    pub fn parties(&self) -> impl Iterator<Item = &Party> {
        self.order.iter().filter_map(|k| self.parties.get(k))
    }

    /// Forgets what every party heard (a reset).
    pub fn reset(&self) {
        self.heard.lock().expect("heard lock").clear();
    }

    /// The commands this party received, oldest first (the last [`HEARD_PER_PARTY`]).
    pub fn heard(&self, id: &str) -> Vec<Heard> {
        let heard = self.heard.lock().expect("heard lock");
        heard
            .get(&party_key(id))
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Fabric for SimulatedFabric {
    fn plan(&self, target: &Peer) -> DialPlan {
        let Some(party) = self.get(&target.id) else {
            return DialPlan::Fail {
                after: Duration::ZERO,
                reason: EndReason::NOT_FOUND,
            };
        };
        let after = party.answer_after;
        let fail = |after, reason| DialPlan::Fail { after, reason };
        match party.behavior {
            Behavior::Answer => DialPlan::Answer { after },
            Behavior::NoAnswer => DialPlan::Ring,
            Behavior::Reject => fail(after, EndReason::DECLINED),
            Behavior::Busy => fail(after, EndReason::BUSY),
            Behavior::NotFound => fail(Duration::ZERO, EndReason::NOT_FOUND),
            Behavior::Unreachable => fail(Duration::ZERO, EndReason::UNREACHABLE),
            Behavior::Unroutable => fail(Duration::ZERO, EndReason::UNROUTABLE),
            Behavior::PrivateCallingDisabled => {
                fail(Duration::ZERO, EndReason::PRIVATE_CALLING_DISABLED)
            }
        }
    }

    fn execute(&self, commands: Vec<FabricCommand>) {
        let at = self.clock.now();
        let mut log = self.heard.lock().expect("heard lock");
        for c in commands {
            let mut heard = Heard {
                at,
                command: "",
                call_id: c.leg().conversation.to_string(),
                participant_id: c.leg().leg.to_string(),
                tones: None,
                operation_ids: vec![],
                prompts: vec![],
                reason: None,
            };
            heard.command = match &c {
                FabricCommand::Dial { .. } => "dial",
                FabricCommand::Attach { .. } => "attach",
                FabricCommand::Cancel { reason, .. } => {
                    heard.reason = Some((reason.code, reason.subcode));
                    "cancel"
                }
                FabricCommand::Accept { .. } => "accept",
                FabricCommand::Redirect { .. } => "redirect",
                FabricCommand::HangUp { reason, .. } => {
                    heard.reason = Some((reason.code, reason.subcode));
                    "hangUp"
                }
                FabricCommand::SendDtmf { keys, .. } => {
                    heard.tones = Some(keys.clone());
                    "sendDtmf"
                }
                FabricCommand::Play { op_id, prompts, .. } => {
                    (heard.operation_ids, heard.prompts) = (vec![op_id.clone()], prompts.clone());
                    "play"
                }
                FabricCommand::Record { op_id, prompts, .. } => {
                    (heard.operation_ids, heard.prompts) = (vec![op_id.clone()], prompts.clone());
                    "record"
                }
                FabricCommand::StopMedia { op_ids, .. } => {
                    heard.operation_ids = op_ids.clone();
                    "stopMedia"
                }
                FabricCommand::Mute { muted: true, .. } => "mute",
                FabricCommand::Mute { muted: false, .. } => "unmute",
                FabricCommand::HoldMusic {
                    on: true, prompt, ..
                } => {
                    heard.prompts = prompt.iter().cloned().collect();
                    "startHoldMusic"
                }
                FabricCommand::HoldMusic { on: false, .. } => "stopHoldMusic",
            };
            let key = party_key(&c.peer().id);
            // Only configured parties keep a log: an unknown identity cannot fill memory.
            if !self.parties.contains_key(&key) {
                continue;
            }
            let q = log.entry(key).or_default();
            if q.len() == HEARD_PER_PARTY {
                q.pop_front();
            }
            q.push_back(heard);
        }
    }

    fn party(&self, id: &str) -> Option<PartyInfo> {
        self.get(id).map(|p| p.info.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PartyKind;

    fn party(id: &str, kind: PartyKind, behavior: Behavior, after: Option<u64>) -> PartyConfig {
        PartyConfig {
            id: id.into(),
            kind,
            display_name: None,
            behavior,
            answer_after_ms: after,
            record_seconds: None,
            record_wav: None,
            sip_uri: None,
        }
    }

    fn peer(id: &str) -> Peer {
        Peer {
            id: id.into(),
            kind: PartyKind::User,
        }
    }

    #[test]
    fn each_behaviour_dials_as_the_contract_says() {
        let cases = [
            (
                Behavior::Answer,
                DialPlan::Answer {
                    after: Duration::from_millis(200),
                },
            ),
            (Behavior::NoAnswer, DialPlan::Ring),
            (
                Behavior::Reject,
                DialPlan::Fail {
                    after: Duration::from_millis(200),
                    reason: EndReason::DECLINED,
                },
            ),
            (
                Behavior::Busy,
                DialPlan::Fail {
                    after: Duration::from_millis(200),
                    reason: EndReason::BUSY,
                },
            ),
            (
                Behavior::NotFound,
                DialPlan::Fail {
                    after: Duration::ZERO,
                    reason: EndReason::NOT_FOUND,
                },
            ),
            (
                Behavior::Unreachable,
                DialPlan::Fail {
                    after: Duration::ZERO,
                    reason: EndReason::UNREACHABLE,
                },
            ),
            (
                Behavior::Unroutable,
                DialPlan::Fail {
                    after: Duration::ZERO,
                    reason: EndReason::UNROUTABLE,
                },
            ),
            (
                Behavior::PrivateCallingDisabled,
                DialPlan::Fail {
                    after: Duration::ZERO,
                    reason: EndReason::PRIVATE_CALLING_DISABLED,
                },
            ),
        ];
        for (behavior, want) in cases {
            let parties = [party("A-1", PartyKind::User, behavior, Some(200))];
            let f = SimulatedFabric::new(&parties, Clock::real());
            assert_eq!(f.plan(&peer("a-1")), want, "{behavior:?}");
        }
    }

    #[test]
    fn an_unknown_identity_is_not_found() {
        let f = SimulatedFabric::new(&[], Clock::real());
        assert_eq!(
            f.plan(&peer("nobody")),
            DialPlan::Fail {
                after: Duration::ZERO,
                reason: EndReason::NOT_FOUND
            }
        );
    }

    #[test]
    fn phone_numbers_match_in_any_common_spelling() {
        let f = SimulatedFabric::new(
            &[party(
                "+1 555 0100",
                PartyKind::Phone,
                Behavior::Answer,
                None,
            )],
            Clock::real(),
        );
        assert!(f.party("+15550100").is_some());
        assert!(f.party("tel:+1-555-0100").is_some());
        assert!(f.party("+15550101").is_none());
    }
}
