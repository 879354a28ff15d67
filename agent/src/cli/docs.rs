//! Documentation generated from the command line itself, so it can never
//! disagree with it: man pages (`clap_mangen`, one for `xnlb` and one per
//! subcommand) and shell completions (`clap_complete`). The Debian package
//! (`cargo xtask package`) ships both.

use std::path::Path;

use clap_complete::Shell;

use super::{exit, Failure};

/// Prints `shell`'s completion script for `cmd` to stdout.
pub fn completions(mut cmd: clap::Command, shell: Shell) -> Result<(), Failure> {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
    Ok(())
}

/// Writes `xnlb.1` and `xnlb-<subcommand>.1` for every visible subcommand
/// into `dir` (created if missing).
pub fn manpages(cmd: clap::Command, dir: &Path) -> Result<(), Failure> {
    let failed = |e: std::io::Error| Failure::new(exit::FAILED, format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(failed)?;
    clap_mangen::generate_to(cmd, dir).map_err(failed)
}
