//! A SIP leg's media over RTP: one UDP socket per leg, bound before the SDP names its port.
//!
//! What arrives: RTP from the peer (the first source seen is where we send, symmetric RTP),
//! telephone events (RFC 4733) reported as keys once each, and silence watched: no packet for
//! the media timeout while the call is not on hold is reported once. What leaves: prompts as
//! G.711 in 20 ms packets, paced by a timer whose timestamps follow the sample count; DTMF as
//! telephone events. RTCP and anything else on the port is read and dropped.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::rtp::{Event, Header, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};
use super::sdp::{Codec, Remote};
use crate::media::recordings::Capture;

/// What the media of a leg reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    /// The last packet of operation `op`'s prompts left.
    Played(String),
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
    codec: Codec,
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
    recording: Option<Recording>,
}

/// A recording in progress: what the peer sends from `from` until `until` or a stop key.
struct Recording {
    capture: Capture,
    from: Instant,
    until: Instant,
    stop_keys: Vec<char>,
}

enum Out {
    Dtmf {
        keys: String,
        gap_ms: u64,
    },
    /// Play these samples (8 kHz) after what is queued, for operation `op`.
    Play {
        op: String,
        samples: Arc<Vec<i16>>,
    },
    /// Stop these operations' prompts.
    Stop {
        ops: Vec<String>,
    },
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
        (min, max): (u16, u16),
        timeout: Duration,
        on_heard: OnHeard,
        parent: &CancellationToken,
    ) -> std::io::Result<Media> {
        let socket = Arc::new(bind_in(ip, min, max).await?);
        let port = socket.local_addr()?.port();
        let stop = parent.child_token();
        let state = Arc::new(Mutex::new(State {
            peer: None,
            latched: None,
            last_rx: Instant::now(),
            running: false,
            silent_reported: false,
            recording: None,
        }));
        let (out, out_rx) = mpsc::unbounded_channel();
        let on_heard_out = on_heard.clone();
        tokio::spawn(receive(
            socket.clone(),
            state.clone(),
            timeout,
            on_heard,
            stop.clone(),
        ));
        tokio::spawn(send(
            socket,
            state.clone(),
            out_rx,
            on_heard_out,
            stop.clone(),
        ));
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

    /// Plays `samples` (8 kHz) after what is queued, as operation `op`.
    pub fn play(&self, op: &str, samples: Arc<Vec<i16>>) {
        let _ = self.out.send(Out::Play {
            op: op.to_string(),
            samples,
        });
    }

    /// Stops these operations' prompts at once.
    pub fn stop_ops(&self, ops: Vec<String>) {
        let _ = self.out.send(Out::Stop { ops });
    }

    /// Records what the peer sends into `capture`, from `after` on, for at most `max`, until
    /// one of `stop_tones` (`#`, `pound`, `tone1`, ...) is pressed.
    pub fn record(
        &self,
        capture: Capture,
        after: Duration,
        max: Duration,
        stop_tones: Vec<String>,
    ) {
        let from = Instant::now() + after;
        let stop_keys = stop_tones
            .iter()
            .filter_map(|t| {
                let mut c = t.chars();
                match (c.next(), c.next()) {
                    (Some(k), None) => Some(k.to_ascii_uppercase()),
                    _ => crate::domain::operation::tone_key(t),
                }
            })
            .collect();
        self.state.lock().expect("media lock").recording = Some(Recording {
            capture,
            from,
            until: from + max,
            stop_keys,
        });
    }

    /// Whether the peer negotiated telephone events.
    pub fn has_telephone_event(&self) -> bool {
        let st = self.state.lock().expect("media lock");
        st.peer
            .as_ref()
            .is_some_and(|p| p.telephone_event.is_some())
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

/// A UDP socket on `ip`: on a free even port between `min` and `max` (RTP's convention leaves
/// the odd one above for RTCP), or on any free port when both are 0.
async fn bind_in(ip: IpAddr, min: u16, max: u16) -> std::io::Result<UdpSocket> {
    if min == 0 && max == 0 {
        return UdpSocket::bind((ip, 0)).await;
    }
    let base = u32::from(min).div_ceil(2) * 2;
    let evens = (u32::from(max).saturating_sub(base)) / 2 + 1;
    let first: u32 = rand::random::<u32>() % evens;
    for k in 0..evens {
        let port = base + 2 * ((first + k) % evens);
        if port > u32::from(max) {
            continue;
        }
        if let Ok(s) = UdpSocket::bind((ip, port as u16)).await {
            return Ok(s);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("every RTP port from {min} to {max} is taken"),
    ))
}

fn peer_of(remote: &Remote) -> Peer {
    Peer {
        address: remote.address.map(|(ip, port)| SocketAddr::new(ip, port)),
        codec: remote.codec.unwrap_or(Codec::Pcmu),
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
            let now = Instant::now();
            st.last_rx = now;
            st.latched.get_or_insert(from);
            let codec = st.peer.as_ref().map(|p| p.codec);
            if st.recording.as_ref().is_some_and(|r| now >= r.until) {
                st.recording = None;
            }
            if let (Some(r), Some(codec)) = (&st.recording, codec)
                && now >= r.from
                && header.payload_type == codec.payload_type()
            {
                let mut samples = r.capture.lock().expect("capture lock");
                match codec {
                    Codec::Pcmu => samples.extend(payload.iter().map(|&b| ulaw_decode(b))),
                    Codec::Pcma => samples.extend(payload.iter().map(|&b| alaw_decode(b))),
                }
            }
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
            {
                let mut st = state.lock().expect("media lock");
                if st
                    .recording
                    .as_ref()
                    .is_some_and(|r| r.stop_keys.contains(&key))
                {
                    st.recording = None;
                }
            }
            on_heard(Heard::Key(key));
        }
    }
}

/// A prompt being played.
struct Playing {
    op: String,
    samples: Arc<Vec<i16>>,
    at: usize,
}

/// The sending side of a leg's RTP: its SSRC, sequence and media clock.
struct Sender {
    socket: Arc<UdpSocket>,
    state: Arc<Mutex<State>>,
    ssrc: u32,
    sequence: u16,
    start: u32,
    epoch: Instant,
    /// The timestamp of the next audio packet, while a talkspurt goes on.
    next_ts: Option<u32>,
    on_heard: OnHeard,
}

impl Sender {
    /// The timestamp of the media clock now: 8000 units per second since the stream began.
    fn now_ts(&self) -> u32 {
        let ms = Instant::now().duration_since(self.epoch).as_millis() as u32;
        self.start.wrapping_add(ms.wrapping_mul(8))
    }

    /// Where to send, and the peer's codec and telephone-event type.
    fn peer(&self) -> Option<(SocketAddr, Codec, Option<u8>)> {
        let st = self.state.lock().expect("media lock");
        let peer = st.peer.as_ref()?;
        let dest = st.latched.or(peer.address)?;
        Some((dest, peer.codec, peer.telephone_event))
    }

    async fn send(&mut self, header: Header, payload: &[u8], dest: SocketAddr) {
        let packet = header.packet(payload);
        self.sequence = self.sequence.wrapping_add(1);
        let _ = self.socket.send_to(&packet, dest).await;
    }

    /// One 20 ms frame of the prompt at the head of `queue`; the prompt leaves the queue once
    /// its last frame is sent.
    async fn frame(&mut self, queue: &mut VecDeque<Playing>) {
        let Some(p) = queue.front_mut() else { return };
        let end = (p.at + FRAME).min(p.samples.len());
        let mut pcm = p.samples[p.at..end].to_vec();
        pcm.resize(FRAME, 0);
        p.at = end;
        let finished = (p.at >= p.samples.len()).then(|| p.op.clone());
        let Some((dest, codec, _)) = self.peer() else {
            if let Some(op) = finished {
                self.done(queue, op);
            }
            return;
        };
        let payload: Vec<u8> = match codec {
            Codec::Pcmu => pcm.iter().map(|&s| ulaw_encode(s)).collect(),
            Codec::Pcma => pcm.iter().map(|&s| alaw_encode(s)).collect(),
        };
        let (marker, timestamp) = match self.next_ts {
            Some(ts) => (false, ts),
            None => (true, self.now_ts()),
        };
        self.next_ts = Some(timestamp.wrapping_add(FRAME as u32));
        let h = Header {
            marker,
            payload_type: codec.payload_type(),
            sequence: self.sequence,
            timestamp,
            ssrc: self.ssrc,
        };
        self.send(h, &payload, dest).await;
        if let Some(op) = finished {
            self.done(queue, op);
        }
    }

    /// The prompt at the head of `queue` is over; once the operation has nothing more queued,
    /// it is played out.
    fn done(&self, queue: &mut VecDeque<Playing>, op: String) {
        queue.pop_front();
        if !queue.iter().any(|p| p.op == op) {
            (self.on_heard)(Heard::Played(op));
        }
    }

    /// Sends each key as a telephone event (100 ms, three end packets), `gap_ms` apart.
    async fn dtmf(&mut self, keys: &str, gap_ms: u64, stop: &CancellationToken) {
        for key in keys.chars() {
            let Some(event) = Event::for_key(key) else {
                continue;
            };
            let Some((dest, _, Some(pt))) = self.peer() else {
                // No telephone-event negotiated: nothing can carry the key.
                return;
            };
            let timestamp = self.now_ts();
            let packets = KEY_MS / PACKET_MS;
            let mut ticker = tokio::time::interval(Duration::from_millis(u64::from(PACKET_MS)));
            for i in 0..packets + 2 {
                ticker.tick().await;
                if stop.is_cancelled() {
                    return;
                }
                let e = Event {
                    event,
                    end: i + 1 >= packets,
                    volume: 10,
                    duration: ((i.min(packets - 1) + 1) * PACKET_MS * 8) as u16,
                };
                let h = Header {
                    marker: i == 0,
                    payload_type: pt,
                    sequence: self.sequence,
                    timestamp,
                    ssrc: self.ssrc,
                };
                self.send(h, &e.payload(), dest).await;
            }
            tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        }
        // Audio after the keys starts a new talkspurt.
        self.next_ts = None;
    }
}

/// Samples per 20 ms packet at 8 kHz.
const FRAME: usize = 160;

async fn send(
    socket: Arc<UdpSocket>,
    state: Arc<Mutex<State>>,
    mut out: mpsc::UnboundedReceiver<Out>,
    on_heard: OnHeard,
    stop: CancellationToken,
) {
    let mut s = Sender {
        socket,
        state,
        ssrc: rand::random(),
        sequence: rand::random(),
        start: rand::random(),
        epoch: Instant::now(),
        next_ts: None,
        on_heard,
    };
    let mut queue: VecDeque<Playing> = VecDeque::new();
    // A 20 ms clock; after a stall it catches up (tokio's default), never more.
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    loop {
        let next = if queue.is_empty() {
            s.next_ts = None;
            tokio::select! {
                _ = stop.cancelled() => return,
                next = out.recv() => next,
            }
        } else {
            tokio::select! {
                _ = stop.cancelled() => return,
                next = out.recv() => next,
                _ = ticker.tick() => {
                    s.frame(&mut queue).await;
                    continue;
                }
            }
        };
        match next {
            None => return,
            Some(Out::Dtmf { keys, gap_ms }) => s.dtmf(&keys, gap_ms, &stop).await,
            Some(Out::Play { op, samples }) => {
                if queue.is_empty() {
                    ticker.reset_immediately();
                }
                queue.push_back(Playing { op, samples, at: 0 });
            }
            Some(Out::Stop { ops }) => queue.retain(|p| !ops.contains(&p.op)),
        }
    }
}
