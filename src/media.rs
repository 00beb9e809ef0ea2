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

/// The `fmt ` chunk body and the PCM data of a WAV file.
fn wav_parts(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12;
    let mut fmt: Option<&[u8]> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().ok()?) as usize;
        let body = pos + 8;
        let end = (body + size).min(bytes.len());
        if id == b"fmt " {
            fmt = Some(&bytes[body..end]);
        }
        if id == b"data" {
            return Some((fmt?, &bytes[body..end]));
        }
        pos = body + size + (size & 1);
    }
    None
}

/// A recording made of a party's WAV file: its audio, cut or padded with silence to
/// `length_ms`, in the file's own format.
pub fn recording_from_wav(source: &[u8], length_ms: u64) -> Option<Vec<u8>> {
    let (fmt, data) = wav_parts(source)?;
    if fmt.len() < 16 {
        return None;
    }
    let byte_rate = u32::from_le_bytes(fmt[8..12].try_into().ok()?) as u64;
    // Anything above 48 kHz, 8 channels, 32 bits is not a voice file; refuse rather than allocate.
    if byte_rate == 0 || byte_rate > 48_000 * 8 * 4 {
        return None;
    }
    let block = u16::from_le_bytes(fmt[12..14].try_into().ok()?).max(1) as u64;
    let want = (length_ms * byte_rate / 1000) / block * block;
    let mut pcm = data[..(want as usize).min(data.len())].to_vec();
    pcm.resize(want as usize, 0);
    let mut out = Vec::with_capacity(28 + fmt.len() + pcm.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((20 + fmt.len() + pcm.len()) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    out.extend_from_slice(fmt);
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    out.extend_from_slice(&pcm);
    Some(out)
}

#[cfg(test)]
mod wav_source_tests {
    use super::*;

    #[test]
    fn a_party_wav_is_cut_or_padded_to_the_recording_length() {
        let source = recording_wav(3000, 3000, false);
        let cut = recording_from_wav(&source, 1000).unwrap();
        assert_eq!(wav_duration_ms(&cut), Some(1000));
        let padded = recording_from_wav(&source, 5000).unwrap();
        assert_eq!(wav_duration_ms(&padded), Some(5000));
        assert_eq!(
            &padded[44..44 + 100],
            &source[44..44 + 100],
            "the party's audio comes first"
        );
        assert!(
            padded[44 + 96_000..].iter().all(|b| *b == 0),
            "then silence"
        );
    }
}

#[cfg(test)]
mod property_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_have_a_duration_or_none_without_panicking(
            mut bytes in prop::collection::vec(any::<u8>(), 0..200),
            riff in any::<bool>(),
        ) {
            if riff && bytes.len() >= 12 {
                bytes[0..4].copy_from_slice(b"RIFF");
                bytes[8..12].copy_from_slice(b"WAVE");
            }
            let _ = wav_duration_ms(&bytes);
            let _ = recording_from_wav(&bytes, 1000);
        }
    }
}
