//! Map and program names, map keys and counters shared by the kernel programs and the loader,
//! and the reasons a program skips a packet (`Skip`, counted in `SHIFTER_SKIP`). The flow
//! table's key and value live in `flow`.
//!
//! Addresses are 16 bytes in network order (IPv4 mapped as `::ffff:a.b.c.d`); ports and
//! protocol numbers are in host order.

/// Services the data plane can hold at once.
pub const MAX_SERVICES: u32 = 256;
/// Default flow-table capacity (entries); configurable at load time.
pub const DEFAULT_FLOW_CAPACITY: u32 = 262_144;

/// Map names (as pinned under the bpffs directory).
pub const MAP_SERVICES: &str = "SHIFTER_SVC";
pub const MAP_SERVICE_CONFIG: &str = "SHIFTER_CFG";
pub const MAP_FLOWS: &str = "SHIFTER_FLOWS";
pub const MAP_COUNTERS: &str = "SHIFTER_CNT";
pub const MAP_PORT_BITMAP: &str = "SHIFTER_PORTS";
pub const MAP_USER_REMOVED: &str = "SHIFTER_UREM";
pub const MAP_SOCKETS: &str = "SHIFTER_SOCKS";
pub const MAP_DRY_RUN: &str = "SHIFTER_DRY";
pub const MAP_SKIPS: &str = "SHIFTER_SKIP";
/// Socket dispatch: the backends' listening sockets (SOCKHASH, key `listener_key`).
pub const MAP_LISTENERS: &str = "SHIFTER_LSN";
/// Socket dispatch: per-CPU `SocketCounters` per counter index (`counter_index`).
pub const MAP_SOCKET_COUNTERS: &str = "SHIFTER_SKCNT";
/// Socket dispatch: a `u32` tag stored on sockets (SK_STORAGE with `BPF_F_CLONE`). A
/// registered listener carries `SOCKET_TAG_LISTENER | its port`; the kernel clones it onto
/// every connection the listener accepts, and sock_ops turns the connection's copy into
/// `SOCKET_TAG_CONNECTION | slot << 1 | backend` when it is established, read again when it
/// closes. No map entry per connection: the tag lives and dies with the socket.
pub const MAP_SOCKET_TAGS: &str = "SHIFTER_SKTAG";
/// See [`MAP_SOCKET_TAGS`]: the tag of a registered listener, its port in the low 16 bits.
pub const SOCKET_TAG_LISTENER: u32 = 1 << 31;
/// See [`MAP_SOCKET_TAGS`]: the tag of a counted connection, `slot << 1 | backend` below.
pub const SOCKET_TAG_CONNECTION: u32 = 1 << 30;
/// Socket dispatch: the served network namespace's cookie, so listeners of other namespaces
/// under the same cgroup are not remembered (one entry, not pinned).
pub const MAP_NETNS: &str = "SHIFTER_NETNS";
/// `SHIFTER_NETNS` index of the served namespace's cookie.
pub const NETNS_COOKIE: u32 = 0;
/// `SHIFTER_NETNS` index of the decisions switch: 1 on kernels that do not clone socket
/// storage onto accepted connections (7.3 here), where sk_lookup leaves its decision per
/// connection in `SHIFTER_SKDEC` for sock_ops instead.
pub const NETNS_DECISIONS: u32 = 1;
/// Socket dispatch where listener tags are not cloned (see `NETNS_DECISIONS`): the decision
/// per connection tuple (`FlowKey`, service port as its port) -> `slot << 1 | backend`.
pub const MAP_SOCKET_DECISIONS: &str = "SHIFTER_SKDEC";
/// With decisions: socket cookie -> `slot << 1 | backend` of each established connection.
pub const MAP_SOCKET_CONNECTIONS: &str = "SHIFTER_SKCONN";

/// Listening sockets remembered per backend port: the `SO_REUSEPORT` members of a group (or
/// an IPv4 and an IPv6 listener) each take a place, so one member exiting empties no slot.
pub const LISTENER_MEMBERS: u32 = 8;
/// Places in `SHIFTER_LSN`: every port times `LISTENER_MEMBERS` would be 512 Ki entries of
/// nothing; backend ports of socket-dispatched services are what fills it.
pub const LISTENER_CAPACITY: u32 = MAX_SERVICES * 2 * LISTENER_MEMBERS;

/// Key of `SHIFTER_LSN`: a backend port (host order) and the member's place.
#[inline(always)]
pub const fn listener_key(port: u16, member: u32) -> u32 {
    ((port as u32) << 4) | (member & 0xf)
}

/// The backend port a `SHIFTER_LSN` key names.
#[inline(always)]
pub const fn listener_port(key: u32) -> u16 {
    (key >> 4) as u16
}

/// A `SHIFTER_DRY` word with this bit set: a dry run is active for the slot and the low 16
/// bits are its would-be weight. 0 (what a new map holds) means no dry run.
pub const DRY_ACTIVE: u32 = 1 << 31;

/// The would-be weight of a `SHIFTER_DRY` word, if a dry run is active.
#[inline(always)]
pub const fn dry_weight(word: u32) -> Option<u16> {
    if word & DRY_ACTIVE == 0 {
        None
    } else {
        Some(word as u16)
    }
}

/// Program names in the object file.
pub const PROG_TC_INGRESS: &str = "shifter_tc_ingress";
pub const PROG_TC_EGRESS: &str = "shifter_tc_egress";
pub const PROG_XDP_INGRESS: &str = "shifter_xdp_ingress";
pub const PROG_SOCK_OPS: &str = "shifter_sock_ops";
/// Global (.rodata) of the object: 1 to read the coarse clock (`bpf_ktime_get_coarse_ns`,
/// Linux 5.11+), 0 for `bpf_ktime_get_ns`; set by the loader from the running kernel.
pub const GLOBAL_COARSE_CLOCK: &str = "SHIFTER_COARSE_CLOCK";
/// Socket dispatch: the per-netns sk_lookup program.
pub const PROG_SK_LOOKUP: &str = "shifter_sk_lookup";
/// Socket dispatch: sock_ops that remembers each backend listener at `listen()`.
pub const PROG_SOCK_LISTEN: &str = "shifter_sock_listen";
/// Socket dispatch: remembers a listener that predates the programs; run by userspace with
/// `BPF_PROG_TEST_RUN` on a SYN addressed to the listener.
pub const PROG_REGISTER_LISTENER: &str = "shifter_register_listener";
pub const PROG_TAG_LISTENER: &str = "shifter_tag_listener";

/// Key of the `SHIFTER_SVC` hash map: which service (slot) a packet to a local port is for.
/// An all-zero `addr` is the wildcard that matches every local address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Per-CPU counters per (service slot, backend): index `slot * 2 + backend`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendCounters {
    /// Flows decided for this backend (SYN or first datagram).
    pub new_flows: u64,
    /// Ingress packets and bytes (L3 length) steered to this backend.
    pub packets: u64,
    pub bytes: u64,
    /// Egress packets and bytes (L3 length) rewritten back to the service port.
    pub egress_packets: u64,
    pub egress_bytes: u64,
    /// Flow entries restored by socket lookup after a miss on a non-SYN segment
    /// (the entry was evicted or cleared, or the connection predates the shifter).
    pub recoveries: u64,
    /// Flow entries the programs removed themselves (RST, or a SYN reusing the client port).
    /// LRU evictions are silent in the kernel; userspace derives them as
    /// `new_flows + recoveries - closed - removed by userspace - live entries`.
    pub closed: u64,
    /// RSTs from the backend answering a SYN (connection refused).
    pub refusals: u64,
    /// RSTs on established connections, either direction.
    pub resets: u64,
    /// Dry run: new flows this backend WOULD have got under the slot's would-be weight
    /// (`SHIFTER_DRY`); they were steered by the real weight.
    pub dry_new_flows: u64,
    // Socket dispatch counts a connection neither backend listened for in `refusals` (of the
    // chosen one); its other counters are `SocketCounters`, so that `new_flows` stays the
    // count of flow-table entries made, which evictions are derived from.
}

/// Per-CPU socket-dispatch counters per (service slot, backend), index `counter_index`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SocketCounters {
    /// Connections handed to this backend's listener.
    pub connections: u64,
    /// Connections decided for this backend that went to the other one because this one had
    /// no listener (not up yet, or gone).
    pub fallbacks: u64,
    /// Handed-over connections that completed the handshake (sock_ops saw them established).
    pub established: u64,
    /// Established connections that closed; `established - closed` are open now.
    pub closed: u64,
    /// Established connections that went straight to CLOSE (a reset sent or received, not an
    /// orderly FIN exchange).
    pub resets: u64,
}

impl SocketCounters {
    /// Adds another CPU's counters.
    pub fn accumulate(&mut self, o: &Self) {
        self.connections += o.connections;
        self.fallbacks += o.fallbacks;
        self.established += o.established;
        self.closed += o.closed;
        self.resets += o.resets;
    }

    /// Established connections open now (per-CPU sums may pass each other: never negative).
    pub const fn open(&self) -> u64 {
        self.established.saturating_sub(self.closed)
    }
}

impl BackendCounters {
    /// Adds another CPU's counters.
    pub fn accumulate(&mut self, o: &Self) {
        self.new_flows += o.new_flows;
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.egress_packets += o.egress_packets;
        self.egress_bytes += o.egress_bytes;
        self.recoveries += o.recoveries;
        self.closed += o.closed;
        self.refusals += o.refusals;
        self.resets += o.resets;
        self.dry_new_flows += o.dry_new_flows;
    }
}

/// Counter index of a (slot, backend) pair.
#[inline(always)]
pub const fn counter_index(slot: u32, backend: u8) -> u32 {
    slot * 2 + (backend as u32 & 1)
}

/// Ports are kept in a 65536-bit bitmap of u64 words so the hot path can reject a packet
/// for a non-service port with one array lookup instead of a hash lookup.
pub const PORT_BITMAP_WORDS: u32 = 65536 / 64;
/// Bit set in the service half of the bitmap (index `port / 64`).
pub const PORT_BITMAP_SERVICE_BASE: u32 = 0;
/// Bit set in the backend half of the bitmap (index `PORT_BITMAP_WORDS + port / 64`).
pub const PORT_BITMAP_BACKEND_BASE: u32 = PORT_BITMAP_WORDS;
/// Bit set in the third part when some service on the port names local addresses: only
/// then does ingress look up the exact (address, port) key before the wildcard one.
pub const PORT_BITMAP_SPECIFIC_BASE: u32 = PORT_BITMAP_WORDS * 2;

/// The ports TC ingress handles (a bitmap of `PORT_BITMAP_WORDS` words, index `port / 64`):
/// those of rewrite-dispatched services, and of socket-dispatched ones while connections
/// accepted under rewrite (before a switch) may remain. Every other packet, a
/// socket-dispatched service's included, leaves ingress at this one array lookup.
pub const MAP_REWRITE_PORTS: &str = "SHIFTER_RWPORTS";

/// TCP service port -> how sk_lookup finds the port's service without a hash lookup: an
/// array of 65536 `u32` indexed by the port, holding [`tcp_port_entry`] of the TCP services
/// on it. One array lookup (inlined by the verifier) replaces the port bitmap test and the
/// wildcard key's hash lookup of `SHIFTER_SVC` on every new connection.
pub const MAP_TCP_SERVICE_PORTS: &str = "SHIFTER_TCPPORT";
/// Entries of `MAP_TCP_SERVICE_PORTS`.
pub const TCP_SERVICE_PORTS: u32 = 65536;
/// The entry of a port with a TCP service that names local addresses: look the service up
/// by (address, port) in `SHIFTER_SVC`, as TC does.
pub const TCP_PORT_BY_ADDRESS: u32 = u32::MAX;
// Every slot + 1 differs from the marker.
const _: () = assert!(MAX_SERVICES < TCP_PORT_BY_ADDRESS - 1);

/// The `MAP_TCP_SERVICE_PORTS` entry of a port from its TCP services, each `(slot, names
/// local addresses)`: 0 for none, [`TCP_PORT_BY_ADDRESS`] when any names addresses (an
/// exact key may win over the wildcard), else the wildcard service's slot + 1.
pub fn tcp_port_entry(services: impl IntoIterator<Item = (u32, bool)>) -> u32 {
    let mut entry = 0;
    for (slot, names_addresses) in services {
        if names_addresses {
            return TCP_PORT_BY_ADDRESS;
        }
        entry = slot + 1;
    }
    entry
}

/// Entries of the `SHIFTER_SKIP` per-CPU array: room for reasons added later without changing
/// the shape of a map pinned by an older build (a pinned map is adopted as it is).
pub const SKIP_SLOTS: u32 = 32;

/// Why a program gave up on a packet of a configured service and passed it unchanged (or, for
/// `SocketRecordFailed`, why sock_ops could not remember a shifted connection).
///
/// A packet that is simply not for a configured service (another port, another protocol on
/// the port, not TCP or UDP, a later fragment without ports) is not a skip and is not counted.
/// A malformed packet is attributed by the ports the parser could read: it is a skip only if
/// those name a configured service (ingress) or a backend port (egress).
///
/// The discriminant is the index into `SHIFTER_SKIP`. It is pinned state: a new reason takes
/// the next free number below `SKIP_SLOTS`, and no reason is ever renumbered.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// The frame ends before the end its IP header states (IPv4 total length or IPv6 payload
    /// length past the frame), or before the end of the fixed TCP or UDP header (at TC also:
    /// the header is not in the skb's linear data even after pulling). Ingress and egress.
    Truncated = 0,
    /// IPv4: IHL below 5 or larger than the total length, a total length too short for the
    /// TCP or UDP header, or a total length of 0 outside a TCP GSO packet (BIG TCP states no
    /// length). Ingress and egress.
    Ipv4Length = 1,
    /// IPv6: a payload length too short for the extension headers and the TCP or UDP header,
    /// or 0 outside a TCP GSO packet. Ingress and egress.
    Ipv6Length = 2,
    /// TCP data offset below 5, or past the end of the IP payload (of the frame when the IP
    /// header states no length). Ingress and egress.
    TcpLength = 3,
    /// UDP length below 8, or different from the IP payload length. Ingress and egress.
    UdpLength = 4,
    /// The service's slot has no configuration word (a service being added or removed, or a
    /// slot outside the configuration array). Ingress.
    NoConfig = 5,
    /// The flow table refused an entry: a new flow or a recovered connection (ingress), or an
    /// entry restored from the socket's record (egress: the reply leaves with the backend
    /// port as its source).
    FlowInsertFailed = 6,
    /// A TCP segment other than a SYN for a service without a flow entry, and neither the
    /// blue nor the green port owns a connection for it (socket lookup). Ingress.
    RecoveryMiss = 7,
    /// Writing the port and checksum failed (TC: the checksum helper refused). Ingress and
    /// egress; at ingress a new flow's entry was already recorded.
    RewriteFailed = 8,
    /// sock_ops could not store the record of a shifted connection (`SHIFTER_SOCKS`), so
    /// egress cannot restore the connection's flow entry from it if the entry is lost.
    SocketRecordFailed = 9,
    /// Socket dispatch: a backend's listening socket could not be remembered (all
    /// `LISTENER_MEMBERS` places of its port taken, or the map refused it), so sk_lookup
    /// cannot hand connections to it. sock_ops at `listen()` and the registration program.
    ListenerRecordFailed = 10,
}

impl Skip {
    /// Every reason, in index order.
    pub const ALL: [Self; 11] = [
        Self::Truncated,
        Self::Ipv4Length,
        Self::Ipv6Length,
        Self::TcpLength,
        Self::UdpLength,
        Self::NoConfig,
        Self::FlowInsertFailed,
        Self::RecoveryMiss,
        Self::RewriteFailed,
        Self::SocketRecordFailed,
        Self::ListenerRecordFailed,
    ];

    /// Index into `SHIFTER_SKIP`.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The reason at `index`, if it names one.
    pub const fn from_index(index: u32) -> Option<Self> {
        if (index as usize) < Self::ALL.len() {
            Some(Self::ALL[index as usize])
        } else {
            None
        }
    }

    /// Stable snake_case name, for metric labels and JSON
    /// (`shifter_skipped_packets_total{reason="..."}`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::Ipv4Length => "ipv4_length",
            Self::Ipv6Length => "ipv6_length",
            Self::TcpLength => "tcp_length",
            Self::UdpLength => "udp_length",
            Self::NoConfig => "no_config",
            Self::FlowInsertFailed => "flow_insert_failed",
            Self::RecoveryMiss => "recovery_miss",
            Self::RewriteFailed => "rewrite_failed",
            Self::SocketRecordFailed => "socket_record_failed",
            Self::ListenerRecordFailed => "listener_record_failed",
        }
    }

    /// One line for humans (status output, metric help).
    pub const fn description(self) -> &'static str {
        match self {
            Self::Truncated => "frame shorter than its IP length or its TCP/UDP header",
            Self::Ipv4Length => "IPv4 header length or total length inconsistent",
            Self::Ipv6Length => "IPv6 payload length inconsistent",
            Self::TcpLength => "TCP data offset inconsistent",
            Self::UdpLength => "UDP length inconsistent with the IP payload",
            Self::NoConfig => "service slot without a configuration word",
            Self::FlowInsertFailed => "flow table refused the entry",
            Self::RecoveryMiss => "non-SYN segment without flow entry, owned by no backend",
            Self::RewriteFailed => "port and checksum rewrite failed",
            Self::SocketRecordFailed => "sock_ops could not record a shifted connection",
            Self::ListenerRecordFailed => "a backend listener could not be remembered",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::{BackendCounters, ServiceKey, SocketCounters};
    // SAFETY: `#[repr(C)]`, integer fields only, explicit padding: every bit pattern is valid.
    unsafe impl aya::Pod for ServiceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SocketCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BackendCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<ServiceKey>(), 20);
        assert_eq!(core::mem::size_of::<BackendCounters>(), 80);
        assert_eq!(core::mem::offset_of!(BackendCounters, dry_new_flows), 72);
        assert_eq!(dry_weight(0), None);
        assert_eq!(dry_weight(DRY_ACTIVE | 2500), Some(2500));
    }

    #[test]
    fn a_tcp_port_entry_names_the_wildcard_slot_or_asks_for_the_address() {
        assert_eq!(tcp_port_entry([]), 0);
        // Slot 0 is a service: its entry is 1, never the "none" 0.
        assert_eq!(tcp_port_entry([(0, false)]), 1);
        assert_eq!(tcp_port_entry([(41, false)]), 42);
        // Any service on the port with local addresses: the hash decides, whatever the order.
        assert_eq!(tcp_port_entry([(3, false), (4, true)]), TCP_PORT_BY_ADDRESS);
        assert_eq!(tcp_port_entry([(4, true), (3, false)]), TCP_PORT_BY_ADDRESS);
    }

    #[test]
    fn skip_reasons_are_indexed_in_order_and_named_once() {
        assert!(Skip::ALL.len() as u32 <= SKIP_SLOTS);
        for (i, reason) in Skip::ALL.into_iter().enumerate() {
            assert_eq!(
                reason.index(),
                i as u32,
                "{reason:?} is out of order in ALL"
            );
            assert_eq!(Skip::from_index(i as u32), Some(reason));
            let name = reason.name();
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name:?} is not snake_case"
            );
            for other in &Skip::ALL[..i] {
                assert_ne!(other.name(), name, "two reasons named {name}");
            }
            assert!(!reason.description().is_empty());
        }
        assert_eq!(Skip::from_index(Skip::ALL.len() as u32), None);
        assert_eq!(Skip::from_index(u32::MAX), None);
    }

    #[test]
    fn skip_numbers_are_stable() {
        // Pinned counters are indexed by these numbers: changing one breaks adoption.
        assert_eq!(Skip::Truncated as u32, 0);
        assert_eq!(Skip::UdpLength as u32, 4);
        assert_eq!(Skip::NoConfig as u32, 5);
        assert_eq!(Skip::RecoveryMiss as u32, 7);
        assert_eq!(Skip::SocketRecordFailed as u32, 9);
        assert_eq!(Skip::ListenerRecordFailed as u32, 10);
        assert_eq!(
            core::mem::size_of::<Result<(), Skip>>(),
            4,
            "a program's result stays one word"
        );
    }
}
