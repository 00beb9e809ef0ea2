//! How long a prompt plays: the duration its WAV header gives, read from a file in the prompt
//! folder or from an http(s) body, within limits, with a bounded cache by URI.
//!
//! Only the header is read (a file: at most a few KB, seeking over chunks before `data`; an
//! http body: streamed and counted, never kept, stopped once the header is read when the size is
//! known). The size of the audio is what the `data` chunk declares, clamped by what the file
//! holds (its length, or the body's `Content-Length`, or the bytes that came). Every fetch or
//! read has one deadline (`[media] fetch_timeout_secs`, waiting for a slot included) and a slot
//! among `[media] fetch_concurrency` (files and http apart).
//!
//! Files are read on tokio's blocking pool, which the SQLite store's commits use too. They
//! cannot hold it: a file is opened only when `stat` says it is a regular file, with
//! `O_NONBLOCK` (a FIFO swapped in does not block the open) and, for prompts, beneath the prompt
//! folder by the kernel's own rule (`openat2` with `RESOLVE_BENEATH`; `O_NOFOLLOW` where that is
//! missing), then `fstat` of the open handle must say so again; and at most `fetch_concurrency` threads read files at once, so
//! even a file system that hangs (a dead NFS mount) takes that many threads, not the pool.
//!
//! A prompt the server's policy refuses ([`PromptError::Refused`]) is the client's error (`400`);
//! one that cannot be had ([`PromptError::Unavailable`], [`PromptError::Invalid`]) fails the
//! operation that plays it, and the log says why.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::wav::{HeaderScanner, Scan, WavHeader};
use crate::config::{CallbackPolicy, Settings};

/// Why a prompt has no duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// The server's policy does not allow this URI; the message is for the client.
    #[error("{0}")]
    Refused(String),
    /// Allowed, but it could not be fetched or read (a missing file, an http error, a
    /// timeout, too large); the message is for the log and the operation fails 400/8536.
    #[error("{0}")]
    Unavailable(String),
    /// It came, but it is not audio that can be played (not a WAV file, not PCM); the
    /// operation fails 400/8535.
    #[error("{0}")]
    Invalid(String),
}

impl PromptError {
    /// What the operation that plays it fails with (`None`: the request is refused instead).
    pub fn failure(&self) -> Option<crate::domain::EndReason> {
        use crate::domain::operation::results;
        match self {
            Refused(_) => None,
            Unavailable(_) => Some(results::PROMPT_UNAVAILABLE),
            Invalid(_) => Some(results::PROMPT_INVALID),
        }
    }
}

use PromptError::{Invalid, Refused, Unavailable};

/// Durations remembered, by URI.
const CACHE_ENTRIES: usize = 1024;
/// Longer URIs are not remembered (so the cache stays a few MB at most).
const CACHE_MAX_URI: usize = 2048;
/// What is read from a file at a time while looking for its `data` chunk.
const READ_PIECE: usize = 1024;
/// The most header bytes read from one file (chunks are seeked over, not read).
const MAX_HEADER_READ: u64 = 64 * 1024;

/// Prompt fetching: the policy, the limits, the slots and the cache.
pub struct Prompts {
    /// The canonical prompt folder; `None`: no `file://` prompts.
    folder: Option<PathBuf>,
    /// The folder as configured (absolute), for telling a missing file inside it from one
    /// outside it when the path cannot be resolved.
    folder_as_given: Option<PathBuf>,
    policy: CallbackPolicy,
    max_bytes: u64,
    timeout: Duration,
    http_slots: Arc<Semaphore>,
    file_slots: Arc<Semaphore>,
    cache: Mutex<Cache>,
    /// Prompts' audio for phone lines, the most recent last.
    audio: Mutex<std::collections::VecDeque<(String, Arc<Vec<i16>>)>>,
}

/// A prompt's response, once it answered with success.
async fn get(http: &reqwest::Client, uri: &str) -> Result<reqwest::Response, PromptError> {
    let resp = http
        .get(uri)
        .send()
        .await
        .map_err(|e| Unavailable(format!("cannot fetch it: {}", e.without_url())))?;
    if !resp.status().is_success() {
        return Err(Unavailable(format!("it answered {}", resp.status())));
    }
    Ok(resp)
}

/// How many prompts' audio is kept.
const AUDIO_CACHE: usize = 32;

/// The whole of a file of `len` bytes, if it is at most `max`.
fn read_all(file: std::fs::File, len: u64, max: u64) -> Result<Vec<u8>, PromptError> {
    if len > max {
        return Err(Unavailable(format!(
            "it has {len} bytes, more than [media] max_prompt_bytes ({max})"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max)
        .read_to_end(&mut bytes)
        .map_err(|e| Unavailable(format!("cannot read it: {e}")))?;
    Ok(bytes)
}

impl Prompts {
    /// Reads the `[media]` settings; a configured prompt folder that does not exist is an error.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let media = &settings.media;
        let base = match &settings.config_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_dir().context("reading the working directory")?,
        };
        let given = match media.prompt_folder.as_deref() {
            Some("") => None,
            Some(folder) => Some(base.join(folder)),
            None => Some(base),
        };
        let folder = match &given {
            Some(dir) => Some(std::fs::canonicalize(dir).with_context(|| {
                format!("[media] prompt_folder {} cannot be opened", dir.display())
            })?),
            None => None,
        };
        let folder_as_given = given.map(|g| std::path::absolute(&g).unwrap_or(g));
        let slots = media.fetch_concurrency.max(1);
        Ok(Prompts {
            folder,
            folder_as_given,
            policy: settings.callbacks.clone(),
            max_bytes: media.max_prompt_bytes,
            timeout: Duration::from_secs_f64(media.fetch_timeout_secs),
            http_slots: Arc::new(Semaphore::new(slots)),
            file_slots: Arc::new(Semaphore::new(slots)),
            cache: Mutex::new(Cache::default()),
            audio: Mutex::default(),
        })
    }

    /// Where `file://` prompts are read from, if anywhere (the strict callback policy reads none).
    pub fn folder(&self) -> Option<&Path> {
        self.folder.as_deref().filter(|_| !self.policy.strict)
    }

    /// How long the prompt at `uri` plays, in milliseconds; `http` fetches http(s) prompts.
    pub async fn duration_ms(&self, http: &reqwest::Client, uri: &str) -> Result<u64, PromptError> {
        if let Some(ms) = self.cache.lock().expect("prompt cache lock").get(uri) {
            return Ok(ms);
        }
        let url = url::Url::parse(uri.trim())
            .map_err(|_| Refused("The prompt's uri is not a URL.".into()))?;
        let ms = match url.scheme() {
            "file" => self.file_prompt_ms(uri, &url).await?,
            "http" | "https" => self.http_prompt_ms(http, uri, url.scheme()).await?,
            _ => {
                return Err(Refused(
                    "A prompt's uri must be an https, http or file URL.".into(),
                ));
            }
        };
        if uri.len() <= CACHE_MAX_URI {
            self.cache
                .lock()
                .expect("prompt cache lock")
                .put(uri.to_string(), ms);
        }
        Ok(ms)
    }

    /// The duration of a WAV file the operator named (a party's `record_wav`): not limited to the
    /// prompt folder, but read the same way.
    pub async fn operator_file_ms(&self, path: &Path) -> Result<u64, PromptError> {
        let path = path.to_path_buf();
        self.on_file_thread(move || {
            let (file, len) = open_regular(&path)?;
            header_ms(file, len)
        })
        .await
    }

    /// A whole WAV file the operator named (a party's `record_wav`), if it is a regular file of at
    /// most `[media] max_prompt_bytes`.
    pub async fn read_operator_file(&self, path: &Path) -> Result<Vec<u8>, PromptError> {
        let path = path.to_path_buf();
        let max = self.max_bytes;
        self.on_file_thread(move || {
            let (file, len) = open_regular(&path)?;
            read_all(file, len, max)
        })
        .await
    }

    /// A prompt's audio at 8 kHz mono, for a phone line: fetched (or read) whole, under the
    /// same policy, limits and slots as [`Prompts::duration_ms`], and kept for the next call
    /// (the last [`AUDIO_CACHE`] prompts).
    pub async fn audio(
        &self,
        http: &reqwest::Client,
        uri: &str,
    ) -> Result<Arc<Vec<i16>>, PromptError> {
        if let Some((_, a)) = self
            .audio
            .lock()
            .expect("audio cache lock")
            .iter()
            .find(|(u, _)| u == uri)
        {
            return Ok(a.clone());
        }
        let url = url::Url::parse(uri.trim())
            .map_err(|_| Refused("The prompt's uri is not a URL.".into()))?;
        let max = self.max_bytes;
        let bytes = match url.scheme() {
            "file" => {
                self.file_prompt(uri, &url, move |file, len| read_all(file, len, max))
                    .await?
            }
            "http" | "https" => {
                self.http_prompt(uri, url.scheme(), self.fetch_all(http, uri))
                    .await?
            }
            _ => {
                return Err(Refused(
                    "A prompt's uri must be an https, http or file URL.".into(),
                ));
            }
        };
        let pcm = super::wav::pcm_8k(&bytes)
            .map_err(|why| Invalid(format!("it cannot be played on a phone line: {why}")))?;
        let pcm = Arc::new(pcm);
        let mut cache = self.audio.lock().expect("audio cache lock");
        if cache.len() == AUDIO_CACHE {
            cache.pop_front();
        }
        cache.push_back((uri.to_string(), pcm.clone()));
        Ok(pcm)
    }

    async fn fetch_all(&self, http: &reqwest::Client, uri: &str) -> Result<Vec<u8>, PromptError> {
        let mut resp = get(http, uri).await?;
        let mut bytes = vec![];
        while let Some(piece) = resp
            .chunk()
            .await
            .map_err(|e| Unavailable(format!("its body broke off: {}", e.without_url())))?
        {
            bytes.extend_from_slice(&piece);
            if bytes.len() as u64 > self.max_bytes {
                return Err(Unavailable(format!(
                    "it is longer than [media] max_prompt_bytes ({})",
                    self.max_bytes
                )));
            }
        }
        Ok(bytes)
    }

    async fn file_prompt_ms(&self, uri: &str, url: &url::Url) -> Result<u64, PromptError> {
        self.file_prompt(uri, url, header_ms).await
    }

    /// Opens a `file://` prompt inside the prompt folder and hands it to `read` on a file
    /// thread.
    async fn file_prompt<T: Send + 'static>(
        &self,
        uri: &str,
        url: &url::Url,
        read: impl FnOnce(std::fs::File, u64) -> Result<T, PromptError> + Send + 'static,
    ) -> Result<T, PromptError> {
        if self.policy.strict {
            return Err(Refused(
                "With the strict callback policy this server reads no file:// prompts.".into(),
            ));
        }
        let (Some(folder), Some(given)) = (self.folder.clone(), self.folder_as_given.clone())
        else {
            return Err(Refused(
                "file:// prompts are turned off on this server ([media] prompt_folder is empty)."
                    .into(),
            ));
        };
        if has_dot_dot(uri) {
            return Err(Refused("A prompt's file path may not contain '..'.".into()));
        }
        let path = url.to_file_path().map_err(|_| {
            Refused(
                "A file:// prompt names an absolute local path, such as file:///prompts/hello.wav."
                    .into(),
            )
        })?;
        self.on_file_thread(move || {
            let real = match std::fs::canonicalize(&path) {
                Ok(real) => real,
                Err(e) if path.starts_with(&folder) || path.starts_with(&given) => {
                    return Err(Unavailable(format!("cannot open it: {e}")));
                }
                Err(_) => return Err(outside_folder()),
            };
            // The real path, symlinks resolved: a link in the folder to a file outside is outside.
            if !real.starts_with(&folder) {
                return Err(outside_folder());
            }
            // Opened so that it stays inside, whatever is swapped in since the check.
            let (file, len) = open_regular_in(&folder, &real)?;
            read(file, len)
        })
        .await
    }

    /// Runs blocking file work on a thread of its own slot, within the deadline. A read that
    /// overruns keeps its slot until it ends, so hung reads cannot take more threads than slots.
    async fn on_file_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PromptError> + Send + 'static,
    ) -> Result<T, PromptError> {
        let deadline = Instant::now() + self.timeout;
        let permit = self.slot(&self.file_slots, deadline, "file").await?;
        let task = tokio::task::spawn_blocking(move || {
            let _permit: OwnedSemaphorePermit = permit;
            work()
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(Unavailable(format!("reading it failed: {e}"))),
            Err(_) => Err(Unavailable(format!(
                "reading it took longer than [media] fetch_timeout_secs ({} s)",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    async fn slot(
        &self,
        slots: &Arc<Semaphore>,
        deadline: Instant,
        what: &str,
    ) -> Result<OwnedSemaphorePermit, PromptError> {
        match tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Unavailable(format!(
                "every {what} slot ([media] fetch_concurrency) stayed busy for [media] fetch_timeout_secs ({} s)",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    async fn http_prompt_ms(
        &self,
        http: &reqwest::Client,
        uri: &str,
        scheme: &str,
    ) -> Result<u64, PromptError> {
        self.http_prompt(uri, scheme, self.fetch_header_ms(http, uri))
            .await
    }

    /// Runs `fetch` for an http(s) prompt the callback policy allows, in a fetch slot, within
    /// the deadline.
    async fn http_prompt<T>(
        &self,
        uri: &str,
        scheme: &str,
        fetch: impl std::future::Future<Output = Result<T, PromptError>>,
    ) -> Result<T, PromptError> {
        if crate::net_policy::callback_refusal(&self.policy, uri).is_some() {
            return Err(Refused(if self.policy.strict && scheme != "https" {
                "With the strict callback policy, prompts are fetched only over https.".into()
            } else {
                "The prompt's uri points at a loopback, private or link-local address, which this server does not fetch.".into()
            }));
        }
        let deadline = Instant::now() + self.timeout;
        let fetch = async {
            let _permit = self.slot(&self.http_slots, deadline, "fetch").await?;
            fetch.await
        };
        match tokio::time::timeout_at(deadline, fetch).await {
            Ok(result) => result,
            Err(_) => Err(Unavailable(format!(
                "fetching it took longer than [media] fetch_timeout_secs ({} s)",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    async fn fetch_header_ms(&self, http: &reqwest::Client, uri: &str) -> Result<u64, PromptError> {
        let mut resp = get(http, uri).await?;
        let length = resp.content_length();
        let mut scanner = HeaderScanner::new();
        let mut header: Option<WavHeader> = None;
        let mut came = 0u64;
        loop {
            if let (Some(h), Some(length)) = (header, length) {
                // The size is known: nothing after the header needs reading.
                return Ok(h.duration_ms(length));
            }
            if let Some(h) = header
                && came >= h.data_end()
            {
                return Ok(h.duration_ms(came));
            }
            let piece = resp
                .chunk()
                .await
                .map_err(|e| Unavailable(format!("its body broke off: {}", e.without_url())))?;
            let Some(piece) = piece else {
                return match header {
                    Some(h) => Ok(h.duration_ms(came)),
                    None => Err(Invalid("it ends before its data chunk".into())),
                };
            };
            came += piece.len() as u64;
            if came > self.max_bytes {
                return Err(Unavailable(format!(
                    "more than [media] max_prompt_bytes ({}) came without a Content-Length that would tell its size",
                    self.max_bytes
                )));
            }
            if header.is_none() {
                match scanner.feed(&piece) {
                    Scan::NeedMore => {}
                    Scan::Done(h) => header = Some(h),
                    Scan::NotWav(why) => return Err(Invalid(format!("not a WAV file: {why}"))),
                }
            }
        }
    }
}

/// What a `file://` prompt outside the prompt folder is told.
fn outside_folder() -> PromptError {
    Refused(
        "file:// prompts are read only from the server's prompt folder ([media] prompt_folder), and this one is not in it."
            .into(),
    )
}

fn cannot_open(e: impl std::fmt::Display) -> PromptError {
    Unavailable(format!("cannot open it: {e}"))
}

/// Opens `path` with `open` only if it is a regular file, and gives its length. `stat` first, so
/// a device or FIFO is not even opened; then `fstat` of the handle, so one swapped in since (the
/// opens are `O_NONBLOCK`: it cannot block either) does not pass.
fn regular(
    path: &Path,
    open: impl FnOnce() -> Result<File, PromptError>,
) -> Result<(File, u64), PromptError> {
    let not_regular = || Refused("The prompt is not a regular file.".into());
    let meta = std::fs::metadata(path).map_err(cannot_open)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let file = open()?;
    let meta = file.metadata().map_err(cannot_open)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok((file, meta.len()))
}

/// Opens `path` for reading if it is a regular file (see [`regular`]); its last component may
/// not be a link.
fn open_regular(path: &Path) -> Result<(File, u64), PromptError> {
    regular(path, || open_path(path))
}

/// Opens `real` (a path inside `folder`) as [`open_regular`] does, but so that the kernel keeps
/// it beneath `folder` however the folder's contents change between the check and the open.
fn open_regular_in(folder: &Path, real: &Path) -> Result<(File, u64), PromptError> {
    regular(real, || open_beneath(folder, real))
}

fn open_path(path: &Path) -> Result<File, PromptError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .map_err(cannot_open)
}

/// `openat2` with `RESOLVE_BENEATH` (Linux 5.6 and later): a path that leads out of `folder`
/// (`..`, a link out, an absolute link) is refused by the kernel. Elsewhere, or on an older
/// kernel, the checked path is opened as [`open_path`] does.
fn open_beneath(folder: &Path, real: &Path) -> Result<File, PromptError> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        use rustix::io::Errno;
        let rel = real.strip_prefix(folder).map_err(|_| outside_folder())?;
        let dir = File::open(folder).map_err(cannot_open)?;
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(&dir, rel, flags, Mode::empty(), resolve) {
            Ok(fd) => return Ok(File::from(fd)),
            // The path would leave the folder.
            Err(Errno::XDEV) => return Err(outside_folder()),
            // No openat2 in this kernel (or a sandbox forbids it): the checked path, as before.
            Err(Errno::NOSYS) | Err(Errno::PERM) => {}
            Err(e) => return Err(cannot_open(e)),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = folder;
    open_path(real)
}

/// Reads a WAV header from an open regular file of `len` bytes: a few KB at most, seeking over
/// the chunks before `data`.
fn header_ms(mut file: File, len: u64) -> Result<u64, PromptError> {
    let mut scanner = HeaderScanner::new();
    let mut piece = [0u8; READ_PIECE];
    let mut read = 0u64;
    loop {
        let skip = scanner.take_skip();
        if skip > 0 {
            if scanner.position() > len {
                break;
            }
            file.seek(SeekFrom::Start(scanner.position()))
                .map_err(|e| Unavailable(format!("cannot read it: {e}")))?;
        }
        let n = file
            .read(&mut piece)
            .map_err(|e| Unavailable(format!("cannot read it: {e}")))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        match scanner.feed(&piece[..n]) {
            Scan::NeedMore if read < MAX_HEADER_READ => {}
            Scan::NeedMore => {
                return Err(Invalid(format!(
                    "no data chunk in the first {MAX_HEADER_READ} bytes read"
                )));
            }
            Scan::Done(h) => return Ok(h.duration_ms(len)),
            Scan::NotWav(why) => return Err(Invalid(format!("not a WAV file: {why}"))),
        }
    }
    Err(Invalid("it ends before its data chunk".into()))
}

/// Whether a URI's path has a `..` segment (also percent-encoded), before any parser removes it.
fn has_dot_dot(uri: &str) -> bool {
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    path.split(['/', '\\']).any(|segment| {
        let s = segment.to_ascii_lowercase().replace("%2e", ".");
        s == ".."
    })
}

/// A URI fit for a log line: no user, password, query or fragment (where secrets live).
pub fn redact(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => {
            let end = uri.find(['?', '#', '@']).unwrap_or(uri.len()).min(200);
            let mut cut = end;
            while !uri.is_char_boundary(cut) {
                cut -= 1;
            }
            uri[..cut].to_string()
        }
    }
}

/// A bounded map of two generations: lookups promote from the old one, and when the new one is
/// full it becomes the old one (dropping the previous old one). Recently used entries stay.
#[derive(Default)]
struct Cache {
    new: HashMap<String, u64>,
    old: HashMap<String, u64>,
}

impl Cache {
    fn get(&mut self, key: &str) -> Option<u64> {
        if let Some(v) = self.new.get(key) {
            return Some(*v);
        }
        let (key, v) = self.old.remove_entry(key)?;
        self.put(key, v);
        Some(v)
    }

    fn put(&mut self, key: String, v: u64) {
        if self.new.len() >= CACHE_ENTRIES / 2 && !self.new.contains_key(&key) {
            self.old = std::mem::take(&mut self.new);
        }
        self.new.insert(key, v);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.new.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the check saw was a file inside the folder; by the open, a component of its path is
    /// a link out of it (a folder swapped, a file replaced): the open itself refuses.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_prompt_opened_after_a_swap_cannot_leave_the_folder() {
        let base = std::env::temp_dir().join(format!("sb-beneath-{}", uuid::Uuid::new_v4()));
        let (folder, elsewhere) = (base.join("prompts"), base.join("secret"));
        std::fs::create_dir_all(folder.join("greetings")).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(folder.join("greetings/hello.wav"), b"RIFF").unwrap();
        std::fs::write(elsewhere.join("hello.wav"), b"RIFF").unwrap();
        let folder = std::fs::canonicalize(&folder).unwrap();
        let inside = folder.join("greetings/hello.wav");
        let (_, len) = open_regular_in(&folder, &inside).expect("a file inside opens");
        assert_eq!(len, 4);
        // The folder `greetings` swapped for a link to the secret folder, same path.
        std::fs::remove_dir_all(folder.join("greetings")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, folder.join("greetings")).unwrap();
        assert!(
            matches!(open_regular_in(&folder, &inside), Err(Refused(m)) if m.contains("not in it")),
            "the same path now leads out: refused as outside the folder"
        );
        // A relative link that stays inside is still followed (an absolute one is not: the kernel
        // cannot tell where it leads without leaving the folder).
        std::fs::create_dir_all(folder.join("real")).unwrap();
        std::fs::write(folder.join("real/hello.wav"), b"RIFFRIFF").unwrap();
        std::fs::remove_file(folder.join("greetings")).unwrap();
        std::os::unix::fs::symlink("real", folder.join("greetings")).unwrap();
        let opened = open_regular_in(&folder, &inside).ok().map(|(_, len)| len);
        assert_eq!(opened, Some(8));
        std::fs::remove_dir_all(&base).ok();
    }

    #[test]
    fn the_cache_stays_bounded_and_keeps_what_is_used() {
        let mut c = Cache::default();
        c.put("kept".into(), 1);
        for i in 0..10 * CACHE_ENTRIES {
            c.put(format!("uri-{i}"), i as u64);
            assert_eq!(c.get("kept"), Some(1), "used all along, so kept");
            assert!(c.len() <= CACHE_ENTRIES, "{} entries", c.len());
        }
        assert_eq!(c.get("uri-0"), None, "long unused, so dropped");
    }

    #[test]
    fn dot_dot_segments_are_seen_in_any_spelling() {
        for uri in [
            "file:///p/../etc/passwd",
            "file:///p/%2e%2e/etc/passwd",
            "file:///p/.%2E/x",
            "file:///p/..",
        ] {
            assert!(has_dot_dot(uri), "{uri}");
        }
        for uri in [
            "file:///p/a..b.wav",
            "file:///p/.hidden.wav",
            "file:///p/x.wav?a=..",
        ] {
            assert!(!has_dot_dot(uri), "{uri}");
        }
    }

    #[test]
    fn redacted_uris_keep_no_query_fragment_or_password() {
        assert_eq!(
            redact("https://user:pw@cdn.example.com/p/hello.wav?sig=SECRET#t"),
            "https://cdn.example.com/p/hello.wav"
        );
        assert_eq!(redact("not a url?token=SECRET"), "not a url");
    }

    fn header_of(wav: &[u8]) -> Result<u64, PromptError> {
        let dir = std::env::temp_dir().join(format!("sb-prompt-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.wav");
        std::fs::write(&path, wav).unwrap();
        let (file, len) = open_regular(&path).unwrap();
        let r = header_ms(file, len);
        std::fs::remove_dir_all(&dir).ok();
        r
    }

    #[test]
    fn a_file_header_is_read_by_seeking_over_large_chunks() {
        let mut wav = crate::media::wav::recording_wav(1500, 0, false);
        // 10 MB of LIST before the data: seeked over, not read.
        let list_len = 10 * 1024 * 1024u32;
        let mut list = b"LIST".to_vec();
        list.extend_from_slice(&list_len.to_le_bytes());
        list.resize(8 + list_len as usize, 0);
        wav.splice(36..36, list);
        assert_eq!(header_of(&wav), Ok(1500));
    }

    #[test]
    fn a_file_whose_data_is_shorter_than_declared_plays_what_it_holds() {
        let mut wav = crate::media::wav::recording_wav(2000, 0, false);
        wav.truncate(44 + 16_000);
        assert_eq!(header_of(&wav), Ok(500));
        assert!(matches!(header_of(&wav[..40]), Err(Invalid(_))));
        assert!(matches!(header_of(b"hello"), Err(Invalid(_))));
    }

    #[test]
    fn devices_and_fifos_are_not_opened_as_prompts() {
        assert!(matches!(
            open_regular(Path::new("/dev/zero")),
            Err(Refused(_))
        ));
        assert!(matches!(open_regular(Path::new("/")), Err(Refused(_))));
    }
}
