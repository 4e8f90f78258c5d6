//! The data plane as an [`Actuator`], and durable storage of rollout progress.
//!
//! [`DataPlaneActuator`] borrows the `DataPlane` for one batch of effects, which fits a
//! daemon actor that owns the data plane on its own thread:
//!
//! ```ignore
//! let fx = engine.handle(now, input)?;
//! let events = apply(&mut DataPlaneActuator::new(&mut dp, slot, Some(&path)), fx, decided_at);
//! ```

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::state::write_durably;
use crate::{
    dataplane::{self, DataPlane},
    rollout::{Actuator, Cause, HookCall, Progress, RolloutEvent, SignalSample},
};

/// Errors of the data-plane actuator.
#[derive(Debug, thiserror::Error)]
pub enum ActuatorError {
    #[error("service slot {slot}")]
    DataPlane {
        slot: u32,
        #[source]
        source: dataplane::Error,
    },
    #[error("service slot {slot} is not configured")]
    NoService { slot: u32 },
    #[error("rollout progress {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Carries out effects for the service in `slot`; persists to `progress_path` (if any) and
/// collects recorded events in `events`.
pub struct DataPlaneActuator<'a> {
    dp: &'a mut DataPlane,
    slot: u32,
    progress_path: Option<&'a Path>,
    pub events: Vec<RolloutEvent>,
    /// Confirm webhooks to ask, for the caller to start (after the batch, off this thread).
    pub confirms: Vec<HookCall>,
}

impl<'a> DataPlaneActuator<'a> {
    pub fn new(dp: &'a mut DataPlane, slot: u32, progress_path: Option<&'a Path>) -> Self {
        Self {
            dp,
            slot,
            progress_path,
            events: Vec::new(),
            confirms: Vec::new(),
        }
    }

    fn dp_err(&self) -> impl FnOnce(dataplane::Error) -> ActuatorError {
        let slot = self.slot;
        move |source| ActuatorError::DataPlane { slot, source }
    }
}

impl Actuator for DataPlaneActuator<'_> {
    type Error = ActuatorError;

    /// A dry-run change sets the slot's would-be weight (`SHIFTER_DRY`): the kernel counts
    /// the decisions it would make and steers by the real weight; a would-be weight of 0
    /// (rollback, abort: steps are never 0) ends the kernel's dry run. A real change ends any
    /// dry run of the slot too.
    fn set_weight(
        &mut self,
        bp: u16,
        dry_run: bool,
        _cause: &Cause,
    ) -> Result<Duration, ActuatorError> {
        if dry_run && bp == 0 {
            // A dry run rolled back or aborted: nothing would go green any more, so the
            // kernel stops counting would-be decisions (the totals stay for status).
            let t = Instant::now();
            self.dp.clear_dry_weight(self.slot).map_err(self.dp_err())?;
            return Ok(t.elapsed());
        }
        if dry_run {
            let t = Instant::now();
            self.dp
                .set_dry_weight(self.slot, bp)
                .map_err(self.dp_err())?;
            return Ok(t.elapsed());
        }
        let t = Instant::now();
        self.dp.set_weight(self.slot, bp).map_err(self.dp_err())?;
        let took = t.elapsed();
        self.dp.clear_dry_weight(self.slot).map_err(self.dp_err())?;
        Ok(took)
    }

    fn swap_roles(&mut self, _cause: &Cause) -> Result<Duration, ActuatorError> {
        let mut svc = self
            .dp
            .services()
            .map_err(self.dp_err())?
            .remove(&self.slot)
            .ok_or(ActuatorError::NoService { slot: self.slot })?;
        let c = &mut svc.config;
        std::mem::swap(&mut c.blue_port, &mut c.green_port);
        c.weight = 0;
        let t = Instant::now();
        // Same identity: one config-word write (ports and weight together).
        self.dp.set_service(&svc).map_err(self.dp_err())?;
        let took = t.elapsed();
        self.dp.clear_dry_weight(self.slot).map_err(self.dp_err())?;
        Ok(took)
    }

    fn sample(&mut self) -> Result<SignalSample, ActuatorError> {
        let c = self.dp.counters(self.slot).map_err(self.dp_err())?;
        let s = self.dp.socket_counters(self.slot).map_err(self.dp_err())?;
        Ok(SignalSample::of(&c, &s))
    }

    fn persist(&mut self, progress: &Progress) -> Result<(), ActuatorError> {
        match self.progress_path {
            Some(p) => store_progress(p, progress),
            None => Ok(()),
        }
    }

    fn confirm(&mut self, call: HookCall) {
        self.confirms.push(call);
    }

    fn record(&mut self, event: RolloutEvent) {
        self.events.push(event);
    }
}

/// Writes progress as JSON: temp file in the same directory, fsync, rename, fsync the
/// directory.
pub fn store_progress(path: &Path, progress: &Progress) -> Result<(), ActuatorError> {
    let err = |source| ActuatorError::Store {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec_pretty(progress).map_err(|e| err(e.into()))?;
    write_durably(path, &tmp, &json, || Ok(())).map_err(err)
}

/// Reads progress written by [`store_progress`]; `Ok(None)` when there is none.
pub fn load_progress(path: &Path) -> Result<Option<Progress>, ActuatorError> {
    let err = |source| ActuatorError::Store {
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| err(e.into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{Engine, RolloutSettings};

    #[test]
    fn progress_round_trips_through_the_store() {
        let dir = std::env::temp_dir().join(format!("shifter-progress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.json");
        assert!(load_progress(&path).unwrap().is_none());
        let mut e = Engine::new("web", RolloutSettings::default(), 1, 2, 0, false);
        e.command(
            Duration::ZERO,
            crate::rollout::OperatorCommand::Start {
                steps: None,
                hold: None,
                dry_run: false,
            },
            None,
        )
        .unwrap();
        let p = e.progress(Duration::from_secs(7));
        store_progress(&path, &p).unwrap();
        let back = load_progress(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(back, Some(p));
    }
}
