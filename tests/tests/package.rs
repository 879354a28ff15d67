//! The Debian package `cargo xtask package` builds (and `cargo xtask test`
//! builds before running this): unpacked with `dpkg-deb -x`, its binary
//! checks the shipped example configuration, its man pages render, its
//! completions, unit, conffile and state directory are there, and no key
//! is shipped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use xnlb_tests::netns::unique;

/// The newest `target/debian/xnlb_*.deb`.
fn package() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    let debs = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "deb")
                        && p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("xnlb_"))
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    debs.into_iter()
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no xnlb_*.deb in {}: run `cargo xtask package`",
                dir.display()
            )
        })
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_debian_package_unpacks_to_a_working_install() {
    let deb = package();
    let root = std::env::temp_dir().join(unique("xnlb-deb-"));
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(root.join("DEBIAN")));
    let at = |rel: &str| root.join(rel);

    // Control data: the example configuration is a conffile; the state
    // directory is owner-only; no key anywhere.
    let control = std::fs::read_to_string(at("DEBIAN/control")).expect("control");
    assert!(control.contains("Package: xnlb\n"), "{control}");
    let conffiles = std::fs::read_to_string(at("DEBIAN/conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/xnlb/xnlb.toml");
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("drwx------ root/root") && l.ends_with("./var/lib/xnlb/")),
        "{listing}"
    );
    assert!(!listing.contains(".key"), "a key is shipped:\n{listing}");

    // The binary, with the XDP object, checks the shipped example with a
    // key it makes itself.
    let xnlb = at("usr/sbin/xnlb");
    let version = text(&run(Command::new(&xnlb).arg("--version")));
    assert!(version.contains("embedded"), "{version}");
    let key = root.join("cluster.key");
    run(Command::new(&xnlb).arg("keygen").arg("--out").arg(&key));
    let example = std::fs::read_to_string(at("etc/xnlb/xnlb.toml")).expect("example");
    assert!(example.contains("key_file = \"/etc/xnlb/cluster.key\""));
    let config = root.join("node1.toml");
    std::fs::write(
        &config,
        example.replace("/etc/xnlb/cluster.key", &key.to_string_lossy()),
    )
    .expect("config");
    let checked = run(Command::new(&xnlb).arg("check-config").arg(&config));
    println!("check-config: {}", text(&checked).trim());

    // The unit runs the packaged binary, reloads through it and raises
    // the descriptor limit.
    let unit = std::fs::read_to_string(at("lib/systemd/system/xnlb.service")).expect("unit");
    for line in [
        "ExecStart=/usr/sbin/xnlb agent --config /etc/xnlb/xnlb.toml",
        "ExecReload=/usr/sbin/xnlb reload",
        "LimitNOFILE=65536",
        "Type=notify",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line:?} not in the unit");
    }

    // Man pages, one per subcommand, and one renders.
    for page in [
        "xnlb",
        "xnlb-agent",
        "xnlb-check-config",
        "xnlb-reload",
        "xnlb-drain",
    ] {
        assert!(
            at(&format!("usr/share/man/man1/{page}.1.gz")).is_file(),
            "no man page {page}"
        );
    }
    let rendered = text(&run(Command::new("man")
        .env("MANWIDTH", "80")
        .args(["-P", "cat", "-l"])
        .arg(at("usr/share/man/man1/xnlb-reload.1.gz"))));
    assert!(
        rendered.contains("SYNOPSIS")
            && rendered.contains("xnlb-reload")
            && rendered.contains("--socket"),
        "{rendered}"
    );

    // Completions for bash (valid syntax), zsh and fish.
    let bash = at("usr/share/bash-completion/completions/xnlb");
    run(Command::new("bash").arg("-n").arg(&bash));
    let read = |rel: &str| std::fs::read_to_string(at(rel)).unwrap_or_default();
    assert!(read("usr/share/bash-completion/completions/xnlb").contains("complete -F"));
    assert!(read("usr/share/zsh/vendor-completions/_xnlb").starts_with("#compdef xnlb"));
    assert!(read("usr/share/fish/vendor_completions.d/xnlb.fish").contains("complete -c xnlb"));

    for doc in [
        "copyright",
        "README.md",
        "DEPLOY.md",
        "CONFIG.md",
        "METRICS.md",
        "TROUBLESHOOTING.md",
    ] {
        assert!(
            at(&format!("usr/share/doc/xnlb/{doc}")).is_file(),
            "no {doc}"
        );
    }
    let mode = |rel: &str| {
        at(rel)
            .metadata()
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    assert_eq!(mode("usr/sbin/xnlb"), 0o755);
    let _ = std::fs::remove_dir_all(&root);
}
