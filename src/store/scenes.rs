//! The scene seam: how a change reads what it changes, and hands the result over for commit.
//!
//! A change begins a [`SceneTx`], loads the conversations it changes with their bots' live calls
//! as domain [`Scene`]s, lets the domain change them, and stages them in one go: the change is
//! durable once the returned [`Pending`] settles. While a transaction is open, no other change
//! loads what it loaded. On one node, `engine::state` implements it over the live registry in
//! memory and the group committer (one change at a time); a store shared by several nodes
//! implements it over its tables (rows locked until the commit, a version checked).

use std::sync::Arc;

use async_trait::async_trait;

use super::StoreError;
use super::committer::Pending;
use crate::clock::Timestamp;
use crate::domain::CallId;
use crate::domain::conversation::Scene;

/// What a change needs to know of a call before it loads its conversation.
#[derive(Clone, Debug)]
pub struct CallRef {
    pub conversation: CallId,
    pub app_id: Arc<str>,
    /// Not yet terminated.
    pub live: bool,
}

#[async_trait]
pub trait SceneTx: Send {
    /// A live call: its conversation and owner.
    async fn call(&mut self, id: CallId) -> Result<Option<CallRef>, StoreError>;
    /// A conversation with its bots' live calls, to change.
    async fn scene(&mut self, conversation: CallId) -> Result<Option<Scene>, StoreError>;
    /// How many live calls an app has (admission before anything rings).
    async fn live_calls(&mut self, app_id: &str) -> Result<usize, StoreError>;
    /// A configured meeting's conversation and passcode.
    async fn meeting(
        &mut self,
        join_meeting_id: &str,
    ) -> Result<Option<(CallId, Option<String>)>, StoreError>;
    /// The conversations with something due at `now` (a timer, a ring, an operation).
    async fn due(&mut self, now: Timestamp) -> Result<Vec<CallId>, StoreError>;
    /// Stages the changed scenes as one change (`admitted`: the apps of new calls among them,
    /// one entry per call) and ends the transaction.
    fn stage(self: Box<Self>, scenes: Vec<Scene>, admitted: &[&str]) -> Pending;
}
