use std::path::PathBuf;

/// Why the data plane could not be set up or updated.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The binary was built without `cargo xtask build-ebpf`.
    #[error("this xnlb was built without its XDP program: run `cargo xtask build-ebpf --release` and rebuild")]
    NotEmbedded,
    /// Loading the object or a program failed (verifier, permissions).
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program operation failed.
    #[error("XDP program {name}: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// Cause.
        source: aya::programs::ProgramError,
    },
    /// A map is missing from the object.
    #[error("map {0} missing from the XDP object")]
    MissingMap(&'static str),
    /// A map operation failed.
    #[error("map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Cause.
        source: aya::maps::MapError,
    },
    /// Pinned maps were created by an incompatible xnlb.
    #[error("maps pinned under {dir} have layout version {found}, this xnlb uses {expected}: stop the agent and remove {dir}")]
    LayoutMismatch {
        /// Pin directory.
        dir: PathBuf,
        /// Version found.
        found: u64,
        /// Version of this build.
        expected: u64,
    },
    /// The BPF filesystem is not mounted and could not be.
    #[error("mounting the BPF filesystem on {0}: {1}")]
    Bpffs(PathBuf, std::io::Error),
    /// Creating the pin directory failed.
    #[error("creating {0}: {1}")]
    PinDir(PathBuf, std::io::Error),
    /// Attaching, pinning or adopting the XDP link failed.
    #[error("XDP link: {0}")]
    Link(String),
    /// A table is invalid.
    #[error("invalid table: {0}")]
    BadTable(&'static str),
    /// The filter's descriptor could not be duplicated for its own
    /// tail-call map (out of descriptors).
    #[error("duplicating the filter's descriptor: {0}")]
    Descriptor(std::io::Error),
}
