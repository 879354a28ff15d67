//! `xnlb doctor`: asks the agent for its facts, reads the host's, and
//! prints one line per check and a fix per problem. Exit status 1 if
//! anything is wrong, 3 if no agent runs.

use std::path::Path;
use std::time::Duration;

use xnlb::control::Request;
use xnlb::doctor::checks::PROBE_STALE_MS;
use xnlb::doctor::{render, run, AgentFacts, HostFacts};

use super::ctl::control;
use super::{exit, Failure};

fn facts(socket: &Path) -> Result<AgentFacts, Failure> {
    let r = control(socket, Request::Diagnose)?;
    serde_json::from_value(r.data).map_err(|e| {
        Failure::new(
            exit::FAILED,
            format!("unreadable answer from the agent: {e}"),
        )
    })
}

/// Runs every check against the agent on `socket`.
pub fn doctor(socket: &Path, json: bool) -> Result<(), Failure> {
    let mut agent = facts(socket)?;
    // The agent listens for its peers' cluster-MAC probes only while asked
    // (the tap would tax every packet), opening its tap within a few
    // hundred ms of the first request: ask again until it has listened a
    // few probe intervals (a few times at most).
    for _ in 0..4 {
        if !agent.probing || agent.probe_listening_ms >= PROBE_STALE_MS {
            break;
        }
        if !json {
            eprintln!(
                "xnlb: listening {:.1} s more for the peers' cluster-MAC probes...",
                (PROBE_STALE_MS + 300 - agent.probe_listening_ms) as f64 / 1000.0
            );
        }
        std::thread::sleep(Duration::from_millis(
            PROBE_STALE_MS + 300 - agent.probe_listening_ms,
        ));
        agent = facts(socket)?;
    }
    let host = HostFacts::gather(&agent);
    let findings = run(&agent, &host);
    let problems = findings.iter().filter(|f| !f.ok).count();
    if json {
        let out = serde_json::json!({ "ok": problems == 0, "findings": findings });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print!("{}", render(&findings));
    }
    if problems == 0 {
        Ok(())
    } else {
        // The report is already printed; the status says it failed.
        Err(Failure::new(exit::FAILED, String::new()))
    }
}
