//! WAV files: reading the duration of a prompt, and writing recordings (16 kHz, mono, 16-bit PCM,
//! the format Graph's media accepts).

/// The duration of a WAV file in milliseconds, read from its `fmt ` and `data` chunks.
pub fn wav_duration_ms(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12;
    let mut byte_rate: Option<u32> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().ok()?) as usize;
        let body = pos + 8;
        if id == b"fmt " && body + 12 <= bytes.len() {
            byte_rate = Some(u32::from_le_bytes(
                bytes[body + 8..body + 12].try_into().ok()?,
            ));
        }
        if id == b"data" {
            let rate = byte_rate.filter(|r| *r > 0)?;
            // A streamed file may give a larger size than it holds; count what is there.
            let size = size.min(bytes.len() - body);
            return Some(size as u64 * 1000 / rate as u64);
        }
        pos = body + size + (size & 1);
    }
    None
}

const RATE: u32 = 16_000;

/// A recording: an optional beep, `speech_ms` of a two-tone voice-like signal, then silence up to
/// `length_ms`.
pub fn recording_wav(length_ms: u64, speech_ms: u64, beep: bool) -> Vec<u8> {
    let samples = (length_ms * RATE as u64 / 1000) as usize;
    let speech = (speech_ms.min(length_ms) * RATE as u64 / 1000) as usize;
    let beep_len = if beep { (RATE / 5) as usize } else { 0 };
    let mut data = Vec::with_capacity(samples * 2);
    for i in 0..samples {
        let t = i as f64 / RATE as f64;
        let v = if i < beep_len.min(samples) {
            0.5 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()
        } else if i < speech {
            0.3 * (2.0 * std::f64::consts::PI * 220.0 * t).sin()
                + 0.2 * (2.0 * std::f64::consts::PI * 330.0 * t).sin()
        } else {
            0.0
        };
        data.extend_from_slice(&((v * i16::MAX as f64) as i16).to_le_bytes());
    }
    let mut out = Vec::with_capacity(44 + data.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&(RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_recording_reads_back_with_its_length() {
        let wav = recording_wav(2500, 1000, true);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(wav_duration_ms(&wav), Some(2500));
    }

    #[test]
    fn extra_chunks_before_the_data_are_skipped() {
        let mut wav = recording_wav(1000, 0, false);
        let list = b"LIST\x04\x00\x00\x00abcd";
        wav.splice(36..36, list.iter().copied());
        assert_eq!(wav_duration_ms(&wav), Some(1000));
    }

    #[test]
    fn what_is_not_a_wav_file_has_no_duration() {
        assert_eq!(wav_duration_ms(b"not a wav file at all"), None);
        assert_eq!(wav_duration_ms(b""), None);
    }
}
