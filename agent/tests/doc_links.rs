//! The README and the guides link only to files in the repository (a
//! newcomer has nothing else), and every such link resolves.

use std::path::{Path, PathBuf};

fn docs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    let dir = root.join("docs");
    for entry in std::fs::read_dir(&dir).expect("docs/").flatten() {
        if entry.path().extension().is_some_and(|e| e == "md") {
            files.push(entry.path());
        }
    }
    files
}

/// The targets of the Markdown links `[text](target)` in `text`.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        let tail = &rest[i + 2..];
        let Some(end) = tail.find(')') else { break };
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_readme_and_the_guides_link_only_to_files_that_exist_in_the_repository() {
    let mut checked = 0;
    for doc in docs() {
        let text = std::fs::read_to_string(&doc).expect("readable");
        for target in link_targets(&text) {
            assert!(
                !target.contains("://"),
                "{} links outside the repository: {target}",
                doc.display()
            );
            let file = target.split('#').next().unwrap_or_default();
            if file.is_empty() {
                continue;
            }
            let path = doc.parent().expect("a directory").join(file);
            assert!(
                path.exists(),
                "{} links to {target}, which does not exist",
                doc.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} links found");
}
