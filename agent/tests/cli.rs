//! The command line as an operator meets it, run as the built binary:
//! `keygen --out`, `check-config` (key file, warnings, plain errors,
//! `--print`, several files), exit statuses and JSON errors of the control
//! commands, `--version` and `mac`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn xnlb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xnlb"))
        .args(args)
        .output()
        .expect("run xnlb")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh directory for one test.
fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xnlb-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

/// A valid key file, mode 0600.
fn key(d: &Path) -> PathBuf {
    let k = d.join("cluster.key");
    std::fs::write(&k, "ab".repeat(32)).expect("key");
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    k
}

/// Node 1 of a two-node cluster with one VIP; `extra_node` goes into
/// `[node]`, `extra_vip` into the `[[vip]]`.
fn config(key: &Path, extra_node: &str, vip: &str, extra_vip: &str) -> String {
    format!(
        r#"[node]
id = 1
interface = "eth0"
{extra_node}
[cluster]
name = "web"
key_file = "{}"
listen = ["198.18.1.1:7450"]
[[cluster.member]]
id = 1
addrs = ["198.18.1.1:7450"]
[[cluster.member]]
id = 2
addrs = ["198.18.1.2:7450"]
[[vip]]
address = "{vip}"
{extra_vip}
"#,
        key.display()
    )
}

fn write(d: &Path, name: &str, body: &str) -> PathBuf {
    let p = d.join(name);
    std::fs::write(&p, body).expect("write");
    p
}

#[test]
fn keygen_out_writes_an_owner_only_file_and_never_overwrites() {
    let d = dir("keygen");
    let k = d.join("cluster.key");
    let o = xnlb(&["keygen", "--out", k.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", text(&o));
    xnlb::key::load(&k).expect("the agent accepts what keygen wrote");
    let before = std::fs::read(&k).unwrap();
    let o = xnlb(&["keygen", "--out", k.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("exists"), "{}", text(&o));
    assert_eq!(std::fs::read(&k).unwrap(), before, "the old key is kept");
}

#[test]
fn keygen_to_stdout_points_at_out() {
    let o = xnlb(&["keygen"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim().len(), 64);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--out"),
        "{}",
        text(&o)
    );
    let help = xnlb(&["keygen", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--out"));
}

#[test]
fn check_config_reads_the_key_file_as_the_agent_does() {
    let d = dir("keyfile");
    let good = key(&d);
    let open = d.join("open.key");
    std::fs::write(&open, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let short = d.join("short.key");
    std::fs::write(&short, "abcd").unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let subdir = d.join("keydir");
    std::fs::create_dir(&subdir).unwrap();
    std::fs::set_permissions(&subdir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let ok = write(&d, "ok.toml", &config(&good, "", "198.18.0.100", ""));
    let o = xnlb(&["check-config", ok.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for bad in [d.join("missing.key"), open, short, subdir] {
        let f = write(&d, "bad.toml", &config(&bad, "", "198.18.0.100", ""));
        let o = xnlb(&["check-config", f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}: {}", bad.display(), text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("cluster.key_file") && err.contains(bad.to_str().unwrap()),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn check_config_warns_about_legal_but_likely_wrong_values() {
    let d = dir("warn");
    let k = key(&d);
    let cases = [
        ("", "127.0.0.1", "", "loopback"),
        ("", "0.0.0.0", "", "unspecified"),
        ("", "255.255.255.255", "", "broadcast"),
        ("", "224.0.0.5", "", "multicast"),
        ("", "169.254.1.1", "", "link-local"),
        ("", "fe80::1", "", "link-local"),
        ("", "198.18.1.2", "", "heartbeat"),
        ("weight = 50", "198.18.0.100", "", "weight"),
        (
            "",
            "198.18.0.100",
            "[[vip.rule]]\nprotocol = \"tcp\"\nports = \"80-90\"\n[[vip.rule]]\nprotocol = \"both\"\nports = \"85\"",
            "overlap",
        ),
    ];
    for (node, vip, rules, word) in cases {
        let f = write(&d, "w.toml", &config(&k, node, vip, rules));
        let o = xnlb(&["check-config", f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{word}: {}", text(&o));
        assert!(
            text(&o).contains("warning") && text(&o).contains(word),
            "{word}: {}",
            text(&o)
        );
        let o = xnlb(&["check-config", "--strict", f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{word} --strict: {}", text(&o));
    }
    // A listen address on another host's IP (same port, so the parser takes it).
    let body = config(&k, "", "198.18.0.100", "").replace(
        "listen = [\"198.18.1.1:7450\"]",
        "listen = [\"198.18.1.9:7450\"]",
    );
    let f = write(&d, "l.toml", &body);
    let o = xnlb(&["check-config", f.to_str().unwrap()]);
    assert!(text(&o).contains("cluster.listen"), "{}", text(&o));
    let f = write(&d, "clean.toml", &config(&k, "", "198.18.0.100", ""));
    let o = xnlb(&["check-config", "--strict", f.to_str().unwrap()]);
    assert!(
        o.status.success() && !text(&o).contains("warning"),
        "{}",
        text(&o)
    );
}

#[test]
fn check_config_errors_speak_the_operators_language() {
    let d = dir("words");
    let k = key(&d);
    let base = config(&k, "", "198.18.0.100", "");
    let cases: [(String, &str); 6] = [
        (base.replacen("id = 1", "id = \"one\"", 1), "whole number"),
        (
            base.replacen(
                "interface = \"eth0\"",
                "interface = \"eth0\"\nweight = -3",
                1,
            ),
            "whole number",
        ),
        (
            base.replace(
                "addrs = [\"198.18.1.1:7450\"]",
                "addrs = [\"198.18.1.1:7450\"]\nrole = \"standby\"",
            ),
            "standby",
        ),
        (
            base.replace("listen =", "heartbeat_interval_ms = 100\nlisten ="),
            "dead_after_ms",
        ),
        (
            base.split("[cluster]").next().unwrap().to_string(),
            "[cluster]",
        ),
        (
            base.replace(
                "listen = [\"198.18.1.1:7450\"]",
                "listen = \"198.18.1.1:7450\"",
            ),
            "list",
        ),
    ];
    for (body, word) in cases {
        let f = write(&d, "e.toml", &body);
        let o = xnlb(&["check-config", f.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(err.contains(word), "{word}: {err}");
        for rust in [
            "i64", "u32", "u64", "Standby", "Active", "sequence", "field", ":1:",
        ] {
            assert!(!err.contains(rust), "{rust:?} in {err}");
        }
    }
}

#[test]
fn check_config_print_shows_every_default_and_reads_back() {
    let d = dir("print");
    let k = key(&d);
    let f = write(&d, "p.toml", &config(&k, "", "198.18.0.100", "[[vip.rule]]\nprotocol = \"tcp\"\nports = \"80\"\n[vip.health]\ntcp = \"127.0.0.1:80\""));
    let o = xnlb(&["check-config", "--print", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    for k in [
        "buckets = 4096",
        "dead_after_ms = 250",
        "weight = 100",
        "affinity = \"none\"",
        "fall = 3",
        "socket = ",
        "pin_dir = ",
    ] {
        assert!(out.contains(k), "{k}: {out}");
    }
    let again = write(&d, "again.toml", &out);
    let a = xnlb::config::Config::load(&f).unwrap();
    let mut b = xnlb::config::Config::load(&again).unwrap_or_else(|e| panic!("{e}\n{out}"));
    b.path = a.path.clone();
    assert_eq!(a, b);
}

#[test]
fn check_config_compares_the_cluster_wide_settings_of_several_files() {
    let d = dir("compare");
    let k = key(&d);
    let one = write(&d, "node1.toml", &config(&k, "", "198.18.0.100", ""));
    let two_body = config(&k, "", "198.18.0.100", "")
        .replacen("id = 1\ninterface", "id = 2\ninterface", 1)
        .replace(
            "listen = [\"198.18.1.1:7450\"]",
            "listen = [\"198.18.1.2:7450\"]",
        );
    let two = write(&d, "node2.toml", &two_body);
    let o = xnlb(&["check-config", one.to_str().unwrap(), two.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let three = write(
        &d,
        "node3.toml",
        &two_body.replace("name = \"web\"", "name = \"web\"\nbuckets = 1024"),
    );
    let o = xnlb(&[
        "check-config",
        one.to_str().unwrap(),
        three.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("cluster.buckets") && t.contains("node1.toml") && t.contains("node3.toml"),
        "{t}"
    );
}

#[test]
fn no_agent_has_its_own_status_and_json_errors() {
    let d = dir("noagent");
    let sock = d.join("nothing.sock");
    let o = xnlb(&["status", "--json", "--socket", sock.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(sock.to_str().unwrap()),
        "{v}"
    );
    let o = xnlb(&["drain", "--socket", sock.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!text(&o).contains("/etc/xnlb/xnlb.toml"), "{}", text(&o));
    let o = xnlb(&[
        "owner",
        "--json",
        "--socket",
        sock.to_str().unwrap(),
        "--vip",
        "198.18.0.100",
        "--src",
        "1.2.3.4:5",
        "--dport",
        "80",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert!(v["error"].is_string());
}

#[test]
fn version_names_the_commit_and_the_xdp_object() {
    let o = xnlb(&["--version"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    assert!(out.contains("commit "), "{out}");
    assert!(out.contains("XDP object"), "{out}");
    assert!(
        out.contains(&format!("wire version {}", xnlb_proto::wire::VERSION)),
        "{out}"
    );
}

#[test]
fn reload_without_an_agent_exits_3_and_completions_cover_every_subcommand() {
    let o = xnlb(&["reload", "--socket", "/nonexistent/xnlb.sock"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let bash = xnlb(&["completions", "bash"]);
    assert!(bash.status.success(), "{}", text(&bash));
    let script = String::from_utf8_lossy(&bash.stdout);
    for sub in ["reload", "check-config", "drain", "status"] {
        assert!(script.contains(sub), "{sub} not completed");
    }
}

#[test]
fn mac_prints_a_vips_cluster_mac() {
    let m = xnlb(&["mac", "198.18.0.100"]);
    assert!(m.status.success(), "{}", text(&m));
    let u = xnlb(&["mac", "198.18.0.100", "--unicast"]);
    let (m, u) = (
        String::from_utf8_lossy(&m.stdout).trim().to_string(),
        String::from_utf8_lossy(&u.stdout).trim().to_string(),
    );
    for mac in [&m, &u] {
        assert_eq!(mac.len(), 17, "{mac}");
        assert_eq!(mac.matches(':').count(), 5, "{mac}");
    }
    assert_ne!(m, u);
    let first = u8::from_str_radix(&m[..2], 16).unwrap();
    assert_eq!(first & 1, 1, "multicast bit: {m}");
    assert!(!xnlb(&["mac", "not-an-ip"]).status.success());
}
