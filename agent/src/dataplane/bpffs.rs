//! Making sure pins land on a BPF filesystem: on a plain directory they
//! would fail, and on a tmpfs they would not outlive the agent.
use std::ffi::CString;
use std::path::{Path, PathBuf};

use super::DataplaneError;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` is (the root of) a BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Mounts bpffs on `/sys/fs/bpf` when `pin_dir` lies under it and nothing
/// is mounted there yet (as systemd does on most distributions).
pub fn ensure_mounted(pin_dir: &Path) -> Result<(), DataplaneError> {
    let root = PathBuf::from("/sys/fs/bpf");
    if !pin_dir.starts_with(&root) || is_bpffs(&root) {
        return Ok(());
    }
    let (src, target, fstype) = (
        CString::new("bpf").unwrap_or_default(),
        CString::new("/sys/fs/bpf").unwrap_or_default(),
        CString::new("bpf").unwrap_or_default(),
    );
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(DataplaneError::Bpffs(root, std::io::Error::last_os_error()));
    }
    tracing::info!("mounted the BPF filesystem on /sys/fs/bpf");
    Ok(())
}
