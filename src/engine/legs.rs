//! What happens on a party's side of a call: it dials in, presses keys, hangs up.

use super::{AppRef, Engine, EngineError};
use crate::clock::Timestamp;
use crate::domain::call::{Wire, party_key};
use crate::domain::conversation::{Conversation, Emit, Kind, Leg, LegState, Scene, Who};
use crate::domain::{Call, CallId, CallState, ChangeType, Direction, Notice, Peer};
use uuid::Uuid;

impl Engine {
    /// A simulated party calls the app: a call in state `incoming`, notified to `callback_uri`.
    pub async fn dial_in(
        &self,
        app: &AppRef,
        party: Peer,
        display_name: Option<&str>,
        callback_uri: String,
    ) -> Result<Call, EngineError> {
        let now = self.clock.now();
        let mut call = self.new_call(
            app,
            Direction::Incoming,
            CallState::Incoming,
            callback_uri,
            now,
        );
        call.timers.acknowledge_deadline = Some(now + chrono::Duration::seconds(15));
        let caller_pid = Uuid::new_v4();
        let wire = crate::graph::call::incoming(
            (&party, display_name, caller_pid),
            (
                &app.app_id,
                app.display_name.as_deref(),
                call.my_participant_id,
            ),
        );
        call.wire = Wire::from_map(wire);
        let mut conv = Conversation::new(call.id, Kind::PeerToPeer, now);
        conv.add(Self::bot_leg(&call));
        conv.legs
            .push(Leg::new(caller_pid, Who::Party(party), LegState::Ringing));
        let mut scene = Scene::new(conv, vec![call.clone()]);
        let first = Notice {
            change: ChangeType::Created,
            state: CallState::Incoming,
        };
        scene.emit(call.id, Emit::State(first));
        let st = self.write_state().await?;
        Self::admit(&st, app)?;
        self.insert(st, app, scene).await.map(|_| call)
    }

    /// A party presses keys in its current call(s). Returns the calls that heard them.
    pub async fn party_tones(
        &self,
        party_id: &str,
        keys: &str,
    ) -> Result<Vec<CallId>, EngineError> {
        let key = party_key(party_id);
        let mut heard = vec![];
        for conv in self.conversations_of(&key).await? {
            let keys = keys.to_string();
            let key = key.clone();
            let calls = self
                .update_conversation(conv, move |s, now, _| {
                    let joined = s
                        .conversation
                        .party_legs(&key)
                        .any(|i| s.conversation.legs[i].state == LegState::Connected);
                    let mut heard = vec![];
                    if !joined {
                        return Ok(heard);
                    }
                    let bots: Vec<CallId> = s.conversation.bot_calls().collect();
                    for id in bots {
                        let Some(c) = s.call_mut(id).filter(|c| c.state == CallState::Established)
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
                            s.emit(id, e);
                        }
                        heard.push(id);
                    }
                    Ok(heard)
                })
                .await?;
            heard.extend(calls);
        }
        Ok(heard)
    }

    /// A party hangs up every call leg it is in. Returns the bots' calls that ended.
    pub async fn party_hang_up(&self, party_id: &str) -> Result<Vec<CallId>, EngineError> {
        let key = party_key(party_id);
        let mut ended = vec![];
        for conv in self.conversations_of(&key).await? {
            let key = key.clone();
            let calls = self
                .update_conversation(conv, move |s, now, r| {
                    s.party_hangs_up(&key, now, r);
                    Ok(s.calls
                        .iter()
                        .filter(|c| !c.state.is_live())
                        .map(|c| c.id)
                        .collect::<Vec<_>>())
                })
                .await?;
            ended.extend(calls);
        }
        Ok(ended)
    }

    /// The live conversations a party is in, oldest first.
    pub(super) async fn conversations_of(&self, key: &str) -> Result<Vec<CallId>, EngineError> {
        let st = self.read_state().await?;
        let mut found: Vec<(Timestamp, CallId)> = st
            .conversations
            .values()
            .filter(|c| c.has_party(key))
            .map(|c| (c.created_at, c.id))
            .collect();
        found.sort();
        let ticket = self.committer.last_ticket();
        drop(st);
        self.settled(found.into_iter().map(|(_, id)| id).collect(), ticket)
            .await
    }
}
