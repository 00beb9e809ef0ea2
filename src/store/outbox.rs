//! The outbox seam: where the delivery worker takes committed notifications from and records
//! what their POSTs came to.
//!
//! Per call, notifications go out in sequence order, one POST at a time: a call's *head* (the
//! oldest notification not yet delivered or dead) is claimed, POSTed, and its attempts settled,
//! and only then is the next one due. A claim carries a fence; settling with a fence that is no
//! longer the call's (another worker claimed the call since, say after a lease ran out on a
//! store shared by several nodes) changes nothing. On one node, `delivery::queue::LocalOutbox`
//! implements it in memory, fed by the committer's after-commit step.

use async_trait::async_trait;

use super::{AttemptOutcome, OutboxItem, StoreError};
use crate::clock::Timestamp;
use crate::domain::CallId;

/// A call's due head, claimed for one POST: the notifications that go in it (the head, and on
/// a first attempt those right behind it that are due and go to the same URL), and the fence
/// that settles them.
#[derive(Clone, Debug)]
pub struct Claim {
    pub call_id: CallId,
    pub batch: Vec<OutboxItem>,
    pub fence: u64,
}

/// What [`Outbox::claim`] found.
#[derive(Debug, Default)]
pub struct Claimed {
    pub claims: Vec<Claim>,
    /// When the next head not claimed now falls due (`None`: none, or no slot for it).
    pub next_due: Option<Timestamp>,
}

#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Notifications just committed, in commit order. An outbox that reads its store's table
    /// has nothing to do; the local one queues them.
    fn committed(&self, items: Vec<OutboxItem>);
    /// Claims up to `room` calls whose head is due at `now`, at most one POST per call.
    async fn claim(&self, now: Timestamp, room: usize) -> Result<Claimed, StoreError>;
    /// Records what the claim's POST left each of its notifications as, and moves the call on.
    /// Answers `false`, changing nothing, when the claim's fence no longer holds.
    async fn settle(&self, claim: Claim, outcomes: Vec<AttemptOutcome>)
    -> Result<bool, StoreError>;
    /// Records an attempt made outside any claim (a redelivery asked for); the queue does not
    /// move.
    async fn redelivered(&self, outcome: AttemptOutcome) -> Result<(), StoreError>;
    /// Whether some call's head is due at `now`, or a claim is still being attempted.
    async fn has_due(&self, now: Timestamp) -> Result<bool, StoreError>;
    /// Forgets everything queued (the store was emptied); claims in flight no longer settle.
    fn reset(&self);
}
