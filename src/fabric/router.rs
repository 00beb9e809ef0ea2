//! Simulated parties and SIP side by side: each party is reached one way. A user with a
//! `sip_uri` goes over SIP; a phone number that a `[[parties]]` entry names stays simulated;
//! any other number goes to the first trunk that carries it; the rest are simulated (an
//! identity nobody configured is `not_found`).

use std::sync::Arc;

use super::simulated::SimulatedFabric;
use super::{DialPlan, Fabric, FabricCommand, PartyInfo};
use crate::domain::Peer;
use crate::sip::SipFabric;

pub struct Router {
    pub simulated: Arc<SimulatedFabric>,
    pub sip: Arc<SipFabric>,
}

impl Router {
    fn over_sip(&self, peer: &Peer) -> bool {
        self.sip.is_sip_user(peer)
            || (self.simulated.get(&peer.id).is_none() && self.sip.reaches(peer))
    }
}

impl Fabric for Router {
    fn plan(&self, target: &Peer) -> DialPlan {
        if self.over_sip(target) {
            DialPlan::Dialog
        } else {
            self.simulated.plan(target)
        }
    }

    fn execute(&self, commands: Vec<FabricCommand>) {
        let (sip, simulated): (Vec<_>, Vec<_>) = commands.into_iter().partition(|c| match c {
            FabricCommand::Dial { via: Some(v), .. } if self.sip.has_leg(v.leg) => true,
            FabricCommand::Dial { peer, .. } => self.over_sip(peer),
            c => self.sip.has_leg(c.leg().leg),
        });
        if !sip.is_empty() {
            self.sip.execute(sip);
        }
        if !simulated.is_empty() {
            self.simulated.execute(simulated);
        }
    }

    fn party(&self, id: &str) -> Option<PartyInfo> {
        self.simulated.party(id)
    }
}
