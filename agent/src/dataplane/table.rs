use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData, PerCpuArray, ProgramArray};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};
use xnlb_common::lease_clock::Reading;
use xnlb_common::{
    ctrl, map_name, route_kind, Counters, MemberRoute, Table, LAYOUT_VERSION, MAX_BUCKETS,
    MAX_VIPS, PROG_FILTER, PROG_PROBE,
};

use super::DataplaneError;

/// How long a retired table stays untouched before it may be rewritten.
///
/// A packet reads the active index and then its table inside one XDP run
/// (an RCU read section with preemption off, microseconds at most); waiting
/// this long after a flip before rewriting the retired copy means no packet
/// can ever read a table while it is being written.
pub const TABLE_GRACE: Duration = Duration::from_millis(2);

/// The loaded XDP object and its maps.
pub struct Dataplane {
    /// Forwards the XDP program's (rate-limited) log records to `tracing`.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    ebpf: Ebpf,
    pin_dir: PathBuf,
    active: u32,
    last_flip: Option<Instant>,
    /// Where and how the filter is attached, with the agent's own hold on
    /// the link (see `attach.rs`).
    pub(super) attachment: Option<super::attach::Attachment>,
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

impl Dataplane {
    /// Loads `obj`, creating its maps under `pin_dir` or adopting the ones a
    /// previous agent left pinned there (so a restart keeps the live table,
    /// lease and tracked connections).
    pub fn load(obj: &[u8], pin_dir: &Path) -> Result<Dataplane, DataplaneError> {
        super::bpffs::ensure_mounted(pin_dir)?;
        std::fs::create_dir_all(pin_dir)
            .map_err(|e| DataplaneError::PinDir(pin_dir.to_owned(), e))?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(obj)?;
        for name in [PROG_FILTER, PROG_PROBE] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::BadTable("program missing from object"))?
                .try_into()
                .map_err(|source| DataplaneError::Program { name, source })?;
            prog.load()
                .map_err(|source| DataplaneError::Program { name, source })?;
        }
        // A member's tunnel packet, once stripped, is judged again by a
        // tail call into the filter itself.
        let filter = {
            let prog: &Xdp = ebpf
                .program(PROG_FILTER)
                .ok_or(DataplaneError::BadTable("program missing from object"))?
                .try_into()
                .map_err(|source| DataplaneError::Program {
                    name: PROG_FILTER,
                    source,
                })?;
            prog.fd()
                .map_err(|source| DataplaneError::Program {
                    name: PROG_FILTER,
                    source,
                })?
                .try_clone()
                .map_err(DataplaneError::Descriptor)?
        };
        {
            let map = ebpf
                .map_mut(map_name::JUMP)
                .ok_or(DataplaneError::MissingMap(map_name::JUMP))?;
            let mut jump: ProgramArray<&mut MapData> =
                ProgramArray::try_from(map).map_err(map_err(map_name::JUMP))?;
            jump.set(0, &filter, 0).map_err(map_err(map_name::JUMP))?;
        }
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("XDP program logs unavailable: {e}");
                None
            }
        };
        let mut dp = Dataplane {
            logger,
            ebpf,
            pin_dir: pin_dir.to_owned(),
            active: 0,
            last_flip: None,
            attachment: None,
        };
        let version = dp.ctrl_get(ctrl::VERSION)?;
        if version == 0 {
            dp.ctrl_set(ctrl::VERSION, LAYOUT_VERSION)?;
        } else if version != LAYOUT_VERSION {
            return Err(DataplaneError::LayoutMismatch {
                dir: dp.pin_dir.clone(),
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        dp.active = (dp.ctrl_get(ctrl::ACTIVE)? & 1) as u32;
        Ok(dp)
    }

    /// Moves the XDP program's pending log records into the agent's log.
    pub fn flush_logs(&mut self) {
        if let Some(l) = &mut self.logger {
            l.flush();
        }
    }

    /// Where the maps are pinned.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// One of the object's XDP programs ([`PROG_FILTER`] or [`PROG_PROBE`]).
    pub fn program(&mut self, name: &'static str) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut(name)
            .ok_or(DataplaneError::BadTable("program missing from object"))?
            .try_into()
            .map_err(|source| DataplaneError::Program { name, source })
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, DataplaneError> {
        self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))
    }

    fn ctrl(&mut self) -> Result<Array<&mut MapData, u64>, DataplaneError> {
        let map = self.map_mut(map_name::CTRL)?;
        Array::try_from(map).map_err(map_err(map_name::CTRL))
    }

    fn ctrl_get(&mut self, index: u32) -> Result<u64, DataplaneError> {
        self.ctrl()?.get(&index, 0).map_err(map_err(map_name::CTRL))
    }

    fn ctrl_set(&mut self, index: u32, value: u64) -> Result<(), DataplaneError> {
        self.ctrl()?
            .set(index, value, 0)
            .map_err(map_err(map_name::CTRL))
    }

    /// Installs `table` atomically: writes the idle copy, then flips the
    /// active index (one aligned 8-byte word).
    pub fn install(&mut self, table: &Table) -> Result<(), DataplaneError> {
        if table.buckets == 0 || table.buckets > MAX_BUCKETS {
            return Err(DataplaneError::BadTable("buckets out of range"));
        }
        if table.nvips as usize > MAX_VIPS {
            return Err(DataplaneError::BadTable("too many VIPs"));
        }
        if let Some(t) = self.last_flip {
            let since = t.elapsed();
            if since < TABLE_GRACE {
                std::thread::sleep(TABLE_GRACE - since);
            }
        }
        let idle = 1 - self.active;
        {
            let map = self.map_mut(map_name::TABLES)?;
            let mut tables: Array<&mut MapData, Table> =
                Array::try_from(map).map_err(map_err(map_name::TABLES))?;
            tables
                .set(idle, table, 0)
                .map_err(map_err(map_name::TABLES))?;
        }
        self.ctrl_set(ctrl::ACTIVE, idle as u64)?;
        self.active = idle;
        self.last_flip = Some(Instant::now());
        Ok(())
    }

    /// The live table.
    pub fn current_table(&mut self) -> Result<Box<Table>, DataplaneError> {
        let active = self.active;
        let map = self.map(map_name::TABLES)?;
        let tables: Array<&MapData, Table> =
            Array::try_from(map).map_err(map_err(map_name::TABLES))?;
        Ok(Box::new(
            tables.get(&active, 0).map_err(map_err(map_name::TABLES))?,
        ))
    }

    /// Sets the lease deadline ([`super::boottime_ns`] clock); 0 fences.
    /// The XDP program reads the same clock precisely, so no lag needs to
    /// be allowed for.
    pub fn set_lease(&mut self, deadline_ns: u64) -> Result<(), DataplaneError> {
        self.ctrl_set(ctrl::LEASE, deadline_ns)
    }

    /// Sets the held-delivery deadline (same clock as the lease; see
    /// [`xnlb_common::ctrl::HOLD`]). Only a lease extension moves it.
    pub fn set_hold(&mut self, deadline_ns: u64) -> Result<(), DataplaneError> {
        self.ctrl_set(ctrl::HOLD, deadline_ns)
    }

    /// The held-delivery deadline the program enforces (CLOCK_BOOTTIME ns).
    pub fn hold_deadline(&mut self) -> Result<u64, DataplaneError> {
        self.ctrl_get(ctrl::HOLD)
    }

    /// The lease deadline the program enforces (CLOCK_BOOTTIME ns; 0: none).
    pub fn lease_deadline(&mut self) -> Result<u64, DataplaneError> {
        self.ctrl_get(ctrl::LEASE)
    }

    /// Tells the program the interface MAC that replaces the cluster MAC.
    pub fn set_if_mac(&mut self, mac: [u8; 6]) -> Result<(), DataplaneError> {
        let mut w = [0u8; 8];
        w[..6].copy_from_slice(&mac);
        self.ctrl_set(ctrl::IFMAC, u64::from_le_bytes(w))
    }

    /// Routed mode: how member `id` is reached (the default, kind
    /// `UNKNOWN`: forwarding to it drops).
    pub fn set_member_route(&mut self, id: u8, route: MemberRoute) -> Result<(), DataplaneError> {
        let map = self.map_mut(map_name::MEMBERS)?;
        let mut members: Array<&mut MapData, MemberRoute> =
            Array::try_from(map).map_err(map_err(map_name::MEMBERS))?;
        members
            .set(id as u32, route, 0)
            .map_err(map_err(map_name::MEMBERS))
    }

    /// Routed mode: member `id` is on the data segment at `mac` (`None`:
    /// unknown).
    pub fn set_member_mac(&mut self, id: u8, mac: Option<[u8; 6]>) -> Result<(), DataplaneError> {
        self.set_member_route(
            id,
            mac.map_or_else(MemberRoute::default, |mac| MemberRoute {
                mac,
                kind: route_kind::L2,
                ..MemberRoute::default()
            }),
        )
    }

    /// Routed mode: the IPv4 address members send their tunnel packets to
    /// (`None`: take none apart).
    pub fn set_tunnel_local(
        &mut self,
        addr: Option<std::net::Ipv4Addr>,
    ) -> Result<(), DataplaneError> {
        let word = addr.map_or(0, |a| u32::from_le_bytes(a.octets()));
        self.ctrl_set(ctrl::TUNNEL_LOCAL, word as u64)
    }

    /// Counters summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let map = self.map(map_name::STATS)?;
        let stats: PerCpuArray<&MapData, Counters> =
            PerCpuArray::try_from(map).map_err(map_err(map_name::STATS))?;
        let per_cpu = stats.get(&0, 0).map_err(map_err(map_name::STATS))?;
        let mut sum = Counters::default();
        for c in per_cpu.iter() {
            for (s, v) in sum.c.iter_mut().zip(c.c.iter()) {
                *s += v;
            }
        }
        Ok(sum)
    }

    /// Each CPU's last precise clock reading of the lease check
    /// ([`xnlb_common::lease_clock`]): how often the program read the clock
    /// (tests, diagnostics).
    pub fn clock_readings(&self) -> Result<Vec<Reading>, DataplaneError> {
        let map = self.map(map_name::CLOCK)?;
        let readings: PerCpuArray<&MapData, Reading> =
            PerCpuArray::try_from(map).map_err(map_err(map_name::CLOCK))?;
        let per_cpu = readings.get(&0, 0).map_err(map_err(map_name::CLOCK))?;
        Ok(per_cpu.iter().copied().collect())
    }

    /// Removes the pinned maps (after [`Dataplane::detach`], on a graceful
    /// leave): the next start begins from a clean slate.
    pub fn remove_pins(self) {
        let dir = self.pin_dir.clone();
        drop(self);
        let _ = std::fs::remove_dir_all(dir);
    }
}
