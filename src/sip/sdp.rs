//! The SDP of a G.711 audio call (RFC 4566, offer/answer per RFC 3264): our offer, our answer
//! to a peer's offer, and the direction a peer asks for (hold).

use std::net::IpAddr;

/// A stream's direction (`a=sendrecv` and the rest; RFC 3264 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer takes to an offer in this one (RFC 3264 §6.1).
    pub fn mirrored(self) -> Self {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// Whether an offer in this direction puts the call on hold (the peer stops listening).
    pub fn is_hold(self) -> bool {
        matches!(self, Direction::SendOnly | Direction::Inactive)
    }
}

/// A G.711 codec we speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

/// What we need to know of a peer's audio description (an offer or an answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// The codec to use: the first of its list that we speak; `None` if none.
    pub codec: Option<Codec>,
    /// Its payload type for `telephone-event`, if it offers one.
    pub telephone_event: Option<u8>,
    pub direction: Direction,
    /// Where it receives audio (`None` for port 0, a rejected stream).
    pub address: Option<(IpAddr, u16)>,
    /// Every media line of the description, in order (`m=` kind, protocol, first format): an
    /// answer has one line for each (RFC 3264 §6).
    pub streams: Vec<(String, String, String)>,
    /// Which of them is the audio used.
    pub chosen: usize,
}

/// One `m=` section as written.
#[derive(Default)]
struct Section {
    kind: String,
    port: u16,
    proto: String,
    formats: Vec<String>,
    ip: Option<IpAddr>,
    direction: Option<Direction>,
    maps: Vec<(u8, String)>,
}

impl Section {
    fn encoding(&self, pt: u8) -> Option<&str> {
        self.maps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, e)| e.as_str())
    }

    /// The first G.711 codec of its list, if it is plain RTP audio.
    fn codec(&self) -> Option<Codec> {
        if self.kind != "audio" || self.proto != "RTP/AVP" {
            return None;
        }
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .find_map(|pt| match (pt, self.encoding(pt)) {
                (_, Some(e)) if e.starts_with("pcmu/8000") => Some(Codec::Pcmu),
                (_, Some(e)) if e.starts_with("pcma/8000") => Some(Codec::Pcma),
                (0, None) => Some(Codec::Pcmu),
                (8, None) => Some(Codec::Pcma),
                _ => None,
            })
    }
}

/// Reads a session description: the first audio stream we can use (plain RTP, port not 0, a
/// G.711 codec), else the first audio stream at all; `None` if it has no audio stream.
pub fn parse(sdp: &[u8]) -> Option<Remote> {
    let text = std::str::from_utf8(sdp).ok()?;
    let mut session_ip: Option<IpAddr> = None;
    let mut session_dir = Direction::SendRecv;
    let mut sections: Vec<Section> = vec![];
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            let mut it = m.split_whitespace();
            let kind = it.next().unwrap_or_default().to_string();
            let port = it.next()?.split('/').next()?.parse().ok()?;
            let proto = it.next().unwrap_or_default().to_string();
            sections.push(Section {
                kind,
                port,
                proto,
                formats: it.map(str::to_string).collect(),
                ..Section::default()
            });
            continue;
        }
        let direction = match line {
            "a=sendrecv" => Some(Direction::SendRecv),
            "a=sendonly" => Some(Direction::SendOnly),
            "a=recvonly" => Some(Direction::RecvOnly),
            "a=inactive" => Some(Direction::Inactive),
            _ => None,
        };
        let current = sections.last_mut();
        if let Some(c) = line.strip_prefix("c=") {
            let ip = c
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next()?.parse().ok());
            match current {
                Some(sec) => sec.ip = ip,
                None => session_ip = ip,
            }
        } else if let Some(d) = direction {
            match current {
                Some(sec) => sec.direction = Some(d),
                None => session_dir = d,
            }
        } else if let (Some(map), Some(sec)) = (line.strip_prefix("a=rtpmap:"), current) {
            let mut it = map.splitn(2, ' ');
            if let (Some(pt), Some(enc)) = (it.next(), it.next())
                && let Ok(pt) = pt.parse()
            {
                sec.maps.push((pt, enc.to_ascii_lowercase()));
            }
        }
    }
    let usable = |s: &Section| s.port != 0 && s.codec().is_some();
    let chosen = sections
        .iter()
        .position(usable)
        .or_else(|| sections.iter().position(|s| s.kind == "audio"))?;
    let sec = &sections[chosen];
    let telephone_event = sec
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .find(|&pt| {
            sec.encoding(pt)
                .is_some_and(|e| e.starts_with("telephone-event/8000"))
        });
    let ip = sec.ip.or(session_ip);
    let mut direction = sec.direction.unwrap_or(session_dir);
    // RFC 2543 hold: a connection address of 0.0.0.0.
    if ip.is_some_and(|ip| ip.is_unspecified()) && direction == Direction::SendRecv {
        direction = Direction::SendOnly;
    }
    let port = sec.port;
    Some(Remote {
        codec: if port == 0 { None } else { sec.codec() },
        telephone_event,
        direction,
        address: ip.filter(|_| port != 0).map(|ip| (ip, port)),
        streams: sections
            .iter()
            .map(|s| {
                let first = s.formats.first().cloned().unwrap_or_else(|| "0".into());
                (s.kind.clone(), s.proto.clone(), first)
            })
            .collect(),
        chosen,
    })
}

/// Our side of a call's session description: where we receive audio, and the version of the
/// description (bumped on each new one, RFC 3264 §8).
#[derive(Clone, Debug)]
pub struct Local {
    pub ip: IpAddr,
    pub port: u16,
    pub session_id: u64,
    pub version: u64,
}

/// Our telephone-event payload type in an offer.
pub const TELEPHONE_EVENT: u8 = 101;

impl Local {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        let session_id = rand::random::<u32>() as u64;
        Local {
            ip,
            port,
            session_id,
            version: session_id,
        }
    }

    fn head(&mut self) -> String {
        self.version += 1;
        let family = if self.ip.is_ipv6() { "IP6" } else { "IP4" };
        format!(
            "v=0\r\no=switchboard {} {} IN {family} {ip}\r\ns=Switchboard\r\nc=IN {family} {ip}\r\nt=0 0\r\n",
            self.session_id,
            self.version,
            ip = self.ip
        )
    }

    /// An offer: PCMU, PCMA and telephone-event, sending and receiving.
    pub fn offer(&mut self) -> Vec<u8> {
        let mut s = self.head();
        s.push_str(&format!(
            "m=audio {} RTP/AVP 0 8 {te}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
            self.port,
            te = TELEPHONE_EVENT
        ));
        s.into_bytes()
    }

    /// An answer to `offer`: its first codec we speak, its telephone-event payload type, and the
    /// direction mirrored, on the audio stream used; every other stream rejected with port 0
    /// (RFC 3264 §6). `None` if it offers no codec we speak (answer 488).
    pub fn answer(&mut self, offer: &Remote) -> Option<Vec<u8>> {
        let codec = offer.codec?;
        let mut s = self.head();
        for (i, (kind, proto, first)) in offer.streams.iter().enumerate() {
            if i != offer.chosen {
                s.push_str(&format!("m={kind} 0 {proto} {first}\r\n"));
                continue;
            }
            let pt = codec.payload_type();
            match offer.telephone_event {
                Some(te) => s.push_str(&format!(
                    "m=audio {} RTP/AVP {pt} {te}\r\na=rtpmap:{pt} {}/8000\r\n\
                     a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n",
                    self.port,
                    codec.name()
                )),
                None => s.push_str(&format!(
                    "m=audio {} RTP/AVP {pt}\r\na=rtpmap:{pt} {}/8000\r\n",
                    self.port,
                    codec.name()
                )),
            }
            s.push_str(&format!(
                "a=ptime:20\r\na={}\r\n",
                offer.direction.mirrored().attribute()
            ));
        }
        Some(s.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
        c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:96 telephone-event/8000\r\n";

    #[test]
    fn a_peers_offer_is_read() {
        let r = parse(SIPP_OFFER.as_bytes()).unwrap();
        assert_eq!(r.codec, Some(Codec::Pcmu));
        assert_eq!(r.telephone_event, Some(96));
        assert_eq!(r.direction, Direction::SendRecv);
        assert_eq!(r.address, Some(("127.0.0.1".parse().unwrap(), 6000)));
    }

    #[test]
    fn the_answer_keeps_the_peers_codec_and_event_type_and_mirrors_hold() {
        let mut local = Local::new("127.0.0.1".parse().unwrap(), 7000);
        let held = SIPP_OFFER.replace(
            "a=rtpmap:96 telephone-event/8000\r\n",
            "a=rtpmap:96 telephone-event/8000\r\na=sendonly\r\n",
        );
        let offer = parse(held.as_bytes()).unwrap();
        assert!(offer.direction.is_hold());
        let answer = String::from_utf8(local.answer(&offer).unwrap()).unwrap();
        assert!(answer.contains("m=audio 7000 RTP/AVP 0 96\r\n"), "{answer}");
        assert!(answer.contains("a=recvonly\r\n"), "{answer}");
        let again = String::from_utf8(local.answer(&offer).unwrap()).unwrap();
        assert_ne!(
            answer.lines().nth(1),
            again.lines().nth(1),
            "the version moves on"
        );
    }

    #[test]
    fn an_offer_without_g711_has_no_codec_and_the_old_hold_form_is_hold() {
        let g729 = SIPP_OFFER
            .replace("RTP/AVP 0 96", "RTP/AVP 18")
            .replace("a=rtpmap:0 PCMU/8000\r\n", "");
        assert_eq!(parse(g729.as_bytes()).unwrap().codec, None);
        let mut local = Local::new("127.0.0.1".parse().unwrap(), 7000);
        assert!(local.answer(&parse(g729.as_bytes()).unwrap()).is_none());
        let old_hold = SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        assert!(parse(old_hold.as_bytes()).unwrap().direction.is_hold());
    }

    #[test]
    fn other_streams_are_answered_with_port_0_in_their_places() {
        // Video first, then an SRTP audio stream we cannot do, then the plain one.
        let offer = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
            m=video 6002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
            m=audio 6004 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
            m=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
            a=rtpmap:101 telephone-event/8000\r\na=ptime:30\r\n";
        let r = parse(offer.as_bytes()).unwrap();
        assert_eq!(r.chosen, 2);
        assert_eq!((r.codec, r.telephone_event), (Some(Codec::Pcma), Some(101)));
        assert_eq!(r.address, Some(("127.0.0.1".parse().unwrap(), 6000)));
        let mut local = Local::new("127.0.0.1".parse().unwrap(), 7000);
        let answer = String::from_utf8(local.answer(&r).unwrap()).unwrap();
        let m: Vec<&str> = answer.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            m,
            [
                "m=video 0 RTP/AVP 96",
                "m=audio 0 RTP/SAVP 0",
                "m=audio 7000 RTP/AVP 8 101"
            ]
        );
    }

    #[test]
    fn our_offer_lists_pcmu_pcma_and_telephone_event() {
        let mut local = Local::new("127.0.0.1".parse().unwrap(), 7000);
        let offer = String::from_utf8(local.offer()).unwrap();
        assert!(offer.contains("m=audio 7000 RTP/AVP 0 8 101\r\n"));
        let r = parse(offer.as_bytes()).unwrap();
        assert_eq!((r.codec, r.telephone_event), (Some(Codec::Pcmu), Some(101)));
    }
}
