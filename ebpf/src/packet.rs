//! Bounds-checked access to the frame.
//!
//! A header is checked once ([`Frame::get`]: `start + off + N <= end`) and
//! its fields are then read at constant offsets from that same pointer
//! ([`Hdr`]). That is the shape the verifier can follow: had each field its own
//! check, LLVM would merge the checks and read through a pointer the verifier
//! never saw checked. It is also why a truncated packet can never be read
//! past its end.

use aya_ebpf::programs::XdpContext;

/// The frame being processed: `[start, end)`.
#[derive(Clone, Copy)]
pub struct Frame {
    pub start: usize,
    pub end: usize,
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

    /// Writes a word (as loaded by [`Hdr::word`]) at `i`.
    #[inline(always)]
    pub fn write_word(&self, i: usize, w: u32) {
        // SAFETY: in bounds by construction.
        unsafe { *((self.p + i) as *mut u32) = w }
    }
}
