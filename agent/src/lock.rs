//! One agent per node: an exclusive `flock` on `<state_dir>/node<id>.lock`.
//!
//! Two agents for the same node id would both heartbeat as that member,
//! adopt the same pinned program and both extend its lease (S3 forbids a
//! second agent from extending anything). Binding the heartbeat address only
//! catches a second agent in the same network namespace; the lock catches it
//! wherever the state directory is shared. `flock` is released by the kernel
//! when the holder exits, however it exits, so a SIGKILLed agent never
//! leaves a stale lock behind. The file holds the holder's PID so that the
//! refusal can name it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Why the node lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds it.
    #[error(
        "another xnlb agent (PID {pid}) already runs node {node}: it holds {path}; stop it first"
    )]
    Held {
        /// Node id.
        node: u8,
        /// The lock file.
        path: PathBuf,
        /// The holder's PID as it wrote it (`?` if unreadable).
        pid: String,
    },
    /// The lock file could not be created or locked.
    #[error("lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
    path: PathBuf,
}

/// The lock file of node `id` in `state_dir`.
pub fn lock_path(state_dir: &Path, id: u8) -> PathBuf {
    state_dir.join(format!("node{id}.lock"))
}

impl NodeLock {
    /// Takes node `id`'s lock without waiting, and writes our PID into it.
    pub fn acquire(state_dir: &Path, id: u8) -> Result<NodeLock, LockError> {
        let path = lock_path(state_dir, id);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        // Not truncated on open: the holder's PID must stay readable.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(e));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = match text.trim() {
                "" => "?".to_string(),
                t => t.to_string(),
            };
            return Err(LockError::Held {
                node: id,
                path: path.clone(),
                pid,
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(NodeLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xnlb-lock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_second_holder_is_refused_with_the_holders_pid_and_the_file() {
        let dir = temp_dir("second");
        let first = NodeLock::acquire(&dir, 7).expect("first lock");
        // flock conflicts between two open file descriptions, also in one
        // process: this is what a second agent sees.
        let err = NodeLock::acquire(&dir, 7).expect_err("second lock refused");
        let text = err.to_string();
        let pid = std::process::id().to_string();
        assert!(
            text.contains(&pid) && text.contains("node7.lock"),
            "the refusal names the PID {pid} and the file: {text}"
        );
        // Another node id is another lock.
        NodeLock::acquire(&dir, 8).expect("node 8 is free");
        drop(first);
        // Another test of this process may fork at this moment: its child
        // shares our descriptor until it execs (close-on-exec), so allow
        // that window to pass.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let again = loop {
            match NodeLock::acquire(&dir, 7) {
                Ok(l) => break Ok(l),
                Err(e) if std::time::Instant::now() > deadline => break Err(e),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        };
        again.expect("free again once the holder is gone");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
