//! Skipped packets: how many packets of configured services the kernel programs gave up on
//! and passed unchanged, per reason, summed over CPUs.
//!
//! The programs count each skip per CPU in the pinned array `SHIFTER_SKIP`, indexed by
//! [`Skip`] (see its documentation for what each reason means and which program counts it).
//! A packet that is not for a configured service is never counted. Counters only grow; they
//! survive daemon restarts with the pins and start at zero when the maps are created.
//!
//! - [`DataPlane::skip_counts`]: from the data plane this process loaded (the daemon).
//! - [`pinned_skip_counts`]: read-only from the pins, without loading anything (`status`
//!   when no daemon runs).
//! - [`read_skip_counts`]: from an already opened map.
//!
//! Each gives a [`SkipCounts`]: every reason this build knows, in index order, zeros
//! included, with its stable snake_case name ([`Skip::name`]) for the metric
//! `shifter_skipped_packets_total{reason="..."}`.

use std::{borrow::Borrow, path::Path};

use aya::maps::{Map, MapData, PerCpuArray};
use shifter_common::MAP_SKIPS;
pub use shifter_common::Skip;

use super::{
    DataPlane,
    error::{Error, Result, map_err},
};

/// One reason's total over all CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkipCount {
    pub reason: Skip,
    /// `reason.name()`: the stable label value.
    pub name: &'static str,
    pub packets: u64,
}

/// Skipped packets per reason, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipCounts {
    /// Indexed by `Skip as usize`.
    known: [u64; Skip::ALL.len()],
    /// Counts at indices no reason of this build names (written by a newer build whose
    /// pinned map this one adopted).
    unknown: u64,
}

impl SkipCounts {
    /// Sums per-CPU values: `rows` yields each map index with its values on every CPU.
    pub fn from_per_cpu<I>(rows: impl IntoIterator<Item = (u32, I)>) -> Self
    where
        I: IntoIterator<Item = u64>,
    {
        let mut out = Self::default();
        for (index, per_cpu) in rows {
            let sum = per_cpu.into_iter().fold(0u64, u64::saturating_add);
            let slot = match Skip::from_index(index) {
                Some(reason) => &mut out.known[reason as usize],
                None => &mut out.unknown,
            };
            *slot = slot.saturating_add(sum);
        }
        out
    }

    /// Packets skipped for `reason`.
    pub fn get(&self, reason: Skip) -> u64 {
        self.known[reason as usize]
    }

    /// Every reason of this build, in index order, zeros included (so that a metric series
    /// exists before its first skip).
    pub fn iter(&self) -> impl Iterator<Item = SkipCount> + '_ {
        Skip::ALL.into_iter().map(|reason| SkipCount {
            reason,
            name: reason.name(),
            packets: self.get(reason),
        })
    }

    /// Packets counted under reasons this build does not know (see the field).
    pub fn unknown(&self) -> u64 {
        self.unknown
    }

    /// Every reason's total by its stable name (zeros included), as status and metrics
    /// show them.
    pub fn by_name(&self) -> std::collections::BTreeMap<String, u64> {
        self.iter()
            .map(|c| (c.name.to_owned(), c.packets))
            .collect()
    }

    /// All skipped packets, unknown reasons included.
    pub fn total(&self) -> u64 {
        self.known
            .iter()
            .fold(self.unknown, |sum, n| sum.saturating_add(*n))
    }
}

/// Reads an opened `SHIFTER_SKIP` map (one lookup per index).
pub fn read_skip_counts<T: Borrow<MapData>>(map: &PerCpuArray<T, u64>) -> Result<SkipCounts> {
    let mut rows = Vec::with_capacity(map.len() as usize);
    for index in 0..map.len() {
        let per_cpu = map.get(&index, 0).map_err(map_err(MAP_SKIPS))?;
        rows.push((index, per_cpu.to_vec()));
    }
    Ok(SkipCounts::from_per_cpu(rows))
}

/// Reads the skip counters pinned in `pin_dir` without loading any program. `None` when no
/// such map is pinned there: a data plane loaded by a build from before skip counting (the
/// next load creates it). Opening a pin needs the rights on the bpffs directory (root).
pub fn pinned_skip_counts(pin_dir: &Path) -> Result<Option<SkipCounts>> {
    let path = pin_dir.join(MAP_SKIPS);
    let data = match MapData::from_pin(&path) {
        Ok(data) => data,
        Err(_) if !path.exists() => return Ok(None),
        Err(e) => {
            return Err(Error::Pin {
                path,
                source: e.into(),
            });
        }
    };
    let map: PerCpuArray<MapData, u64> = Map::PerCpuArray(data)
        .try_into()
        .map_err(map_err(MAP_SKIPS))?;
    read_skip_counts(&map).map(Some)
}

impl DataPlane {
    /// Skipped packets per reason, summed over CPUs, from this data plane's maps.
    pub fn skip_counts(&mut self) -> Result<SkipCounts> {
        read_skip_counts(&self.skips_map()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_cpus_per_reason() {
        let c = SkipCounts::from_per_cpu([
            (Skip::Truncated as u32, vec![1, 2, 3]),
            (Skip::RecoveryMiss as u32, vec![0, 5]),
            (Skip::NoConfig as u32, vec![]),
        ]);
        assert_eq!(c.get(Skip::Truncated), 6);
        assert_eq!(c.get(Skip::RecoveryMiss), 5);
        assert_eq!(c.get(Skip::NoConfig), 0);
        assert_eq!(c.get(Skip::UdpLength), 0);
        assert_eq!(c.unknown(), 0);
        assert_eq!(c.total(), 11);
    }

    #[test]
    fn lists_every_reason_in_order_with_its_name() {
        let c = SkipCounts::from_per_cpu([(Skip::TcpLength as u32, [4u64, 4])]);
        let all: Vec<SkipCount> = c.iter().collect();
        assert_eq!(all.len(), Skip::ALL.len());
        for (i, s) in all.iter().enumerate() {
            assert_eq!(s.reason as usize, i);
            assert_eq!(s.name, s.reason.name());
            let want = if s.reason == Skip::TcpLength { 8 } else { 0 };
            assert_eq!(s.packets, want, "{}", s.name);
        }
        let names: Vec<&str> = all.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "truncated",
                "ipv4_length",
                "ipv6_length",
                "tcp_length",
                "udp_length",
                "no_config",
                "flow_insert_failed",
                "recovery_miss",
                "rewrite_failed",
                "socket_record_failed",
                "listener_record_failed",
            ],
            "label values are an interface: change them only on purpose"
        );
    }

    #[test]
    fn indices_no_reason_names_are_kept_apart() {
        let c = SkipCounts::from_per_cpu([
            (31, vec![7u64]),
            (Skip::ALL.len() as u32, vec![1, 1]),
            (Skip::Ipv4Length as u32, vec![2]),
        ]);
        assert_eq!(c.unknown(), 9);
        assert_eq!(c.get(Skip::Ipv4Length), 2);
        assert_eq!(c.iter().map(|s| s.packets).sum::<u64>(), 2);
        assert_eq!(c.total(), 11);
    }

    #[test]
    fn no_pinned_map_is_none() {
        let dir = Path::new("/nonexistent/shifter-skips-test");
        assert_eq!(
            pinned_skip_counts(dir).expect("a missing pin is not an error"),
            None
        );
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let c = SkipCounts::from_per_cpu([
            (0, vec![u64::MAX, 1]),
            (1, vec![u64::MAX]),
            (40, vec![u64::MAX]),
        ]);
        assert_eq!(c.get(Skip::Truncated), u64::MAX);
        assert_eq!(c.total(), u64::MAX);
    }
}
