//! The services in the maps: add, update, remove, read back; the port bitmap and the TCP
//! service ports follow them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use shifter_common::{
    Dispatch, MAP_REWRITE_PORTS, MAP_TCP_SERVICE_PORTS, MAX_SERVICES, PORT_BITMAP_BACKEND_BASE,
    PORT_BITMAP_SERVICE_BASE, PORT_BITMAP_SPECIFIC_BASE, PORT_BITMAP_WORDS, ServiceConfig,
    ServiceKey, tcp_port_entry,
};

use tracing::warn;

use super::{
    error::{Error, Result, map_err},
    load::DataPlane,
};
use crate::model::{Protocol, Service, addr_from_bytes};

impl DataPlane {
    /// Every configured service with its slot, read from the maps (so it includes services
    /// configured by an earlier process).
    pub fn services(&mut self) -> Result<BTreeMap<u32, Service>> {
        let mut entries = Vec::new();
        for item in self.services_map()?.iter() {
            entries.push(item.map_err(map_err(shifter_common::MAP_SERVICES))?);
        }
        let cfg = self.config_map()?;
        decode_services(entries, |slot| {
            cfg.get(&slot, 0)
                .map_err(map_err(shifter_common::MAP_SERVICE_CONFIG))
        })
    }

    /// Adds `svc`, or updates the configuration of the service with the same identity in
    /// one atomic word write. Returns its slot. On error nothing changes.
    pub fn set_service(&mut self, svc: &Service) -> Result<u32> {
        let mut svc = svc.clone();
        svc.config.dispatch = self.effective_dispatch(svc.config.dispatch);
        let slot = self.write_service(&svc)?;
        if svc.config.dispatch == Dispatch::Socket {
            // Listeners that were there before us; a failure leaves the service to the
            // listeners sock_ops remembers from now on (and to the next registration).
            if let Err(e) = self.register_listeners() {
                warn!("{svc}: registering existing listeners: {e}");
            }
        }
        Ok(slot)
    }

    fn write_service(&mut self, svc: &Service) -> Result<u32> {
        let invalid = |reason: String| Error::InvalidService {
            service: svc.to_string(),
            reason,
        };
        svc.config.validate().map_err(|e| invalid(e.to_string()))?;
        if svc.port == 0 {
            return Err(invalid("port 0 is not a service port".into()));
        }
        if svc.port == svc.config.blue_port || svc.port == svc.config.green_port {
            return Err(invalid(
                "the service port cannot also be a backend port".into(),
            ));
        }
        let current = self.services()?;
        let existing = current
            .iter()
            .find(|(_, s)| s.same_identity(svc))
            .map(|(slot, _)| *slot);
        for (slot, other) in &current {
            if Some(*slot) == existing {
                continue;
            }
            let backend_ports = [other.config.blue_port, other.config.green_port];
            if other.protocol == svc.protocol
                && other.port == svc.port
                && other.keys().iter().any(|k| svc.keys().contains(k))
            {
                return Err(invalid(format!("overlaps service {other}")));
            }
            if backend_ports.contains(&svc.port) {
                return Err(invalid(format!(
                    "port {} is a backend port of service {other}",
                    svc.port
                )));
            }
            if [svc.config.blue_port, svc.config.green_port].contains(&other.port) {
                return Err(invalid(format!(
                    "a backend port is the service port of {other}"
                )));
            }
            // Listeners are remembered by port: a backend port serves one socket service.
            if svc.config.dispatch == Dispatch::Socket
                && other.config.dispatch == Dispatch::Socket
                && backend_ports
                    .iter()
                    .any(|p| [svc.config.blue_port, svc.config.green_port].contains(p))
            {
                return Err(invalid(format!(
                    "socket dispatch: a backend port is also a backend port of {other}"
                )));
            }
        }
        if svc.config.dispatch == Dispatch::Socket {
            if svc.protocol != Protocol::Tcp {
                return Err(invalid("socket dispatch is for TCP services only".into()));
            }
            // The programs are in place before any word says "socket".
            self.ensure_socket_dispatch()?;
        }
        let word = svc.config.pack();
        // TC sees a rewrite service's port before its word says rewrite (sk_lookup lets go of
        // the port then); a socket service's port stays while it is marked (connections
        // accepted under rewrite keep their rewrite: the sweep unmarks it when they are gone).
        if svc.config.dispatch == Dispatch::Rewrite {
            self.set_rewrite_port(svc.port, true)?;
        }
        if let Some(slot) = existing {
            let old = current[&slot].config;
            self.write_config_word(slot, word)?;
            if old.blue_port != svc.config.blue_port || old.green_port != svc.config.green_port {
                self.sync_port_bitmap(&[
                    old.blue_port,
                    old.green_port,
                    svc.config.blue_port,
                    svc.config.green_port,
                ])?;
            }
            return Ok(slot);
        }
        let used: BTreeSet<u32> = current.keys().copied().collect();
        let Some(slot) = (0..MAX_SERVICES).find(|s| !used.contains(s)) else {
            self.refresh_rewrite_port(svc.port)?;
            return Err(Error::NoFreeSlot {
                service: svc.to_string(),
                max: MAX_SERVICES,
            });
        };
        // Order matters for packets in flight: the configuration exists before any key
        // points at it, and the ports are announced last.
        self.write_config_word(slot, word)?;
        let keys = svc.keys();
        let mut map = self.services_map()?;
        for (i, key) in keys.iter().enumerate() {
            if let Err(e) = map.insert(key, slot, 0) {
                for k in &keys[..i] {
                    let _ = map.remove(k);
                }
                let _ = self.write_config_word(slot, 0);
                let _ = self.refresh_rewrite_port(svc.port);
                return Err(map_err(shifter_common::MAP_SERVICES)(e));
            }
        }
        self.sync_port_bitmap(&[svc.port, svc.config.blue_port, svc.config.green_port])?;
        Ok(slot)
    }

    /// The configuration of the service in `slot` (`None`: no service there), read from its
    /// word alone.
    pub fn service_config(&mut self, slot: u32) -> Result<Option<ServiceConfig>> {
        if slot >= MAX_SERVICES {
            return Ok(None);
        }
        Ok(ServiceConfig::unpack(self.read_config_word(slot)?))
    }

    /// Changes only the weight (basis points) of the service in `slot`.
    pub fn set_weight(&mut self, slot: u32, weight: u16) -> Result<ServiceConfig> {
        // Only the weight bits change: no key, port or bitmap is touched, so one read and one
        // store of the slot's word do it (no walk of the service table: this is the rollback
        // path, where every microsecond counts).
        let unknown = || Error::UnknownService {
            service: format!("slot {slot}"),
        };
        let mut config = self.service_config(slot)?.ok_or_else(unknown)?;
        config.weight = weight;
        config.validate().map_err(|e| Error::InvalidService {
            service: format!("slot {slot}"),
            reason: e.to_string(),
        })?;
        self.write_config_word(slot, config.pack())?;
        Ok(config)
    }

    /// Removes the service with `svc`'s identity. Its flows are left to end on their own
    /// (packets of established connections are no longer rewritten).
    pub fn remove_service(&mut self, svc: &Service) -> Result<()> {
        let (slot, found) = self
            .services()?
            .into_iter()
            .find(|(_, s)| s.same_identity(svc))
            .ok_or_else(|| Error::UnknownService {
                service: svc.to_string(),
            })?;
        // Reverse order of `set_service`: stop announcing the ports first.
        let mut map = self.services_map()?;
        for key in found.keys() {
            map.remove(&key)
                .map_err(map_err(shifter_common::MAP_SERVICES))?;
        }
        self.sync_port_bitmap(&[found.port, found.config.blue_port, found.config.green_port])?;
        self.refresh_rewrite_port(found.port)?;
        self.write_config_word(slot, 0)?;
        // A later service in this slot must not inherit a dry run.
        self.clear_dry_weight(slot)?;
        Ok(())
    }

    /// Recomputes the port bitmap words holding `ports` (all three parts) from the services
    /// now configured and rewrites the ones that changed.
    fn sync_port_bitmap(&mut self, ports: &[u16]) -> Result<()> {
        let services = self.services()?;
        let words: BTreeSet<u32> = ports
            .iter()
            .flat_map(|p| {
                let w = u32::from(p >> 6);
                [
                    PORT_BITMAP_SERVICE_BASE + w,
                    PORT_BITMAP_BACKEND_BASE + w,
                    PORT_BITMAP_SPECIFIC_BASE + w,
                ]
            })
            .collect();
        let mut map = self.port_map()?;
        for index in words {
            let mut want = 0u64;
            for s in services.values() {
                let mark = |base: u32, port: u16| {
                    if base + u32::from(port >> 6) == index {
                        1u64 << (port & 63)
                    } else {
                        0
                    }
                };
                if !s.local_addrs.is_empty() {
                    want |= mark(PORT_BITMAP_SPECIFIC_BASE, s.port);
                }
                want |= mark(PORT_BITMAP_SERVICE_BASE, s.port)
                    | mark(PORT_BITMAP_BACKEND_BASE, s.config.blue_port)
                    | mark(PORT_BITMAP_BACKEND_BASE, s.config.green_port);
            }
            let have = map
                .get(&index, 0)
                .map_err(map_err(shifter_common::MAP_PORT_BITMAP))?;
            if have != want {
                map.set(index, want, 0)
                    .map_err(map_err(shifter_common::MAP_PORT_BITMAP))?;
            }
        }
        self.sync_tcp_service_ports(&services, ports)
    }

    /// Rewrites the `MAP_TCP_SERVICE_PORTS` entries of `ports` that differ from what
    /// `services` (all of them) say.
    fn sync_tcp_service_ports(
        &mut self,
        services: &BTreeMap<u32, Service>,
        ports: &[u16],
    ) -> Result<()> {
        let mut map = self.tcp_service_ports_map()?;
        for &port in ports {
            let want = tcp_port_entry(
                services
                    .iter()
                    .filter(|(_, s)| s.protocol == Protocol::Tcp && s.port == port)
                    .map(|(slot, s)| (*slot, !s.local_addrs.is_empty())),
            );
            let index = u32::from(port);
            let have = map.get(&index, 0).map_err(map_err(MAP_TCP_SERVICE_PORTS))?;
            if have != want {
                map.set(index, want, 0)
                    .map_err(map_err(MAP_TCP_SERVICE_PORTS))?;
            }
        }
        Ok(())
    }

    /// Fills `MAP_TCP_SERVICE_PORTS` from the services: for a map this load created next
    /// to services an earlier build configured.
    pub(crate) fn seed_tcp_service_ports(&mut self) -> Result<()> {
        let services = self.services()?;
        let ports: Vec<u16> = services.values().map(|s| s.port).collect();
        self.sync_tcp_service_ports(&services, &ports)
    }
}

impl DataPlane {
    /// The ports TC ingress handles (`MAP_REWRITE_PORTS`), ascending.
    pub fn rewrite_ports(&mut self) -> Result<Vec<u16>> {
        let map = self.rewrite_ports_map()?;
        let mut out = Vec::new();
        for w in 0..PORT_BITMAP_WORDS {
            let word = map.get(&w, 0).map_err(map_err(MAP_REWRITE_PORTS))?;
            out.extend(
                (0..64)
                    .filter(|b| word & (1 << b) != 0)
                    .map(|b| (w * 64 + b) as u16),
            );
        }
        Ok(out)
    }

    fn set_rewrite_port(&mut self, port: u16, on: bool) -> Result<()> {
        let mut map = self.rewrite_ports_map()?;
        let index = u32::from(port >> 6);
        let bit = 1u64 << (port & 63);
        let have = map.get(&index, 0).map_err(map_err(MAP_REWRITE_PORTS))?;
        let want = if on { have | bit } else { have & !bit };
        if want != have {
            map.set(index, want, 0)
                .map_err(map_err(MAP_REWRITE_PORTS))?;
        }
        Ok(())
    }

    /// Recomputes `port`'s mark from the services now configured: set for a rewrite service
    /// on it, kept while set for a socket service (still draining), cleared otherwise.
    fn refresh_rewrite_port(&mut self, port: u16) -> Result<()> {
        let services = self.services()?;
        let on_port = || services.values().filter(|s| s.port == port);
        let rewrite = on_port().any(|s| s.config.dispatch == Dispatch::Rewrite);
        let socket = on_port().any(|s| s.config.dispatch == Dispatch::Socket);
        let marked = self.rewrite_ports()?.contains(&port);
        self.set_rewrite_port(port, rewrite || (socket && marked))
    }

    /// Unmarks the ports of socket-dispatched services (no rewrite service on the same
    /// port) that no flow entry serves any more: `live` holds the service ports of the
    /// flows that remain. Called after each sweep.
    pub(crate) fn retire_drained_rewrite_ports(&mut self, live: &BTreeSet<u16>) -> Result<()> {
        let services = self.services()?;
        for port in self.rewrite_ports()? {
            let rewrite = services
                .values()
                .any(|s| s.port == port && s.config.dispatch == Dispatch::Rewrite);
            if !rewrite && !live.contains(&port) {
                self.set_rewrite_port(port, false)?;
            }
        }
        Ok(())
    }

    /// Marks every configured service's port: for a bitmap this load created next to
    /// adopted services (a build before it), whose live connections may be rewrite ones. The
    /// sweep unmarks the socket services' ports once their flows are gone.
    pub(crate) fn seed_rewrite_ports(&mut self) -> Result<()> {
        let ports: BTreeSet<u16> = self.services()?.values().map(|s| s.port).collect();
        for port in ports {
            self.set_rewrite_port(port, true)?;
        }
        Ok(())
    }
}

/// Services by slot from the entries of the `SHIFTER_SVC` map (key -> slot) and the
/// configuration word of a slot (`SHIFTER_CFG`); slots without a valid word are skipped.
pub(crate) fn decode_services(
    entries: Vec<(ServiceKey, u32)>,
    mut word_of: impl FnMut(u32) -> Result<u64>,
) -> Result<BTreeMap<u32, Service>> {
    let mut by_slot: BTreeMap<u32, Vec<ServiceKey>> = BTreeMap::new();
    for (key, slot) in entries {
        by_slot.entry(slot).or_default().push(key);
    }
    let mut out = BTreeMap::new();
    for (slot, keys) in by_slot {
        let word = word_of(slot)?;
        let Some(config) = ServiceConfig::unpack(word) else {
            continue;
        };
        let Some(protocol) = Protocol::from_number(keys[0].proto) else {
            continue;
        };
        let mut local_addrs: Vec<IpAddr> = keys
            .iter()
            .filter(|k| k.addr != [0; 16])
            .map(|k| addr_from_bytes(k.addr))
            .collect();
        local_addrs.sort();
        out.insert(
            slot,
            Service {
                protocol,
                port: keys[0].port,
                local_addrs,
                config,
            },
        );
    }
    Ok(out)
}
