//! The maps, all pinned by name so a restarted daemon (and a new program build) adopts them.

use aya_ebpf::{
    bindings::{
        BPF_F_CLONE, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_SK_STORAGE_GET_F_CREATE,
        bpf_map_type::BPF_MAP_TYPE_SK_STORAGE,
    },
    cty::c_void,
    helpers::bpf_sk_storage_get,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, SockHash},
};
use shifter_common::{
    BackendCounters, FlowKey, FlowValue, LISTENER_CAPACITY, MAX_SERVICES, PORT_BITMAP_WORDS,
    SKIP_SLOTS, ServiceKey, Skip, SocketCounters,
};

/// (protocol, local address or wildcard, port) -> service slot.
#[map(name = "SHIFTER_SVC")]
pub static SERVICES: HashMap<ServiceKey, u32> = HashMap::pinned(MAX_SERVICES * 2, 0);

/// Slot -> packed `ServiceConfig` word (read with one 8-byte load). Mmapable so userspace
/// replaces a word with one atomic 8-byte store (see shifter/src/cfgword.rs).
#[map(name = "SHIFTER_CFG")]
pub static SERVICE_CONFIG: Array<u64> = Array::pinned(MAX_SERVICES, BPF_F_MMAPABLE);

/// The flow table. The size given here is a default; the loader sets the configured one.
#[map(name = "SHIFTER_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::pinned(shifter_common::DEFAULT_FLOW_CAPACITY, 0);

/// Per-CPU counters, index `slot * 2 + backend`.
#[map(name = "SHIFTER_CNT")]
pub static COUNTERS: PerCpuArray<BackendCounters> = PerCpuArray::pinned(MAX_SERVICES * 2, 0);

/// Per slot: a dry run's would-be weight (`shifter_common::DRY_ACTIVE | weight`; 0: none).
#[map(name = "SHIFTER_DRY")]
pub static DRY_RUN: Array<u32> = Array::pinned(MAX_SERVICES, 0);

/// Bitmaps of service ports and backend ports (see `shifter_common::PORT_BITMAP_*`).
#[map(name = "SHIFTER_PORTS")]
pub static PORTS: Array<u64> = Array::pinned(PORT_BITMAP_WORDS * 3, 0);

/// The ports TC ingress handles (`shifter_common::MAP_REWRITE_PORTS`).
#[map(name = "SHIFTER_RWPORTS")]
pub static REWRITE_PORTS: Array<u64> = Array::pinned(PORT_BITMAP_WORDS, 0);

/// TCP service port -> `shifter_common::tcp_port_entry` of its services (sk_lookup's
/// service lookup; `shifter_common::MAP_TCP_SERVICE_PORTS`).
#[map(name = "SHIFTER_TCPPORT")]
pub static TCP_SERVICE_PORTS: Array<u32> = Array::pinned(shifter_common::TCP_SERVICE_PORTS, 0);

#[inline(always)]
pub fn port_in(base: u32, port: u16) -> bool {
    bit_of(&PORTS, base, port)
}

/// Whether TC ingress handles packets to `port`.
#[inline(always)]
pub fn rewrite_port(port: u16) -> bool {
    bit_of(&REWRITE_PORTS, 0, port)
}

#[inline(always)]
fn bit_of(bitmap: &Array<u64>, base: u32, port: u16) -> bool {
    match bitmap.get(base + u32::from(port >> 6)) {
        Some(word) => {
            // SAFETY: a single aligned 8-byte load.
            let word = unsafe { core::ptr::read_volatile(word) };
            word & (1u64 << (port & 63)) != 0
        }
        None => false,
    }
}

#[inline(always)]
pub fn counters(slot: u32, backend: u8) -> Option<&'static mut BackendCounters> {
    let ptr = COUNTERS.get_ptr_mut(shifter_common::counter_index(slot, backend))?;
    // SAFETY: per-CPU value, only this CPU writes it while the program runs.
    Some(unsafe { &mut *ptr })
}

/// Flow entries removed by userspace (sweeps, clears) per counter index. Written only by
/// userspace; kept in a pinned map so eviction accounting survives daemon restarts.
#[map(name = "SHIFTER_UREM")]
pub static USER_REMOVED: Array<u64> = Array::pinned(MAX_SERVICES * 2, 0);

/// Socket cookie -> the flow's value, for every shifted TCP connection, written by the
/// sock_ops program when the connection is established and removed when it closes. It is
/// egress's own truth when the flow entry is gone (evicted or cleared) and the server
/// speaks first. Sized like the flow table by the loader.
#[map(name = "SHIFTER_SOCKS")]
pub static SOCKETS: LruHashMap<u64, FlowValue> =
    LruHashMap::pinned(shifter_common::DEFAULT_FLOW_CAPACITY, 0);

/// Per CPU: packets of configured services the programs gave up on, by reason
/// (index `Skip as u32`; `shifter_common::MAP_SKIPS`).
#[map(name = "SHIFTER_SKIP")]
pub static SKIPS: PerCpuArray<u64> = PerCpuArray::pinned(SKIP_SLOTS, 0);

/// Counts one skip. Only a skip pays for this: passing a packet that is not a service's
/// costs nothing here.
#[inline(always)]
pub fn count_skip(reason: Skip) {
    if let Some(n) = SKIPS.get_ptr_mut(reason.index()) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe { *n += 1 };
    }
}

/// Socket dispatch: backend port and place (`shifter_common::listener_key`) -> a listening
/// socket of that backend. Sockets leave it by themselves when they close.
#[map(name = "SHIFTER_LSN")]
pub static LISTENERS: SockHash<u32> = SockHash::pinned(LISTENER_CAPACITY, 0);

/// Socket dispatch, per CPU: `SocketCounters` per counter index (`slot * 2 + backend`).
#[map(name = "SHIFTER_SKCNT")]
pub static SOCKET_COUNTERS: PerCpuArray<SocketCounters> = PerCpuArray::pinned(MAX_SERVICES * 2, 0);

#[inline(always)]
pub fn socket_counters(slot: u32, backend: u8) -> Option<&'static mut SocketCounters> {
    let ptr = SOCKET_COUNTERS.get_ptr_mut(shifter_common::counter_index(slot, backend))?;
    // SAFETY: per-CPU value, only this CPU writes it while the program runs.
    Some(unsafe { &mut *ptr })
}

/// Socket dispatch: the cookie of the network namespace this data plane serves, written by
/// the daemon when it attaches sk_lookup there. Not pinned: each load writes its own, and
/// an adopted link runs the new load's programs with the new load's map.
#[map(name = "SHIFTER_NETNS")]
pub static NETNS: Array<u64> = Array::with_max_entries(2, 0);

/// Socket dispatch where the kernel does not clone listener tags onto accepted connections:
/// sk_lookup's decision per connection tuple, taken by sock_ops
/// (`shifter_common::MAP_SOCKET_DECISIONS`). LRU: a handshake that never completes leaves an
/// entry that ages out.
#[map(name = "SHIFTER_SKDEC")]
pub static SOCKET_DECISIONS: LruHashMap<FlowKey, u32> =
    LruHashMap::pinned(shifter_common::DEFAULT_FLOW_CAPACITY, 0);

/// With decisions (see `SOCKET_DECISIONS`): socket cookie -> `slot << 1 | backend` of each
/// established connection until it closes (cookies are never reused).
#[map(name = "SHIFTER_SKCONN")]
pub static SOCKET_CONNECTIONS: LruHashMap<u64, u32> =
    LruHashMap::pinned(shifter_common::DEFAULT_FLOW_CAPACITY, 0);

/// Socket dispatch: the tag on listeners and on the connections they accept
/// (`shifter_common::MAP_SOCKET_TAGS`). A BTF map definition (the `.maps` section), the only
/// kind the kernel accepts for socket storage; the pointee types carry the values, as
/// libbpf's `__uint`/`__type` fields do, and are read by the loader from BTF.
#[repr(C)]
pub struct SocketTags {
    r#type: *const [i32; BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const u32,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; (BPF_F_NO_PREALLOC | BPF_F_CLONE) as usize],
    /// LIBBPF_PIN_BY_NAME: an upgraded program finds the tags of live connections.
    pinning: *const [i32; 1],
}

// SAFETY: placeholder pointers that only the loader reads (from BTF); never dereferenced.
unsafe impl Sync for SocketTags {}

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "SHIFTER_SKTAG")]
pub static SOCKET_TAGS: SocketTags = SocketTags {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
    pinning: core::ptr::null(),
};

impl SocketTags {
    fn as_ptr(&self) -> *mut c_void {
        core::ptr::from_ref(self).cast_mut().cast()
    }

    /// The tag on `sk`, if it has one.
    ///
    /// # Safety
    /// `sk` is a full socket the program may pass to helpers.
    #[inline(always)]
    pub unsafe fn get(&self, sk: *mut c_void) -> Option<&mut u32> {
        // SAFETY: our map, the caller's socket, no initial value.
        let tag = unsafe { bpf_sk_storage_get(self.as_ptr(), sk, core::ptr::null_mut(), 0) };
        // SAFETY: a non-null result points to this socket's u32 value.
        unsafe { tag.cast::<u32>().as_mut() }
    }

    /// Puts `tag` on `sk` (created, or replacing the one there). `false` when the kernel
    /// could not allocate it.
    ///
    /// # Safety
    /// As for [`Self::get`].
    #[inline(always)]
    pub unsafe fn set(&self, sk: *mut c_void, tag: u32) -> bool {
        let mut init = tag;
        // SAFETY: our map, the caller's socket, a stack value of the map's value size.
        let got = unsafe {
            bpf_sk_storage_get(
                self.as_ptr(),
                sk,
                core::ptr::from_mut(&mut init).cast(),
                u64::from(BPF_SK_STORAGE_GET_F_CREATE),
            )
        };
        // SAFETY: a non-null result points to this socket's u32 value.
        match unsafe { got.cast::<u32>().as_mut() } {
            Some(value) => {
                *value = tag;
                true
            }
            None => false,
        }
    }
}
