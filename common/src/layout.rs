//! BPF map names, sizes and the `#[repr(C)]` values stored in them.
//!
//! The XDP program reads, and the agent writes, exactly these structures. A
//! change here is a change to the pinned maps' ABI: bump [`LAYOUT_VERSION`] so
//! that a restarted agent refuses to adopt maps of another layout.

/// Version of this layout; stored in the pinned control map so a new agent
/// can tell whether it may adopt the maps a previous agent left pinned.
pub const LAYOUT_VERSION: u64 = 4;

/// Where the agent pins the program, its link and its maps (bpffs).
pub const PIN_DIR: &str = "/sys/fs/bpf/xnlb";

/// Map names as they appear in the object file and under [`PIN_DIR`].
pub mod map_name {
    /// Double-buffered [`super::Table`]s; [`super::ctrl::ACTIVE`] selects one.
    pub const TABLES: &str = "XNLB_TABLES";
    /// Small `u64` control words indexed by [`super::ctrl`].
    pub const CTRL: &str = "XNLB_CTRL";
    /// Per-CPU [`super::Counters`].
    pub const STATS: &str = "XNLB_STATS";
    /// LRU of first fragments this node accepted ([`super::FragKey`]).
    pub const FRAGS: &str = "XNLB_FRAGS";
    /// How to reach each member, by member id (routed mode's forwarding
    /// targets, [`super::MemberRoute`]).
    pub const MEMBERS: &str = "XNLB_MEMBERS";
    /// The program itself, at index 0: a decapsulated packet is judged
    /// again from the start by a tail call.
    pub const JUMP: &str = "XNLB_JUMP";
    /// Per-CPU [`crate::lease_clock::Reading`]: the lease check's last
    /// precise clock reading (not pinned: each program instance has its
    /// own).
    pub const CLOCK: &str = "XNLB_CLOCK";
}

/// Name of the filtering XDP program in the object.
pub const PROG_FILTER: &str = "xnlb";
/// Name of the probe program: same parser and hash, but it writes its
/// classification into the frame instead of filtering (tests only).
pub const PROG_PROBE: &str = "xnlb_probe";

/// Name of the bare `XDP_DROP` program the data-plane benchmark compares
/// against.
pub const PROG_BENCH_BASELINE: &str = "xnlb_bench_drop";

/// Name of the minimal hash-and-lookup filter the data-plane benchmark
/// also compares against.
pub const PROG_BENCH_MINIMAL: &str = "xnlb_bench_minimal";

/// Name of the traffic generator `cargo xtask bench peers` runs with
/// `BPF_PROG_TEST_RUN` in live-frames mode (a bare `XDP_PASS` program while
/// its sender map holds no interface).
pub const PROG_BENCH_SENDER: &str = "xnlb_bench_sender";

/// Map holding the interface index [`PROG_BENCH_SENDER`] redirects to
/// (benchmarks only; pinned by name like the data plane's maps).
pub const MAP_BENCH_TX: &str = "XNLB_BENCH_TX";

/// Largest supported `buckets` setting.
pub const MAX_BUCKETS: u32 = 16384;
/// Slots after the buckets, one per `single`-mode rule or VIP default.
pub const MAX_SINGLE_SLOTS: u32 = 256;
/// Size of [`Table::state`]: buckets first, then single slots.
pub const MAX_SLOTS: usize = (MAX_BUCKETS + MAX_SINGLE_SLOTS) as usize;
/// VIPs one cluster can serve.
pub const MAX_VIPS: usize = 16;
/// Port rules per VIP (first match wins; see [`PortMap`]).
pub const MAX_RULES: usize = 16;
/// Ports per block of a VIP's compiled rules ([`PortMap`]).
pub const PORT_BLOCK: usize = 256;
/// Blocks of per-port entries each VIP can hold ([`PortMap::blocks`]): enough
/// for rule boundaries in 8 distinct 256-port ranges; a VIP needing more is
/// left uncompiled and its rules are scanned.
pub const PORT_BLOCKS: usize = 8;
/// 802.1ad + 802.1Q: deeper stacks are not parsed.
pub const MAX_VLAN_DEPTH: usize = 2;
/// IPv6 extension headers walked before a packet is declared malformed.
pub const MAX_IPV6_EXT: usize = 6;
/// Tracked fragmented datagrams per node.
pub const FRAG_TABLE_ENTRIES: u32 = 16_384;

/// What this node's data plane does with a bucket or single slot.
///
/// Plain `u8` constants rather than an enum: the bytes come from a map and
/// the XDP program must treat any value safely (unknown values drop).
pub mod slot_state {
    /// Another node's (or nobody's): drop.
    pub const NOT_OWNED: u8 = 0;
    /// Ours: accept everything; remember new TCP connections.
    pub const OWNED: u8 = 1;
    /// Handing off: accept only TCP connections we track; drop new flows.
    pub const RELEASING: u8 = 2;
    /// Taking over: accept new flows and flows we track; drop established
    /// TCP flows we do not track (the releasing node still serves them).
    pub const ACQUIRING: u8 = 3;
}

/// Indices into the `XNLB_CTRL` array.
pub mod ctrl {
    /// Which of the two tables is live (0 or 1).
    pub const ACTIVE: u32 = 0;
    /// Lease deadline in CLOCK_BOOTTIME nanoseconds, read precisely
    /// (`bpf_ktime_get_boot_ns`); past it no VIP packet is accepted as new
    /// (fenced), and only held delivery ([`HOLD`]) goes on.
    pub const LEASE: u32 = 1;
    /// MAC of the attached interface in the low 6 bytes (wire order).
    pub const IFMAC: u32 = 2;
    /// [`super::LAYOUT_VERSION`] of whoever created the maps.
    pub const VERSION: u32 = 3;
    /// Held-delivery deadline (CLOCK_BOOTTIME ns): past the lease but
    /// before this, the node still passes non-SYN TCP of connections its
    /// own kernel holds, in slots it does not mark `NOT_OWNED` (S6); every
    /// other node drops them. Set with each lease extension, never by a
    /// revocation, and kept across agent restarts.
    pub const HOLD: u32 = 4;
    /// Routed mode: this node's IPv4 address its members' tunnel packets
    /// are sent to (as [`super::addr_words`] loads it; 0: none). Only
    /// packets to it with xnlb's marks are decapsulated.
    pub const TUNNEL_LOCAL: u32 = 5;
    /// Number of control words.
    pub const COUNT: u32 = 6;
}

/// Rule and VIP modes (DESIGN 2).
pub mod mode {
    /// Load-balanced over buckets.
    pub const MULTIPLE: u8 = 0;
    /// Whole rule to one node (a single slot).
    pub const SINGLE: u8 = 1;
    /// Dropped everywhere.
    pub const DISABLED: u8 = 2;
}

/// What part of the flow the hash covers.
pub mod affinity {
    /// src IP, src port, dst port, protocol.
    pub const NONE: u8 = 0;
    /// src IP only.
    pub const SINGLE: u8 = 1;
    /// src /24 (IPv4) or /48 (IPv6).
    pub const NETWORK: u8 = 2;
}

/// Protocol bits of [`Rule::proto_mask`].
pub mod proto_mask {
    /// Matches TCP.
    pub const TCP: u8 = 1;
    /// Matches UDP.
    pub const UDP: u8 = 2;
}

/// Entries of a [`PortMap`]: below [`DEFAULT`], the index of the rule the
/// port falls under.
pub mod port_map {
    /// No rule matches: the VIP's default applies.
    pub const DEFAULT: u8 = super::MAX_RULES as u8;
    /// In [`super::PortMap::ports`]: the 256 ports differ; their entries
    /// are in block `entry & BLOCK_MASK` of [`super::PortMap::blocks`].
    pub const BLOCK: u8 = 0x80;
    /// The block number bits of a [`BLOCK`] entry.
    pub const BLOCK_MASK: u8 = (super::PORT_BLOCKS - 1) as u8;
    /// Index of IP protocol `proto` in [`super::PortMap::ports`] (TCP 0,
    /// UDP 1); `None` for a protocol no rule can match.
    #[inline(always)]
    pub fn proto_index(proto: u8) -> Option<usize> {
        if proto == super::ipproto::TCP {
            Some(0)
        } else if proto == super::ipproto::UDP {
            Some(1)
        } else {
            None
        }
    }
}

/// How the VIP's cluster MAC is formed (DESIGN 1).
pub mod mac_mode {
    /// [`MULTICAST_PREFIX`] + last 4 bytes of the VIP: a multicast MAC.
    pub const MULTICAST: u8 = 0;
    /// [`UNICAST_PREFIX`] + last 4 bytes: a locally administered unicast MAC.
    pub const UNICAST: u8 = 1;
    /// A routed VIP: no cluster MAC. Its packets come from a router to the
    /// node's own MAC, and the program answers no ARP or neighbour
    /// solicitation for it (the host's stack, with `arp_ignore`, does not
    /// either: the VIP is on `lo`).
    pub const ROUTED: u8 = 2;
    /// First two bytes of a multicast cluster MAC (`03:bf`: group bit set).
    pub const MULTICAST_PREFIX: [u8; 2] = [0x03, 0xbf];
    /// First two bytes of a unicast cluster MAC (`02:bf`: locally
    /// administered).
    pub const UNICAST_PREFIX: [u8; 2] = [0x02, 0xbf];

    /// Whether a destination MAC starting with `b0:b1` is a cluster MAC of
    /// either mode (frames to it are the cluster's even when unparsable).
    #[inline(always)]
    pub fn is_cluster_prefix(b0: u8, b1: u8) -> bool {
        (b0 == MULTICAST_PREFIX[0] && b1 == MULTICAST_PREFIX[1])
            || (b0 == UNICAST_PREFIX[0] && b1 == UNICAST_PREFIX[1])
    }
}

/// Address family tags used in [`Vip::family`] and in the hash.
pub mod family {
    /// IPv4.
    pub const V4: u8 = 4;
    /// IPv6.
    pub const V6: u8 = 6;
}

/// IP protocol numbers the data plane looks at.
pub mod ipproto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv4 in IPv4 (routed mode's tunnel).
    pub const IPIP: u8 = 4;
    /// IPv6 in IPv4 (routed mode's tunnel for IPv6 VIPs).
    pub const IPV6_IN_IPV4: u8 = 41;
}

/// One port rule as the XDP program scans it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// [`proto_mask`] bits.
    pub proto_mask: u8,
    /// [`mode`].
    pub mode: u8,
    /// [`affinity`].
    pub affinity: u8,
    /// Explicit padding so the layout has no hidden bytes.
    pub _pad: u8,
    /// First port, host order, inclusive.
    pub port_lo: u16,
    /// Last port, host order, inclusive.
    pub port_hi: u16,
    /// For [`mode::SINGLE`]: the single slot (0..[`MAX_SINGLE_SLOTS`]).
    pub slot: u16,
    /// Explicit padding.
    pub _pad2: u16,
}

/// One VIP with its rules.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vip {
    /// The address as wire bytes loaded as little-endian words (how the XDP
    /// program loads them); IPv4 in word 0, the rest zero. See [`addr_words`].
    pub addr: [u32; 4],
    /// [`family`].
    pub family: u8,
    /// [`mac_mode`].
    pub mac_mode: u8,
    /// [`mode`] for traffic that matches no rule.
    pub default_mode: u8,
    /// Rules in use at the front of `rules`.
    pub nrules: u8,
    /// Single slot of the default mode when it is [`mode::SINGLE`].
    pub default_slot: u16,
    /// This VIP's own position in [`Table::vips`]. The XDP program reads it
    /// back after a match so the verifier sees one unknown index rather than
    /// one constant per loop iteration (which multiplies the states it must
    /// explore by [`MAX_VIPS`]).
    pub index: u16,
    /// 1 when [`Table::port_maps`] holds this VIP's rules compiled
    /// ([`crate::classify::compile_rules`]); otherwise (what
    /// [`Vip::default`] holds) the rules are scanned.
    pub compiled: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// Explicit padding.
    pub _pad2: u16,
    /// Port rules, first match wins.
    pub rules: [Rule; MAX_RULES],
}

/// A VIP's rules compiled ([`crate::classify::compile_rules`]), so the
/// program finds a packet's rule with one load (two in a 256-port range
/// the rules split) instead of a scan of up to [`MAX_RULES`] rules. Kept
/// out of [`Vip`] so the VIPs the program compares addresses with stay
/// small and close together.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMap {
    /// Per protocol ([`port_map::proto_index`]) and per 256 ports
    /// (`port >> 8`): the [`port_map`] entry every port of the range falls
    /// under, or a [`port_map::BLOCK`] entry naming the block with one
    /// entry per port.
    pub ports: [[u8; PORT_BLOCK]; 2],
    /// Per-port entries (`port & 0xff`) of the ranges the rules split.
    pub blocks: [[u8; PORT_BLOCK]; PORT_BLOCKS],
}

impl Default for PortMap {
    fn default() -> Self {
        PortMap {
            ports: [[port_map::DEFAULT; PORT_BLOCK]; 2],
            blocks: [[port_map::DEFAULT; PORT_BLOCK]; PORT_BLOCKS],
        }
    }
}

impl Default for Vip {
    fn default() -> Self {
        Vip {
            addr: [0; 4],
            family: 0,
            mac_mode: 0,
            default_mode: mode::DISABLED,
            nrules: 0,
            default_slot: 0,
            index: 0,
            compiled: 0,
            _pad: 0,
            _pad2: 0,
            rules: [Rule::default(); MAX_RULES],
        }
    }
}

impl Vip {
    /// The cluster MAC every node answers ARP/NS for this VIP with.
    pub fn cluster_mac(&self) -> [u8; 6] {
        cluster_mac(self.mac_mode, &addr_bytes(&self.addr), self.family)
    }
}

/// [`mac_mode::MULTICAST_PREFIX`] or [`mac_mode::UNICAST_PREFIX`] followed
/// by the last four bytes of the address.
#[inline(always)]
pub fn cluster_mac(mac_mode: u8, addr: &[u8; 16], family: u8) -> [u8; 6] {
    let prefix = if mac_mode == self::mac_mode::UNICAST {
        self::mac_mode::UNICAST_PREFIX
    } else {
        self::mac_mode::MULTICAST_PREFIX
    };
    let tail = if family == self::family::V4 { 0 } else { 12 };
    [
        prefix[0],
        prefix[1],
        addr[tail],
        addr[tail + 1],
        addr[tail + 2],
        addr[tail + 3],
    ]
}

/// Address bytes (IPv4 in the first 4) as the words the data plane compares.
#[inline(always)]
pub fn addr_words(b: &[u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// Inverse of [`addr_words`].
#[inline(always)]
pub fn addr_bytes(w: &[u32; 4]) -> [u8; 16] {
    let mut b = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let x = w[i].to_le_bytes();
        b[i * 4] = x[0];
        b[i * 4 + 1] = x[1];
        b[i * 4 + 2] = x[2];
        b[i * 4 + 3] = x[3];
        i += 1;
    }
    b
}

/// Everything a packet's verdict depends on, swapped atomically as a whole.
///
/// Two copies live in `XNLB_TABLES`; the agent fills the idle one and then
/// flips [`ctrl::ACTIVE`], so a packet sees one epoch's map or the next, never
/// a mix. The agent waits a grace period before rewriting a retired copy
/// (an XDP run lasts microseconds inside an RCU read section).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Table {
    /// Epoch of the bucket map; reported, never used for verdicts.
    pub epoch: u64,
    /// Hash seed derived from the cluster name ([`crate::seed_from_name`]).
    pub seed: u64,
    /// Number of buckets in use (1..=[`MAX_BUCKETS`]).
    pub buckets: u32,
    /// VIPs in use at the front of `vips`.
    pub nvips: u32,
    /// The VIPs.
    pub vips: [Vip; MAX_VIPS],
    /// [`slot_state`] per bucket (`0..buckets`), then per single slot
    /// (`MAX_BUCKETS + slot`).
    pub state: [u8; MAX_SLOTS],
    /// Each VIP's rules compiled, by the VIP's index (see
    /// [`Vip::compiled`]).
    pub port_maps: [PortMap; MAX_VIPS],
    /// Routed mode: the member id owning each slot in this epoch
    /// ([`NO_MEMBER`]: nobody), where a packet this node does not accept
    /// is forwarded. Read only for routed VIPs; installed with `state`, so
    /// a packet's verdict and its forwarding come from the same epoch.
    pub owner: [u8; MAX_SLOTS],
    /// Routed mode: a previous owner still holding connections in each
    /// slot (a lingering handoff), where the slot's owner forwards a
    /// connection's packet its own kernel does not hold.
    pub holder: [u8; MAX_SLOTS],
    /// Routed mode: a second previous owner still holding connections (a
    /// bucket handed on again during an open handoff), where the first
    /// holder forwards what it does not hold.
    pub holder2: [u8; MAX_SLOTS],
    /// This node's member id (never a forwarding target).
    pub me: u8,
    /// Routed mode: a live member to forward to when this node is past
    /// its lease and its table names itself the owner (its buckets have
    /// moved on without it: that member forwards to their new owner).
    pub fallback: u8,
    /// Explicit padding.
    pub _pad: [u8; 6],
}

impl Table {
    /// An empty table: no VIPs, nothing owned.
    pub fn empty() -> Self {
        Table {
            epoch: 0,
            seed: 0,
            buckets: 1,
            nvips: 0,
            vips: [Vip::default(); MAX_VIPS],
            state: [slot_state::NOT_OWNED; MAX_SLOTS],
            port_maps: [PortMap::default(); MAX_VIPS],
            owner: [NO_MEMBER; MAX_SLOTS],
            holder: [NO_MEMBER; MAX_SLOTS],
            holder2: [NO_MEMBER; MAX_SLOTS],
            me: NO_MEMBER,
            fallback: NO_MEMBER,
            _pad: [0; 6],
        }
    }
}

/// "Nobody" in [`Table::owner`], [`Table::holder`] and [`Table::fallback`]
/// (member ids are 1..=255).
pub const NO_MEMBER: u8 = 0;

/// Entries of `XNLB_MEMBERS`: one per member id.
pub const MEMBER_ENTRIES: u32 = 256;

/// How a member is reached from this node (`XNLB_MEMBERS`, by member id).
pub mod route_kind {
    /// Not known (yet): forwarding to it drops.
    pub const UNKNOWN: u8 = 0;
    /// On the data segment: rewrite the frame to its MAC.
    pub const L2: u8 = 1;
    /// On another subnet: encapsulate in IPv4 (IPIP, or IPv6-in-IPv4) to
    /// its address, through the next hop whose MAC is given.
    pub const IPIP: u8 = 2;
}

/// Values of `XNLB_MEMBERS`: where routed mode sends a packet for a member.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberRoute {
    /// The member's MAC ([`route_kind::L2`]) or the next hop's towards its
    /// tunnel address ([`route_kind::IPIP`]).
    pub mac: [u8; 6],
    /// [`route_kind`].
    pub kind: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// [`route_kind::IPIP`]: the member's IPv4 address, as the data plane
    /// loads it (see [`addr_words`]).
    pub tunnel_dst: u32,
    /// [`route_kind::IPIP`]: this node's source address towards it.
    pub tunnel_src: u32,
}

/// Marks of an encapsulated packet: its outer IPv4 identification is
/// [`tunnel::ID_BASE`] plus the hop (how many times it was forwarded), so
/// the receiver decapsulates only xnlb's own tunnel packets and keeps the
/// hop.
pub mod tunnel {
    /// Outer IPv4 header length (no options).
    pub const OUTER_LEN: usize = 20;
    /// High byte of the outer identification (`x`).
    pub const ID_BASE: u16 = 0x7800;
    /// TTL of the outer header.
    pub const TTL: u8 = 64;
}

/// Index of single slot `slot` in [`Table::state`].
#[inline(always)]
pub const fn single_slot_index(slot: u16) -> usize {
    MAX_BUCKETS as usize + slot as usize
}

/// Per-CPU packet counters, indexed by [`counter`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// One value per [`counter`] index.
    pub c: [u64; counter::COUNT],
}

/// Indices of [`Counters::c`] and their metric names.
pub mod counter {
    /// Packets addressed to a VIP (any verdict).
    pub const VIP_PACKETS: usize = 0;
    /// VIP packets accepted (passed to the stack).
    pub const PASSED: usize = 1;
    /// VIP packets dropped because another node owns their bucket.
    pub const DROPPED_NOT_OWNER: usize = 2;
    /// VIP packets dropped because the lease expired.
    pub const DROPPED_FENCED: usize = 3;
    /// Packets dropped as malformed.
    pub const DROPPED_MALFORMED: usize = 4;
    /// VIP packets dropped by a `disabled` rule or default.
    pub const DROPPED_DISABLED: usize = 5;
    /// Packets not for a VIP, passed untouched.
    pub const NON_VIP: usize = 6;
    /// ARP requests for a VIP answered with the cluster MAC.
    pub const ARP_REPLIES: usize = 7;
    /// Neighbour solicitations for a VIP answered with the cluster MAC.
    pub const ND_REPLIES: usize = 8;
    /// TCP accepted in a bucket being handed over because this node's
    /// kernel holds the connection's socket.
    pub const PASSED_HELD: usize = 9;
    /// Non-first fragments accepted because we took the first.
    pub const PASSED_FRAGMENT: usize = 10;
    /// ICMP errors delivered to the owner of the quoted flow.
    pub const PASSED_ICMP_ERROR: usize = 11;
    /// Routed mode: VIP packets sent on to the node that accepts them
    /// (their slot's owner, or the node holding their connection).
    pub const FORWARDED: usize = 12;
    /// Routed mode: VIP packets this node neither accepts nor may forward
    /// (forwarded twice already, no owner, the target's MAC unknown, or
    /// the target is where it came from).
    pub const DROPPED_UNROUTABLE: usize = 13;
    /// Number of counters.
    pub const COUNT: usize = 14;
    /// Metric names, in index order.
    pub const NAMES: [&str; COUNT] = [
        "vip_packets",
        "passed",
        "dropped_not_owner",
        "dropped_fenced",
        "dropped_malformed",
        "dropped_disabled",
        "non_vip",
        "arp_replies",
        "nd_replies",
        "passed_held",
        "passed_fragment",
        "passed_icmp_error",
        "forwarded",
        "dropped_unroutable",
    ];
}

/// A fragmented datagram (key of `XNLB_FRAGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source address, as [`addr_words`].
    pub src: [u32; 4],
    /// Destination (VIP) address, as [`addr_words`].
    pub dst: [u32; 4],
    /// IP identification (IPv4: 16 bits; IPv6: 32 bits), wire order.
    pub id: u32,
    /// IP protocol.
    pub proto: u8,
    /// Explicit padding (always zero: part of the hashed key). Scalars,
    /// not a `[u8; 3]`: LLVM turns a 3-byte array initialisation into an
    /// out-of-line `memset` call, a byte loop in BPF, on every packet.
    pub _pad: u8,
    /// Explicit padding (always zero).
    pub _pad2: u16,
}

/// Values of `XNLB_FRAGS`: the slot the first fragment hashed to and when
/// it was accepted, packed in one `u64` (slot in the top 16 bits, coarse
/// time in 1.024 µs units below). A later fragment follows only a young
/// entry whose slot this node still holds, so a reused IP id cannot be
/// taken on a stale entry after the slot moved.
pub mod frag {
    /// How long later fragments follow a first one: the kernel's default
    /// reassembly timeout (`net.ipv4.ipfrag_time`, 30 s).
    pub const MAX_AGE_NS: u64 = 30_000_000_000;
    const TIME_SHIFT: u32 = 10;
    const SLOT_SHIFT: u32 = 48;
    const TIME_MASK: u64 = (1 << SLOT_SHIFT) - 1;

    /// The entry for a first fragment of `slot` accepted at `now_ns`.
    #[inline(always)]
    pub fn pack(slot: usize, now_ns: u64) -> u64 {
        ((slot as u64) << SLOT_SHIFT) | ((now_ns >> TIME_SHIFT) & TIME_MASK)
    }

    /// `(slot, time)` of an entry.
    #[inline(always)]
    pub fn unpack(v: u64) -> (usize, u64) {
        ((v >> SLOT_SHIFT) as usize, v & TIME_MASK)
    }

    /// Whether an entry stamped `at` is young enough at `now_ns`.
    #[inline(always)]
    pub fn fresh(at: u64, now_ns: u64) -> bool {
        ((now_ns >> TIME_SHIFT).wrapping_sub(at) & TIME_MASK) < MAX_AGE_NS >> TIME_SHIFT
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, made only of integers
    // and integer arrays, with explicit padding fields: every bit pattern is
    // valid and none has uninitialised bytes.
    unsafe impl aya::Pod for super::Table {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::MemberRoute {}
    unsafe impl aya::Pod for crate::lease_clock::Reading {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn fragment_entries_keep_their_slot_and_expire_after_the_reassembly_timeout() {
        let t0 = 5_000_000_000_000u64;
        let v = frag::pack(16_640, t0);
        let (slot, at) = frag::unpack(v);
        assert_eq!(slot, 16_640);
        assert!(frag::fresh(at, t0));
        assert!(frag::fresh(at, t0 + frag::MAX_AGE_NS - 2_000));
        assert!(!frag::fresh(at, t0 + frag::MAX_AGE_NS + 2_000));
        // Across the 48-bit wrap of the packed time.
        let late = (1u64 << 58) - 1_000_000;
        let (_, at) = frag::unpack(frag::pack(3, late));
        assert!(frag::fresh(at, late + 1_000_000_000));
    }

    #[test]
    fn layout_sizes_are_stable() {
        assert_eq!(size_of::<Rule>(), 12);
        assert_eq!(size_of::<Vip>(), 28 + 12 * MAX_RULES);
        assert_eq!(size_of::<PortMap>(), PORT_BLOCK * (2 + PORT_BLOCKS));
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
        assert_eq!(addr_bytes(&addr_words(&b)), b);
        assert_eq!(size_of::<FragKey>(), 40);
        assert_eq!(
            size_of::<Table>(),
            24 + (size_of::<Vip>() + size_of::<PortMap>()) * MAX_VIPS + 4 * MAX_SLOTS + 8
        );
        assert_eq!(size_of::<MemberRoute>(), 16);
    }

    #[test]
    fn cluster_mac_uses_last_four_bytes() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[198, 18, 0, 100]);
        assert_eq!(
            cluster_mac(mac_mode::MULTICAST, &v4, family::V4),
            [0x03, 0xbf, 198, 18, 0, 100]
        );
        let mut v6 = [0u8; 16];
        v6[0] = 0xfd;
        v6[12..].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            cluster_mac(mac_mode::UNICAST, &v6, family::V6),
            [0x02, 0xbf, 1, 2, 3, 4]
        );
        assert!(mac_mode::is_cluster_prefix(0x03, 0xbf));
        assert!(mac_mode::is_cluster_prefix(0x02, 0xbf));
        assert!(!mac_mode::is_cluster_prefix(0x01, 0xbf));
        assert!(!mac_mode::is_cluster_prefix(0x03, 0xbe));
    }
}
