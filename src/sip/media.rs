//! A SIP leg's media over RTP: one UDP socket per leg, bound before the SDP names its port.
//!
//! What arrives: RTP from the peer (the first source seen is where we send, symmetric RTP),
//! telephone events (RFC 4733) reported as keys once each, and silence watched: no packet for
//! the media timeout while the call is not on hold is reported once. What leaves: DTMF as
//! telephone events. RTCP and anything else on the port is read and dropped.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::rtp::{Event, Header};
use super::sdp::Remote;

/// What the media of a leg reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// The far end pressed a key (one RFC 4733 event, however often its packets repeat).
    Key(char),
    /// No RTP for the media timeout while not on hold.
    Silent,
}

/// Where the fabric hears what a leg's media reports.
pub type OnHeard = Arc<dyn Fn(Heard) + Send + Sync>;

/// What the peer's session description says about its media.
#[derive(Clone, Debug)]
struct Peer {
    address: Option<SocketAddr>,
    /// The payload type the peer uses for telephone events (what it offered or answered).
    telephone_event: Option<u8>,
    hold: bool,
}

struct State {
    peer: Option<Peer>,
    /// The source the peer's RTP came from (symmetric RTP), once seen.
    latched: Option<SocketAddr>,
    last_rx: Instant,
    /// The media started (the call connected): silence counts from then.
    running: bool,
    silent_reported: bool,
}

enum Out {
    Dtmf { keys: String, gap_ms: u64 },
}

/// One leg's RTP.
pub struct Media {
    pub port: u16,
    state: Arc<Mutex<State>>,
    out: mpsc::UnboundedSender<Out>,
    stop: CancellationToken,
}

/// How long one DTMF key is sent, and how often its packets go.
const KEY_MS: u32 = 100;
const PACKET_MS: u32 = 20;

impl Media {
    /// Binds the leg's port on `ip` and starts reading it; nothing is reported before
    /// [`Media::start`].
    pub async fn bind(
        ip: IpAddr,
        timeout: Duration,
        on_heard: OnHeard,
        parent: &CancellationToken,
    ) -> std::io::Result<Media> {
        let socket = Arc::new(UdpSocket::bind((ip, 0)).await?);
        let port = socket.local_addr()?.port();
        let stop = parent.child_token();
        let state = Arc::new(Mutex::new(State {
            peer: None,
            latched: None,
            last_rx: Instant::now(),
            running: false,
            silent_reported: false,
        }));
        let (out, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(receive(
            socket.clone(),
            state.clone(),
            timeout,
            on_heard,
            stop.clone(),
        ));
        tokio::spawn(send(socket, state.clone(), out_rx, stop.clone()));
        Ok(Media {
            port,
            state,
            out,
            stop,
        })
    }

    /// The call connected with the peer described by `remote`: silence counts from now.
    pub fn start(&self, remote: &Remote) {
        let mut st = self.state.lock().expect("media lock");
        st.peer = Some(peer_of(remote));
        st.running = true;
        st.last_rx = Instant::now();
    }

    /// The peer offered (or answered) anew: its address, codec or direction changed.
    pub fn update(&self, remote: &Remote) {
        let mut st = self.state.lock().expect("media lock");
        let was_hold = st.peer.as_ref().is_some_and(|p| p.hold);
        let peer = peer_of(remote);
        if was_hold && !peer.hold {
            // Back from hold: silence counts from now.
            st.last_rx = Instant::now();
        }
        st.peer = Some(peer);
    }

    /// Sends these keys as telephone events, `gap_ms` apart.
    pub fn send_dtmf(&self, keys: &str, gap_ms: u64) {
        let _ = self.out.send(Out::Dtmf {
            keys: keys.to_string(),
            gap_ms,
        });
    }
}

impl Drop for Media {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn peer_of(remote: &Remote) -> Peer {
    Peer {
        address: remote.address.map(|(ip, port)| SocketAddr::new(ip, port)),
        telephone_event: remote.telephone_event,
        hold: remote.direction.is_hold(),
    }
}

async fn receive(
    socket: Arc<UdpSocket>,
    state: Arc<Mutex<State>>,
    timeout: Duration,
    on_heard: OnHeard,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 2048];
    // Events already reported, by (SSRC, timestamp): end packets repeat, and some senders
    // reuse timestamps under a new SSRC.
    let mut seen: VecDeque<(u32, u32)> = VecDeque::with_capacity(64);
    let mut tick = tokio::time::interval(Duration::from_millis(250).min(timeout));
    loop {
        let (n, from) = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let silent = {
                    let mut st = state.lock().expect("media lock");
                    let hold = st.peer.as_ref().is_some_and(|p| p.hold);
                    let silent = st.running && !hold && !st.silent_reported
                        && st.last_rx.elapsed() >= timeout;
                    st.silent_reported |= silent;
                    silent
                };
                if silent {
                    on_heard(Heard::Silent);
                }
                continue;
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        let Some((header, payload)) = Header::parse(&buf[..n]) else {
            continue;
        };
        let telephone_event = {
            let mut st = state.lock().expect("media lock");
            st.last_rx = Instant::now();
            st.latched.get_or_insert(from);
            st.peer.as_ref().and_then(|p| p.telephone_event)
        };
        if Some(header.payload_type) != telephone_event {
            continue;
        }
        let Some(event) = Event::parse(payload).filter(|e| e.end) else {
            continue;
        };
        let id = (header.ssrc, header.timestamp);
        if seen.contains(&id) {
            continue;
        }
        if seen.len() == 64 {
            seen.pop_front();
        }
        seen.push_back(id);
        if let Some(key) = event.key() {
            on_heard(Heard::Key(key));
        }
    }
}

async fn send(
    socket: Arc<UdpSocket>,
    state: Arc<Mutex<State>>,
    mut out: mpsc::UnboundedReceiver<Out>,
    stop: CancellationToken,
) {
    let ssrc: u32 = rand::random();
    let mut sequence: u16 = rand::random();
    let start: u32 = rand::random();
    let epoch = Instant::now();
    // The timestamp follows the media clock: 8000 units per second since the stream began.
    let now_ts =
        |at: Instant| start.wrapping_add((at.duration_since(epoch).as_millis() as u32) * 8);
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = out.recv() => match next {
                Some(n) => n,
                None => return,
            },
        };
        let Out::Dtmf { keys, gap_ms } = next;
        for key in keys.chars() {
            let Some(event) = Event::for_key(key) else {
                continue;
            };
            let (dest, pt) = {
                let st = state.lock().expect("media lock");
                let peer = st.peer.as_ref();
                (
                    st.latched.or(peer.and_then(|p| p.address)),
                    peer.and_then(|p| p.telephone_event),
                )
            };
            let (Some(dest), Some(pt)) = (dest, pt) else {
                // No telephone-event negotiated: nothing can carry the key.
                break;
            };
            let timestamp = now_ts(Instant::now());
            let packets = KEY_MS / PACKET_MS;
            let mut ticker = tokio::time::interval(Duration::from_millis(u64::from(PACKET_MS)));
            for i in 0..packets + 2 {
                ticker.tick().await;
                let end = i + 1 >= packets;
                let e = Event {
                    event,
                    end,
                    volume: 10,
                    duration: ((i.min(packets - 1) + 1) * PACKET_MS * 8) as u16,
                };
                let h = Header {
                    marker: i == 0,
                    payload_type: pt,
                    sequence,
                    timestamp,
                    ssrc,
                };
                sequence = sequence.wrapping_add(1);
                if stop.is_cancelled() {
                    return;
                }
                let _ = socket.send_to(&h.packet(&e.payload()), dest).await;
            }
            tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        }
    }
}
