//! Routed mode's announcement: while this node is a healthy member, its
//! routed VIPs are host routes (/32, /128) in kernel routing table
//! [`ROUTED_TABLE`]; BIRD imports that table (`protocol kernel` with
//! `learn`) and exports it over BGP to the routers (examples/bird-node.conf).
//! That table is the whole coupling: xnlb speaks no BGP, BIRD knows nothing
//! of xnlb.
//!
//! The routes go through [`ANNOUNCE_DEVICE`], a TUN device this process
//! creates without making it persistent: the kernel deletes it, and every
//! route through it, when the process's last descriptor closes. So a
//! SIGKILLed or crashed agent withdraws as surely as one that leaves
//! (BIRD sees the device go and withdraws at once). No `ip rule` points at
//! the table: the node's own forwarding never reads it.
//!
//! Shape: [`Membership`] is what the shell knows of the node (quorum, lease,
//! install, attachment, storage, leaving) and [`Membership::verdict`] the
//! pure rule; [`Announcer`] acts on a change of verdict through [`Routes`],
//! whose real implementation ([`TunRoutes`]) is the only IO here.
//!
//! A frozen agent (SIGSTOP) keeps its routes: its lease fences it in XDP,
//! and its BIRD, which is not frozen, keeps announcing (see README). The
//! packets the routers still send it are not lost: past its lease its XDP
//! program forwards them on (`xnlb_common::forward`, the fallback).

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use tracing::{error, info, warn};

use crate::config::{Config, VipMode};

/// The kernel routing table the routed VIPs are put in (and BIRD's
/// `kernel table` reads). Fixed: the BIRD snippet names it too.
pub const ROUTED_TABLE: u32 = 4242;

/// The TUN device the announcement routes point at; it lives exactly as
/// long as the agent process.
pub const ANNOUNCE_DEVICE: &str = "xnlb-routed";

/// The verdict's reason when the lease has run out.
const LEASE_ENDED: &str = "the lease has ended (fenced)";

/// What the shell knows of this node that decides whether it may be
/// announced. Times are on the data plane's clock (`CLOCK_BOOTTIME` ns).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// The core reports quorum.
    pub quorum: bool,
    /// The lease the core last handed the data plane ends here.
    pub lease_until: u64,
    /// The core's current map is installed in the data plane.
    pub installed: bool,
    /// The XDP program is attached (and the liveness check has not found it
    /// gone).
    pub attached: bool,
    /// The state file is being written (a failing write fences the node).
    pub storage_ok: bool,
    /// The node is leaving (stop, SIGTERM, or the liveness check gave up).
    pub leaving: bool,
    /// The node is drained (operator drain, failing health check, manual
    /// failback hold): it takes no new flows, so the routers need not send
    /// it any. Its connections still reach it: the other nodes forward
    /// them to it while it holds them.
    pub drained: bool,
}

impl Membership {
    /// `Ok` if the node may be announced at `now`, else why not: a healthy
    /// member has quorum, a valid lease, its map installed in an attached
    /// data plane, a writable state file, and is not leaving.
    pub fn verdict(&self, now: u64) -> Result<(), &'static str> {
        if self.leaving {
            Err("leaving the cluster")
        } else if self.drained {
            Err("drained (operator drain, failing health check or failback hold)")
        } else if !self.attached {
            Err("no XDP data plane attached")
        } else if !self.storage_ok {
            Err("the state file cannot be written")
        } else if !self.quorum {
            Err("no quorum")
        } else if now >= self.lease_until {
            Err(LEASE_ENDED)
        } else if !self.installed {
            Err("the current map is not installed")
        } else {
            Ok(())
        }
    }
}

/// Where announcement routes are added and removed.
pub trait Routes {
    /// Puts `vip`'s host route in [`ROUTED_TABLE`] (or refreshes it).
    fn add(&mut self, vip: IpAddr) -> io::Result<()>;
    /// Takes it out (absent already is fine).
    fn remove(&mut self, vip: IpAddr) -> io::Result<()>;
}

/// Announces this node's routed VIPs while its [`Membership`] allows.
pub struct Announcer<R: Routes> {
    /// What decides.
    pub membership: Membership,
    vips: Vec<IpAddr>,
    routes: R,
    /// Whether the routes are in the table.
    announced: bool,
    /// The last `now` at which the verdict allowed the announcement: a
    /// fence found later happened after it.
    last_healthy: u64,
}

impl<R: Routes> Announcer<R> {
    /// An announcer of `vips` through `routes`; nothing announced yet.
    pub fn new(vips: Vec<IpAddr>, routes: R) -> Announcer<R> {
        Announcer {
            membership: Membership {
                storage_ok: true,
                ..Membership::default()
            },
            vips,
            routes,
            announced: false,
            last_healthy: 0,
        }
    }

    /// Whether the routes are in the table now.
    pub fn announced(&self) -> bool {
        self.announced
    }

    /// Brings the table in line with the verdict at `now`. Call after every
    /// change of [`Announcer::membership`] and at least once per heartbeat
    /// interval (a lease ends without any event). A failed add is retried at
    /// the next call; a withdrawal counts as done even if a route could not
    /// be removed (logged), since nothing better can be done.
    pub fn update(&mut self, now: u64) {
        let verdict = self.membership.verdict(now);
        if verdict.is_ok() {
            self.last_healthy = now;
        }
        match (verdict, self.announced) {
            (Ok(()), false) => {
                for vip in &self.vips {
                    if let Err(e) = self.routes.add(*vip) {
                        error!("announcing VIP {vip} (table {ROUTED_TABLE}): {e}");
                        self.remove_all();
                        return;
                    }
                }
                info!(
                    "announcing {} routed VIPs (table {ROUTED_TABLE}): healthy member",
                    self.vips.len()
                );
                self.announced = true;
            }
            (Err(why), true) => {
                self.remove_all();
                // How long after the lease ran out, if it did between two
                // updates: bounded by one heartbeat interval (the core's
                // timer drives an update). A lease cut short by the core
                // (a Lease action in the past) is withdrawn at once.
                let since_fence = if why == LEASE_ENDED {
                    let fenced = self.membership.lease_until.max(self.last_healthy);
                    format!(
                        " ({} us after the fence)",
                        now.saturating_sub(fenced) / 1_000
                    )
                } else {
                    String::new()
                };
                warn!("withdrew the routed VIPs (table {ROUTED_TABLE}): {why}{since_fence}");
                self.announced = false;
            }
            _ => {}
        }
    }

    fn remove_all(&mut self) {
        for vip in &self.vips {
            if let Err(e) = self.routes.remove(*vip) {
                warn!("withdrawing VIP {vip} (table {ROUTED_TABLE}): {e}");
            }
        }
    }
}

/// The real [`Routes`]: host routes through [`ANNOUNCE_DEVICE`] in
/// [`ROUTED_TABLE`], over route netlink.
pub struct TunRoutes {
    /// Keeps the device alive; closing it deletes the device and its routes.
    _tun: File,
    index: u32,
}

impl TunRoutes {
    /// Creates [`ANNOUNCE_DEVICE`] (non-persistent TUN) and brings it up.
    /// Fails if another process holds a device of that name (a second
    /// agent in this network namespace).
    pub fn create() -> io::Result<TunRoutes> {
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        // SAFETY: all-zero is a valid ifreq.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(ANNOUNCE_DEVICE.bytes()) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads an ifreq we own for the whole call.
        let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &ifr) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let name = std::ffi::CString::new(ANNOUNCE_DEVICE).map_err(io::Error::other)?;
        // SAFETY: a valid C string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut up = LinkMessage::default();
        up.header.index = index;
        up.header.flags = LinkFlags::Up;
        up.header.change_mask = LinkFlags::Up;
        crate::netlink::exchange(NETLINK_ROUTE, RouteNetlinkMessage::SetLink(up), NLM_F_ACK)?;
        Ok(TunRoutes { _tun: tun, index })
    }

    fn message(&self, vip: IpAddr) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = if vip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.destination_prefix_length = if vip.is_ipv4() { 32 } else { 128 };
        // Tables above 255 travel in RTA_TABLE (as `ip route` does).
        m.header.table = RouteHeader::RT_TABLE_UNSPEC;
        m.header.protocol = RouteProtocol::Static;
        m.header.scope = RouteScope::Link;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Table(ROUTED_TABLE));
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(vip)));
        m.attributes.push(RouteAttribute::Oif(self.index));
        m
    }
}

impl Routes for TunRoutes {
    fn add(&mut self, vip: IpAddr) -> io::Result<()> {
        crate::netlink::exchange(
            NETLINK_ROUTE,
            RouteNetlinkMessage::NewRoute(self.message(vip)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    fn remove(&mut self, vip: IpAddr) -> io::Result<()> {
        match crate::netlink::exchange(
            NETLINK_ROUTE,
            RouteNetlinkMessage::DelRoute(self.message(vip)),
            NLM_F_ACK,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r.map(drop),
        }
    }
}

/// The announcer of `cfg`'s routed VIPs, or `None` when it has none or
/// this node serves nothing (a witness).
pub fn for_config(cfg: &Config) -> io::Result<Option<Announcer<TunRoutes>>> {
    let vips: Vec<IpAddr> = cfg
        .vips
        .iter()
        .filter(|v| v.mode == VipMode::Routed)
        .map(|v| v.address)
        .collect();
    if vips.is_empty() || cfg.interface.is_none() {
        return Ok(None);
    }
    Ok(Some(Announcer::new(vips, TunRoutes::create()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn healthy() -> Membership {
        Membership {
            quorum: true,
            lease_until: 1_000,
            installed: true,
            attached: true,
            storage_ok: true,
            leaving: false,
            drained: false,
        }
    }

    #[test]
    fn only_a_healthy_member_is_announced() {
        assert_eq!(healthy().verdict(999), Ok(()));
        type Break = fn(&mut Membership);
        let broken: [(&str, Break); 7] = [
            ("no quorum", |m| m.quorum = false),
            ("lease ended", |m| m.lease_until = 999),
            ("not installed", |m| m.installed = false),
            ("detached", |m| m.attached = false),
            ("storage", |m| m.storage_ok = false),
            ("leaving", |m| m.leaving = true),
            ("drained", |m| m.drained = true),
        ];
        for (what, change) in broken {
            let mut m = healthy();
            change(&mut m);
            assert!(m.verdict(999).is_err(), "{what}: expected a withdrawal");
        }
        assert!(
            healthy().verdict(1_000).is_err(),
            "a lease is over at its end"
        );
    }

    /// The table as a fake kernel: which VIPs are in it, and how many
    /// netlink calls were made.
    #[derive(Default)]
    struct FakeTable {
        present: BTreeSet<IpAddr>,
        calls: usize,
        fail_adds: bool,
    }

    impl Routes for &mut FakeTable {
        fn add(&mut self, vip: IpAddr) -> io::Result<()> {
            self.calls += 1;
            if self.fail_adds {
                return Err(io::Error::from_raw_os_error(libc::ENETDOWN));
            }
            self.present.insert(vip);
            Ok(())
        }
        fn remove(&mut self, vip: IpAddr) -> io::Result<()> {
            self.calls += 1;
            self.present.remove(&vip);
            Ok(())
        }
    }

    fn vips() -> Vec<IpAddr> {
        vec![
            "198.18.0.100".parse().expect("v4"),
            "fd00::100".parse().expect("v6"),
        ]
    }

    #[test]
    fn routes_follow_the_verdict_and_a_lease_end_withdraws_without_an_event() {
        let mut table = FakeTable::default();
        let mut a = Announcer::new(vips(), &mut table);
        a.update(0);
        assert!(!a.announced(), "nothing before quorum and a lease");
        a.membership = healthy();
        a.update(10);
        assert!(a.announced());
        a.update(20);
        a.update(30);
        // The lease is not renewed (a fence): the next periodic update
        // withdraws, with nothing else changing.
        a.update(1_000);
        assert!(!a.announced());
        a.membership.lease_until = 2_000;
        a.update(1_100);
        a.membership.quorum = false;
        a.update(1_200);
        assert!(!a.announced());
        drop(a);
        assert!(table.present.is_empty(), "left behind: {:?}", table.present);
        // Two adds, two removals, each of two VIPs: repeated updates in one
        // state make no netlink call.
        assert_eq!(table.calls, 8);
    }

    #[test]
    fn a_failed_add_leaves_nothing_half_announced_and_is_retried() {
        let mut table = FakeTable {
            fail_adds: true,
            ..FakeTable::default()
        };
        let mut a = Announcer::new(vips(), &mut table);
        a.membership = healthy();
        a.update(1);
        assert!(!a.announced());
        a.routes.fail_adds = false;
        a.update(2);
        assert!(a.announced());
        assert_eq!(a.routes.present.len(), 2);
    }
}
