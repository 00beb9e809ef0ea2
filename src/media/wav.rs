//! WAV files: reading a prompt's header (incrementally, so a caller reads only the bytes it
//! needs), and writing recordings (16 kHz, mono, 16-bit PCM, the format Graph's media accepts).
//! No I/O here; [`super::prompts`] does the reading.

/// What a WAV file's header says about its audio: enough to tell how long it plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WavHeader {
    /// Bytes per second of audio, from the `fmt ` chunk.
    pub byte_rate: u32,
    /// Where the audio starts: the offset of the `data` chunk's body.
    pub data_offset: u64,
    /// The size the `data` chunk declares (a file may hold less).
    pub data_len: u32,
}

impl WavHeader {
    /// How long the audio plays, counting only what a file of `file_len` bytes can hold.
    pub fn duration_ms(&self, file_len: u64) -> u64 {
        let held = file_len.saturating_sub(self.data_offset);
        (self.data_len as u64).min(held) * 1000 / self.byte_rate as u64
    }

    /// Where the declared audio ends.
    pub fn data_end(&self) -> u64 {
        self.data_offset + self.data_len as u64
    }
}

/// What a [`HeaderScanner`] knows after the bytes fed so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The header goes on: feed the next bytes (after skipping [`HeaderScanner::take_skip`], for
    /// a reader that can seek).
    NeedMore,
    /// The `fmt ` and `data` chunks are read.
    Done(WavHeader),
    /// Not a WAV file this server can time.
    NotWav(&'static str),
}

/// Chunks read before giving up on finding `data` (a real file has two to five).
pub const MAX_CHUNKS: u32 = 64;

/// Reads a WAV header from bytes fed in pieces of any size. It keeps at most 16 bytes, and
/// skips the chunks it does not need (`LIST`, `fact`, the rest of `fmt `) by counting, so a
/// caller may read a stream without holding it, or seek over what it is told to skip.
#[derive(Clone, Debug)]
pub struct HeaderScanner {
    part: Part,
    /// Bytes of the current part collected so far.
    buf: [u8; 16],
    have: usize,
    /// Offset in the file of the next byte to be fed.
    pos: u64,
    /// Bytes to pass over before the next part.
    skip: u64,
    byte_rate: Option<u32>,
    chunks: u32,
    outcome: Option<Scan>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// `RIFF`, the size, `WAVE`.
    Riff,
    /// A chunk's id and size.
    ChunkHead,
    /// The first 16 bytes of `fmt `, then `rest` (and the pad byte) to skip.
    Fmt { rest: u64 },
}

impl Part {
    fn len(self) -> usize {
        match self {
            Part::Riff => 12,
            Part::ChunkHead => 8,
            Part::Fmt { .. } => 16,
        }
    }
}

impl Default for HeaderScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderScanner {
    pub fn new() -> Self {
        HeaderScanner {
            part: Part::Riff,
            buf: [0; 16],
            have: 0,
            pos: 0,
            skip: 0,
            byte_rate: None,
            chunks: 0,
            outcome: None,
        }
    }

    /// Feeds the next bytes of the file. Once it has said `Done` or `NotWav`, it says so again
    /// whatever follows.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Scan {
        while self.outcome.is_none() {
            if self.skip > 0 {
                let n = (self.skip.min(bytes.len() as u64)) as usize;
                self.skip -= n as u64;
                self.pos += n as u64;
                bytes = &bytes[n..];
                if self.skip > 0 {
                    break;
                }
            }
            let want = self.part.len();
            let n = (want - self.have).min(bytes.len());
            self.buf[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            self.pos += n as u64;
            bytes = &bytes[n..];
            if self.have < want {
                break;
            }
            self.have = 0;
            self.step();
        }
        self.outcome.unwrap_or(Scan::NeedMore)
    }

    /// Takes the bytes to pass over before the next one the scanner needs: a reader that can
    /// seek seeks this far ahead and feeds from there (instead of feeding them).
    pub fn take_skip(&mut self) -> u64 {
        let n = std::mem::take(&mut self.skip);
        self.pos += n;
        n
    }

    /// How far into the file the scanner has come (bytes fed plus bytes skipped).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// A whole part is in `buf`: read it.
    fn step(&mut self) {
        let b = &self.buf;
        let le32 = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        match self.part {
            Part::Riff => {
                if &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
                    self.outcome = Some(Scan::NotWav("it does not start with RIFF....WAVE"));
                }
                self.part = Part::ChunkHead;
            }
            Part::ChunkHead => {
                self.chunks += 1;
                let size = le32(4);
                let padded = size as u64 + (size & 1) as u64;
                match &b[0..4] {
                    b"data" => {
                        self.outcome = Some(match self.byte_rate {
                            Some(byte_rate) => Scan::Done(WavHeader {
                                byte_rate,
                                data_offset: self.pos,
                                data_len: size,
                            }),
                            None => Scan::NotWav("its data chunk comes before a fmt chunk"),
                        });
                    }
                    b"fmt " if size < 16 => {
                        self.outcome = Some(Scan::NotWav("its fmt chunk is too short"));
                    }
                    b"fmt " => self.part = Part::Fmt { rest: padded - 16 },
                    _ if self.chunks >= MAX_CHUNKS => {
                        self.outcome = Some(Scan::NotWav("it has no data chunk early enough"));
                    }
                    _ => self.skip = padded,
                }
            }
            Part::Fmt { rest } => {
                let byte_rate = le32(8);
                if byte_rate == 0 {
                    self.outcome = Some(Scan::NotWav("its fmt chunk gives a byte rate of 0"));
                }
                self.byte_rate = Some(byte_rate);
                self.skip = rest;
                self.part = Part::ChunkHead;
            }
        }
    }
}

/// The duration of a whole WAV file in memory, in milliseconds.
pub fn wav_duration_ms(bytes: &[u8]) -> Option<u64> {
    match HeaderScanner::new().feed(bytes) {
        Scan::Done(h) => Some(h.duration_ms(bytes.len() as u64)),
        Scan::NeedMore | Scan::NotWav(_) => None,
    }
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
    mono_wav(RATE, &data)
}

/// A mono 16-bit PCM WAV file at `rate` of these little-endian sample bytes.
pub fn mono_wav(rate: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(44 + data.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
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

    /// A WAV header (and no audio) of `rate` Hz, `channels`, `bits`, declaring `data_len` bytes,
    /// with a `LIST` chunk of `list` bytes before the data.
    pub(super) fn header(rate: u32, channels: u16, bits: u16, data_len: u32, list: u32) -> Vec<u8> {
        let block = channels * bits / 8;
        let mut h = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&channels.to_le_bytes());
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&(rate * block as u32).to_le_bytes());
        h.extend_from_slice(&block.to_le_bytes());
        h.extend_from_slice(&bits.to_le_bytes());
        if list > 0 {
            h.extend_from_slice(b"LIST");
            h.extend_from_slice(&list.to_le_bytes());
            h.resize(h.len() + list as usize + (list & 1) as usize, b'x');
        }
        h.extend_from_slice(b"data");
        h.extend_from_slice(&data_len.to_le_bytes());
        h
    }

    #[test]
    fn the_scanner_asks_for_more_until_the_data_chunk_begins() {
        let h = header(16_000, 1, 16, 96_000, 0);
        let mut s = HeaderScanner::new();
        assert_eq!(s.feed(&h[..4]), Scan::NeedMore, "RIFF alone");
        assert_eq!(s.feed(&h[4..30]), Scan::NeedMore, "inside fmt");
        assert_eq!(
            s.feed(&h[30..43]),
            Scan::NeedMore,
            "one byte short of data's size"
        );
        let Scan::Done(done) = s.feed(&h[43..]) else {
            panic!("the data chunk's header is all there");
        };
        assert_eq!(
            done,
            WavHeader {
                byte_rate: 32_000,
                data_offset: 44,
                data_len: 96_000
            }
        );
        assert_eq!(done.duration_ms(44 + 96_000), 3000);
        assert_eq!(
            done.duration_ms(44 + 32_000),
            1000,
            "a short file counts what it holds"
        );
        assert_eq!(
            s.feed(b"anything after"),
            Scan::Done(done),
            "done stays done"
        );
    }

    #[test]
    fn the_scanner_says_what_is_not_a_wav_file_early() {
        let mut s = HeaderScanner::new();
        assert!(matches!(
            s.feed(b"ID3\x04\0\0\0\0\0\0\0\0"),
            Scan::NotWav(_)
        ));
        let mut zero_rate = header(16_000, 1, 16, 10, 0);
        zero_rate[28..32].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            HeaderScanner::new().feed(&zero_rate),
            Scan::NotWav(_)
        ));
        let mut data_first = b"RIFF\0\0\0\0WAVEdata".to_vec();
        data_first.extend_from_slice(&4u32.to_le_bytes());
        assert!(matches!(
            HeaderScanner::new().feed(&data_first),
            Scan::NotWav(_)
        ));
        let mut endless = b"RIFF\0\0\0\0WAVE".to_vec();
        for _ in 0..MAX_CHUNKS {
            endless.extend_from_slice(b"junk\0\0\0\0");
        }
        assert!(matches!(
            HeaderScanner::new().feed(&endless),
            Scan::NotWav(_)
        ));
    }

    #[test]
    fn a_reader_that_seeks_skips_a_large_list_chunk_instead_of_reading_it() {
        let h = header(8_000, 2, 8, 32_000, 1_000_001);
        let mut s = HeaderScanner::new();
        assert_eq!(s.feed(&h[..44]), Scan::NeedMore);
        let skip = s.take_skip();
        assert_eq!(skip, 1_000_001 + 1, "the body of LIST and its pad byte");
        let at = s.position() as usize;
        let Scan::Done(done) = s.feed(&h[at..at + 8]) else {
            panic!("the data chunk follows the skipped bytes");
        };
        assert_eq!(done.data_offset, h.len() as u64);
        assert_eq!(
            done.duration_ms(u64::MAX),
            2000,
            "8 kHz stereo 8-bit: 16,000 bytes a second"
        );
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

        #[test]
        fn feeding_in_pieces_says_what_feeding_at_once_says(
            mut bytes in prop::collection::vec(any::<u8>(), 0..300),
            riff in any::<bool>(),
            cuts in prop::collection::vec(0usize..300, 0..8),
        ) {
            if riff && bytes.len() >= 12 {
                bytes[0..4].copy_from_slice(b"RIFF");
                bytes[8..12].copy_from_slice(b"WAVE");
            }
            let whole = HeaderScanner::new().feed(&bytes);
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= bytes.len()).collect();
            cuts.sort();
            let mut s = HeaderScanner::new();
            let mut last = Scan::NeedMore;
            let mut from = 0;
            for at in cuts.into_iter().chain([bytes.len()]) {
                last = s.feed(&bytes[from..at]);
                from = at;
            }
            prop_assert_eq!(last, whole);
        }

        #[test]
        fn any_pcm_format_plays_for_its_data_over_its_byte_rate(
            rate in 1u32..200_000,
            channels in 1u16..8,
            bytes_per_sample in 1u16..4,
            data_len in 0u32..10_000_000,
            list in 0u32..5000,
            held in 0u64..20_000_000,
            piece in 1usize..64,
        ) {
            let h = super::tests::header(rate, channels, bytes_per_sample * 8, data_len, list);
            let byte_rate = (rate * (channels * bytes_per_sample) as u32) as u64;
            let mut s = HeaderScanner::new();
            let mut last = Scan::NeedMore;
            for p in h.chunks(piece) {
                last = s.feed(p);
            }
            let Scan::Done(done) = last else {
                return Err(TestCaseError::fail(format!("{last:?}")));
            };
            prop_assert_eq!(done.data_offset, h.len() as u64);
            let file_len = h.len() as u64 + held;
            prop_assert_eq!(done.duration_ms(file_len), (data_len as u64).min(held) * 1000 / byte_rate);
        }
    }
}

/// A prompt's audio for a phone line: its 16-bit PCM samples (any rate from 8 to 48 kHz, any
/// number of channels, mixed down) at 8 kHz mono, low-passed before it is decimated.
pub fn pcm_8k(bytes: &[u8]) -> Result<Vec<i16>, &'static str> {
    let (fmt, data) = wav_parts(bytes).ok_or("not a WAV file with fmt and data chunks")?;
    if fmt.len() < 16 {
        return Err("its fmt chunk is too short");
    }
    let format = u16::from_le_bytes([fmt[0], fmt[1]]);
    let channels = usize::from(u16::from_le_bytes([fmt[2], fmt[3]]));
    let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
    let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
    // 1 is PCM; 0xFFFE (extensible) is PCM too when its samples are 16-bit integers.
    if !(format == 1 || format == 0xfffe) || bits != 16 {
        return Err("it is not 16-bit PCM");
    }
    if !(1..=8).contains(&channels) || !(8_000..=48_000).contains(&rate) {
        return Err("it has an unusual channel count or sample rate");
    }
    let mono: Vec<f32> = data
        .chunks_exact(2 * channels)
        .map(|frame| {
            let sum: i32 = frame
                .chunks_exact(2)
                .map(|s| i32::from(i16::from_le_bytes([s[0], s[1]])))
                .sum();
            sum as f32 / channels as f32
        })
        .collect();
    Ok(resample(&mono, rate, 8_000))
}

/// `input` at `from` Hz as samples at `to` Hz (to ≤ from): a moving average as wide as the
/// decimation ratio against aliasing, then linear interpolation.
fn resample(input: &[f32], from: u32, to: u32) -> Vec<i16> {
    if from == to {
        return input.iter().map(|&s| s as i16).collect();
    }
    let ratio = from as f64 / to as f64;
    let width = (ratio.round() as usize).max(1);
    let mut smooth = Vec::with_capacity(input.len());
    let mut acc = 0f32;
    for i in 0..input.len() {
        acc += input[i];
        if i >= width {
            acc -= input[i - width];
        }
        smooth.push(acc / (i + 1).min(width) as f32);
    }
    let n = (input.len() as f64 / ratio).floor() as usize;
    (0..n)
        .map(|k| {
            // The average of `width` samples is centred half a window back.
            let pos = k as f64 * ratio + (width as f64 - 1.0) / 2.0;
            let i = (pos.floor() as usize).min(smooth.len() - 1);
            let frac = (pos - i as f64) as f32;
            let next = smooth[(i + 1).min(smooth.len() - 1)];
            let v = smooth[i] + (next - smooth[i]) * frac;
            v.clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

#[cfg(test)]
mod pcm_tests {
    use super::*;

    fn wav(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
        out.extend_from_slice(&(2 * channels).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    fn tone(rate: u32, hz: f64, secs: f64) -> Vec<i16> {
        (0..(rate as f64 * secs) as usize)
            .map(|i| {
                (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn a_16_khz_tone_becomes_the_same_tone_at_8_khz() {
        let pcm = pcm_8k(&wav(16_000, 1, &tone(16_000, 440.0, 1.0))).unwrap();
        assert_eq!(pcm.len(), 8000);
        let want = tone(8_000, 440.0, 1.0);
        let dot: f64 = pcm
            .iter()
            .zip(&want)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let norm = |v: &[i16]| v.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>().sqrt();
        let corr = dot / (norm(&pcm) * norm(&want));
        assert!(corr > 0.98, "correlation {corr}");
    }

    #[test]
    fn stereo_is_mixed_down_and_other_formats_are_refused() {
        let stereo: Vec<i16> = (0..800).flat_map(|_| [1000i16, 3000]).collect();
        let pcm = pcm_8k(&wav(8_000, 2, &stereo)).unwrap();
        assert_eq!(pcm.len(), 800);
        assert!(pcm.iter().all(|&s| s == 2000));
        let mut eight_bit = wav(8_000, 1, &[0; 10]);
        eight_bit[34] = 8;
        assert!(pcm_8k(&eight_bit).is_err());
        assert!(pcm_8k(b"not a wav").is_err());
    }
}
