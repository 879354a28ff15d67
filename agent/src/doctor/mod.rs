//! `xnlb doctor`: host and segment checks, one line and one fix per
//! finding. The agent reports what only it knows ([`AgentFacts`]: its XDP
//! attachment, descriptor limit, state directory, peers per link, which
//! members' cluster-MAC probes arrive); the command reads the host
//! ([`HostFacts`]: sysctls, clock, bpffs, key file); [`checks::run`] turns
//! both into findings, with no IO of its own so each rule is unit-tested.

pub mod checks;
pub mod facts;

pub use checks::run;
pub use facts::{AgentFacts, HostFacts, LinkFacts, MemberFacts, VipFacts};

use serde::{Deserialize, Serialize};

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Which check: `xdp`, `arp`, `flooding`, `clock`, `nofile`, `bpffs`,
    /// `state-dir`, `key`, `links`.
    pub check: String,
    /// Whether all is well.
    pub ok: bool,
    /// What was found, in one line.
    pub line: String,
    /// How to fix it (problems only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    /// A passed check.
    pub fn ok(check: &str, line: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            ok: true,
            line: line.into(),
            fix: None,
        }
    }

    /// A problem and its fix.
    pub fn problem(check: &str, line: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            ok: false,
            line: line.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The report: passed checks first as `ok`, then each problem with its fix.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings.iter().filter(|f| f.ok) {
        out += &format!("ok    {:<9} {}\n", f.check, f.line);
    }
    for f in findings.iter().filter(|f| !f.ok) {
        out += &format!("FAIL  {:<9} {}\n", f.check, f.line);
        if let Some(fix) = &f.fix {
            out += &format!("      {:<9} fix: {fix}\n", "");
        }
    }
    let problems = findings.iter().filter(|f| !f.ok).count();
    out += &match problems {
        0 => "nothing wrong found\n".to_string(),
        n => format!("{n} problem(s) found\n"),
    };
    out
}
