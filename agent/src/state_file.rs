//! The protocol state file: what the core must remember across restarts
//! (Paxos promises and accepted values, proposer rounds, lease promise
//! horizons, the committed map), written off the protocol thread.
//!
//! Writes go through one writer thread so an fsync never stalls the
//! heartbeat loop; the protocol thread holds back every datagram that
//! depends on a write until the writer reports it durable (heartbeats
//! depend only on the first, which records the incarnation), and reports
//! failures to the core, which then fences the
//! node and falls silent until a later write succeeds.

use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;
use tokio::sync::mpsc::UnboundedSender;

/// Why the state file could not be used at start.
#[derive(Debug, Error)]
pub enum StateFileError {
    /// The file exists but cannot be read.
    #[error("state file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state directory cannot hold the file.
    #[error("node.state_dir {dir} is not writable: {source}")]
    NotWritable {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The state file's contents, `None` if there is none (first start).
pub fn load(path: &Path) -> Result<Option<Vec<u8>>, StateFileError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateFileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Checks that the state file's directory takes a durable write, before
/// the agent touches the host: a node that cannot remember its votes must
/// not start voting.
pub fn check_writable(path: &Path) -> Result<(), StateFileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let probe = path.with_extension("probe");
    let r = write_durably(&probe, b"xnlb").and_then(|()| std::fs::remove_file(&probe));
    r.map_err(|source| StateFileError::NotWritable {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Writes `bytes` durably: temporary file, fsync, rename, fsync the
/// directory. A crash leaves either the old or the new file whole.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The outcome of one write: its sequence number and result.
pub type Written = (u64, std::io::Result<()>);

/// Handle to the writer thread.
pub struct Writer {
    jobs: std::sync::mpsc::Sender<(u64, Vec<u8>)>,
}

impl Writer {
    /// Starts the writer for `path`; outcomes arrive on `done` in order.
    pub fn spawn(path: PathBuf, done: UnboundedSender<Written>) -> std::io::Result<Writer> {
        let (jobs, rx) = std::sync::mpsc::channel::<(u64, Vec<u8>)>();
        std::thread::Builder::new()
            .name("xnlb-state".into())
            .spawn(move || {
                while let Ok(mut job) = rx.recv() {
                    // Only the newest state matters: it contains every
                    // earlier one, and its durability releases everything
                    // that waited for them.
                    while let Ok(newer) = rx.try_recv() {
                        job = newer;
                    }
                    let result = write_durably(&path, &job.1);
                    if done.send((job.0, result)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Writer { jobs })
    }

    /// Queues write number `seq`; false if the writer is gone.
    pub fn write(&self, seq: u64, bytes: Vec<u8>) -> bool {
        self.jobs.send((seq, bytes)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_whole_and_a_missing_file_is_a_first_start() {
        let dir = std::env::temp_dir().join(format!("xnlb-state-{}", std::process::id()));
        let path = dir.join("node1.state");
        assert!(load(&path).expect("readable").is_none());
        check_writable(&path).expect("temp dir is writable");
        write_durably(&path, b"one").expect("written");
        write_durably(&path, b"two").expect("written");
        assert_eq!(load(&path).expect("readable").as_deref(), Some(&b"two"[..]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        // A regular file where the directory should be.
        let file = std::env::temp_dir().join(format!("xnlb-notadir-{}", std::process::id()));
        std::fs::write(&file, b"x").expect("temp file");
        let e = check_writable(&file.join("node1.state")).expect_err("not a directory");
        assert!(e.to_string().contains("not writable"), "{e}");
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        let _ = std::fs::remove_file(&file);
    }

    #[tokio::test]
    async fn the_writer_reports_every_write_and_coalesces_a_backlog() {
        let dir = std::env::temp_dir().join(format!("xnlb-writer-{}", std::process::id()));
        let path = dir.join("node1.state");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let w = Writer::spawn(path.clone(), tx).expect("thread");
        for seq in 1..=50u64 {
            assert!(w.write(seq, seq.to_le_bytes().to_vec()));
        }
        let mut last = 0;
        while last < 50 {
            let (seq, r) = rx.recv().await.expect("writer alive");
            r.expect("written");
            assert!(seq > last, "outcomes arrive in order");
            last = seq;
        }
        assert_eq!(
            load(&path).expect("readable"),
            Some(50u64.to_le_bytes().to_vec())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
