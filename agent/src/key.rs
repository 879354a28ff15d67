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

/// Reads the key at `path`, refusing one others can read.
pub fn load(path: &Path) -> Result<Vec<u8>, KeyError> {
    let read = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
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
