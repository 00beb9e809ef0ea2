//! Measures the heap a live call takes in the engine's maps, exactly (a counting allocator
//! around 10,000 calls built as `Engine::create_call` builds them). The benchmark measures RSS;
//! this says what of it is the call itself. Run: `cargo run --release --example call_size`.

#![allow(
    unsafe_code,
    reason = "a counting allocator implements GlobalAlloc, an unsafe trait; it forwards to System"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    // SAFETY: forwards to the system allocator; only counts bytes.
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    let body = serde_json::json!({
        "@odata.type": "#microsoft.graph.call",
        "callbackUri": "http://127.0.0.1:9000/api/calls/bot-1",
        "targets": [{"@odata.type": "#microsoft.graph.invitationParticipantInfo",
                     "identity": {"@odata.type": "#microsoft.graph.identitySet",
                                  "user": {"@odata.type": "#microsoft.graph.identity", "id": "5e9f0000-0000-4000-8000-000000000001", "displayName": "Alice"}}}],
        "requestedModalities": ["audio"],
        "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
        "tenantId": "8e4c2a5b-6f0d-4c1e-9a3b-2d7f1e0c9b11",
    });
    let n = 10_000;
    let before = LIVE.load(Ordering::Relaxed);
    // As the engine holds them: boxed calls and conversations, one timer entry per conversation
    // (in both directions: by time, and the due time by conversation).
    let mut calls = std::collections::HashMap::new();
    let mut conversations = std::collections::HashMap::new();
    let mut due = std::collections::HashMap::new();
    // The engine shares one copy of each app and tenant id among their calls.
    let shared = sample_call(&body).0;
    let mut timers = std::collections::BTreeSet::new();
    for _ in 0..n {
        let (mut call, mut conversation) = sample_call(&body);
        call.app_id = shared.app_id.clone();
        call.tenant_id = shared.tenant_id.clone();
        conversation.compact();
        if let Some(t) = call.next_due() {
            due.insert(conversation.id, t);
        }
        timers.insert((call.next_due(), conversation.id));
        conversations.insert(conversation.id, Box::new(conversation));
        calls.insert(call.id, Box::new(call));
    }
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "heap per live call in the engine's maps: {} bytes",
        (after - before) / n
    );
    println!(
        "of which the Call struct itself: {} bytes, its Conversation {} bytes, a Leg {} bytes",
        std::mem::size_of::<switchboard::domain::Call>(),
        std::mem::size_of::<switchboard::domain::conversation::Conversation>(),
        std::mem::size_of::<switchboard::domain::conversation::Leg>(),
    );
}

/// A call as `Engine::create_call` builds it for an answered P2P call, with its conversation.
fn sample_call(
    body: &serde_json::Value,
) -> (
    switchboard::domain::Call,
    switchboard::domain::conversation::Conversation,
) {
    use switchboard::domain::call::Wire;
    use switchboard::domain::conversation::{Conversation, Kind, Leg, LegState, Who};
    use switchboard::domain::{Call, CallState, Direction, PartyKind, Peer};
    let req = switchboard::graph::call::parse_create(body).unwrap();
    let now = chrono::Utc::now();
    let app = "1a2b3c4d-0000-4000-8000-00000000000a";
    let mut call = Call::new(
        app,
        "8e4c2a5b-6f0d-4c1e-9a3b-2d7f1e0c9b11",
        Direction::Outgoing,
        CallState::Established,
        req.callback_uri.clone(),
        now,
    );
    call.version = 2;
    call.timers.keep_alive_deadline = Some(now);
    let mut wire = req.wire;
    let source = switchboard::graph::call::fill_source(
        wire.get("source"),
        app,
        Some("Bot"),
        &call.my_participant_id.to_string(),
    );
    wire.insert("source".into(), source);
    call.wire = Wire::from_map(wire);
    let mut conversation = Conversation::new(call.id, Kind::PeerToPeer, now);
    let bot = Who::Bot { call_id: call.id };
    let me = call.my_participant_id;
    conversation.add(Leg::new(me, bot, LegState::Connected));
    let alice = Peer {
        id: "5e9f0000-0000-4000-8000-000000000001".into(),
        kind: PartyKind::User,
    };
    conversation.add(Leg::new(
        uuid::Uuid::new_v4(),
        Who::Party(alice),
        LegState::Connected,
    ));
    (call, conversation)
}
