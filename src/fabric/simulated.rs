//! Simulated parties from the config file. Each answers, declines, is busy or cannot be reached,
//! as its `behavior` says, after `answer_after_ms` on the call clock. An identity that no party
//! names behaves as `not_found`.

use std::collections::HashMap;
use std::time::Duration;

use super::{Behavior, DialPlan, Fabric, PartyInfo};
use crate::config::PartyConfig;
use crate::domain::{EndReason, Peer};

pub struct SimulatedFabric {
    parties: HashMap<String, (PartyInfo, Duration)>,
    order: Vec<String>,
}

pub use crate::domain::call::party_key;

impl SimulatedFabric {
    pub fn new(parties: &[PartyConfig]) -> Self {
        let mut map = HashMap::new();
        let mut order = vec![];
        for p in parties {
            let key = party_key(&p.id);
            let info = PartyInfo {
                id: p.id.clone(),
                kind: p.kind,
                display_name: p.display_name.clone(),
                behavior: p.behavior,
                speech_ms: (p.record_seconds.unwrap_or(3.0).clamp(0.0, 600.0) * 1000.0) as u64,
                record_wav: p.record_wav.clone(),
            };
            let after = Duration::from_millis(p.answer_after_ms.unwrap_or(0));
            if map.insert(key.clone(), (info, after)).is_none() {
                order.push(key);
            }
        }
        SimulatedFabric {
            parties: map,
            order,
        }
    }
}

impl Fabric for SimulatedFabric {
    fn dial(&self, target: &Peer) -> DialPlan {
        let Some((party, after)) = self.parties.get(&party_key(&target.id)) else {
            return DialPlan::Fail {
                after: Duration::ZERO,
                reason: EndReason::NOT_FOUND,
            };
        };
        let fail = |after, reason| DialPlan::Fail { after, reason };
        match party.behavior {
            Behavior::Answer => DialPlan::Answer { after: *after },
            Behavior::NoAnswer => DialPlan::Ring,
            Behavior::Reject => fail(*after, EndReason::DECLINED),
            Behavior::Busy => fail(*after, EndReason::BUSY),
            Behavior::NotFound => fail(Duration::ZERO, EndReason::NOT_FOUND),
            Behavior::Unreachable => fail(Duration::ZERO, EndReason::UNREACHABLE),
            Behavior::Unroutable => fail(Duration::ZERO, EndReason::UNROUTABLE),
            Behavior::PrivateCallingDisabled => {
                fail(Duration::ZERO, EndReason::PRIVATE_CALLING_DISABLED)
            }
        }
    }

    fn party(&self, id: &str) -> Option<PartyInfo> {
        self.parties.get(&party_key(id)).map(|(p, _)| p.clone())
    }

    fn parties(&self) -> Vec<PartyInfo> {
        self.order
            .iter()
            .filter_map(|k| self.parties.get(k).map(|(p, _)| p.clone()))
            .collect()
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
            let f = SimulatedFabric::new(&[party("A-1", PartyKind::User, behavior, Some(200))]);
            assert_eq!(f.dial(&peer("a-1")), want, "{behavior:?}");
        }
    }

    #[test]
    fn an_unknown_identity_is_not_found() {
        let f = SimulatedFabric::new(&[]);
        assert_eq!(
            f.dial(&peer("nobody")),
            DialPlan::Fail {
                after: Duration::ZERO,
                reason: EndReason::NOT_FOUND
            }
        );
    }

    #[test]
    fn phone_numbers_match_in_any_common_spelling() {
        let f = SimulatedFabric::new(&[party(
            "+1 555 0100",
            PartyKind::Phone,
            Behavior::Answer,
            None,
        )]);
        assert!(f.party("+15550100").is_some());
        assert!(f.party("tel:+1-555-0100").is_some());
        assert!(f.party("+15550101").is_none());
    }
}
