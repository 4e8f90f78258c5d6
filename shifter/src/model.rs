//! The domain words every layer shares: [`Service`], [`Protocol`] and [`Weight`].
//!
//! Nothing here touches the kernel, a file or the network. [`Weight`] is the one place that
//! reads and writes a weight in percent (`"12.5"` <-> 1250 basis points).

use std::{fmt, net::IpAddr};

use shifter_common::{PROTO_TCP, PROTO_UDP, ServiceConfig, ServiceKey, v4_mapped};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => PROTO_TCP,
            Self::Udp => PROTO_UDP,
        }
    }
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            PROTO_TCP => Some(Self::Tcp),
            PROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// A service: packets to (`protocol`, `port`, one of `local_addrs` or any address when empty)
/// are steered by `config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub protocol: Protocol,
    pub port: u16,
    pub local_addrs: Vec<IpAddr>,
    pub config: ServiceConfig,
}

impl Service {
    /// A TCP service on `port` of every local address, connection affinity, green's weight
    /// `weight_bp` in basis points.
    pub fn tcp(port: u16, blue_port: u16, green_port: u16, weight_bp: u16) -> Self {
        Self {
            protocol: Protocol::Tcp,
            port,
            local_addrs: vec![],
            config: ServiceConfig {
                blue_port,
                green_port,
                weight: weight_bp,
                affinity: shifter_common::Affinity::Connection,
                dispatch: shifter_common::Dispatch::Rewrite,
            },
        }
    }

    /// The identity of a service: everything but its configuration word.
    pub fn same_identity(&self, other: &Self) -> bool {
        self.protocol == other.protocol
            && self.port == other.port
            && sorted(&self.local_addrs) == sorted(&other.local_addrs)
    }

    /// The keys of the `SHIFTER_SVC` map this service owns.
    pub fn keys(&self) -> Vec<ServiceKey> {
        let key = |addr| ServiceKey {
            addr,
            port: self.port,
            proto: self.protocol.number(),
            _pad: 0,
        };
        if self.local_addrs.is_empty() {
            vec![key([0; 16])]
        } else {
            self.local_addrs
                .iter()
                .map(|a| key(addr_bytes(*a)))
                .collect()
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)?;
        for a in &self.local_addrs {
            write!(f, "@{a}")?;
        }
        Ok(())
    }
}

fn sorted(v: &[IpAddr]) -> Vec<IpAddr> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// The 16-byte key form of an address (IPv4 mapped into IPv6).
pub fn addr_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address a 16-byte key form stands for.
pub fn addr_from_bytes(b: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(b);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Green's share of new connections in basis points, `0..=10000` (0.01 % steps).
///
/// The one reading of a percent: [`FromStr`](std::str::FromStr) takes the text an operator
/// types (`"12.5"`, at most two decimals), [`Weight::from_percent_f64`] and
/// [`Weight::from_percent_int`] take a number as TOML or JSON carry it, without printing it to
/// text first. [`Display`](fmt::Display) writes the percent with two decimals (`"12.50"`).
/// On the wire (serde) a weight is its number of basis points.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Weight(u16);

/// Why a percent is not a weight. The messages complete a sentence that starts with the value
/// (`"12.345 has more than two decimals"`), except [`WeightError::NotFinite`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WeightError {
    #[error("is negative (a weight is 0..=100 percent)")]
    Negative,
    #[error("is not a number (expected percent like 12.5)")]
    NotANumber,
    #[error("is not a finite number")]
    NotFinite,
    #[error("has more than two decimals")]
    TooPrecise,
    #[error("is outside 0..=100")]
    OutOfRange,
}

impl Weight {
    /// A weight of `bp` basis points.
    pub const fn from_bp(bp: u16) -> Result<Self, WeightError> {
        if bp > shifter_common::WEIGHT_MAX {
            Err(WeightError::OutOfRange)
        } else {
            Ok(Self(bp))
        }
    }

    /// The weight in basis points.
    pub const fn bp(self) -> u16 {
        self.0
    }

    /// A whole percent (`12` -> 12.00 %).
    pub fn from_percent_int(percent: i128) -> Result<Self, WeightError> {
        if percent < 0 {
            return Err(WeightError::Negative);
        }
        match u16::try_from(percent.saturating_mul(100)) {
            Ok(bp) => Self::from_bp(bp),
            Err(_) => Err(WeightError::OutOfRange),
        }
    }

    /// A percent as a binary floating-point number (`12.5`). It has at most two decimals when
    /// it is the double nearest to some `k / 100`: the test is done on the number, exactly
    /// (IEEE division is correctly rounded), not on its decimal text.
    pub fn from_percent_f64(percent: f64) -> Result<Self, WeightError> {
        if !percent.is_finite() {
            return Err(WeightError::NotFinite);
        }
        if percent.is_sign_negative() {
            return Err(WeightError::Negative);
        }
        // Far above 100 %: every such double prints as a whole number, out of range. (Below,
        // `percent * 100` is exact to well within 0.5, so the rounding finds `k`.)
        if percent >= 1e12 {
            return Err(WeightError::OutOfRange);
        }
        let hundredths = (percent * 100.0).round();
        if hundredths / 100.0 != percent {
            return Err(WeightError::TooPrecise);
        }
        if hundredths > f64::from(shifter_common::WEIGHT_MAX) {
            return Err(WeightError::OutOfRange);
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a whole number in 0..=10000, checked above"
        )]
        Ok(Self(hundredths as u16))
    }
}

impl std::str::FromStr for Weight {
    type Err = WeightError;

    /// Percent text with at most two decimals (`"12.5"`, `"0"`, `"100"`, `".5"`).
    fn from_str(text: &str) -> Result<Self, WeightError> {
        let t = text.trim();
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if t.starts_with('-') {
            return Err(WeightError::Negative);
        }
        if int.is_empty() && frac.is_empty() || !digits(int) || !digits(frac) {
            return Err(WeightError::NotANumber);
        }
        if frac.len() > 2 {
            return Err(WeightError::TooPrecise);
        }
        let int: u64 = if int.bytes().all(|b| b == b'0') {
            0
        } else {
            int.trim_start_matches('0')
                .parse::<u64>()
                .map_err(|_| WeightError::OutOfRange)?
        };
        let frac: u64 = format!("{frac:0<2}").parse().unwrap_or(0);
        let bp = int.saturating_mul(100).saturating_add(frac);
        u16::try_from(bp)
            .map_err(|_| WeightError::OutOfRange)
            .and_then(Self::from_bp)
    }
}

impl fmt::Display for Weight {
    /// Percent with two decimals: `1250` basis points -> `12.50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&percent(self.0))
    }
}

impl serde::Serialize for Weight {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Weight {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bp = u16::deserialize(d)?;
        Self::from_bp(bp).map_err(|_| {
            serde::de::Error::custom(format_args!(
                "{bp} basis points is outside 0..={}",
                shifter_common::WEIGHT_MAX
            ))
        })
    }
}

/// Basis points as percent with a sign (`1250` -> `12.50%`), for messages.
pub fn bp_text(bp: u16) -> String {
    format!("{}%", percent(bp))
}

/// Basis points as percent with two decimals (`1250` -> `12.50`).
pub fn percent(bp: u16) -> String {
    format!("{}.{:02}", bp / 100, bp % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<u16, WeightError> {
        t.parse::<Weight>().map(Weight::bp)
    }

    #[test]
    fn percent_text() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("100"), Ok(10_000));
        assert_eq!(parse("100.00"), Ok(10_000));
        assert_eq!(parse("12.5"), Ok(1250));
        assert_eq!(parse("0.01"), Ok(1));
        assert_eq!(parse(".5"), Ok(50));
        assert_eq!(parse("007"), Ok(700));
        assert_eq!(parse("12.345"), Err(WeightError::TooPrecise));
        assert_eq!(parse("100.01"), Err(WeightError::OutOfRange));
        assert_eq!(
            parse("99999999999999999999999"),
            Err(WeightError::OutOfRange)
        );
        assert_eq!(parse("-1"), Err(WeightError::Negative));
        for bad in ["abc", "", ".", "1e3"] {
            assert_eq!(parse(bad), Err(WeightError::NotANumber), "{bad:?}");
        }
        assert_eq!(
            WeightError::Negative.to_string(),
            "is negative (a weight is 0..=100 percent)"
        );
        assert_eq!(Weight(1250).to_string(), "12.50");
        assert_eq!(Weight(1).to_string(), "0.01");
        assert_eq!(percent(10_001), "100.01");
    }

    #[test]
    fn percent_numbers() {
        let f = |x: f64| Weight::from_percent_f64(x).map(Weight::bp);
        assert_eq!(f(12.5), Ok(1250));
        assert_eq!(f(0.01), Ok(1));
        assert_eq!(f(0.29), Ok(29));
        assert_eq!(f(100.0), Ok(10_000));
        assert_eq!(f(12.345), Err(WeightError::TooPrecise));
        assert_eq!(f(0.1 + 0.2), Err(WeightError::TooPrecise));
        assert_eq!(f(1e-7), Err(WeightError::TooPrecise));
        assert_eq!(f(100.01), Err(WeightError::OutOfRange));
        assert_eq!(f(100.001), Err(WeightError::TooPrecise));
        assert_eq!(f(1e300), Err(WeightError::OutOfRange));
        assert_eq!(f(-1.5), Err(WeightError::Negative));
        assert_eq!(f(-0.0), Err(WeightError::Negative));
        assert_eq!(f(f64::NAN), Err(WeightError::NotFinite));
        // Every two-decimal percent is read back exactly.
        for bp in 0..=10_000u16 {
            let text = Weight(bp).to_string();
            assert_eq!(f(text.parse().unwrap()), Ok(bp), "{text}");
        }
        let i = |x: i128| Weight::from_percent_int(x).map(Weight::bp);
        assert_eq!(i(0), Ok(0));
        assert_eq!(i(100), Ok(10_000));
        assert_eq!(i(101), Err(WeightError::OutOfRange));
        assert_eq!(i(i128::MAX), Err(WeightError::OutOfRange));
        assert_eq!(i(-1), Err(WeightError::Negative));
    }

    #[test]
    fn wire_form_is_basis_points() {
        assert_eq!(serde_json::to_string(&Weight(1250)).unwrap(), "1250");
        assert_eq!(
            serde_json::from_str::<Weight>("1250").unwrap(),
            Weight(1250)
        );
        assert!(serde_json::from_str::<Weight>("10001").is_err());
    }
}
