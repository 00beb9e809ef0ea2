//! A SIP leg's media over RTP: one UDP socket per leg, bound before the SDP names its port.
//!
//! What arrives: RTP from the peer (the first source seen is where we send, symmetric RTP),
//! telephone events (RFC 4733) reported as keys once each, and silence watched: no packet for
//! the media timeout while the call is not on hold is reported once, and what a recording
//! hears (decoded, with the energy of each packet telling speech from silence). What leaves:
//! prompts as G.711 in 20 ms packets, paced by a timer whose timestamps follow the sample
//! count, a beep before a recording, hold music while the party is held, nothing from a muted
//! bot; DTMF as telephone events. RTCP and anything else on the port is read and dropped.
//!
//! Prompts, beeps and recordings queue in the order the bots asked for them: a recording
//! starts once everything before it has been sent, and what comes after waits for its end.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::rtp::{Event, Header, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};
use super::sdp::{Codec, Remote};
use crate::domain::fabric::Listen;
use crate::domain::operation::{MediaEnd, RecordEnd, tone_key};
use crate::domain::{CallId, EndReason};
use crate::media::recordings::Capture;

/// What the media of a leg reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    /// Operation `op` is over on this line: its last packet left, a prompt could not be
    /// played, or its recording ended.
    Done(String, MediaEnd),
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

/// A recording in progress: what the peer sends from `from` on, until the sender ends it.
struct Recording {
    capture: Capture,
    from: Instant,
    stop_keys: Vec<char>,
    /// When a packet last carried speech (`None`: none yet).
    last_voice: Option<Instant>,
    /// A stop key was pressed.
    stopped: bool,
    /// What it holds at most: its maximum duration's worth.
    max_samples: usize,
}

/// A packet whose samples' RMS reaches this carries speech (about -40 dBFS); below it is
/// silence, line noise or comfort noise.
const VOICE_RMS: f64 = 330.0;

/// A prompt's audio, once fetched: its samples at 8 kHz, or what its operation fails with.
pub type Audio = Result<Arc<Vec<i16>>, EndReason>;

/// A bot's media operation for a leg's queue: its prompts (each arriving when fetched), then,
/// for a recording, a beep and the recording itself.
pub struct Queued {
    pub op: String,
    /// The call of the bot that asked for it.
    pub call: CallId,
    /// Its end is told (false: another line of the call carries the operation).
    pub report: bool,
    pub prompts: Vec<oneshot::Receiver<Audio>>,
    /// The prompts play over and over.
    pub looped: bool,
    /// A recording after the prompts, into its capture.
    pub listen: Option<(Listen, Capture)>,
    /// That bot is muted now.
    pub muted: bool,
}

enum Out {
    Dtmf {
        keys: String,
        gap_ms: u64,
    },
    Queue(Queued),
    /// Stop these operations' prompts and recordings.
    Stop {
        ops: Vec<String>,
    },
    Mute {
        call: CallId,
        muted: bool,
    },
    /// Hold music starts (this audio, else our own) or stops, as asked for with this ticket
    /// (an older ticket's answer, its audio fetched late, changes nothing).
    HoldMusic(u64, Option<Option<Arc<Vec<i16>>>>),
}

/// One leg's RTP.
pub struct Media {
    pub port: u16,
    state: Arc<Mutex<State>>,
    out: mpsc::UnboundedSender<Out>,
    stop: CancellationToken,
    hold_tickets: std::sync::atomic::AtomicU64,
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
            hold_tickets: std::sync::atomic::AtomicU64::new(0),
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

    /// Queues a bot's media operation after what is queued.
    pub fn queue(&self, op: Queued) {
        let _ = self.out.send(Out::Queue(op));
    }

    /// Stops these operations' prompts and recordings at once.
    pub fn stop_ops(&self, ops: Vec<String>) {
        let _ = self.out.send(Out::Stop { ops });
    }

    /// The bot of call `call` is muted (or not): what it plays is not sent.
    pub fn mute(&self, call: CallId, muted: bool) {
        let _ = self.out.send(Out::Mute { call, muted });
    }

    /// A ticket for a hold-music change, taken when it is asked for (its audio may take a
    /// while to fetch): only the newest ticket's change counts.
    pub fn hold_ticket(&self) -> u64 {
        self.hold_tickets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// Hold music starts (`audio`, else our own) or stops, as asked for with `ticket`: while it
    /// plays the party hears it, looped, instead of the bots.
    pub fn hold_music(&self, ticket: u64, on: bool, audio: Option<Arc<Vec<i16>>>) {
        let _ = self.out.send(Out::HoldMusic(ticket, on.then_some(audio)));
    }

    /// The party pressed `key` by other means than RFC 4733 (SIP INFO): a recording it is a
    /// stop key of ends.
    pub fn pressed(&self, key: char) {
        stop_key(&self.state, key);
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

/// `key` was pressed: a recording it is a stop key of ends.
fn stop_key(state: &Mutex<State>, key: char) {
    let mut st = state.lock().expect("media lock");
    if let Some(r) = st.recording.as_mut().filter(|r| r.stop_keys.contains(&key)) {
        r.stopped = true;
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
            let latched = st.latched;
            if let (Some(r), Some(codec)) = (&mut st.recording, codec)
                && !r.stopped
                && header.payload_type == codec.payload_type()
                && latched == Some(from)
            {
                let pcm: Vec<i16> = match codec {
                    Codec::Pcmu => payload.iter().map(|&b| ulaw_decode(b)).collect(),
                    Codec::Pcma => payload.iter().map(|&b| alaw_decode(b)).collect(),
                };
                if rms(&pcm) >= VOICE_RMS {
                    r.last_voice = Some(now);
                }
                // Never more than the recording's maximum, however fast packets come.
                let mut samples = r.capture.lock().expect("capture lock");
                let room = r.max_samples.saturating_sub(samples.len());
                samples.extend(pcm.into_iter().take(room));
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
            stop_key(&state, key);
            on_heard(Heard::Key(key));
        }
    }
}

/// What a queued operation does next.
enum Part {
    /// A prompt: its audio once fetched (`pending` until then), sent from sample `at`.
    Prompt {
        pending: Option<oneshot::Receiver<Audio>>,
        audio: Arc<Vec<i16>>,
        at: usize,
    },
    /// A recording, `started` once everything before it was sent.
    Record {
        listen: Listen,
        capture: Capture,
        started: Option<Instant>,
    },
}

/// One part of a bot's media operation, in the leg's queue.
struct Item {
    op: String,
    call: CallId,
    /// Its operation's end is told (false: another line carries it).
    report: bool,
    looped: bool,
    part: Part,
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
    /// Bots (by call) that are muted.
    muted: HashSet<CallId>,
    /// Hold music and where it is, while it plays.
    music: Option<(Arc<Vec<i16>>, usize)>,
    /// Keys being sent, a step a tick.
    keys: VecDeque<KeyStep>,
    /// The timestamp of the key being sent.
    key_ts: u32,
}

/// One 20 ms step of sending keys.
#[derive(Clone, Copy)]
enum KeyStep {
    /// Packet `i` of a key's telephone event.
    Event { event: u8, i: u32 },
    /// A tick of the gap between keys.
    Gap,
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

    /// One 20 ms tick: the queue moves on by a frame (prompts advance, recordings start or
    /// end), and the frame the party hears is sent: hold music while it plays, else the
    /// prompt's, unless its bot is muted.
    async fn tick(&mut self, queue: &mut VecDeque<Item>) {
        let frame = self.advance(queue);
        // A key being sent takes the frame (RFC 4733 events stand in for the audio).
        if let Some(KeyStep::Event { event, i }) = self.keys.pop_front() {
            return self.key_packet(event, i).await;
        }
        let heard = match self.music.as_mut() {
            Some((music, at)) if !music.is_empty() => {
                let pcm: Vec<i16> = (0..FRAME).map(|k| music[(*at + k) % music.len()]).collect();
                *at = (*at + FRAME) % music.len();
                Some(pcm)
            }
            Some(_) => None,
            None => frame
                .filter(|(call, _)| !self.muted.contains(call))
                .map(|(_, pcm)| pcm),
        };
        match heard {
            Some(pcm) => self.audio(&pcm).await,
            // Nothing sent: the next packet starts a new talkspurt.
            None => self.next_ts = None,
        }
    }

    /// Sends one frame of audio in the peer's codec.
    async fn audio(&mut self, pcm: &[i16]) {
        let Some((dest, codec, _)) = self.peer() else {
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
    }

    /// Moves the queue on by one frame; the frame of prompt audio due now, with its bot's call.
    fn advance(&mut self, queue: &mut VecDeque<Item>) -> Option<(CallId, Vec<i16>)> {
        loop {
            let item = queue.front_mut()?;
            let (op, call) = (item.op.clone(), item.call);
            match &mut item.part {
                Part::Prompt { pending, audio, at } => {
                    if let Some(rx) = pending {
                        match rx.try_recv() {
                            Ok(Ok(a)) => *audio = a,
                            Err(oneshot::error::TryRecvError::Empty) => return None,
                            Ok(Err(reason)) => {
                                self.fail(queue, &op, reason);
                                continue;
                            }
                            Err(oneshot::error::TryRecvError::Closed) => {
                                let reason = crate::domain::operation::results::PROMPT_UNAVAILABLE;
                                self.fail(queue, &op, reason);
                                continue;
                            }
                        }
                        *pending = None;
                    }
                    if *at >= audio.len() {
                        self.prompt_over(queue);
                        continue;
                    }
                    let end = (*at + FRAME).min(audio.len());
                    let mut pcm = audio[*at..end].to_vec();
                    pcm.resize(FRAME, 0);
                    *at = end;
                    if end >= audio.len() {
                        self.prompt_over(queue);
                    }
                    return Some((call, pcm));
                }
                Part::Record {
                    listen,
                    capture,
                    started,
                } => {
                    let now = Instant::now();
                    let mut st = self.state.lock().expect("media lock");
                    let Some(from) = *started else {
                        *started = Some(now);
                        st.recording = Some(Recording {
                            capture: capture.clone(),
                            from: now,
                            stop_keys: stop_keys(&listen.stop_tones),
                            last_voice: None,
                            stopped: false,
                            max_samples: (listen.max_ms * 8) as usize,
                        });
                        return None;
                    };
                    let why = st.recording.as_ref().and_then(|r| ended(r, listen, now))?;
                    st.recording = None;
                    drop(st);
                    let length = now.duration_since(from).min(ms(listen.max_ms));
                    queue.pop_front();
                    let end = MediaEnd::Recorded {
                        length_ms: length.as_millis() as u64,
                        why,
                    };
                    (self.on_heard)(Heard::Done(op, end));
                }
            }
        }
    }

    /// The prompt at the head of the queue has been sent: looped, it goes again after the
    /// rest of its operation's prompts; else, once its operation has nothing more queued, the
    /// operation is played out.
    fn prompt_over(&self, queue: &mut VecDeque<Item>) {
        let Some(mut item) = queue.pop_front() else {
            return;
        };
        // An empty prompt is not played again: looping it would spin without sending anything.
        let empty = matches!(&item.part, Part::Prompt { audio, .. } if audio.is_empty());
        if item.looped && !empty {
            if let Part::Prompt { at, .. } = &mut item.part {
                *at = 0;
            }
            let end = queue
                .iter()
                .position(|i| i.op != item.op)
                .unwrap_or(queue.len());
            queue.insert(end, item);
        } else if item.report && !queue.iter().any(|i| i.op == item.op) {
            (self.on_heard)(Heard::Done(item.op, MediaEnd::Played));
        }
    }

    /// Operation `op` cannot go on (a prompt could not be had): its parts leave the queue.
    fn fail(&self, queue: &mut VecDeque<Item>, op: &str, reason: EndReason) {
        let report = queue.iter().any(|i| i.op == op && i.report);
        queue.retain(|i| i.op != op);
        if report {
            (self.on_heard)(Heard::Done(op.to_string(), MediaEnd::Failed(reason)));
        }
    }

    /// Queues each key as a telephone event (100 ms, three end packets), `gap_ms` apart: the
    /// ticks send them, so prompts, recordings and stops go on meanwhile.
    fn dtmf(&mut self, keys: &str, gap_ms: u64) {
        let packets = KEY_MS / PACKET_MS;
        let gap = (gap_ms / u64::from(PACKET_MS)) as usize;
        for key in keys.chars() {
            let Some(event) = Event::for_key(key) else {
                continue;
            };
            for i in 0..packets + 2 {
                self.keys.push_back(KeyStep::Event { event, i });
            }
            self.keys.extend(std::iter::repeat_n(KeyStep::Gap, gap));
        }
    }

    /// Sends the event packet of a key step, if the peer negotiated telephone events.
    async fn key_packet(&mut self, event: u8, i: u32) {
        let Some((dest, _, Some(pt))) = self.peer() else {
            // No telephone-event negotiated: nothing can carry the key.
            return;
        };
        if i == 0 {
            self.key_ts = self.now_ts();
        }
        let packets = KEY_MS / PACKET_MS;
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
            timestamp: self.key_ts,
            ssrc: self.ssrc,
        };
        self.send(h, &e.payload(), dest).await;
        // Audio after a key starts a new talkspurt.
        self.next_ts = None;
    }

    /// Takes operation `op`'s parts into the queue.
    fn enqueue(&mut self, queue: &mut VecDeque<Item>, queued: Queued) {
        let Queued {
            op,
            call,
            report,
            prompts,
            looped,
            listen,
            muted,
        } = queued;
        if muted {
            self.muted.insert(call);
        } else {
            self.muted.remove(&call);
        }
        let item = |part| Item {
            op: op.clone(),
            call,
            report,
            looped,
            part,
        };
        let nothing = prompts.is_empty() && listen.is_none();
        for rx in prompts {
            queue.push_back(item(Part::Prompt {
                pending: Some(rx),
                audio: Arc::default(),
                at: 0,
            }));
        }
        if nothing {
            // Reported played in its turn.
            queue.push_back(item(Part::Prompt {
                pending: None,
                audio: Arc::default(),
                at: 0,
            }));
        }
        if let Some((listen, capture)) = listen {
            if listen.beep {
                queue.push_back(item(Part::Prompt {
                    pending: None,
                    audio: beep(),
                    at: 0,
                }));
            }
            queue.push_back(item(Part::Record {
                listen,
                capture,
                started: None,
            }));
        }
    }

    /// Stops operations `ops`: their parts leave the queue, and a recording among them stops.
    fn stop(&mut self, queue: &mut VecDeque<Item>, ops: &[String]) {
        let recording = queue.iter().any(|i| {
            ops.contains(&i.op)
                && matches!(
                    i.part,
                    Part::Record {
                        started: Some(_),
                        ..
                    }
                )
        });
        if recording {
            self.state.lock().expect("media lock").recording = None;
        }
        queue.retain(|i| !ops.contains(&i.op));
    }
}

/// Why a recording ends now, if it does.
fn ended(r: &Recording, listen: &Listen, now: Instant) -> Option<RecordEnd> {
    let elapsed = now.duration_since(r.from);
    if r.stopped {
        Some(RecordEnd::StopTone)
    } else if elapsed >= ms(listen.max_ms) {
        Some(RecordEnd::MaxDuration)
    } else {
        match r.last_voice {
            None if elapsed >= ms(listen.initial_silence_ms) => Some(RecordEnd::InitialSilence),
            Some(t) if now.duration_since(t) >= ms(listen.max_silence_ms) => {
                Some(RecordEnd::MaxSilence)
            }
            _ => None,
        }
    }
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The keys of `stopTones` (`#`, `pound`, `tone1`, ...).
fn stop_keys(tones: &[String]) -> Vec<char> {
    tones
        .iter()
        .filter_map(|t| {
            let mut c = t.chars();
            match (c.next(), c.next()) {
                (Some(k), None) => Some(k.to_ascii_uppercase()),
                _ => tone_key(t),
            }
        })
        .collect()
}

/// The root mean square of some samples.
fn rms(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    let sum: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / pcm.len() as f64).sqrt()
}

/// The beep before a recording: 200 ms of 1 kHz at half scale (as simulated recordings begin).
fn beep() -> Arc<Vec<i16>> {
    static BEEP: std::sync::OnceLock<Arc<Vec<i16>>> = std::sync::OnceLock::new();
    BEEP.get_or_init(|| Arc::new(tone(&[(1000.0, 200)], 0.5)))
        .clone()
}

/// Hold music: a slow four-note phrase (C5 E5 G5 E5, 400 ms each, softly faded), looped.
fn hold_music() -> Arc<Vec<i16>> {
    static MUSIC: std::sync::OnceLock<Arc<Vec<i16>>> = std::sync::OnceLock::new();
    MUSIC
        .get_or_init(|| {
            Arc::new(tone(
                &[(523.25, 400), (659.25, 400), (783.99, 400), (659.25, 400)],
                0.25,
            ))
        })
        .clone()
}

/// Notes (frequency, ms) one after the other at 8 kHz, each faded in and out over 20 ms.
fn tone(notes: &[(f64, u64)], scale: f64) -> Vec<i16> {
    let mut out = vec![];
    for &(hz, ms) in notes {
        let n = (ms * 8) as usize;
        for i in 0..n {
            let fade = (i.min(n - 1 - i) as f64 / 160.0).min(1.0);
            let v = (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin();
            out.push((v * scale * fade * f64::from(i16::MAX)) as i16);
        }
    }
    out
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
        muted: HashSet::new(),
        music: None,
        keys: VecDeque::new(),
        key_ts: 0,
    };
    let mut queue: VecDeque<Item> = VecDeque::new();
    let mut hold_ticket = 0;
    // A 20 ms clock; after a stall it catches up (tokio's default), never more.
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    loop {
        let next = if queue.is_empty() && s.music.is_none() && s.keys.is_empty() {
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
                    s.tick(&mut queue).await;
                    continue;
                }
            }
        };
        let idle = queue.is_empty() && s.music.is_none() && s.keys.is_empty();
        match next {
            None => return,
            Some(Out::Dtmf { keys, gap_ms }) => s.dtmf(&keys, gap_ms),
            Some(Out::Queue(q)) => s.enqueue(&mut queue, q),
            Some(Out::Stop { ops }) => s.stop(&mut queue, &ops),
            Some(Out::Mute { call, muted }) => {
                if muted {
                    s.muted.insert(call);
                } else {
                    s.muted.remove(&call);
                }
            }
            Some(Out::HoldMusic(ticket, music)) if ticket > hold_ticket => {
                hold_ticket = ticket;
                s.music = music.map(|audio| (audio.unwrap_or_else(hold_music), 0));
            }
            Some(Out::HoldMusic(..)) => {}
        }
        if idle && !(queue.is_empty() && s.music.is_none() && s.keys.is_empty()) {
            ticker.reset_immediately();
        }
    }
}
