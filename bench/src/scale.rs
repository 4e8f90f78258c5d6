//! `scale`: flow-table memory per flow, memory with 64 services and a full 1M-entry table,
//! weight-change latency, and new connections with the flow table 90 % full.
//!
//! The daemon does not exist yet: "daemon" memory is this process (the library with the
//! data plane loaded, 64 services set and the table filled), and a weight change is timed
//! from the library call (`DataPlane::set_weight`) to its return (the map is written then).

use std::{
    net::{Ipv4Addr, SocketAddr},
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    time::Instant,
};

use anyhow::Context as _;
use aya::maps::{HashMap, Map, MapData};
use serde_json::{Value, json};
use shifter::{Affinity, Hook, Protocol, Service, ServiceConfig};
use shifter_common::{FlowKey, FlowValue, MAP_FLOWS, PROG_TC_INGRESS, PROTO_TCP, v4_mapped};

use crate::{
    env::{self, Pair, Plane, SERVER_IF},
    load::{self, Backends},
    pkt::{self, TCP_SYN, Tuple},
    report::{self, Table, f},
    sys,
};

pub struct Opts {
    pub capacity: u32,
    pub fill: u32,
    pub weight_changes: usize,
    pub rounds: usize,
    pub conn_secs: f64,
    pub prog_runs: usize,
}

impl Opts {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                capacity: 1 << 20,
                fill: 50_000,
                weight_changes: 200,
                rounds: 1,
                conn_secs: 0.4,
                prog_runs: 3_000,
            }
        } else {
            Self {
                capacity: 1 << 20,
                fill: 1 << 20,
                weight_changes: 1000,
                rounds: 3,
                conn_secs: 3.0,
                prog_runs: 50_000,
            }
        }
    }
}

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn open_flows(pin_dir: &Path) -> anyhow::Result<HashMap<MapData, FlowKey, FlowValue>> {
    let m = MapData::from_pin(pin_dir.join(MAP_FLOWS)).context("open the pinned flow map")?;
    Ok(HashMap::try_from(Map::from_map_data(m)?)?)
}

/// A flow key of a fake client number `i` (198.19.0.0/16 x ports), never one of the test
/// clients.
fn fake_key(i: u32, backend_port: u16) -> FlowKey {
    let a = Ipv4Addr::new(198, 19, (i >> 24) as u8 ^ (i >> 8) as u8, i as u8);
    FlowKey {
        client_addr: v4_mapped(a.octets()),
        local_addr: v4_mapped(SERVER.octets()),
        client_port: 1024 + ((i >> 16) as u16 & 0x3fff),
        backend_port,
        proto: PROTO_TCP,
        _pad: [0; 3],
    }
}

/// Inserts `n` distinct fake flows.
fn fill(
    map: &mut HashMap<MapData, FlowKey, FlowValue>,
    n: u32,
    backend_port: u16,
) -> anyhow::Result<()> {
    let v = FlowValue {
        service_port: 80,
        ..Default::default()
    };
    for i in 0..n {
        map.insert(fake_key(i, backend_port), v, 0)
            .with_context(|| format!("insert flow {i}"))?;
    }
    Ok(())
}

fn clear(map: &mut HashMap<MapData, FlowKey, FlowValue>) {
    let keys: Vec<FlowKey> = map.keys().filter_map(Result::ok).collect();
    for k in keys {
        let _ = map.remove(&k);
    }
}

fn memlock_of(pin: &Path) -> anyhow::Result<(u64, u64)> {
    let m = MapData::from_pin(pin).with_context(|| format!("open {}", pin.display()))?;
    let fd = m.fd().as_fd().as_raw_fd();
    Ok((
        sys::fdinfo_field(fd, "memlock")?,
        sys::fdinfo_field(fd, "max_entries")?,
    ))
}

pub fn run(opts: &Opts) -> anyhow::Result<Value> {
    env::require_root()?;
    let mut table = Table::new("bench scale", &["measure", "value", "note"]);
    let mut out = serde_json::Map::new();

    // Memory: maps and process.
    let rss0 = sys::self_rss_bytes()?;
    let mut plane = Plane::load("scale", Some(opts.capacity))?;
    let rss_loaded = sys::self_rss_bytes()?;
    let mut maps = serde_json::Map::new();
    let mut kernel_total = 0;
    for e in std::fs::read_dir(&plane.pin_dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("SHIFTER_") {
            continue;
        }
        let (memlock, entries) = memlock_of(&e.path())?;
        kernel_total += memlock;
        maps.insert(
            name,
            json!({ "memlock_bytes": memlock, "max_entries": entries }),
        );
    }
    let (flows_mem, flows_n) = memlock_of(&plane.pin_dir.join(MAP_FLOWS))?;
    let (socks_mem, _) = memlock_of(&plane.pin_dir.join(shifter_common::MAP_SOCKETS))?;
    let per_flow = flows_mem as f64 / flows_n as f64;
    let per_flow_both = (flows_mem + socks_mem) as f64 / flows_n as f64;
    table.row(vec![
        "flow table bytes per flow".into(),
        f(per_flow, 1),
        format!(
            "memlock {} MiB / {flows_n} entries (LRU hash, preallocated)",
            flows_mem >> 20
        ),
    ]);
    table.row(vec![
        "  + socket map, per flow".into(),
        f(per_flow_both, 1),
        "SHIFTER_SOCKS is sized like the flow table".into(),
    ]);
    table.row(vec![
        "kernel memory of all maps".into(),
        format!("{} MiB", kernel_total >> 20),
        format!("capacity {}", opts.capacity),
    ]);

    for i in 0..64u16 {
        plane
            .dp()
            .set_service(&Service {
                protocol: Protocol::Tcp,
                port: 10_000 + i,
                local_addrs: vec![],
                config: ServiceConfig {
                    blue_port: 20_000 + 2 * i,
                    green_port: 20_001 + 2 * i,
                    weight: 5000,
                    affinity: Affinity::Connection,
                },
            })
            .context("set service")?;
    }
    let mut flows = open_flows(&plane.pin_dir)?;
    let t = Instant::now();
    fill(&mut flows, opts.fill, 20_000)?;
    let fill_secs = t.elapsed().as_secs_f64();
    let rss_full = sys::self_rss_bytes()?;
    table.row(vec![
        "process RSS: before load / loaded / 64 svc + filled".into(),
        format!(
            "{:.1} / {:.1} / {:.1} MiB",
            rss0 as f64 / 1_048_576.0,
            rss_loaded as f64 / 1_048_576.0,
            rss_full as f64 / 1_048_576.0
        ),
        format!(
            "library process, not the daemon (none yet); {} flows filled in {fill_secs:.1} s",
            opts.fill
        ),
    ]);

    // Weight changes through the library.
    let slots: Vec<u32> = plane.dp().services()?.keys().copied().collect();
    let slot = slots[0];
    let mut lat = Vec::with_capacity(opts.weight_changes);
    for i in 0..opts.weight_changes {
        let w = if i % 2 == 0 { 2500 } else { 7500 };
        let t = Instant::now();
        plane.dp().set_weight(slot, w).context("set_weight")?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    table.row(vec![
        "set_weight p50 / p99 (us)".into(),
        format!(
            "{} / {}",
            f(report::median(&lat), 0),
            f(report::percentile(&lat, 99.0), 0)
        ),
        format!(
            "{} changes, 64 services configured, library call to map",
            opts.weight_changes
        ),
    ]);
    out.insert(
        "memory".into(),
        json!({
            "flow_capacity": opts.capacity,
            "flow_bytes_per_flow": per_flow,
            "flow_and_socket_bytes_per_flow": per_flow_both,
            "maps": maps,
            "kernel_map_bytes_total": kernel_total,
            "rss_before_load_bytes": rss0,
            "rss_loaded_bytes": rss_loaded,
            "rss_64_services_filled_bytes": rss_full,
            "filled_flows": opts.fill,
            "fill_secs": fill_secs,
            "note": "RSS of the library process (no daemon yet); map memory is kernel memory, not in RSS",
        }),
    );
    out.insert(
        "weight_change".into(),
        json!({
            "changes": opts.weight_changes,
            "p50_us": report::median(&lat),
            "p99_us": report::percentile(&lat, 99.0),
            "max_us": report::max(&lat),
            "services": 64,
            "note": "DataPlane::set_weight call to return (map written); no daemon/CLI yet",
        }),
    );
    clear(&mut flows);
    drop(flows);
    drop(plane);

    let full = nearly_full(opts, &mut table)?;
    out.insert("table_90pct_full".into(), full);
    print!("{}", table.render());
    let mut v = json!({
        "suite": "scale",
        "environment": report::environment(),
    });
    if let Some(o) = v.as_object_mut() {
        o.extend(out);
    }
    Ok(v)
}

/// New connections (end to end, shifter tc) and the new-flow program path with the flow
/// table empty and 90 % full (fake flows).
fn nearly_full(opts: &Opts, table: &mut Table) -> anyhow::Result<Value> {
    let pair = Pair::new("scl")?;
    let backends = Backends::start(&pair.server.name, &[8081, 8082], 8)?;
    let capacity = 1u32 << 18;
    let mut plane = Plane::load("scale-e2e", Some(capacity))?;
    plane.dp().set_service(&Service {
        protocol: Protocol::Tcp,
        port: 80,
        local_addrs: vec![],
        config: ServiceConfig {
            blue_port: 8081,
            green_port: 8082,
            weight: 5000,
            affinity: Affinity::Connection,
        },
    })?;
    let mut flows = open_flows(&plane.pin_dir)?;
    let prefill = capacity / 10 * 9;
    let target = SocketAddr::from((SERVER, 80));
    let client = pair.client.name.clone();
    plane.attach(&pair.server.name, SERVER_IF, Hook::Tc)?;
    load::wait_ready(&client, target, "shifter tc")?;
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..opts.rounds {
        for (k, pre) in [0, prefill].into_iter().enumerate() {
            clear(&mut flows);
            fill(&mut flows, pre, 8081)?;
            eprintln!("bench scale: round {} table {pre} / {capacity}", round + 1);
            let r = load::conn_rate(&client, target, 4, opts.conn_secs)?;
            rates[k].push(r.ok as f64 / r.elapsed.as_secs_f64());
        }
    }
    plane.detach()?;
    drop(backends);

    // Program path: distinct SYNs through TEST_RUN, table empty vs 90 % full.
    let fd = plane.prog_fd(PROG_TC_INGRESS)?;
    let mut prog_ns = [0.0; 2];
    for (k, pre) in [0, prefill].into_iter().enumerate() {
        clear(&mut flows);
        fill(&mut flows, pre, 8081)?;
        let mut d = Vec::with_capacity(opts.prog_runs);
        for i in 0..opts.prog_runs {
            let p = pkt::tcp(
                Tuple {
                    src: Ipv4Addr::new(198, 18, 64 + (i / 60_000) as u8, (i % 250) as u8 + 1),
                    dst: SERVER,
                    sport: 1024 + (i / 250 % 240) as u16 * 250 + (i % 250) as u16,
                    dport: 80,
                },
                TCP_SYN,
                i as u32,
            );
            d.push(f64::from(sys::test_run(fd, &p, None, 1)?.duration_ns));
        }
        prog_ns[k] = report::median(&d);
    }
    clear(&mut flows);
    drop(flows);
    drop(plane);

    let (e, fl) = (report::median(&rates[0]), report::median(&rates[1]));
    table.row(vec![
        "new conn/s, table empty / 90 % full".into(),
        format!("{} / {} ({:.2}x)", f(e, 0), f(fl, 0), fl / e),
        format!("shifter tc, capacity {capacity}, {} rounds", opts.rounds),
    ]);
    table.row(vec![
        "new-flow TEST_RUN ns, empty / 90 % full".into(),
        format!("{} / {}", f(prog_ns[0], 0), f(prog_ns[1], 0)),
        "median of single runs, distinct SYNs".into(),
    ]);
    Ok(json!({
        "capacity": capacity,
        "prefilled": prefill,
        "conn_per_s_empty": report::summary(&rates[0]),
        "conn_per_s_90pct": report::summary(&rates[1]),
        "ratio": fl / e,
        "new_flow_prog_ns_empty": prog_ns[0],
        "new_flow_prog_ns_90pct": prog_ns[1],
    }))
}
