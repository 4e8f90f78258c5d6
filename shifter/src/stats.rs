//! Counters per service and backend.

use shifter_common::{BackendCounters, MAP_COUNTERS, counter_index};

use crate::{
    dataplane::DataPlane,
    error::{Result, map_err},
};

impl DataPlane {
    /// Counters of the service in `slot`, summed over CPUs: `[blue, green]`.
    pub fn counters(&mut self, slot: u32) -> Result<[BackendCounters; 2]> {
        let map = self.counters_map()?;
        let mut out = [BackendCounters::default(); 2];
        for (backend, sum) in out.iter_mut().enumerate() {
            let per_cpu = map
                .get(&counter_index(slot, backend as u8), 0)
                .map_err(map_err(MAP_COUNTERS))?;
            for c in per_cpu.iter() {
                sum.accumulate(c);
            }
        }
        Ok(out)
    }
}
