//! `xnlb check-config FILE...`: everything the agent would refuse at start
//! (the file and its key file), warnings for legal but likely wrong
//! values, the effective configuration on request, and, given one file per
//! node, whether they agree on the settings every member must share.

use std::path::PathBuf;

use xnlb::config::{check, effective, Config};
use xnlb::plan::cluster_wide_changes;

use super::{exit, Failure};

/// What to check and print.
pub struct Options {
    /// One file per node.
    pub files: Vec<PathBuf>,
    /// Warnings fail the check.
    pub strict: bool,
    /// Print the effective configuration of each file.
    pub print: bool,
}

/// A file that passed: its configuration and its key.
struct Checked {
    cfg: Config,
    key: Vec<u8>,
}

/// One file: parsed, its key read, its warnings.
fn one(path: &PathBuf) -> Result<(Checked, Vec<String>), String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cfg = Config::parse(path, &src).map_err(|e| e.to_string())?;
    // As the agent reads it at start, so an ExecStartPre catches a key
    // the agent would refuse.
    let key = xnlb::key::load(&cfg.key_file).map_err(|e| format!("{}: {e}", path.display()))?;
    let warnings = check::warnings(path, &src, &cfg);
    Ok((Checked { cfg, key }, warnings))
}

/// Runs the check.
pub fn run(o: &Options) -> Result<(), Failure> {
    let mut configs = Vec::new();
    let mut errors = 0;
    let mut warnings = 0;
    for f in &o.files {
        match one(f) {
            Ok((checked, w)) => {
                let cfg = &checked.cfg;
                for w in &w {
                    eprintln!("xnlb: warning: {w}");
                }
                warnings += w.len();
                if o.print {
                    print!("{}", effective::to_toml(cfg));
                } else {
                    println!(
                        "{}: valid: node {} of cluster {:?}, {} members, {} VIPs",
                        f.display(),
                        cfg.node_id,
                        cfg.cluster_name,
                        cfg.members.len(),
                        cfg.vips.len()
                    );
                }
                configs.push(checked);
            }
            Err(e) if o.files.len() == 1 => return Err(Failure::new(exit::INVALID, e)),
            Err(e) => {
                eprintln!("xnlb: {e}");
                errors += 1;
            }
        }
    }
    if errors > 0 {
        return Err(Failure::new(
            exit::INVALID,
            format!("{errors} of {} files invalid", o.files.len()),
        ));
    }
    let differences = compare(&configs);
    for d in &differences {
        eprintln!("xnlb: {d}");
    }
    if !differences.is_empty() {
        return Err(Failure::new(
            exit::INVALID,
            "the files disagree on settings every member must share",
        ));
    }
    if o.strict && warnings > 0 {
        return Err(Failure::new(
            exit::FAILED,
            format!("{warnings} warnings (--strict)"),
        ));
    }
    Ok(())
}

/// Each file against the first: the cluster-wide keys that differ, as a
/// reload would name them, and the key itself (not in the fingerprint, but
/// peers with another key cannot read each other's heartbeats).
fn compare(checked: &[Checked]) -> Vec<String> {
    let Some((first, rest)) = checked.split_first() else {
        return Vec::new();
    };
    rest.iter()
        .filter_map(|c| {
            let mut keys = cluster_wide_changes(&first.cfg, &c.cfg);
            if c.key != first.key {
                keys.push("cluster.key_file (the key itself)");
            }
            (!keys.is_empty()).then(|| {
                format!(
                    "{} and {} differ in cluster-wide settings: {}",
                    first.cfg.path.display(),
                    c.cfg.path.display(),
                    keys.join(", ")
                )
            })
        })
        .collect()
}
