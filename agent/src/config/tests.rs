//! The unit tests of the whole file: the DESIGN example parses, and every
//! error names the key and the line it concerns.

use super::*;

const EXAMPLE: &str = r#"
[node]
id = 1
interface = "eth0"
role = "active"
weight = 100

[cluster]
name = "web"
key_file = "/etc/xnlb/cluster.key"
listen = ["198.18.1.1:7450"]

[[cluster.member]]
id = 1
addrs = ["198.18.1.1:7450"]
[[cluster.member]]
id = 2
addrs = ["198.18.1.2:7450"]
[[cluster.member]]
id = 3
addrs = ["198.18.1.3:7450"]
role = "witness"

[[vip]]
address = "198.18.0.100"
[[vip.rule]]
protocol = "tcp"
ports = "80"
mode = "multiple"
[[vip.rule]]
protocol = "both"
ports = "8000-8100"
mode = "single"
priority = [2, 1]
"#;

fn parse(src: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("xnlb.toml"), src)
}

#[test]
fn the_design_example_parses() {
    let c = parse(EXAMPLE).expect("valid");
    assert_eq!(c.node_id, 1);
    assert_eq!(c.members.len(), 3);
    assert_eq!(c.members[2].role, Role::Witness);
    assert_eq!(c.vips[0].rules[1].priority, vec![2, 1]);
    assert_eq!(c.vips[0].default, Mode::Single);
    assert_eq!(c.vips[0].default_priority, vec![1, 2]);
}

fn expect_err(src: &str, key: &str, line: usize) {
    match parse(src) {
        Err(ConfigError::Invalid {
            key: k,
            line: l,
            message,
            ..
        }) => {
            assert_eq!((k.as_str(), l), (key, line), "message: {message}");
        }
        Err(e @ ConfigError::Parse { .. }) => {
            let s = e.to_string();
            assert!(
                s.contains(key) && s.contains(&format!("line {line}")),
                "{s}"
            );
        }
        other => panic!("expected an error at {key} line {line}, got {other:?}"),
    }
}

/// `EXAMPLE` with `line` added under `[cluster]` (line 12 of the result).
fn with_cluster_line(line: &str) -> String {
    EXAMPLE.replace(
        "listen = [\"198.18.1.1:7450\"]\n",
        &format!("listen = [\"198.18.1.1:7450\"]\n{line}\n"),
    )
}

#[test]
fn every_duration_has_an_upper_bound_named_with_key_and_line() {
    // At the bound: accepted.
    for ok in [
        "heartbeat_interval_ms = 10000\ndead_after_ms = 60000",
        "drain_timeout_s = 86400",
        "dead_after_ms = 60000",
    ] {
        parse(&with_cluster_line(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    // One past it: refused, naming the key and its line.
    expect_err(
        &with_cluster_line("heartbeat_interval_ms = 10001"),
        "cluster.heartbeat_interval_ms",
        12,
    );
    expect_err(
        &with_cluster_line("dead_after_ms = 60001"),
        "cluster.dead_after_ms",
        12,
    );
    expect_err(
        &with_cluster_line("dead_after_ms = 9223372036854775807"),
        "cluster.dead_after_ms",
        12,
    );
    expect_err(
        &with_cluster_line("drain_timeout_s = 86401"),
        "cluster.drain_timeout_s",
        12,
    );
    expect_err(
        &with_cluster_line("drain_timeout_s = 9223372036854775807"),
        "cluster.drain_timeout_s",
        12,
    );
    let health = |body: &str| format!("{EXAMPLE}[vip.health]\ntcp = \"127.0.0.1:80\"\n{body}\n");
    let line = EXAMPLE.lines().count() + 3;
    parse(&health("interval_ms = 3600000\ntimeout_ms = 3600000")).expect("at the bound");
    expect_err(
        &health("interval_ms = 3600001"),
        "vip[0].health.interval_ms",
        line,
    );
    expect_err(
        &health("timeout_ms = 3600001"),
        "vip[0].health.timeout_ms",
        line,
    );
}

#[test]
fn errors_name_the_key_and_line() {
    expect_err(
        &EXAMPLE.replace("weight = 100", "weight = 0"),
        "node.weight",
        6,
    );
    expect_err(
        &EXAMPLE.replace("ports = \"80\"", "ports = \"80-70\""),
        "vip[0].rule[0].ports",
        28,
    );
    expect_err(
        &EXAMPLE.replace("priority = [2, 1]", "priority = [2, 3]"),
        "vip[0].rule[1].priority",
        34,
    );
    expect_err(
        &EXAMPLE.replace("mode = \"multiple\"", "mode = \"many\""),
        "vip[0].rule[0].mode",
        29,
    );
    expect_err(
        &EXAMPLE.replace("id = 3\n", "id = 2\n"),
        "cluster.member[2].id",
        20,
    );
    expect_err(
        &EXAMPLE.replace("weight = 100", "weight = 100\ncolour = 1"),
        "colour",
        7,
    );
    expect_err(
        &EXAMPLE.replace("address = \"198.18.0.100\"", "address = \"198.18.0\""),
        "vip[0].address",
        25,
    );
}

#[test]
fn an_error_about_a_defaulted_value_names_the_line_of_its_vip() {
    // timeout_ms defaults to 500, longer than this interval: the file has
    // no timeout_ms line, so the error points at the VIP's address.
    let src = format!("{EXAMPLE}[vip.health]\ntcp = \"127.0.0.1:80\"\ninterval_ms = 100\n");
    expect_err(&src, "vip[0].health.timeout_ms", 25);
}

#[test]
fn a_defaulted_key_is_reported_where_the_fault_is_written() {
    // node.role left out ("active") while the member entry says standby:
    // [node]'s id line, not line 1 where the default's empty span points.
    let src = EXAMPLE.replace("role = \"active\"\n", "").replace(
        "id = 1\naddrs = [\"198.18.1.1:7450\"]",
        "id = 1\naddrs = [\"198.18.1.1:7450\"]\nrole = \"standby\"",
    );
    expect_err(&src, "node.role", 3);
    let msg = parse(&src).unwrap_err().to_string();
    assert!(
        msg.contains("\"standby\"") && !msg.contains("Standby"),
        "{msg}"
    );
    // dead_after_ms left at 250 ms with a 100 ms interval: the interval's line.
    expect_err(
        &with_cluster_line("heartbeat_interval_ms = 100"),
        "cluster.dead_after_ms",
        12,
    );
}

#[test]
fn a_vip_is_flooded_unless_it_says_routed() {
    let c = parse(EXAMPLE).expect("valid");
    assert_eq!(c.vips[0].mode, VipMode::Flood);
    let src = EXAMPLE.replace(
        "address = \"198.18.0.100\"\n",
        "address = \"198.18.0.100\"\nmode = \"routed\"\n",
    );
    assert_eq!(parse(&src).expect("valid").vips[0].mode, VipMode::Routed);
    // Line 26: the `mode` line right after the VIP's address.
    let bad = EXAMPLE.replace(
        "address = \"198.18.0.100\"\n",
        "address = \"198.18.0.100\"\nmode = \"bgp\"\n",
    );
    expect_err(&bad, "vip[0].mode", 26);
}
