//! Every configuration shipped in `examples/` is one the agent accepts: a
//! newcomer copying one starts from a file that works.

use std::path::PathBuf;

use xnlb::config::Config;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_example_parses() {
    let files = examples();
    assert!(files.len() >= 3, "examples: {files:?}");
    for f in files {
        if let Err(e) = Config::load(&f) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn the_examples_show_a_witness_and_a_standby() {
    let roles: Vec<String> = examples()
        .iter()
        .filter_map(|f| Config::load(f).ok())
        .flat_map(|c| {
            c.members
                .iter()
                .map(|m| format!("{:?}", m.role))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(roles.iter().any(|r| r == "Witness"), "{roles:?}");
    assert!(roles.iter().any(|r| r == "Standby"), "{roles:?}");
}

/// `check-config --print` writes what parses back to the same
/// configuration, for every shipped example (witness and standby included).
#[test]
fn the_effective_config_of_every_example_reads_back() {
    for f in examples() {
        let a = Config::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let text = xnlb::config::effective::to_toml(&a);
        let b = Config::parse(&f, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(a, b, "{}", f.display());
    }
}
