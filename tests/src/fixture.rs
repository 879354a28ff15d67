//! A data plane loaded for one test, in its own pin directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use aya::programs::{TestRun, TestRunOptions};
use xnlb::dataplane::{boottime_ns, Dataplane};
use xnlb_common::{Counters, Table, PROG_FILTER, PROG_PROBE};

/// What the program did with one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// XDP action (1 drop, 2 pass, 3 tx).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// XDP_DROP.
pub const DROP: u32 = 1;
/// XDP_PASS.
pub const PASS: u32 = 2;
/// XDP_TX.
pub const TX: u32 = 3;

/// Path of the object built by `cargo xtask build-ebpf --release`.
pub fn object_path() -> PathBuf {
    std::env::var_os("XNLB_BPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bpf/xnlb.bpf.o")
        })
}

/// A loaded object whose pinned maps are removed on drop.
pub struct Fixture {
    /// The data plane under test.
    pub dp: Dataplane,
    dir: PathBuf,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

impl Fixture {
    /// Loads the object into `/sys/fs/bpf/xnlb-test-<pid>-<n>`.
    pub fn new() -> Fixture {
        Fixture::from_object(&object_path())
    }

    /// Loads the object at `path` (a benchmark's variant of the program)
    /// like [`Fixture::new`].
    pub fn from_object(path: &std::path::Path) -> Fixture {
        crate::require_root();
        let obj = std::fs::read(path).unwrap_or_else(|e| {
            panic!(
                "reading {}: {e}: run `cargo xtask build-ebpf --release` first",
                path.display()
            )
        });
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/sys/fs/bpf/xnlb-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dp = Dataplane::load(&obj, &dir).unwrap_or_else(|e| {
            // No Fixture exists yet to clean up on drop.
            let _ = std::fs::remove_dir_all(&dir);
            panic!("loading the XDP object: {e:?}")
        });
        Fixture { dp, dir }
    }

    /// Installs `table` and a lease valid for an hour.
    pub fn serve(&mut self, table: &Table) {
        self.dp.install(table).expect("install table");
        self.dp
            .set_lease(boottime_ns() + 3_600_000_000_000)
            .expect("lease");
        self.dp.set_if_mac(IF_MAC).expect("if mac");
    }

    fn run_prog(&mut self, name: &'static str, frame: &[u8]) -> Outcome {
        let prog = self.dp.program(name).expect("program");
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        };
        let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(res.data_size_out as usize);
        Outcome {
            action: res.return_value,
            frame: out,
        }
    }

    /// Runs program `name` on `frame`.
    pub fn run_named(&mut self, name: &'static str, frame: &[u8]) -> Outcome {
        self.run_prog(name, frame)
    }

    /// Runs the filter on `frame`.
    pub fn run(&mut self, frame: &[u8]) -> Outcome {
        self.run_prog(PROG_FILTER, frame)
    }

    /// Runs the probe: `(action, hash, slot)` as the kernel computed them.
    pub fn probe(&mut self, frame: &[u8]) -> (u32, u64, u32) {
        let o = self.run_prog(PROG_PROBE, frame);
        let h = u64::from_le_bytes(o.frame[0..8].try_into().unwrap_or_default());
        let s = u32::from_le_bytes(o.frame[8..12].try_into().unwrap_or_default());
        (o.action, h, s)
    }

    /// Runs `frame` `repeat` times; mean ns per run as the kernel measured.
    pub fn time(&mut self, name: &'static str, frame: &[u8], repeat: u32) -> f64 {
        let prog = self.dp.program(name).expect("program");
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        };
        let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        res.duration.as_nanos() as f64
    }

    /// Counters summed over CPUs.
    pub fn counters(&self) -> Counters {
        self.dp.counters().expect("counters")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The MAC the tests pretend the interface has.
pub const IF_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
