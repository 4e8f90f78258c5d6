//! Refused control requests as events: each names the uid, the request and the service.
//!
//! Any peer that can connect can be refused, so the events are limited per uid (a burst of
//! [`BURST`], then one per [`REFILL`]): a peer hammering the socket cannot push the weight
//! changes out of the bounded event log. Refusals not recorded are counted and named in the
//! uid's next recorded refusal; every refusal is also logged by the server.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::events::{Cause, Event};

/// Refusals of one uid recorded back to back before the limit applies.
pub const BURST: u32 = 20;
/// One more refusal event per uid per this much time once the burst is spent.
pub const REFILL: Duration = Duration::from_secs(1);
/// Characters of the requested service name kept in a refusal event.
const MAX_NAME: usize = 64;

#[derive(Debug)]
struct Bucket {
    tokens: u32,
    refilled: Instant,
    suppressed: u64,
}

/// Per-uid token buckets.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    uids: BTreeMap<u32, Bucket>,
}

impl Refusals {
    /// Whether a refusal of `uid` at `now` is recorded; `Some(n)`: yes, and `n` refusals
    /// before it were not.
    pub fn admit(&mut self, uid: u32, now: Instant) -> Option<u64> {
        let b = self.uids.entry(uid).or_insert(Bucket {
            tokens: BURST,
            refilled: now,
            suppressed: 0,
        });
        let earned = now.duration_since(b.refilled).as_millis() / REFILL.as_millis().max(1);
        if earned > 0 {
            b.tokens = (b.tokens + u32::try_from(earned).unwrap_or(u32::MAX)).min(BURST);
            b.refilled = now;
        }
        if b.tokens == 0 {
            b.suppressed += 1;
            return None;
        }
        b.tokens -= 1;
        Some(std::mem::take(&mut b.suppressed))
    }
}

/// The event detail of a refusal.
pub(crate) fn detail(uid: u32, service: Option<&str>, what: &str, suppressed: u64) -> String {
    let mut d = format!("refused: uid {uid} may not {what}");
    if let Some(s) = service {
        d.push_str(&format!(" ({s})"));
    }
    if suppressed > 0 {
        d.push_str(&format!(
            "; {suppressed} earlier refusals of this uid were not recorded (limit)"
        ));
    }
    d
}

impl super::actor::Actor {
    /// A refused request as an event naming the uid (limited per uid; see `refusals`).
    /// Nothing else changes, and the state is not written for it: a peer that may change
    /// nothing cannot make the daemon write to disk.
    pub(super) fn refused(&mut self, uid: u32, service: Option<String>, what: &str) {
        let Some(suppressed) = self.refusals.admit(uid, std::time::Instant::now()) else {
            return;
        };
        // The name comes from the request path of a peer that may change nothing: keep at
        // most a service name's worth of it in the log.
        let service = service.map(|s| s.chars().take(MAX_NAME).collect::<String>());
        let ev = Event {
            detail: Some(super::refusals::detail(
                uid,
                service.as_deref(),
                what,
                suppressed,
            )),
            ..Event::new(
                service.as_deref().unwrap_or("-"),
                None,
                None,
                Cause::Refused,
                Some(uid),
            )
        };
        let ev = self.state.log.push(ev);
        let _ = self.events.send(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_refill_per_uid() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(r.admit(7, t0), Some(0));
        }
        assert_eq!(r.admit(7, t0), None);
        assert_eq!(r.admit(7, t0), None);
        assert_eq!(r.admit(8, t0), Some(0), "another uid has its own bucket");
        assert_eq!(r.admit(7, t0 + REFILL), Some(2));
        assert_eq!(r.admit(7, t0 + REFILL), None);
        assert_eq!(
            detail(7, Some("web"), "change a weight", 1),
            "refused: uid 7 may not change a weight (web); 1 earlier refusals of this uid were not recorded (limit)"
        );
    }
}
