//! One server per database file. Two servers writing one SQLite file would each keep their own
//! memory of the calls and deliver the same notifications twice; SQLite's own locks only make
//! them take turns. So the store takes an exclusive advisory lock (`flock`) on a file beside the
//! database, `NAME.lock`, before it reads or migrates anything, and holds it while it is open.
//! The kernel releases it when the process ends, however it ends (SIGKILL included), so a
//! crashed server never leaves a stale lock behind. The file holds the holder's process id, to
//! name it in the refusal.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

/// The lock on one database file, held until dropped.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// Why the lock could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "the store {db} is in use by another Switchboard{holder}: it holds the lock {lock}. Stop that server first, or give this one its own --store",
        db = .db.display(),
        lock = .lock.display(),
        holder = .pid.map(|p| format!(" (process {p})")).unwrap_or_default()
    )]
    Held {
        db: PathBuf,
        lock: PathBuf,
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {source}", .lock.display())]
    Io {
        lock: PathBuf,
        source: std::io::Error,
    },
}

/// The lock file beside `db`: `switchboard.db` → `switchboard.db.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

impl StoreLock {
    /// Takes the lock on `db`'s lock file, creating the file if it is missing; fails at once if
    /// another process (or another store in this one) holds it.
    pub fn acquire(db: &Path) -> Result<Self, LockError> {
        let lock = lock_path(db);
        let io = |source| LockError::Io {
            lock: lock.clone(),
            source,
        };
        // A lock file left by an earlier run on a folder that is read-only now can still be
        // locked through a read-only descriptor; the store then says it cannot write.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .or_else(|_| File::open(&lock))
            .map_err(io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    db: db.to_path_buf(),
                    lock,
                    pid: text.trim().parse().ok(),
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        // Best effort: the process id only serves the message of a server refused later.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(StoreLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("sb-lock-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("switchboard.db");
        (dir, db)
    }

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_and_names_the_holder() {
        let (dir, db) = temp_db();
        let held = StoreLock::acquire(&db).unwrap();
        let err = StoreLock::acquire(&db).unwrap_err();
        let said = err.to_string();
        assert!(said.contains(&db.display().to_string()), "{said}");
        assert!(said.contains("another Switchboard"), "{said}");
        assert!(
            said.contains(&format!("(process {})", std::process::id())),
            "{said}"
        );
        drop(held);
        StoreLock::acquire(&db).expect("the lock is free again once dropped");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_lock_file_sits_beside_the_database() {
        assert_eq!(
            lock_path(Path::new("data/switchboard.db")),
            Path::new("data/switchboard.db.lock")
        );
        assert_eq!(lock_path(Path::new("sb.db")), Path::new("sb.db.lock"));
    }
}
