//! The XDP program's log records reach userspace through aya-log, rate
//! limited to one line per CPU per second.

use std::sync::Mutex;

use xnlb_common::slot_state;
use xnlb_tests::fixture::Fixture;
use xnlb_tests::frames::{frame, IpOpts, L4, SYN};
use xnlb_tests::tables::{table, VIP4};

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        LINES
            .lock()
            .expect("lines")
            .push(format!("{} {}", r.level(), r.args()));
    }
    fn flush(&self) {}
}

#[test]
fn fenced_drops_are_logged_once_per_second_per_cpu() {
    log::set_logger(&Capture).expect("logger");
    log::set_max_level(log::LevelFilter::Trace);
    let mut fx = Fixture::new();
    fx.serve(&table(slot_state::OWNED));
    fx.dp.set_lease(0).expect("fence");
    let f = frame(
        [0x03, 0xbf, 198, 18, 0, 100],
        "198.18.1.1".parse().expect("ip"),
        VIP4.into(),
        &L4::Tcp {
            sport: 1,
            dport: 80,
            flags: SYN,
        },
        &IpOpts::default(),
    );
    for _ in 0..50 {
        assert_eq!(fx.run(&f).action, 1);
    }
    fx.dp.flush_logs();
    let lines = LINES.lock().expect("lines").clone();
    let fenced: Vec<&String> = lines.iter().filter(|l| l.contains("fenced")).collect();
    assert_eq!(
        fenced.len(),
        1,
        "50 fenced drops in well under a second: one log line, got {lines:?}"
    );
    assert!(fenced[0].starts_with("WARN"), "{}", fenced[0]);
}
