//! The decision "which backend gets this new flow".
//!
//! bucket = hash(key) mod 10000; the flow goes to green when bucket < weight. Raising the
//! weight therefore only ever moves buckets from blue to green. The key is the whole
//! connection tuple, or only the client address under client affinity.

use crate::{
    flow::FlowTuple,
    service::{Affinity, Backend, ServiceConfig, WEIGHT_MAX},
};

const SEED: u64 = 0x5368_6966_7465_7221; // "Shifter!"
const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline(always)]
const fn fmix64(mut x: u64) -> u64 {
    // MurmurHash3's finaliser: every input bit affects every output bit.
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

#[inline(always)]
const fn absorb(h: u64, chunk: u64) -> u64 {
    (h.rotate_left(23) ^ chunk).wrapping_mul(MUL)
}

#[inline(always)]
const fn addr_words(addr: &[u8; 16]) -> (u64, u64) {
    (
        u64::from_le_bytes([
            addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
        ]),
        u64::from_le_bytes([
            addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
        ]),
    )
}

/// Hash of the decision key for a flow under the given affinity.
#[inline(always)]
pub const fn flow_hash(t: &FlowTuple, affinity: Affinity) -> u64 {
    let (c0, c1) = addr_words(&t.client_addr);
    let mut h = absorb(absorb(SEED, c0), c1);
    if let Affinity::Connection = affinity {
        let (l0, l1) = addr_words(&t.local_addr);
        h = absorb(absorb(h, l0), l1);
        h = absorb(
            h,
            ((t.client_port as u64) << 32) | ((t.service_port as u64) << 16) | t.proto as u64,
        );
    }
    fmix64(h)
}

/// The bucket of a flow, in `0..10000`.
#[inline(always)]
pub const fn bucket(hash: u64) -> u16 {
    (hash % WEIGHT_MAX as u64) as u16
}

/// The backend a new flow gets under `cfg`.
#[inline(always)]
pub const fn choose_backend(t: &FlowTuple, cfg: &ServiceConfig) -> Backend {
    if bucket(flow_hash(t, cfg.affinity)) < cfg.weight {
        Backend::Green
    } else {
        Backend::Blue
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use std::vec::Vec;

    fn random_tuple(rng: &mut StdRng) -> FlowTuple {
        let mut client_addr = [0u8; 16];
        let mut local_addr = [0u8; 16];
        if rng.r#gen::<bool>() {
            // IPv4-mapped.
            client_addr[10] = 0xff;
            client_addr[11] = 0xff;
            rng.fill(&mut client_addr[12..]);
            local_addr[10] = 0xff;
            local_addr[11] = 0xff;
            rng.fill(&mut local_addr[12..]);
        } else {
            rng.fill(&mut client_addr);
            rng.fill(&mut local_addr);
        }
        FlowTuple {
            proto: if rng.r#gen::<bool>() { 6 } else { 17 },
            client_addr,
            client_port: rng.r#gen_range(1024..=65535),
            local_addr,
            service_port: 80,
        }
    }

    fn cfg(weight: u16, affinity: Affinity) -> ServiceConfig {
        ServiceConfig {
            blue_port: 8081,
            green_port: 8082,
            weight,
            affinity,
            dispatch: crate::service::Dispatch::Rewrite,
        }
    }

    #[test]
    fn green_share_matches_weight() {
        let mut rng = StdRng::seed_from_u64(7);
        let tuples: Vec<FlowTuple> = (0..100_000).map(|_| random_tuple(&mut rng)).collect();
        // 0, 1, 10, 33.33, 50, 99.99 and 100 percent.
        for weight in [0u16, 100, 1000, 3333, 5000, 9999, 10000] {
            let c = cfg(weight, Affinity::Connection);
            let green = tuples
                .iter()
                .filter(|t| choose_backend(t, &c) == Backend::Green)
                .count();
            let share = green as f64 * 100.0 / tuples.len() as f64;
            let want = f64::from(weight) / 100.0;
            assert!(
                (share - want).abs() <= 0.5,
                "weight {want}%: green share {share:.3}% is more than 0.5 points off"
            );
        }
    }

    #[test]
    fn raising_weight_never_moves_green_to_blue() {
        let mut rng = StdRng::seed_from_u64(11);
        let tuples: Vec<FlowTuple> = (0..20_000).map(|_| random_tuple(&mut rng)).collect();
        for affinity in [Affinity::Connection, Affinity::Client] {
            let mut previous: Vec<Backend> = tuples
                .iter()
                .map(|t| choose_backend(t, &cfg(0, affinity)))
                .collect();
            assert!(previous.iter().all(|b| *b == Backend::Blue));
            for weight in (1..=WEIGHT_MAX).step_by(37).chain([WEIGHT_MAX]) {
                let c = cfg(weight, affinity);
                for (t, prev) in tuples.iter().zip(previous.iter_mut()) {
                    let now = choose_backend(t, &c);
                    assert!(
                        !(*prev == Backend::Green && now == Backend::Blue),
                        "raising the weight to {weight} moved {t:?} from green to blue"
                    );
                    *prev = now;
                }
            }
            assert!(previous.iter().all(|b| *b == Backend::Green));
        }
    }

    #[test]
    fn client_affinity_keeps_one_client_on_one_version() {
        let mut rng = StdRng::seed_from_u64(13);
        for weight in [1u16, 2500, 5000, 9999] {
            let c = cfg(weight, Affinity::Client);
            let mut seen = [0usize; 2];
            for _ in 0..500 {
                let base = random_tuple(&mut rng);
                let first = choose_backend(&base, &c);
                seen[first as usize] += 1;
                for _ in 0..50 {
                    let mut other = random_tuple(&mut rng);
                    other.client_addr = base.client_addr;
                    assert_eq!(
                        choose_backend(&other, &c),
                        first,
                        "client {:?} saw both versions at weight {weight}",
                        base.client_addr
                    );
                }
            }
            if (2500..=5000).contains(&weight) {
                assert!(
                    seen[0] > 0 && seen[1] > 0,
                    "affinity must still split clients"
                );
            }
        }
    }

    #[test]
    fn connection_affinity_spreads_one_client() {
        let mut rng = StdRng::seed_from_u64(17);
        let base = random_tuple(&mut rng);
        let c = cfg(5000, Affinity::Connection);
        let green = (1024u16..3024)
            .filter(|port| {
                let t = FlowTuple {
                    client_port: *port,
                    ..base
                };
                choose_backend(&t, &c) == Backend::Green
            })
            .count();
        assert!(
            (800..1200).contains(&green),
            "{green} of 2000 ports went green"
        );
    }
}
