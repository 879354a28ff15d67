//! `xnlb`: the agent and the command line that manages it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use xnlb::config::{Config, DEFAULT_SOCKET, MAX_DRAIN_TIMEOUT_S};
use xnlb::control::client::request;
use xnlb::control::Request;
use xnlb::status::StatusView;

#[derive(Parser)]
#[command(
    name = "xnlb",
    version,
    about = "Network load-balancing cluster agent: one cluster IP shared by many Linux nodes, filtered in XDP"
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
    /// Validate a configuration file and exit (status 2 if invalid).
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
    /// Print a new random cluster key (`xnlb keygen > cluster.key`).
    Keygen,
    /// Show the cluster as this node sees it.
    Status {
        /// Machine-readable JSON.
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

fn socket_of(t: &Target) -> Result<PathBuf, String> {
    if let Some(s) = &t.socket {
        return Ok(s.clone());
    }
    if let Some(c) = &t.config {
        return Config::load(c).map(|c| c.socket).map_err(|e| e.to_string());
    }
    Ok(PathBuf::from(DEFAULT_SOCKET))
}

fn control(t: &Target, req: Request) -> Result<xnlb::control::Response, String> {
    let socket = socket_of(t)?;
    let resp = request(&socket, &req, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    if !resp.ok {
        return Err(resp.message);
    }
    Ok(resp)
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
    let result: Result<(), (u8, String)> = match cli.cmd {
        Cmd::Agent { config } => {
            init_logging();
            xnlb::runtime::run(&config).map_err(|e| (e.exit_code(), e.to_string()))
        }
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: valid: node {} of cluster {:?}, {} members, {} VIPs",
                    file.display(),
                    c.node_id,
                    c.cluster_name,
                    c.members.len(),
                    c.vips.len()
                );
                Ok(())
            }
            Err(e) => Err((2, e.to_string())),
        },
        Cmd::Keygen => {
            println!("{}", xnlb::key::generate());
            Ok(())
        }
        Cmd::Status { json, target } => control(&target, Request::Status)
            .and_then(|r| {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&r.data).unwrap_or_default()
                    );
                    Ok(())
                } else {
                    let s: StatusView =
                        serde_json::from_value(r.data).map_err(|e| e.to_string())?;
                    print!("{}", s.render());
                    Ok(())
                }
            })
            .map_err(|e| (1, e)),
        Cmd::Drain { timeout, target } => simple(&target, Request::Drain { timeout_s: timeout }),
        Cmd::Resume { target } => simple(&target, Request::Resume),
        Cmd::Stop { target } => simple(&target, Request::Stop),
        Cmd::Rebalance { target } => simple(&target, Request::Rebalance),
        Cmd::Owner {
            vip,
            proto,
            src,
            dport,
            json,
            target,
        } => control(
            &target,
            Request::Owner {
                vip,
                proto,
                src,
                dport,
            },
        )
        .map(|r| {
            if json {
                println!("{}", r.data);
            } else {
                println!("{}", r.message);
            }
        })
        .map_err(|e| (1, e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("xnlb: {msg}");
            ExitCode::from(code)
        }
    }
}

fn simple(target: &Target, req: Request) -> Result<(), (u8, String)> {
    control(target, req)
        .map(|r| println!("{}", r.message))
        .map_err(|e| (1, e))
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
