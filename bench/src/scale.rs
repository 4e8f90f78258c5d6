//! `scale`: flow-table memory per flow, memory with 64 services and a full 1M-entry table,
//! weight-change latency, and new connections with the flow table 90 % full.
//!
//! Memory and weight changes are measured on the real daemon (`shifter daemon`, see
//! [`crate::daemon`]): its RSS with 64 services and the table filled, and a weight change
//! from the CLI (and from one API request) to the map. The library figures beside them (this
//! process with the data plane loaded, `DataPlane::set_weight`) show what the daemon adds.

use std::{
    net::{Ipv4Addr, SocketAddr},
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    time::Instant,
};

use anyhow::{Context as _, bail};
use aya::maps::{HashMap, Map, MapData};
use serde_json::{Value, json};
use shifter::{Hook, Service, dataplane::cfgword::ConfigWords};
use shifter_common::{FlowKey, FlowValue, MAP_FLOWS, PROG_TC_INGRESS, PROTO_TCP, v4_mapped};

use crate::{
    daemon::{self, Daemon},
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

/// Inserts `n` distinct fake flows of the service in `slot` (port `service_port`), on its
/// backend port `backend_port`, seen now (so no idle sweep removes them).
fn fill(
    map: &mut HashMap<MapData, FlowKey, FlowValue>,
    n: u32,
    (slot, service_port, backend_port): (u16, u16, u16),
) -> anyhow::Result<()> {
    let v = FlowValue {
        service_port,
        slot,
        last_seen_ns: shifter::dataplane::flow_clock_ns(),
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
            .set_service(&Service::tcp(
                10_000 + i,
                20_000 + 2 * i,
                20_001 + 2 * i,
                5000,
            ))
            .context("set service")?;
    }
    let mut flows = open_flows(&plane.pin_dir)?;
    let t = Instant::now();
    fill(&mut flows, opts.fill, (0, 10_000, 20_000))?;
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
            "this process with the library; {} flows filled in {fill_secs:.1} s",
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
            f(report::median(&lat), 2),
            f(report::percentile(&lat, 99.0), 2)
        ),
        format!(
            "{} changes, 64 services, library call to map (no daemon)",
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
            "note": "RSS of the benchmark process with the library; map memory is kernel memory, not in RSS",
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
            "note": "DataPlane::set_weight call to return (map written), in this process",
        }),
    );
    clear(&mut flows);
    drop(flows);
    drop(plane);

    out.insert("daemon".into(), daemon_scale(opts, &mut table)?);

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

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1_048_576.0)
}

fn p50_p99(lat: &[f64]) -> String {
    format!(
        "{} / {}",
        f(report::median(lat), 0),
        f(report::percentile(lat, 99.0), 0)
    )
}

/// Microseconds from the start of a weight change to the kernel's word changing and to the
/// reply.
#[derive(Default)]
struct Timings {
    to_map: Vec<f64>,
    to_reply: Vec<f64>,
}

impl Timings {
    fn push(&mut self, (to_map, to_reply): (f64, f64)) {
        self.to_map.push(to_map);
        self.to_reply.push(to_reply);
    }

    fn json(&self) -> Value {
        let stats = |v: &[f64]| {
            json!({
                "p50_us": report::median(v),
                "p99_us": report::percentile(v, 99.0),
                "max_us": report::max(v),
            })
        };
        json!({
            "changes": self.to_map.len(),
            "to_map": stats(&self.to_map),
            "to_reply": stats(&self.to_reply),
        })
    }
}

/// Runs `change` on another thread while this one watches the configuration word of `slot`;
/// returns the microseconds to the word changing and to `change` returning.
fn timed_change(
    words: &ConfigWords,
    slot: u32,
    change: impl FnOnce() -> anyhow::Result<()> + Send,
) -> anyhow::Result<(f64, f64)> {
    let before = words.load(slot);
    std::thread::scope(|s| {
        let t = Instant::now();
        let h = s.spawn(change);
        let mut to_map = None;
        while !h.is_finished() {
            if words.load(slot) != before {
                to_map = Some(t.elapsed());
                break;
            }
            // Two cores: leave the daemon and the CLI room to run.
            std::thread::yield_now();
        }
        let done = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let to_reply = t.elapsed();
        done?;
        // The write may land just before the change returns, between two looks.
        let to_map = match to_map {
            Some(d) => d,
            None if words.load(slot) != before => to_reply,
            None => bail!("the weight change returned but the kernel word did not change"),
        };
        Ok((to_map.as_secs_f64() * 1e6, to_reply.as_secs_f64() * 1e6))
    })
}

/// The real daemon: RSS with 64 services and the flow table filled, and weight changes
/// from the CLI and from the API to the map.
fn daemon_scale(opts: &Opts, table: &mut Table) -> anyhow::Result<Value> {
    let d = Daemon::start(opts.capacity)?;
    let status: Value = serde_json::from_str(&d.cli(&["status", "--json"])?)?;
    let s0 = status["services"]
        .as_array()
        .and_then(|v| v.iter().find(|s| s["name"] == "s0"))
        .context("the daemon's status lists no service s0")?;
    let slot = s0["slot"].as_u64().context("s0 has no slot")? as u32;
    let (port, blue, _) = daemon::ports(0);
    let (rss_started, _) = d.memory()?;

    let mut flows = open_flows(&d.pin_dir)?;
    let t = Instant::now();
    fill(&mut flows, opts.fill, (slot as u16, port, blue))?;
    let fill_secs = t.elapsed().as_secs_f64();
    drop(flows);
    let (rss_filled, _) = d.memory()?;
    // `status` counts every service's active flows: a walk of the whole table.
    let t = Instant::now();
    let status: Value = serde_json::from_str(&d.cli(&["status", "--json"])?)?;
    let status_ms = t.elapsed().as_secs_f64() * 1e3;
    let counted = status["services"]
        .as_array()
        .and_then(|v| v.iter().find(|s| s["name"] == "s0"))
        .and_then(|s| s["blue"]["active_flows"].as_u64())
        .unwrap_or(0);
    if counted != u64::from(opts.fill) {
        bail!(
            "the daemon counts {counted} active flows of s0, {} were filled",
            opts.fill
        );
    }
    let (rss_after_status, hwm) = d.memory()?;
    table.row(vec![
        "daemon RSS: started / table filled / after status (MiB)".into(),
        format!(
            "{} / {} / {}",
            mib(rss_started),
            mib(rss_filled),
            mib(rss_after_status)
        ),
        format!(
            "shifter daemon, {} services, {} flows; peak {} MiB; status took {status_ms:.0} ms",
            daemon::SERVICES,
            opts.fill,
            mib(hwm)
        ),
    ]);

    // Each change is timed twice: until the configuration word in the kernel holds the new
    // weight (watched through the mmapped array from this thread), and until the reply.
    let words = ConfigWords::open(&d.pin_dir).context("map the configuration array")?;
    let percent = |i: usize| if i.is_multiple_of(2) { "25" } else { "75" };
    let mut cli = Timings::default();
    for i in 0..opts.weight_changes {
        cli.push(timed_change(&words, slot, || {
            d.cli(&["set-weight", "s0", percent(i)]).map(drop)
        })?);
    }
    let mut api = Timings::default();
    for i in 0..opts.weight_changes {
        // Continues the alternation: every request changes the weight.
        let body = format!("{{\"percent\": {}}}", percent(opts.weight_changes + i));
        api.push(timed_change(&words, slot, || {
            daemon::api_request(&d.socket, "PUT", "/v1/services/s0/weight", &body).map(drop)
        })?);
    }
    let last = percent(2 * opts.weight_changes - 1).parse::<u16>()? * 100;
    if d.map_weight(slot)? != last {
        bail!(
            "after the changes the map holds weight {}, not {last}",
            d.map_weight(slot)?
        );
    }
    let n = opts.weight_changes;
    table.row(vec![
        "weight change via CLI: to map, p50 / p99 (us)".into(),
        p50_p99(&cli.to_map),
        format!("`shifter set-weight` process start to the kernel word changed, {n} changes"),
    ]);
    table.row(vec![
        "  ... to the CLI's exit, p50 / p99 (us)".into(),
        p50_p99(&cli.to_reply),
        "the daemon replies after persisting the state (fsync)".into(),
    ]);
    table.row(vec![
        "weight change via API: to map, p50 / p99 (us)".into(),
        p50_p99(&api.to_map),
        "one HTTP PUT on the Unix socket (new connection each) to the word changed".into(),
    ]);
    table.row(vec![
        "  ... to the reply, p50 / p99 (us)".into(),
        p50_p99(&api.to_reply),
        String::new(),
    ]);
    Ok(json!({
        "services": daemon::SERVICES,
        "filled_flows": opts.fill,
        "fill_secs": fill_secs,
        "rss_started_bytes": rss_started,
        "rss_filled_bytes": rss_filled,
        "rss_after_status_bytes": rss_after_status,
        "rss_peak_bytes": hwm,
        "status_ms": status_ms,
        "weight_change_cli": cli.json(),
        "weight_change_api": api.json(),
        "note": "shifter daemon in the host namespace, no interface attached; RSS from /proc/<pid>/status",
    }))
}

/// New connections (end to end, shifter tc) and the new-flow program path with the flow
/// table empty and 90 % full (fake flows).
fn nearly_full(opts: &Opts, table: &mut Table) -> anyhow::Result<Value> {
    let pair = Pair::new("scl")?;
    let backends = Backends::start(&pair.server.name, &[8081, 8082], 8)?;
    let capacity = 1u32 << 18;
    let mut plane = Plane::load("scale-e2e", Some(capacity))?;
    plane
        .dp()
        .set_service(&Service::tcp(80, 8081, 8082, 5000))?;
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
            fill(&mut flows, pre, (0, 80, 8081))?;
            eprintln!("bench scale: round {} table {pre} / {capacity}", round + 1);
            let r = load::conn_rate(&client, &[target], 4, opts.conn_secs)?;
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
        fill(&mut flows, pre, (0, 80, 8081))?;
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
