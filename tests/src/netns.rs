//! Network namespaces the tests create and always remove.
//!
//! Only namespaces created here are touched, only addresses from
//! 198.18.0.0/15 and fd00::/8 are used, and a guard deletes the namespace
//! (and with it its interfaces) on drop, also when a test panics.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace that is deleted on drop.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

fn run_ok(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A name unique to this process and call, short enough for an interface.
pub fn unique(tag: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("x{}{}{}", tag, std::process::id() % 100_000, n)
}

/// A new, empty directory under `parent` (created if missing) whose name
/// starts with `tag`.
///
/// Never an existing one: a failed test keeps its directory for its logs,
/// and a later run on the same machine can meet the same process id and
/// sequence number, so [`unique`] alone would hand it that directory back,
/// state files and all (a CI run once started agents on another test's
/// persisted state that way).
pub fn fresh_dir(parent: &Path, tag: &str) -> PathBuf {
    fresh_dir_from(parent, std::iter::repeat_with(|| unique(tag)))
}

/// [`fresh_dir`] with the names to try given, so a test can make them
/// collide.
fn fresh_dir_from(parent: &Path, names: impl Iterator<Item = String>) -> PathBuf {
    std::fs::create_dir_all(parent)
        .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
    for name in names.take(1000) {
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("creating {}: {e}", dir.display()),
        }
    }
    panic!("no free directory name under {}", parent.display())
}

impl Netns {
    /// Creates a namespace with loopback up.
    pub fn new(tag: &str) -> Netns {
        crate::require_root();
        // A run killed before its guards ran leaves its namespaces; a name
        // it used may come round again with the same process id.
        let name = std::iter::repeat_with(|| unique(tag))
            .take(1000)
            .find(|n| !Path::new("/run/netns").join(n).exists())
            .expect("a free namespace name");
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.sh("ip link set lo up");
        ns
    }

    /// Runs a shell command inside the namespace; panics on failure.
    pub fn sh(&self, script: &str) -> String {
        let out =
            run_ok(Command::new("ip").args(["netns", "exec", &self.name, "sh", "-c", script]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread that has entered the namespace: sockets and
    /// netlink calls it makes live there. (See [`spawn_in`] for a thread
    /// that outlives the call.)
    pub fn enter<R: Send, F: FnOnce() -> R + Send>(&self, f: F) -> R {
        std::thread::scope(|s| {
            s.spawn(|| {
                enter_netns(&self.name);
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

/// Moves the calling thread into network namespace `name` (under
/// /run/netns), for good: run it on a thread of its own.
pub fn enter_netns(name: &str) {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: a valid namespace fd; affects only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Spawns a thread that enters `ns` and runs `f` there. Unlike
/// [`Netns::enter`] it does not borrow the namespace, so the thread can run
/// on while the caller goes on (the namespace must outlive it).
pub fn spawn_in<R: Send + 'static, F: FnOnce() -> R + Send + 'static>(
    ns: &Netns,
    f: F,
) -> JoinHandle<R> {
    let name = ns.name.clone();
    std::thread::spawn(move || {
        enter_netns(&name);
        f()
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Creates a veth pair `a` in `na` and `b` in `nb`, both up.
pub fn veth(na: &Netns, a: &str, nb: &Netns, b: &str) {
    let tmp = unique("v");
    run_ok(Command::new("ip").args([
        "link", "add", &tmp, "netns", &na.name, "type", "veth", "peer", "name", b, "netns",
        &nb.name,
    ]));
    na.sh(&format!("ip link set {tmp} name {a} && ip link set {a} up"));
    nb.sh(&format!("ip link set {b} up"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_left_by_an_earlier_run_is_never_handed_out_again() {
        let parent = std::env::temp_dir().join(format!("xnlb-fresh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        let old = parent.join("a");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("node1.state"), b"another cluster").unwrap();
        let names = ["a", "a", "b"].map(String::from).into_iter();
        let got = fresh_dir_from(&parent, names);
        let left: Vec<_> = std::fs::read_dir(&got).unwrap().collect();
        std::fs::remove_dir_all(&parent).unwrap();
        assert_eq!(got, parent.join("b"));
        assert!(left.is_empty(), "{} is not empty", got.display());
    }
}
