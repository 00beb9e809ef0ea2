//! Recordings: how long the speaker talks when a bot records it, and the WAV file the bot
//! downloads from the operation's `recordingLocation`.

use std::path::Path;

use super::prompts::Prompts;
use super::wav;
use crate::domain::ids::new_guid;
use crate::domain::operation::Recording;
use crate::fabric::simulated::Speech;

/// How long a party says nothing-in-particular when no party is configured for the speaker.
const UNKNOWN_SPEAKER_MS: u64 = 3000;

/// What the speaker says into a recording: its length, and the WAV file it is cut from. A
/// `record_wav` that cannot be read is a party that says nothing (logged).
pub async fn speech(prompts: &Prompts, speaker: Option<Speech>) -> (u64, Option<String>) {
    match speaker {
        Some(Speech::Wav(path)) => match prompts.operator_file_ms(path.as_ref()).await {
            Ok(ms) => (ms, Some(path)),
            Err(e) => {
                tracing::warn!("record_wav {path}: {e}; the party says nothing");
                (0, Some(path))
            }
        },
        Some(Speech::Generated { ms }) => (ms, None),
        None => (UNKNOWN_SPEAKER_MS, None),
    }
}

/// A new `recordingAccessToken`: 64 hex digits from two random GUIDs.
pub fn access_token() -> String {
    new_guid().replace('-', "") + &new_guid().replace('-', "")
}

/// The file a finished recording downloads as: cut from the party's WAV file when it has one
/// (and it can be read), else generated voice-like tones after an optional beep.
pub async fn file(prompts: &Prompts, rec: &Recording) -> Vec<u8> {
    let from_file = match &rec.source_wav {
        Some(path) => match prompts.read_operator_file(Path::new(path)).await {
            Ok(b) => wav::recording_from_wav(&b, rec.length_ms),
            Err(e) => {
                tracing::warn!("record_wav {path}: {e}; the recording is generated tones");
                None
            }
        },
        None => None,
    };
    from_file.unwrap_or_else(|| wav::recording_wav(rec.length_ms, rec.speech_ms, rec.beep))
}

/// Recordings of real calls: what a SIP leg's RTP carried while a `recordResponse` listened,
/// 8 kHz samples by operation id, filled as packets come (the last [`CAPTURES`] kept, in memory).
#[derive(Default)]
pub struct Captured {
    inner: std::sync::Mutex<std::collections::VecDeque<(String, Capture)>>,
}

/// One recording's samples, shared with the leg's media that fills them.
pub type Capture = std::sync::Arc<std::sync::Mutex<Vec<i16>>>;

/// How many real recordings are kept.
const CAPTURES: usize = 256;

impl Captured {
    /// A new, empty recording for operation `op`.
    pub fn start(&self, op: &str) -> Capture {
        let capture = Capture::default();
        let mut inner = self.inner.lock().expect("captures lock");
        if inner.len() == CAPTURES {
            inner.pop_front();
        }
        inner.push_back((op.to_string(), capture.clone()));
        capture
    }

    /// The WAV file of operation `op`'s recording (8 kHz, 16-bit, mono), cut or padded with
    /// silence to `length_ms`; `None` if no real call recorded it.
    pub fn wav(&self, op: &str, length_ms: u64) -> Option<Vec<u8>> {
        let capture = {
            let inner = self.inner.lock().expect("captures lock");
            inner.iter().find(|(o, _)| o == op)?.1.clone()
        };
        let mut samples = capture.lock().expect("capture lock").clone();
        samples.resize((length_ms * 8) as usize, 0);
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        Some(wav::mono_wav(8_000, &data))
    }
}
