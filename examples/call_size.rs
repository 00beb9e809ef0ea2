//! Measures the heap a live call takes in the engine's maps, exactly (a counting allocator
//! around 10,000 calls built as `Engine::create_call` builds them). The benchmark measures RSS;
//! this says what of it is the call itself. Run: `cargo run --release --example call_size`.

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
    let mut calls = std::collections::HashMap::new(); // as the engine holds them: boxed
    let mut timers = std::collections::BTreeSet::new();
    for _ in 0..n {
        let call = sample_call(&body);
        timers.insert((call.next_due(), call.id));
        calls.insert(call.id, Box::new(call));
    }
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "heap per live call in the engine's maps: {} bytes",
        (after - before) / n
    );
    println!(
        "of which the Call struct itself: {} bytes",
        std::mem::size_of::<switchboard::domain::Call>()
    );
}

/// A call as `Engine::create_call` builds it for an answered P2P call.
fn sample_call(body: &serde_json::Value) -> switchboard::domain::Call {
    use switchboard::domain::call::{PeerLeg, Timers, Wire};
    use switchboard::domain::ids::new_guid;
    use switchboard::domain::{Call, CallId, CallState, Direction, PartyKind, Peer};
    let req = switchboard::graph::call::parse_create(body).unwrap();
    let now = chrono::Utc::now();
    let pid = new_guid();
    let mut wire = req.wire;
    let source = switchboard::graph::call::fill_source(
        wire.get("source"),
        "1a2b3c4d-0000-4000-8000-00000000000a",
        Some("Bot"),
        &pid,
    );
    wire.insert("source".into(), source);
    Call {
        id: CallId::new(),
        app_id: "1a2b3c4d-0000-4000-8000-00000000000a".into(),
        tenant_id: "8e4c2a5b-6f0d-4c1e-9a3b-2d7f1e0c9b11".into(),
        direction: Direction::Outgoing,
        state: CallState::Established,
        result: None,
        callback_uri: req.callback_uri,
        my_participant_id: pid,
        call_chain_id: new_guid(),
        peer: Peer {
            id: "5e9f0000-0000-4000-8000-000000000001".into(),
            kind: PartyKind::User,
        },
        created_at: now,
        version: 2,
        timers: Timers {
            keep_alive_deadline: Some(now),
            ..Timers::default()
        },
        wire: Wire::from_map(wire),
        app_hosted_media: false,
        peer_leg: PeerLeg {
            state: Some(CallState::Established),
            ..PeerLeg::default()
        },
        pending_dial: None,
        operations: vec![],
        tone_subscribed: false,
        tone_sequence: 0,
        muted: false,
    }
}
