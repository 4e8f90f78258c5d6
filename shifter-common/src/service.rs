//! A service's configuration: the backends, the weight and the configuration word.
//!
//! A service's whole configuration (blue port, green port, weight, flags) is packed into one
//! aligned 64-bit word. The kernel program reads it with a single 8-byte load, so a packet
//! always sees either the old or the new configuration, never a mix (docs/ARCHITECTURE.md,
//! invariant 4).

/// Weights are basis points: 10000 means every new flow goes to green.
pub const WEIGHT_MAX: u16 = 10_000;

/// Which version serves a flow. The discriminant is the counter index within a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Backend {
    Blue = 0,
    Green = 1,
}

impl Backend {
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Self {
        if v == 1 { Self::Green } else { Self::Blue }
    }
}

/// How the decision key is built for a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Affinity {
    /// Each connection (5-tuple) is decided on its own.
    Connection,
    /// Every connection of one client address goes to the same version.
    Client,
}

/// How new connections of a service reach the chosen backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// TC/XDP rewrites the destination port of every packet (and egress the source port of
    /// every reply), with a flow table. Works for TCP and UDP.
    Rewrite,
    /// TCP only: the sk_lookup program hands each new connection to blue's or green's
    /// listening socket. Established connections never meet a shifter program again.
    Socket,
}

const FLAG_ENABLED: u16 = 1 << 0;
const FLAG_CLIENT_AFFINITY: u16 = 1 << 1;
/// A word without this bit (every word an older build wrote) is rewrite dispatch.
const FLAG_SOCKET_DISPATCH: u16 = 1 << 2;

/// Unpacked view of the configuration word. Ports are in host byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    pub blue_port: u16,
    pub green_port: u16,
    /// Green's share of new flows in basis points, `0..=10000`.
    pub weight: u16,
    pub affinity: Affinity,
    pub dispatch: Dispatch,
}

/// Why a configuration cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    WeightOutOfRange(u16),
    ZeroPort,
    SameBlueAndGreen(u16),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::WeightOutOfRange(w) => {
                write!(f, "weight {w} basis points is outside 0..={WEIGHT_MAX}")
            }
            Self::ZeroPort => f.write_str("port 0 is not a valid backend port"),
            Self::SameBlueAndGreen(p) => write!(f, "blue and green are both port {p}"),
        }
    }
}

impl ServiceConfig {
    /// Checks the invariants the kernel program relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.weight > WEIGHT_MAX {
            return Err(ConfigError::WeightOutOfRange(self.weight));
        }
        if self.blue_port == 0 || self.green_port == 0 {
            return Err(ConfigError::ZeroPort);
        }
        if self.blue_port == self.green_port {
            return Err(ConfigError::SameBlueAndGreen(self.blue_port));
        }
        Ok(())
    }

    /// Packs the configuration into the word stored in the `SERVICE_CONFIG` map.
    pub const fn pack(&self) -> u64 {
        let mut flags = FLAG_ENABLED;
        if matches!(self.affinity, Affinity::Client) {
            flags |= FLAG_CLIENT_AFFINITY;
        }
        if matches!(self.dispatch, Dispatch::Socket) {
            flags |= FLAG_SOCKET_DISPATCH;
        }
        (self.blue_port as u64)
            | ((self.green_port as u64) << 16)
            | ((self.weight as u64) << 32)
            | ((flags as u64) << 48)
    }

    /// Unpacks a configuration word; `None` for an empty (disabled) slot.
    #[inline(always)]
    pub const fn unpack(word: u64) -> Option<Self> {
        let flags = (word >> 48) as u16;
        if flags & FLAG_ENABLED == 0 {
            return None;
        }
        Some(Self {
            blue_port: word as u16,
            green_port: (word >> 16) as u16,
            weight: (word >> 32) as u16,
            affinity: if flags & FLAG_CLIENT_AFFINITY != 0 {
                Affinity::Client
            } else {
                Affinity::Connection
            },
            dispatch: if flags & FLAG_SOCKET_DISPATCH != 0 {
                Dispatch::Socket
            } else {
                Dispatch::Rewrite
            },
        })
    }

    /// The backend port for a backend choice.
    #[inline(always)]
    pub const fn port_of(&self, backend: Backend) -> u16 {
        match backend {
            Backend::Blue => self.blue_port,
            Backend::Green => self.green_port,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips() {
        let cfg = ServiceConfig {
            blue_port: 8081,
            green_port: 65535,
            weight: 10000,
            affinity: Affinity::Client,
            dispatch: Dispatch::Socket,
        };
        assert_eq!(ServiceConfig::unpack(cfg.pack()), Some(cfg));
        let cfg = ServiceConfig {
            affinity: Affinity::Connection,
            dispatch: Dispatch::Rewrite,
            weight: 0,
            ..cfg
        };
        assert_eq!(ServiceConfig::unpack(cfg.pack()), Some(cfg));
    }

    #[test]
    fn empty_slot_is_disabled() {
        assert_eq!(ServiceConfig::unpack(0), None);
    }

    #[test]
    fn validate_rejects_bad_values() {
        let good = ServiceConfig {
            blue_port: 1,
            green_port: 2,
            weight: 5000,
            affinity: Affinity::Connection,
            dispatch: Dispatch::Rewrite,
        };
        assert_eq!(good.validate(), Ok(()));
        assert_eq!(
            ServiceConfig {
                weight: 10001,
                ..good
            }
            .validate(),
            Err(ConfigError::WeightOutOfRange(10001))
        );
        assert_eq!(
            ServiceConfig {
                green_port: 1,
                ..good
            }
            .validate(),
            Err(ConfigError::SameBlueAndGreen(1))
        );
        assert_eq!(
            ServiceConfig {
                blue_port: 0,
                ..good
            }
            .validate(),
            Err(ConfigError::ZeroPort)
        );
    }
}
