//! The cluster key: made by `xnlb keygen`, read by the agent.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why the key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Unreadable.
    #[error("cluster.key_file {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A directory, device or other non-file: the agent would fail to read
    /// it only later, or block on a FIFO.
    #[error("cluster.key_file {path}: is not a regular file")]
    NotAFile {
        /// Path.
        path: PathBuf,
    },
    /// Readable by group or others.
    #[error(
        "cluster.key_file {path}: mode {mode:o} lets others read the cluster key: chmod 600 it"
    )]
    Permissions {
        /// Path.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Not 64 hex digits.
    #[error("cluster.key_file {path}: expected 64 hex digits (make one with `xnlb keygen`)")]
    Format {
        /// Path.
        path: PathBuf,
    },
}

/// A new random 256-bit key as 64 hex digits.
pub fn generate() -> String {
    let key: [u8; 32] = rand::random();
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a new key to `path`, created with mode 0600 so that it is never
/// readable by others, not even for a moment (`xnlb keygen > file` under a
/// 022 umask makes a 0644 file that [`load`] refuses). An existing file is
/// never overwritten: it may be the key the running cluster uses.
pub fn write_new(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // The umask can only clear bits, never add them: 0600 stays 0600 or less,
    // and less (e.g. umask 0277) would lock the owner out, so set it exactly.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(f, "{}", generate())?;
    f.sync_all()
}

/// Reads the key at `path`, refusing one others can read.
pub fn load(path: &Path) -> Result<Vec<u8>, KeyError> {
    let read = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let hex = text.trim();
    if hex.len() != 64 {
        return Err(KeyError::Format {
            path: path.to_owned(),
        });
    }
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| KeyError::Format {
            path: path.to_owned(),
        })
}
