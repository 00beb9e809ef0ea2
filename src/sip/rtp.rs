//! RTP on a SIP leg (RFC 3550): the header, G.711 (ITU-T G.711 μ-law and A-law), and telephone
//! events (RFC 4733). The header is twelve bytes and G.711 two small functions, so they are
//! written here rather than taken from a WebRTC stack; what a leg does with them is `media.rs`.

/// An RTP packet's fixed header and where its payload starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl Header {
    /// Reads an RTP header; `None` for anything that is not RTP version 2 (RTCP on the same
    /// port, STUN, garbage). Returns the header and the payload.
    pub fn parse(packet: &[u8]) -> Option<(Header, &[u8])> {
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            return None;
        }
        let payload_type = packet[1] & 0x7f;
        // RTCP shares the port when rtcp-mux is used: its packet types are 200-204 (72-76 here).
        if (72..=76).contains(&payload_type) {
            return None;
        }
        let csrc = usize::from(packet[0] & 0x0f);
        let mut start = 12 + 4 * csrc;
        if packet[0] & 0x10 != 0 {
            let ext = packet.get(start + 2..start + 4)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
        }
        let mut end = packet.len();
        if packet[0] & 0x20 != 0 {
            let pad = usize::from(*packet.last()?);
            end = end.checked_sub(pad)?;
        }
        let payload = packet.get(start..end)?;
        let header = Header {
            marker: packet[1] & 0x80 != 0,
            payload_type,
            sequence: u16::from_be_bytes([packet[2], packet[3]]),
            timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
            ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        };
        Some((header, payload))
    }

    /// The packet: this header and `payload`.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(12 + payload.len());
        p.push(0x80);
        p.push(self.payload_type & 0x7f | if self.marker { 0x80 } else { 0 });
        p.extend_from_slice(&self.sequence.to_be_bytes());
        p.extend_from_slice(&self.timestamp.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }
}

/// A telephone event (RFC 4733 §2.3): the event, whether this packet ends it, its duration in
/// timestamp units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    pub duration: u16,
}

impl Event {
    pub fn parse(payload: &[u8]) -> Option<Event> {
        let p = payload.get(..4)?;
        Some(Event {
            event: p[0],
            end: p[1] & 0x80 != 0,
            volume: p[1] & 0x3f,
            duration: u16::from_be_bytes([p[2], p[3]]),
        })
    }

    pub fn payload(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (self.volume & 0x3f) | if self.end { 0x80 } else { 0 },
            d[0],
            d[1],
        ]
    }

    /// The DTMF key this event is (`0-9`, `*`, `#`, `A-D`); `None` for other events (flash).
    pub fn key(&self) -> Option<char> {
        Some(match self.event {
            0..=9 => char::from(b'0' + self.event),
            10 => '*',
            11 => '#',
            12..=15 => char::from(b'A' + self.event - 12),
            _ => return None,
        })
    }

    /// The event for a DTMF key.
    pub fn for_key(key: char) -> Option<u8> {
        Some(match key.to_ascii_uppercase() {
            c @ '0'..='9' => c as u8 - b'0',
            '*' => 10,
            '#' => 11,
            c @ 'A'..='D' => c as u8 - b'A' + 12,
            _ => return None,
        })
    }
}

/// G.711 μ-law of one 16-bit sample.
pub fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (7 - (s as u32).leading_zeros().saturating_sub(17).min(7)) as i32;
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// The 16-bit sample of a G.711 μ-law byte.
pub fn ulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// G.711 A-law of one 16-bit sample.
pub fn alaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample) >> 3;
    let sign = if s >= 0 {
        0x80
    } else {
        s = -s - 1;
        0
    };
    let s = s.min(0x0fff);
    let byte = if s < 32 {
        (s >> 1) as u8
    } else {
        let exponent = (31 - (s as u32).leading_zeros()) as i32 - 4;
        ((exponent << 4) as u8) | ((s >> exponent) & 0x0f) as u8
    };
    (byte | sign) ^ 0x55
}

/// The 16-bit sample of a G.711 A-law byte.
pub fn alaw_decode(byte: u8) -> i16 {
    let b = byte ^ 0x55;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if b & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_goes_out_and_comes_back() {
        let h = Header {
            marker: true,
            payload_type: 101,
            sequence: 65535,
            timestamp: 0xdead_beef,
            ssrc: 42,
        };
        let p = h.packet(&[1, 2, 3, 4]);
        assert_eq!(Header::parse(&p), Some((h, &[1u8, 2, 3, 4][..])));
        assert_eq!(Header::parse(&p[..11]), None, "too short");
        let mut rtcp = p.clone();
        rtcp[1] = 200;
        assert_eq!(Header::parse(&rtcp), None, "RTCP is not RTP");
    }

    #[test]
    fn an_event_reads_and_writes_as_rfc_4733_shows() {
        let e = Event::parse(&[11, 0x8a, 0x03, 0x20]).unwrap();
        assert_eq!((e.event, e.end, e.volume, e.duration), (11, true, 10, 800));
        assert_eq!(e.payload(), [11, 0x8a, 0x03, 0x20]);
        assert_eq!(e.key(), Some('#'));
        for k in "0123456789*#ABCD".chars() {
            let ev = Event {
                event: Event::for_key(k).unwrap(),
                end: false,
                volume: 10,
                duration: 0,
            };
            assert_eq!(ev.key(), Some(k));
        }
        assert_eq!(Event::for_key('x'), None);
    }

    #[test]
    fn g711_round_trips_within_its_quantisation() {
        for s in (-32768i32..=32767).step_by(7) {
            let s = s as i16;
            let u = ulaw_decode(ulaw_encode(s));
            let a = alaw_decode(alaw_encode(s));
            // The step grows with the magnitude: about 1/16 of it, at most 1024.
            let tolerance = (i32::from(s).abs() / 14).max(16);
            assert!(
                (i32::from(u) - i32::from(s)).abs() <= tolerance,
                "μ {s} -> {u}"
            );
            assert!(
                (i32::from(a) - i32::from(s)).abs() <= tolerance,
                "A {s} -> {a}"
            );
        }
        // Reference points of the tables.
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_decode(0xd5), 8);
    }
}
