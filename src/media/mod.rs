//! Media: what a call hears and says, apart from the HTTP handlers that ask for it.
//!
//! - `wav.rs`: WAV headers read incrementally, recordings written (no I/O);
//! - `prompts.rs`: how long a prompt plays (fetched over http(s) or read from the prompt
//!   folder, within the `[media]` limits), and the operator's own WAV files;
//! - `recordings.rs`: what a recording holds: the speaker's speech (a simulated party's
//!   [`Speech`](crate::fabric::simulated::Speech)), and the file a bot downloads.
//!
//! Real media over RTP (prompts sent, answers recorded) will live here too, behind the fabric.

pub mod prompts;
pub mod recordings;
pub mod wav;
