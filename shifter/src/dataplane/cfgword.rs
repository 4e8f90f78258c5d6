//! Atomic writes of the per-service configuration words.
//!
//! `bpf_map_update_elem` copies a value with the kernel's memcpy, which may store byte by
//! byte (`rep movsb`; under emulation it does): a packet could then read half an update.
//! The `SHIFTER_CFG` array is created `BPF_F_MMAPABLE`, so userspace maps its values and
//! replaces a word with one aligned 8-byte atomic store, which the program's single 8-byte
//! load sees whole (docs/ARCHITECTURE.md, invariant 4).

use std::{
    io,
    os::fd::AsRawFd as _,
    path::Path,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use shifter_common::{MAP_SERVICE_CONFIG, MAX_SERVICES};

/// The mapped value area of the `SHIFTER_CFG` array.
pub struct ConfigWords {
    base: NonNull<AtomicU64>,
    mapped_len: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl Send for ConfigWords {}
// SAFETY: as above.
unsafe impl Sync for ConfigWords {}

impl ConfigWords {
    /// Maps the configuration array pinned under `pin_dir`.
    pub fn open(pin_dir: &Path) -> io::Result<Self> {
        let fd = crate::sys::obj_get(&pin_dir.join(MAP_SERVICE_CONFIG))?;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("sysconf(_SC_PAGESIZE) failed"))?;
        let len = (MAX_SERVICES as usize * size_of::<u64>()).div_ceil(page) * page;
        // SAFETY: a shared read-write mapping of a BPF array map's values; the kernel
        // refuses it (EINVAL) unless the map was created mmapable.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self {
            base,
            mapped_len: len,
        })
    }

    fn word(&self, slot: u32) -> &AtomicU64 {
        assert!(slot < MAX_SERVICES, "slot {slot} out of range");
        // SAFETY: in bounds of the mapping (checked above), 8-byte aligned (page base).
        unsafe { self.base.add(slot as usize).as_ref() }
    }

    /// Replaces the configuration word of `slot` in one atomic store.
    pub fn store(&self, slot: u32, word: u64) {
        self.word(slot).store(word, Ordering::SeqCst);
    }

    /// The configuration word of `slot`.
    pub fn load(&self, slot: u32) -> u64 {
        self.word(slot).load(Ordering::SeqCst)
    }
}

impl Drop for ConfigWords {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `open` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped_len) };
    }
}
