//! The command line's subcommands other than `agent`, one module each, and
//! the exit statuses they share (documented in docs/CONFIG.md and README).

pub mod check_config;
pub mod ctl;
pub mod docs;
pub mod doctor;

/// Exit statuses: scripts and systemd units branch on them.
pub mod exit {
    /// The command failed (the agent refused, a file exists, ...), or
    /// `check-config --strict` found warnings.
    pub const FAILED: u8 = 1;
    /// A configuration (or its key file) is invalid, or several files
    /// disagree on cluster-wide settings.
    pub const INVALID: u8 = 2;
    /// No agent listens on the control socket.
    pub const NO_AGENT: u8 = 3;
}

/// Why a command failed: the exit status and what to tell the operator.
pub struct Failure {
    /// Exit status.
    pub code: u8,
    /// The message, without the `xnlb:` prefix.
    pub message: String,
}

impl Failure {
    /// A failure with status `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// `xnlb keygen`: to `out` (created 0600, never overwritten), or to
/// stdout with a hint that `> file` makes a file the agent refuses.
pub fn keygen(out: Option<&std::path::Path>) -> Result<(), Failure> {
    match out {
        Some(path) => xnlb::key::write_new(path).map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "exists; not overwritten (it may be the key the cluster runs with): remove it first to replace it".to_string()
            } else {
                e.to_string()
            };
            Failure::new(exit::FAILED, format!("{}: {why}", path.display()))
        }),
        None => {
            println!("{}", xnlb::key::generate());
            eprintln!(
                "xnlb: hint: `xnlb keygen --out FILE` writes the key with mode 0600; \
                 redirected with `>` it gets your umask's mode (often 0644), which the agent refuses"
            );
            Ok(())
        }
    }
}

/// The cluster MAC of `vip`, as `ip link` prints MACs.
pub fn mac(vip: &str, unicast: bool) -> Result<(), Failure> {
    use xnlb::config::MacMode;
    let ip: std::net::IpAddr = vip
        .parse()
        .map_err(|_| Failure::new(exit::FAILED, format!("{vip:?} is not an IP address")))?;
    let mode = if unicast {
        MacMode::Unicast
    } else {
        MacMode::Multicast
    };
    let m = xnlb::host::cluster_mac(ip, mode);
    let hex: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
    println!("{}", hex.join(":"));
    Ok(())
}

/// `--version`'s text: the version, the commit it was built from, and
/// whether the XDP object is inside (a binary without it runs only as a
/// witness or a CLI).
pub fn version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let embedded = if xnlb::dataplane::embedded_object().is_some() {
            "embedded"
        } else {
            "not embedded (build it with `cargo xtask build-ebpf` first)"
        };
        // The wire version decides which versions can run side by side in
        // one cluster (a rolling upgrade), the state format whether a new
        // binary reads the old state file, the data-plane layout whether it
        // adopts the maps left pinned (docs/DEPLOY.md, "Upgrades").
        format!(
            "{} (commit {}, wire version {}, state format {}, data-plane layout {}, XDP object {embedded})",
            env!("CARGO_PKG_VERSION"),
            option_env!("XNLB_GIT_COMMIT").unwrap_or("unknown"),
            xnlb_proto::wire::VERSION,
            xnlb_proto::PERSIST_VERSION,
            xnlb_common::LAYOUT_VERSION
        )
    })
}
