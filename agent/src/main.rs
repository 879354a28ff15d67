//! `xnlb`: the agent and the command line that manages it. Exit statuses:
//! 0 done, 1 failed, 2 invalid configuration, 3 no agent running (see
//! [`cli::exit`]).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use cli::ctl::{control, socket_of};
use cli::Failure;
use xnlb::config::MAX_DRAIN_TIMEOUT_S;
use xnlb::control::Request;
use xnlb::status::StatusView;

#[derive(Parser)]
#[command(
    name = "xnlb",
    version = cli::version(),
    about = "Network load-balancing cluster agent: one cluster IP shared by many Linux nodes, filtered in XDP",
    after_long_help = "Exit status: 0 done; 1 failed (the agent refused, e.g. a reload); 2 invalid configuration or key file; 3 no agent listens on the control socket.\n\nFiles: /etc/xnlb/xnlb.toml (configuration), /etc/xnlb/cluster.key (the cluster key, mode 0600), /run/xnlb/xnlb.sock (control socket), /var/lib/xnlb (state files). Guides: /usr/share/doc/xnlb (DEPLOY.md, CONFIG.md, TROUBLESHOOTING.md, METRICS.md)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where a control command finds the agent.
#[derive(clap::Args, Clone)]
struct Target {
    /// The agent's control socket.
    #[arg(long, conflicts_with = "config")]
    socket: Option<PathBuf>,
    /// Read the control socket from this configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent in the foreground (systemd Type=notify).
    Agent {
        /// Configuration file.
        #[arg(long, default_value = "/etc/xnlb/xnlb.toml")]
        config: PathBuf,
    },
    /// Validate configuration files and their key files (status 2 if one is
    /// invalid, or if several, one per node, differ in cluster-wide settings).
    CheckConfig {
        /// Configuration files (one per node to compare them).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Fail (status 1) on warnings too.
        #[arg(long)]
        strict: bool,
        /// Print the effective configuration, every default filled in.
        #[arg(long)]
        print: bool,
    },
    /// Make a new random cluster key: `xnlb keygen --out /etc/xnlb/cluster.key`
    /// (mode 0600; without --out, printed to stdout).
    Keygen {
        /// Write the key to this new file, mode 0600 (never overwrites).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a VIP's cluster MAC (multicast unless --unicast).
    Mac {
        /// The VIP.
        vip: String,
        /// The unicast MAC of `mac_mode = "unicast"`.
        #[arg(long)]
        unicast: bool,
    },
    /// Show the cluster as this node sees it.
    Status {
        /// Machine-readable JSON (errors too: `{"error": "..."}`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Stop taking new flows; finish existing ones; then own nothing.
    Drain {
        /// Longest wait for open connections, in seconds (at most 86400,
        /// one day, as cluster.drain_timeout_s).
        #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_DRAIN_TIMEOUT_S))]
        timeout: Option<u64>,
        /// Wait until the node owns nothing, printing progress; exit 1 if
        /// it is still draining after the timeout (or 300 s) plus 30 s.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Take traffic again after a drain (or a manual-failback hold).
    Resume {
        #[command(flatten)]
        target: Target,
    },
    /// Leave the cluster gracefully; the agent exits.
    Stop {
        #[command(flatten)]
        target: Target,
    },
    /// Redistribute buckets weight-exactly, preserving connections.
    Rebalance {
        #[command(flatten)]
        target: Target,
    },
    /// Reload the agent's configuration file (as SIGHUP) and wait for its
    /// verdict: exit 1 with the reason if it refused the file (so that
    /// `systemctl reload xnlb` fails too).
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Print a shell completion script (bash, zsh, fish, ...) to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (xnlb.1, one per subcommand) into a directory.
    #[command(hide = true)]
    Manpages {
        /// Output directory.
        dir: PathBuf,
    },
    /// Check the host and the segment: XDP mode, ARP sysctls, cluster-MAC
    /// flooding, clock, descriptor limit, bpffs, state directory, key file,
    /// every member on every link. Exit 1 if anything is wrong.
    Doctor {
        /// Print JSON (errors too: `{"error": "..."}`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Why a flow goes where it goes: rule, hash, bucket, owner, this
    /// node's slot state and the XDP verdict with the counters it moves.
    Explain {
        /// tcp, udp or icmp.
        proto: String,
        /// Client IP:PORT (ICMP echo: the echo id as port).
        client: String,
        /// VIP:PORT (or PORT alone, or nothing, when the cluster has one VIP).
        vip: Option<String>,
        /// Print JSON (errors too: `{"error": "..."}`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Which node owns a flow right now.
    Owner {
        /// The VIP.
        #[arg(long)]
        vip: String,
        /// tcp, udp or icmp.
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// Client address and port (ICMP echo: the echo id as port).
        #[arg(long)]
        src: String,
        /// VIP port (0 for ICMP).
        #[arg(long)]
        dport: u16,
        /// Print JSON (errors too: `{"error": "..."}`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("XNLB_LOG").unwrap_or_else(|_| "info".into());
    // Colours only on a terminal: under systemd stderr goes to the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A command asked for JSON answers in JSON when it fails too, so a
    // script parsing stdout never meets prose.
    let json = matches!(
        cli.cmd,
        Cmd::Status { json: true, .. }
            | Cmd::Owner { json: true, .. }
            | Cmd::Explain { json: true, .. }
            | Cmd::Doctor { json: true, .. }
    );
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if f.message.is_empty() => ExitCode::from(f.code),
        Err(f) => {
            if json {
                println!("{}", serde_json::json!({ "error": f.message }));
            } else {
                eprintln!("xnlb: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

fn run(cmd: Cmd) -> Result<(), Failure> {
    let target = |t: &Target| socket_of(&t.socket, &t.config);
    match cmd {
        Cmd::Agent { config } => {
            init_logging();
            xnlb::runtime::run(&config).map_err(|e| Failure::new(e.exit_code(), e.to_string()))
        }
        Cmd::CheckConfig {
            files,
            strict,
            print,
        } => cli::check_config::run(&cli::check_config::Options {
            files,
            strict,
            print,
        }),
        Cmd::Keygen { out } => cli::keygen(out.as_deref()),
        Cmd::Mac { vip, unicast } => cli::mac(&vip, unicast),
        Cmd::Status { json, target: t } => {
            let r = control(&target(&t)?, Request::Status)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r.data).unwrap_or_default()
                );
            } else {
                let s: StatusView = serde_json::from_value(r.data)
                    .map_err(|e| Failure::new(cli::exit::FAILED, e.to_string()))?;
                print!("{}", s.render());
            }
            Ok(())
        }
        Cmd::Drain {
            timeout,
            wait,
            target: t,
        } => {
            let socket = target(&t)?;
            simple(&socket, Request::Drain { timeout_s: timeout })?;
            if wait {
                let limit = std::time::Duration::from_secs(timeout.unwrap_or(300) + 30);
                cli::ctl::wait_drained(&socket, limit)?;
            }
            Ok(())
        }
        Cmd::Resume { target: t } => simple(&target(&t)?, Request::Resume),
        Cmd::Stop { target: t } => simple(&target(&t)?, Request::Stop),
        Cmd::Rebalance { target: t } => simple(&target(&t)?, Request::Rebalance),
        Cmd::Reload { target: t } => simple(&target(&t)?, Request::Reload),
        Cmd::Completions { shell } => cli::docs::completions(Cli::command(), shell),
        Cmd::Manpages { dir } => cli::docs::manpages(Cli::command(), &dir),
        Cmd::Doctor { json, target: t } => cli::doctor::doctor(&target(&t)?, json),
        Cmd::Explain {
            proto,
            client,
            vip,
            json,
            target: t,
        } => {
            let r = control(&target(&t)?, Request::Explain { proto, client, vip })?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r.data).unwrap_or_default()
                );
            } else {
                print!("{}", r.message);
            }
            Ok(())
        }
        Cmd::Owner {
            vip,
            proto,
            src,
            dport,
            json,
            target: t,
        } => {
            let r = control(
                &target(&t)?,
                Request::Owner {
                    vip,
                    proto,
                    src,
                    dport,
                },
            )?;
            if json {
                println!("{}", r.data);
            } else {
                println!("{}", r.message);
            }
            Ok(())
        }
    }
}

fn simple(socket: &std::path::Path, req: Request) -> Result<(), Failure> {
    control(socket, req).map(|r| println!("{}", r.message))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_timeout_is_bounded_to_one_day() {
        let parse = |t: &str| Cli::try_parse_from(["xnlb", "drain", "--timeout", t]);
        assert!(parse("86400").is_ok());
        assert!(parse("0").is_ok());
        let err = parse("86401")
            .err()
            .expect("one day and a second is refused");
        assert!(
            err.to_string().contains("86401") && err.to_string().contains("--timeout"),
            "{err}"
        );
        assert!(parse("18446744073709551615").is_err());
    }
}
