//! Recordings: how long the speaker talks when a bot records it, and the WAV file the bot
//! downloads from the operation's `recordingLocation`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// Finished recordings kept for download, and the audio of real calls' recordings.
///
/// Real recordings (what a SIP leg's RTP carried while a `recordResponse` listened) are filled
/// in memory as packets come ([`Archive::start`]). With a data folder (a `sqlite://` store's),
/// each finished one is written there as `recordings/{opId}.wav`, and every finished
/// recording's description (its token and length: [`Recording`]) as `{opId}.json` once the
/// change that finished it is durable, so downloads outlive a restart. The newest
/// `[media] keep_recordings` are kept; past that the oldest go, files and all.
pub struct Archive {
    dir: Option<PathBuf>,
    keep: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Real recordings' audio in memory, oldest first: those being made, and (without a data
    /// folder) the finished ones.
    captures: VecDeque<(String, Capture)>,
    /// Recordings kept in the data folder, oldest first.
    kept: VecDeque<String>,
}

/// Real recordings' audio held in memory at most (up to two minutes each, about 2 MB): those
/// being made, and without a data folder the newest finished ones.
const IN_MEMORY: usize = 100;

/// One recording's samples (8 kHz), shared with the leg's media that fills them.
pub type Capture = Arc<Mutex<Vec<i16>>>;

impl Archive {
    /// An archive in `data_dir/recordings` (created), or in memory only without one.
    pub fn new(data_dir: Option<&Path>, keep: usize) -> std::io::Result<Archive> {
        let dir = match data_dir {
            Some(d) => {
                let dir = d.join("recordings");
                std::fs::create_dir_all(&dir)?;
                Some(dir)
            }
            None => None,
        };
        let mut kept: Vec<(std::time::SystemTime, String)> = vec![];
        if let Some(dir) = &dir {
            let mut audio = vec![];
            for entry in std::fs::read_dir(dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(op) = name.strip_suffix(".json").filter(|op| is_op_id(op)) {
                    let at = entry.metadata().and_then(|m| m.modified());
                    kept.push((at.unwrap_or(std::time::UNIX_EPOCH), op.to_string()));
                } else if let Some(op) = name.strip_suffix(".wav").filter(|op| is_op_id(op)) {
                    audio.push(op.to_string());
                } else if name.ends_with(".part") {
                    // A write the last run did not finish.
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            // Audio whose recording never became durable (or was cancelled as it ended) has no
            // description, so nothing could fetch it: it goes.
            for op in audio {
                if !kept.iter().any(|(_, k)| *k == op) {
                    let _ = std::fs::remove_file(dir.join(format!("{op}.wav")));
                }
            }
        }
        kept.sort();
        let archive = Archive {
            dir,
            keep: keep.max(1),
            inner: Mutex::new(Inner {
                captures: VecDeque::new(),
                kept: kept.into_iter().map(|(_, op)| op).collect(),
            }),
        };
        archive.prune();
        Ok(archive)
    }

    /// A new, empty real recording for operation `op`; `None` if one is being made for it
    /// already (another line of the call records it).
    pub fn start(&self, op: &str) -> Option<Capture> {
        let capture = Capture::default();
        let mut inner = self.inner.lock().expect("archive lock");
        if inner.captures.iter().any(|(o, _)| o == op) {
            return None;
        }
        if inner.captures.len() >= self.keep.min(IN_MEMORY) {
            inner.captures.pop_front();
        }
        inner.captures.push_back((op.to_string(), capture.clone()));
        Some(capture)
    }

    /// Operation `op`'s real recording is over: with a data folder its audio goes there (and
    /// leaves memory).
    pub fn finish(&self, op: &str) {
        let Some(dir) = &self.dir else { return };
        let capture = {
            let inner = self.inner.lock().expect("archive lock");
            let found = inner.captures.iter().find(|(o, _)| o == op);
            let Some((_, c)) = found else { return };
            c.clone()
        };
        let data: Vec<u8> = {
            let samples = capture.lock().expect("capture lock");
            samples.iter().flat_map(|s| s.to_le_bytes()).collect()
        };
        let path = dir.join(format!("{op}.wav"));
        // Served from memory until the file is whole.
        if write_private(&path, &wav::mono_wav(8_000, &data)) {
            let mut inner = self.inner.lock().expect("archive lock");
            inner.captures.retain(|(o, _)| o != op);
        }
    }

    /// A finished recording, durable now: its description goes to the data folder.
    pub fn keep(&self, op: &str, rec: &Recording) {
        let Some(dir) = &self.dir else { return };
        let Ok(json) = serde_json::to_vec(rec) else {
            return;
        };
        if !write_private(&dir.join(format!("{op}.json")), &json) {
            return;
        }
        self.inner
            .lock()
            .expect("archive lock")
            .kept
            .push_back(op.to_string());
        self.prune();
    }

    /// A recording kept in the data folder (one the server knew before it restarted).
    pub fn kept(&self, op: &str) -> Option<Recording> {
        let dir = self.dir.as_ref().filter(|_| is_op_id(op))?;
        let bytes = std::fs::read(dir.join(format!("{op}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The WAV file of operation `op`'s real recording (8 kHz, 16-bit, mono), cut or padded
    /// with silence to `length_ms`; `None` if no real call recorded it.
    pub fn wav(&self, op: &str, length_ms: u64) -> Option<Vec<u8>> {
        let want = (length_ms * 8) as usize;
        let in_memory = {
            let inner = self.inner.lock().expect("archive lock");
            inner
                .captures
                .iter()
                .find(|(o, _)| o == op)
                .map(|(_, c)| c.clone())
        };
        let mut samples: Vec<i16> = match in_memory {
            Some(c) => c.lock().expect("capture lock").clone(),
            None => {
                let dir = self.dir.as_ref().filter(|_| is_op_id(op))?;
                let bytes = std::fs::read(dir.join(format!("{op}.wav"))).ok()?;
                wav::pcm_8k(&bytes).ok()?
            }
        };
        samples.resize(want, 0);
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        Some(wav::mono_wav(8_000, &data))
    }

    /// Forgets every recording (the control API's reset).
    pub fn clear(&self) {
        let kept = {
            let mut inner = self.inner.lock().expect("archive lock");
            inner.captures.clear();
            std::mem::take(&mut inner.kept)
        };
        for op in kept {
            self.remove(&op);
        }
    }

    /// Drops the oldest kept recordings past the limit.
    fn prune(&self) {
        loop {
            let oldest = {
                let mut inner = self.inner.lock().expect("archive lock");
                if inner.kept.len() <= self.keep {
                    return;
                }
                inner.kept.pop_front()
            };
            if let Some(op) = oldest {
                self.remove(&op);
            }
        }
    }

    fn remove(&self, op: &str) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(dir.join(format!("{op}.json")));
            let _ = std::fs::remove_file(dir.join(format!("{op}.wav")));
        }
    }
}

/// Operation ids are GUIDs: anything else names no file.
fn is_op_id(op: &str) -> bool {
    !op.is_empty() && op.len() <= 64 && op.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Writes a file only its owner reads (it holds a recording, or the token that fetches one);
/// a failure is logged, not fatal: the recording stays downloadable until a restart.
fn write_private(path: &Path, bytes: &[u8]) -> bool {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Whole or not at all: a crash mid-write leaves a stray `.part`, never half a recording.
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&part)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&part, path));
    if let Err(e) = &written {
        tracing::warn!("cannot keep a recording in {}: {e}", path.display());
    }
    written.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(token: &str) -> Recording {
        Recording {
            access_token: token.into(),
            length_ms: 500,
            speech_ms: 500,
            beep: false,
            source_wav: None,
            real: true,
        }
    }

    #[test]
    fn a_real_recording_outlives_a_restart_and_the_oldest_go_past_the_limit() {
        let dir =
            std::env::temp_dir().join(format!("sb-archive-{}", crate::domain::ids::new_guid()));
        let archive = Archive::new(Some(&dir), 2).unwrap();
        let ids = ["0000-a", "0000-b", "0000-c"];
        for (k, op) in ids.iter().enumerate() {
            let capture = archive.start(op).unwrap();
            assert!(archive.start(op).is_none(), "one capture per operation");
            capture
                .lock()
                .unwrap()
                .extend([1000i16 * (k as i16 + 1); 800]);
            archive.finish(op);
            archive.keep(op, &rec(op));
        }
        let again = Archive::new(Some(&dir), 2).unwrap();
        assert_eq!(again.kept("0000-a"), None, "the oldest went");
        assert_eq!(again.kept("0000-c"), Some(rec("0000-c")));
        let wav = again.wav("0000-c", 200).unwrap();
        let samples = wav::pcm_8k(&wav).unwrap();
        assert_eq!(samples.len(), 1600, "cut or padded to its length");
        assert_eq!((samples[0], samples[799], samples[800]), (3000, 3000, 0));
        assert_eq!(again.wav("../etc/passwd", 100), None);
        // Audio without a description, and half-written files, are swept at start.
        std::fs::write(dir.join("recordings/0000-d.wav"), b"x").unwrap();
        std::fs::write(dir.join("recordings/0000-e.wav.part"), b"x").unwrap();
        let swept = Archive::new(Some(&dir), 2).unwrap();
        assert!(!dir.join("recordings/0000-d.wav").exists());
        assert!(!dir.join("recordings/0000-e.wav.part").exists());
        assert!(
            dir.join("recordings/0000-c.wav").exists(),
            "kept with its description"
        );
        drop(swept);
        again.clear();
        assert_eq!(Archive::new(Some(&dir), 2).unwrap().kept("0000-c"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
