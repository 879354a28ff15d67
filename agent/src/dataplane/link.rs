//! The agent's own descriptor of the XDP link, and what the kernel says
//! about it.
//!
//! The link is pinned so that it outlives the agent (S3: a dead agent's
//! program keeps filtering and fences itself). But a pin alone is a weak
//! hold: `rm` of the pin file, or an unmount of the BPF filesystem, drops
//! the last reference and the kernel detaches the program while the agent
//! still reports itself converged. Holding a descriptor of our own keeps the
//! link (and the program) attached however the pin is treated, lets the
//! agent pin it again, and lets it ask the kernel cheaply (one
//! `BPF_OBJ_GET_INFO_BY_FD`) whether the link still ties our program to the
//! interface. aya 0.14 exposes neither a link's descriptor nor its
//! interface, hence these three raw `bpf(2)` commands.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_TYPE_XDP: u32 = 6;

/// `union bpf_attr`, large enough for the commands used here (the kernel
/// wants every byte past a command's fields zero).
#[repr(C, align(8))]
struct Attr([u8; 64]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 64])
    }

    fn put_u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put_u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, zero-padded bpf_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr as *mut libc::c_void,
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// What `BPF_OBJ_GET_INFO_BY_FD` says about an XDP link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpLinkState {
    /// The program the link runs.
    pub prog_id: u32,
    /// The interface it is attached to; 0 once detached (the interface
    /// went away, or someone ran `bpftool link detach`).
    pub ifindex: u32,
}

/// A descriptor of an XDP link, owned by the agent.
#[derive(Debug)]
pub struct OwnedLink {
    fd: OwnedFd,
    id: u32,
}

impl OwnedLink {
    /// Opens link `id` (from aya's `FdLink::info().id()`).
    pub fn open(id: u32) -> std::io::Result<OwnedLink> {
        let mut attr = Attr::new();
        attr.put_u32(0, id); // link_id
        let fd = bpf(BPF_LINK_GET_FD_BY_ID, &mut attr)?;
        // SAFETY: the kernel just gave us this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(OwnedLink { fd, id })
    }

    /// The kernel's id of the link.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Which program the link runs and where.
    pub fn state(&self) -> std::io::Result<XdpLinkState> {
        // struct bpf_link_info: type, id, prog_id (u32 each), then an
        // 8-aligned union whose xdp member is { u32 ifindex }.
        let mut info = [0u64; 16];
        let mut attr = Attr::new();
        attr.put_u32(0, self.fd.as_raw_fd() as u32); // bpf_fd
        attr.put_u32(4, std::mem::size_of_val(&info) as u32); // info_len
        attr.put_u64(8, info.as_mut_ptr() as u64); // info
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        let bytes: Vec<u8> = info.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let word = |at: usize| {
            u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if word(0) != BPF_LINK_TYPE_XDP {
            return Err(std::io::Error::other(format!(
                "link {} is of type {}, not XDP",
                self.id,
                word(0)
            )));
        }
        Ok(XdpLinkState {
            prog_id: word(8),
            ifindex: word(16),
        })
    }

    /// Pins the link at `path` (which must not exist).
    pub fn pin(&self, path: &Path) -> std::io::Result<()> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut attr = Attr::new();
        attr.put_u64(0, c.as_ptr() as u64); // pathname
        attr.put_u32(8, self.fd.as_raw_fd() as u32); // bpf_fd
        bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
    }
}

/// The index of `interface` in this network namespace (0: no such
/// interface).
pub fn ifindex(interface: &str) -> u32 {
    let Ok(c) = CString::new(interface) else {
        return 0;
    };
    // SAFETY: a valid NUL-terminated name.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}
