//! docs/CONFIG.md lists every key the configuration file accepts, so the
//! reference cannot fall behind the parser. The keys are not copied here:
//! they are asked of the parser itself. Its serde structs deny unknown
//! fields and the error lists the known ones, so a probe key in each table
//! reveals that table's keys, and a key that accepts `[key]` or `[[key]]`
//! with a probe inside is a nested table, probed in turn.

use std::path::{Path, PathBuf};

use xnlb::config::Config;

const PROBE: &str = "zzz_probe";

/// The keys the parser knows in the table that `headers` opens (the
/// document's top level when empty), or None if it is not a table.
fn keys_of(headers: &[String]) -> Option<Vec<String>> {
    let doc = format!("{}\n{PROBE} = 1\n", headers.join("\n"));
    let err = Config::parse(Path::new("probe.toml"), &doc)
        .err()?
        .to_string();
    let at = err.find(&format!("unknown key `{PROBE}`"))?;
    let rest = &err[at..];
    let list = rest.lines().next()?.split_once(": ").map_or(rest, |x| x.1);
    let keys: Vec<String> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|k| *k != PROBE)
        .map(str::to_string)
        .collect();
    (!keys.is_empty()).then_some(keys)
}

/// Every table (as written in the file) and every key (dotted), walked
/// from the top.
fn schema() -> (Vec<String>, Vec<String>) {
    let mut tables = Vec::new();
    let mut leaves = Vec::new();
    let mut queue: Vec<(Vec<String>, String)> = vec![(Vec::new(), String::new())];
    while let Some((headers, path)) = queue.pop() {
        let keys = keys_of(&headers).unwrap_or_else(|| panic!("{path}: no keys"));
        for k in keys {
            let dotted = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            let nested = [format!("[{dotted}]"), format!("[[{dotted}]]")]
                .into_iter()
                .find_map(|h| {
                    let mut hs = headers.clone();
                    hs.push(h.clone());
                    keys_of(&hs).map(|_| (hs, h))
                });
            match nested {
                Some((hs, h)) => {
                    tables.push(h);
                    queue.push((hs, dotted));
                }
                None => leaves.push(dotted),
            }
        }
    }
    (tables, leaves)
}

fn reference() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIG.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_probe_finds_the_whole_schema() {
    let (tables, leaves) = schema();
    for t in [
        "[node]",
        "[cluster]",
        "[[cluster.member]]",
        "[[vip]]",
        "[[vip.rule]]",
        "[vip.health]",
        "[control]",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} not found: {tables:?}");
    }
    for k in [
        "node.id",
        "cluster.member.addrs",
        "vip.rule.ports",
        "vip.health.rise",
        "control.metrics",
    ] {
        assert!(leaves.iter().any(|x| x == k), "{k} not found: {leaves:?}");
    }
}

#[test]
fn every_key_the_parser_accepts_is_in_the_reference() {
    let doc = reference();
    let (tables, leaves) = schema();
    let missing: Vec<String> = tables
        .iter()
        .filter(|t| !doc.contains(&format!("`{t}`")))
        .chain(leaves.iter().filter(|k| !doc.contains(&format!("`{k}`"))))
        .cloned()
        .collect();
    assert!(missing.is_empty(), "docs/CONFIG.md lacks {missing:?}");
}
