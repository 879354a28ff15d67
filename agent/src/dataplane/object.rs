/// The XDP object embedded at build time, if it was built first.
pub fn embedded_object() -> Option<&'static [u8]> {
    #[cfg(xnlb_bpf_embedded)]
    {
        static OBJ: &[u8] = aya::include_bytes_aligned!(env!("XNLB_BPF_EMBED"));
        Some(OBJ)
    }
    #[cfg(not(xnlb_bpf_embedded))]
    {
        None
    }
}
