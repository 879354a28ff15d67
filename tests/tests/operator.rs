//! The operator's command line against real agents: `xnlb drain --wait`
//! returns once the node owns nothing, with progress, and `resume` brings
//! it back; `xnlb reload` fails with the agent's reason and systemd hears
//! every reload; the metrics documentation and the Grafana dashboard
//! match a live scrape.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use xnlb_tests::cluster::checks::{status, CONVERGE};
use xnlb_tests::cluster::{agent_binary, Cluster, ClusterSpec};
use xnlb_tests::netns::unique;

#[test]
fn drain_wait_returns_once_the_node_owns_nothing() {
    let c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let out = Command::new(agent_binary())
        .args(["drain", "--wait", "--timeout", "5", "--socket"])
        .arg(c.socket_path(2))
        .output()
        .expect("run xnlb drain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "drain --wait: {:?}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(text.contains("drained: 0 buckets owned"), "{text}");
    let s = status(&c, 2);
    assert_eq!((s.state.as_str(), s.buckets.owned), ("drained", 0), "{s:?}");
    let out = Command::new(agent_binary())
        .args(["resume", "--socket"])
        .arg(c.socket_path(2))
        .output()
        .expect("run xnlb resume");
    assert!(out.status.success());
    c.wait_converged(&[1, 2, 3], CONVERGE);
    assert!((1365..=1366).contains(&status(&c, 2).buckets.owned));
}

/// What the agent sent to its `NOTIFY_SOCKET`, one datagram per call:
/// waits up to 10 s for the next one.
fn next_notification(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification from the agent within 10 s");
    String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
}

#[test]
fn xnlb_reload_fails_with_the_reason_and_systemd_hears_every_reload() {
    let mut c = Cluster::start(&ClusterSpec {
        deferred: vec![1],
        ..ClusterSpec::actives(3)
    });
    let notify_path = std::env::temp_dir().join(unique("xnlb-notify-"));
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.start_agent_with_env(1, &[("NOTIFY_SOCKET", &notify_path)]);
    assert_eq!(next_notification(&notify), "READY=1");
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let reload = || {
        Command::new(agent_binary())
            .args(["reload", "--socket"])
            .arg(c.socket_path(1))
            .output()
            .expect("run xnlb reload")
    };

    // A key read only at start: `xnlb reload` fails naming it, systemd
    // sees the reload begin and end with the reason, nothing changes.
    let original = std::fs::read_to_string(c.config_path(1)).expect("config");
    c.edit_config(1, |t| {
        t.replacen("[node]\n", "[node]\nxdp_mode = \"native\"\n", 1)
    });
    let out = reload();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "refused reload: {err}");
    assert!(
        err.contains("node.xdp_mode") && err.contains("restart needed"),
        "{err}"
    );
    let begin = next_notification(&notify);
    assert!(
        begin.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{begin:?}"
    );
    let end = next_notification(&notify);
    assert!(
        end.starts_with("STATUS=reload rejected") && end.contains("node.xdp_mode"),
        "{end:?}"
    );
    assert!(end.ends_with("\nREADY=1"), "{end:?}");
    assert!(status(&c, 1).xdp.is_some_and(|x| x.contains("generic")));

    // The file back as it was: the reload is applied, exit 0.
    c.edit_config(1, |_| original);
    let out = reload();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration reloaded"));
    assert!(next_notification(&notify).starts_with("RELOADING=1\n"));
    let end = next_notification(&notify);
    assert!(
        end.starts_with("STATUS=configuration reloaded") && end.ends_with("\nREADY=1"),
        "{end:?}"
    );
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let _ = std::fs::remove_file(&notify_path);
}

/// `# TYPE` of every metric family in a Prometheus text scrape.
fn families(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, ty)| (name.to_string(), ty.to_string()))
        .collect()
}

/// Every sample's metric name with the label names it carries.
fn samples(scrape: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_string()).or_default();
        if let Some(inner) = line[name_end..]
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
        {
            for pair in inner.0.split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.to_string());
                }
            }
        }
    }
    out
}

/// The metric names (`xnlb_...`) a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("xnlb_") {
        let tail = &rest[i..];
        let end = tail
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every string under a `"expr"` or a `"query"` key of the dashboard.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

#[test]
fn metrics_doc_and_grafana_dashboard_match_what_a_live_agent_exports() {
    let c = Cluster::start(&ClusterSpec {
        metrics: true,
        ..ClusterSpec::actives(3)
    });
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let scrape = c.scrape(1);
    let families = families(&scrape);
    let samples = samples(&scrape);
    assert!(families.len() >= 10, "scrape:\n{scrape}");
    assert!(
        scrape.contains("xnlb_buckets_owned 136"),
        "node 1 owns a third of 4096 buckets:\n{scrape}"
    );

    // docs/METRICS.md: exactly the exported metrics, each with its type and
    // every label its samples carry.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/METRICS.md")).expect("docs/METRICS.md");
    let mut documented = BTreeMap::new();
    for row in doc.lines().filter(|l| l.starts_with("| `xnlb_")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        documented.insert(cells[1].trim_matches('`').to_string(), (cells[2], cells[3]));
    }
    let exported: BTreeMap<String, &String> = families
        .iter()
        .map(|(f, ty)| {
            let name = if ty == "counter" {
                format!("{f}_total")
            } else {
                f.clone()
            };
            (name, ty)
        })
        .collect();
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        exported.keys().collect::<Vec<_>>(),
        "docs/METRICS.md lists other metrics than the agent exports"
    );
    for (name, ty) in &exported {
        let (doc_ty, doc_labels) = documented[name];
        assert_eq!(doc_ty, ty.as_str(), "type of {name} in docs/METRICS.md");
        for (sample, labels) in samples
            .iter()
            .filter(|(s, _)| s.starts_with(name.trim_end_matches("_total")))
        {
            for l in labels {
                assert!(
                    doc_labels.contains(&format!("`{l}`")),
                    "label {l} of {sample} not documented for {name}"
                );
            }
        }
    }

    // The Grafana dashboard: every query names only exported samples.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/grafana/xnlb-dashboard.json"))
            .expect("docs/grafana/xnlb-dashboard.json"),
    )
    .expect("dashboard JSON");
    let mut exprs = Vec::new();
    queries(&dash, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut used = BTreeSet::new();
    for e in &exprs {
        for name in metric_names(e) {
            assert!(
                samples.contains_key(&name),
                "the dashboard query {e:?} names {name}, which the agent does not export"
            );
            used.insert(name);
        }
    }
    println!(
        "dashboard: {} queries over {} metrics: {used:?}",
        exprs.len(),
        used.len()
    );
}
