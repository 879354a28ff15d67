//! Bounds-checked access to the frame.
//!
//! A header is checked once ([`Frame::get`]: `start + off + N <= end`) and
//! its fields are then read at constant offsets from that same pointer
//! ([`Hdr`]). That is the shape the verifier can follow: had each field its own
//! check, LLVM would merge the checks and read through a pointer the verifier
//! never saw checked. It is also why a truncated packet can never be read
//! past its end.

use aya_ebpf::programs::XdpContext;

/// The frame being processed: `[start, end)`, and the program context
/// (the kernel's socket lookup needs it).
#[derive(Clone, Copy)]
pub struct Frame {
    pub start: usize,
    pub end: usize,
    pub ctx: *mut core::ffi::c_void,
}

/// `N` bytes of the frame known to be in bounds.
#[derive(Clone, Copy)]
pub struct Hdr<const N: usize> {
    p: usize,
}

impl Frame {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Frame {
        Frame {
            start: ctx.data(),
            end: ctx.data_end(),
            ctx: ctx.ctx as *mut core::ffi::c_void,
        }
    }

    /// The frame as the context says it is now (after the head moved:
    /// every earlier pointer into it is stale).
    #[inline(always)]
    pub fn reload(&self) -> Frame {
        let md = self.ctx as *const aya_ebpf::bindings::xdp_md;
        // SAFETY: the program's own context, valid for the whole run.
        unsafe {
            Frame {
                start: (*md).data as usize,
                end: (*md).data_end as usize,
                ctx: self.ctx,
            }
        }
    }

    /// `N` bytes at `off`, if the frame has them.
    #[inline(always)]
    pub fn get<const N: usize>(&self, off: usize) -> Option<Hdr<N>> {
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        Some(Hdr { p })
    }
}

// Field offsets passed to `Hdr` methods are constants within the header
// (callers keep `i + size <= N`). Word loads are plain loads: the kernel
// allows unaligned packet access on the architectures we run on, and a
// byte-by-byte load would cost four times the instructions.
impl<const N: usize> Hdr<N> {
    #[inline(always)]
    pub fn u8(&self, i: usize) -> u8 {
        // SAFETY: in bounds by construction (see above).
        unsafe { *((self.p + i) as *const u8) }
    }

    /// A big-endian (network order) u16.
    #[inline(always)]
    pub fn be16(&self, i: usize) -> u16 {
        u16::from_be(self.raw16(i))
    }

    /// Two wire bytes loaded little-endian.
    #[inline(always)]
    pub fn raw16(&self, i: usize) -> u16 {
        // SAFETY: in bounds by construction.
        unsafe { *((self.p + i) as *const u16) }
    }

    /// Four wire bytes loaded little-endian (the hash's word definition).
    #[inline(always)]
    pub fn word(&self, i: usize) -> u32 {
        // SAFETY: in bounds by construction.
        unsafe { *((self.p + i) as *const u32) }
    }

    /// 16 wire bytes as four words (an IPv6 address).
    #[inline(always)]
    pub fn words4(&self, i: usize) -> [u32; 4] {
        [
            self.word(i),
            self.word(i + 4),
            self.word(i + 8),
            self.word(i + 12),
        ]
    }

    /// `M` bytes at `i`.
    #[inline(always)]
    pub fn read<const M: usize>(&self, i: usize) -> [u8; M] {
        // SAFETY: in bounds by construction.
        unsafe { core::ptr::read_unaligned((self.p + i) as *const [u8; M]) }
    }

    /// Writes `M` bytes at `i`.
    #[inline(always)]
    pub fn write<const M: usize>(&self, i: usize, bytes: &[u8; M]) {
        // SAFETY: in bounds by construction.
        unsafe { core::ptr::write_unaligned((self.p + i) as *mut [u8; M], *bytes) }
    }

    /// Writes a MAC address at `i` as a 4-byte and a 2-byte store (a
    /// `[u8; 6]` copy would become an out-of-line `memmove` call).
    #[inline(always)]
    pub fn write_mac(&self, i: usize, mac: &[u8; 6]) {
        self.write_word(i, u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]));
        // SAFETY: in bounds by construction.
        unsafe { *((self.p + i + 4) as *mut u16) = u16::from_ne_bytes([mac[4], mac[5]]) }
    }

    /// Reads a MAC address at `i` (two loads, no `memcpy`).
    #[inline(always)]
    pub fn read_mac(&self, i: usize) -> [u8; 6] {
        let a = self.word(i).to_ne_bytes();
        let b = self.raw16(i + 4).to_ne_bytes();
        [a[0], a[1], a[2], a[3], b[0], b[1]]
    }

    /// Fills in the checksum of the option-less IPv4 header at `i` (its
    /// checksum field is zeroed first). One's-complement sums are
    /// byte-order independent (RFC 1071 section 2), so native loads and a
    /// native store are exact.
    #[inline(always)]
    pub fn set_ipv4_checksum(&self, i: usize) {
        self.write::<2>(i + 10, &[0, 0]);
        let mut sum = 0u32;
        let mut k = 0;
        while k < 20 {
            sum += self.raw16(i + k) as u32;
            k += 2;
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        self.write::<2>(i + 10, &(!(sum as u16)).to_ne_bytes());
    }

    /// Writes a word (as loaded by [`Hdr::word`]) at `i`.
    #[inline(always)]
    pub fn write_word(&self, i: usize, w: u32) {
        // SAFETY: in bounds by construction.
        unsafe { *((self.p + i) as *mut u32) = w }
    }
}
