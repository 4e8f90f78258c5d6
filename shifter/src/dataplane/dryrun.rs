//! Dry runs in the data plane: a per-slot would-be weight (`SHIFTER_DRY`). While one is set,
//! ingress decides every new flow twice, steers it by the real weight and counts the backend
//! it would have got under the would-be weight in `BackendCounters::dry_new_flows`.

use aya::maps::Array;
use shifter_common::{DRY_ACTIVE, MAP_DRY_RUN, MAX_SERVICES, WEIGHT_MAX, dry_weight};

use super::{
    error::{Error, Result, map_err},
    load::DataPlane,
};

impl DataPlane {
    fn dry_map(&mut self) -> Result<Array<&mut aya::maps::MapData, u32>> {
        self.ebpf
            .map_mut(MAP_DRY_RUN)
            .ok_or(Error::MissingMap { name: MAP_DRY_RUN })?
            .try_into()
            .map_err(map_err(MAP_DRY_RUN))
    }

    /// Starts (or moves) the dry run of `slot`: new flows are counted as if green had
    /// `weight` basis points; steering keeps using the real weight.
    pub fn set_dry_weight(&mut self, slot: u32, weight: u16) -> Result<()> {
        if weight > WEIGHT_MAX {
            return Err(Error::InvalidService {
                service: format!("slot {slot}"),
                reason: format!("dry-run weight {weight} basis points is outside 0..={WEIGHT_MAX}"),
            });
        }
        check_slot(slot)?;
        self.dry_map()?
            .set(slot, DRY_ACTIVE | u32::from(weight), 0)
            .map_err(map_err(MAP_DRY_RUN))
    }

    /// Ends the dry run of `slot` (the dry counters keep their totals).
    pub fn clear_dry_weight(&mut self, slot: u32) -> Result<()> {
        check_slot(slot)?;
        self.dry_map()?
            .set(slot, 0, 0)
            .map_err(map_err(MAP_DRY_RUN))
    }

    /// The would-be weight of `slot`'s dry run, if one is active.
    pub fn dry_weight(&mut self, slot: u32) -> Result<Option<u16>> {
        check_slot(slot)?;
        let word = self
            .dry_map()?
            .get(&slot, 0)
            .map_err(map_err(MAP_DRY_RUN))?;
        Ok(dry_weight(word))
    }
}

fn check_slot(slot: u32) -> Result<()> {
    if slot < MAX_SERVICES {
        Ok(())
    } else {
        Err(Error::InvalidService {
            service: format!("slot {slot}"),
            reason: format!("slot is outside 0..{MAX_SERVICES}"),
        })
    }
}
