//! `prog`: cost per packet of each program path through BPF_PROG_TEST_RUN.
//!
//! Method. The kernel's test run executes a program `repeat` times on ONE packet buffer, so a
//! program that rewrites the packet (every service path does) sees its own output from the
//! second repetition on: a rewritten `dport` is a backend port, i.e. the non-service path.
//! A large repeat count therefore only measures paths that do not write. Every path is
//! measured the same way instead: many test runs with `repeat = 1` on a fresh copy of the
//! packet, taking the kernel's own duration of each (it times the program run plus one clock
//! read, not the syscall), and the median over all runs. The no-op baseline is measured the
//! same way, so the timer overhead cancels in the difference. For the paths that do not
//! write (no-op, non-service, first-check reject), `repeat = N` averages are shown as a
//! cross-check.
//!
//! Baseline: a real no-op program of the same type (`r0 = verdict; exit`, loaded with a raw
//! BPF_PROG_LOAD), plus our own program given a 14-byte frame with an unknown ethertype (its
//! entry cost: context setup and the first bounds check).
//!
//! Over 700 lines: every program path of the benchmark with its frames and its baseline program, so
//! one run measures them side by side.

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, OwnedFd},
};

use anyhow::{Context as _, bail, ensure};
use aya::maps::{HashMap, Map, MapData};
use serde_json::{Value, json};
use shifter::{Affinity, Protocol, Service, ServiceConfig};
use shifter_common::{
    Backend, FlowKey, FlowTuple, FlowValue, MAP_FLOWS, PROG_SK_LOOKUP, PROG_TC_EGRESS,
    PROG_TC_INGRESS, PROG_XDP_INGRESS, PROTO_TCP, choose_backend, v4_mapped,
};

use crate::{
    env::{self, Netns, Plane},
    pkt::{self, TCP_ACK, TCP_SYN, Tuple},
    report::{self, Table, f},
    sys::{self, BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_SK_LOOKUP, BPF_PROG_TYPE_XDP},
};

pub struct Opts {
    /// Test runs (repeat = 1) per path.
    pub runs: usize,
    /// Repeat count of the cross-check runs.
    pub repeat: u32,
}

impl Opts {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                runs: 3_000,
                repeat: 100_000,
            }
        } else {
            Self {
                runs: 100_000,
                repeat: 5_000_000,
            }
        }
    }
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SERVICE_PORT: u16 = 80;
const BLUE_PORT: u16 = 8081;
const GREEN_PORT: u16 = 8082;
const OTHER_PORT: u16 = 9000;
const WARMUP: usize = 500;

const TC_PASS: u32 = 0xffff_ffff; // TC_ACT_UNSPEC
const XDP_PASS: u32 = 2;

fn service_config() -> ServiceConfig {
    ServiceConfig {
        blue_port: BLUE_PORT,
        green_port: GREEN_PORT,
        weight: 5000,
        affinity: Affinity::Connection,
        dispatch: shifter_common::Dispatch::Rewrite,
    }
}

fn backend_of(src: Ipv4Addr, sport: u16) -> Backend {
    let t = FlowTuple {
        proto: PROTO_TCP,
        client_addr: v4_mapped(src.octets()),
        client_port: sport,
        local_addr: v4_mapped(LOCAL.octets()),
        service_port: SERVICE_PORT,
    };
    choose_backend(&t, &service_config())
}

/// A client port (>= `from`) whose flow the decision sends to `want`.
fn port_for(want: Backend, from: u16) -> u16 {
    (from..u16::MAX)
        .find(|p| backend_of(CLIENT, *p) == want)
        .expect("some port goes to each backend at weight 50 %")
}

fn flow_key(client_port: u16, backend_port: u16) -> FlowKey {
    FlowKey {
        client_addr: v4_mapped(CLIENT.octets()),
        local_addr: v4_mapped(LOCAL.octets()),
        client_port,
        backend_port,
        proto: PROTO_TCP,
        _pad: [0; 3],
    }
}

/// Durations (ns) of `n` single test runs, after a warm-up. `packet(i)` gives run `i`'s
/// input (warm-up runs get negative-free indices past `n`); `before(i)` runs untimed before
/// each run.
fn sample(
    fd: i32,
    n: usize,
    mut packet: impl FnMut(usize) -> Vec<u8>,
    mut before: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let idx = if i < WARMUP { n + i } else { i - WARMUP };
        before(idx)?;
        let p = packet(idx);
        let r = sys::test_run(fd, &p, None, 1)?;
        if i >= WARMUP {
            out.push(f64::from(r.duration_ns));
        }
    }
    Ok(out)
}

/// Mean of the samples between the 5th and 95th percentile: robust to interrupts, and finer
/// than the median (the kernel's per-run durations come in steps of about 10 ns here).
fn trimmed_mean(v: &[f64]) -> f64 {
    let (lo, hi) = (report::percentile(v, 5.0), report::percentile(v, 95.0));
    let kept: Vec<f64> = v.iter().copied().filter(|x| *x >= lo && *x <= hi).collect();
    kept.iter().sum::<f64>() / kept.len().max(1) as f64
}

/// Runs `fd` once on `p` and returns (verdict, output frame).
fn once(fd: i32, p: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; p.len() + 256];
    let r = sys::test_run(fd, p, Some(&mut out), 1)?;
    out.truncate(p.len());
    Ok((r.retval, out))
}

struct Row {
    hook: &'static str,
    path: &'static str,
    samples: Vec<f64>,
    /// Average of one `repeat = N` run, where the path does not write the packet.
    repeat_avg: Option<f64>,
    /// `(goal in ns over the no-op)`.
    goal: Option<f64>,
}

/// An established TCP connection inside the namespace: its client port and both ends.
struct Conn {
    client_port: u16,
    _client: TcpStream,
    _server: TcpStream,
}

fn connect(listener: &TcpListener, port: u16, client_port: u16) -> anyhow::Result<Conn> {
    // Bind the client end to a chosen port (std cannot bind before connect).
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fd we own.
    let owned: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    let sa = |ip: Ipv4Addr, p: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: p.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as u32;
    let one: libc::c_int = 1;
    // SAFETY: valid fd and option pointers.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as u32,
        );
        let a = sa(CLIENT, client_port);
        ensure!(
            libc::bind(fd, (&raw const a).cast(), len) == 0,
            "bind {CLIENT}:{client_port}: {}",
            std::io::Error::last_os_error()
        );
        let b = sa(LOCAL, port);
        ensure!(
            libc::connect(fd, (&raw const b).cast(), len) == 0,
            "connect {LOCAL}:{port}: {}",
            std::io::Error::last_os_error()
        );
    }
    let client = TcpStream::from(owned);
    let (server, _) = listener.accept().context("accept")?;
    Ok(Conn {
        client_port,
        _client: client,
        _server: server,
    })
}

pub fn run(opts: &Opts) -> anyhow::Result<Value> {
    env::require_root()?;
    let ns = Netns::new("prog")?;
    // Everything runs in a thread inside the namespace: socket lookups by the programs
    // under test see the namespace of the thread that starts the test run.
    env::run_in(&ns.name, || run_in_ns(opts, &ns.name))
}

fn run_in_ns(opts: &Opts, ns: &str) -> anyhow::Result<Value> {
    env::ip(&["-n", ns, "addr", "add", "198.18.0.1/32", "dev", "lo"])?;
    env::ip(&["-n", ns, "addr", "add", "198.18.0.2/32", "dev", "lo"])?;
    let blue_l = TcpListener::bind((LOCAL, BLUE_PORT)).context("listen blue")?;
    let green_l = TcpListener::bind((LOCAL, GREEN_PORT)).context("listen green")?;
    // Real established connections for the socket-lookup recovery path, with client ports
    // chosen so the decision table would not matter (recovery asks the sockets).
    let conn_blue = connect(&blue_l, BLUE_PORT, 41_000)?;
    let conn_green = connect(&green_l, GREEN_PORT, 42_000)?;

    let mut plane = Plane::load("prog", None)?;
    plane
        .dp()
        .set_service(&Service {
            protocol: Protocol::Tcp,
            port: SERVICE_PORT,
            local_addrs: vec![],
            config: service_config(),
        })
        .context("set service")?;
    let tc_in = plane.prog_fd(PROG_TC_INGRESS)?;
    let tc_eg = plane.prog_fd(PROG_TC_EGRESS)?;
    let xdp_in = plane.prog_fd(PROG_XDP_INGRESS)?;
    let noop_tc = sys::load_noop(BPF_PROG_TYPE_SCHED_CLS, -1)?;
    let noop_xdp = sys::load_noop(BPF_PROG_TYPE_XDP, XDP_PASS as i32)?;
    let flows_map = MapData::from_pin(plane.pin_dir.join(MAP_FLOWS)).context("open flow map")?;
    let mut flows: HashMap<MapData, FlowKey, FlowValue> =
        HashMap::try_from(Map::from_map_data(flows_map)?)?;

    let n = opts.runs;
    let nonservice = pkt::tcp(
        Tuple {
            src: CLIENT,
            dst: LOCAL,
            sport: 40_000,
            dport: OTHER_PORT,
        },
        TCP_ACK,
        1,
    );
    let reject = pkt::unknown_ethertype();
    let blue_port = port_for(Backend::Blue, 20_000);
    let green_port = port_for(Backend::Green, 20_000);
    let to_service = |sport: u16, flags: u8| {
        pkt::tcp(
            Tuple {
                src: CLIENT,
                dst: LOCAL,
                sport,
                dport: SERVICE_PORT,
            },
            flags,
            7,
        )
    };
    // Distinct new flows: client addresses 198.18.128.0/17 x ports, never repeated.
    let new_syn = |i: usize| {
        let src = Ipv4Addr::new(198, 18, 128 + (i / 60_000 % 128) as u8, (i % 250) as u8 + 1);
        pkt::tcp(
            Tuple {
                src,
                dst: LOCAL,
                sport: 1024 + (i / 250 % 240) as u16 * 250 + (i % 250) as u16,
                dport: SERVICE_PORT,
            },
            TCP_SYN,
            i as u32,
        )
    };
    let same = |p: &Vec<u8>| {
        let p = p.clone();
        move |_: usize| p.clone()
    };
    let none = |_: usize| -> anyhow::Result<()> { Ok(()) };

    let mut rows: Vec<Row> = Vec::new();
    let repeat_avg = |fd: i32, p: &[u8]| -> anyhow::Result<f64> {
        Ok(f64::from(
            sys::test_run(fd, p, None, opts.repeat)?.duration_ns,
        ))
    };

    for (hook, fd, noop, pass) in [
        ("tc", tc_in, &noop_tc, TC_PASS),
        ("xdp", xdp_in, &noop_xdp, XDP_PASS),
    ] {
        let noop_fd = noop.as_raw_fd();
        eprintln!("bench prog: {hook} ingress");
        rows.push(Row {
            hook,
            path: "no-op program (baseline)",
            samples: sample(noop_fd, n, same(&nonservice), none)?,
            repeat_avg: Some(repeat_avg(noop_fd, &nonservice)?),
            goal: None,
        });
        rows.push(Row {
            hook,
            path: "ours, unknown ethertype (entry cost)",
            samples: sample(fd, n, same(&reject), none)?,
            repeat_avg: Some(repeat_avg(fd, &reject)?),
            goal: None,
        });
        let (v, out) = once(fd, &nonservice)?;
        ensure!(
            v == pass && out == nonservice,
            "{hook}: non-service packet was changed"
        );
        rows.push(Row {
            hook,
            path: "non-service packet",
            samples: sample(fd, n, same(&nonservice), none)?,
            repeat_avg: Some(repeat_avg(fd, &nonservice)?),
            goal: Some(10.0),
        });

        // Flow-table hits: the SYN creates the entry, then ACK segments hit it.
        for (path, sport, want) in [
            ("flow-table hit (blue: 1st lookup)", blue_port, BLUE_PORT),
            ("flow-table hit (green: 2nd lookup)", green_port, GREEN_PORT),
        ] {
            let (_, out) = once(fd, &to_service(sport, TCP_SYN))?;
            ensure!(pkt::dport(&out) == want, "{hook}: SYN to {want} expected");
            let ack = to_service(sport, TCP_ACK);
            let (_, out) = once(fd, &ack)?;
            ensure!(
                pkt::dport(&out) == want,
                "{hook}: hit should rewrite to {want}"
            );
            rows.push(Row {
                hook,
                path,
                samples: sample(fd, n, same(&ack), none)?,
                repeat_avg: None,
                goal: Some(40.0),
            });
        }

        // New flows: a distinct SYN per run (the table grows by one entry per run).
        let before = flows.keys().count();
        let (_, out) = once(fd, &new_syn(2 * n + WARMUP + 1))?;
        ensure!(
            [BLUE_PORT, GREEN_PORT].contains(&pkt::dport(&out)),
            "{hook}: new flow not rewritten"
        );
        rows.push(Row {
            hook,
            path: "new flow: decision + insert (distinct SYNs)",
            samples: sample(fd, n, new_syn, none)?,
            repeat_avg: None,
            goal: Some(150.0),
        });
        let after = flows.keys().count();
        ensure!(
            after >= before + n,
            "{hook}: expected {n} new entries, table went {before} -> {after}"
        );
        clear(&mut flows)?;

        // Recovery: a non-SYN of an established connection with no entry; the entry made by
        // each run is removed (untimed) before the next.
        for (path, conn, want) in [
            (
                "socket-lookup recovery (blue: 1 lookup)",
                &conn_blue,
                BLUE_PORT,
            ),
            (
                "socket-lookup recovery (green: 2 lookups)",
                &conn_green,
                GREEN_PORT,
            ),
        ] {
            let ack = to_service(conn.client_port, TCP_ACK);
            let remove = |flows: &mut HashMap<MapData, FlowKey, FlowValue>| {
                for b in [BLUE_PORT, GREEN_PORT] {
                    let _ = flows.remove(&flow_key(conn.client_port, b));
                }
            };
            remove(&mut flows);
            let (_, out) = once(fd, &ack)?;
            ensure!(
                pkt::dport(&out) == want,
                "{hook}: recovery should rewrite to {want} (is the connection in this netns?)"
            );
            let samples = sample(fd, n, same(&ack), |_| {
                remove(&mut flows);
                Ok(())
            })?;
            rows.push(Row {
                hook,
                path,
                samples,
                repeat_avg: None,
                goal: None,
            });
        }
        clear(&mut flows)?;
    }

    // Egress: replies of a shifted flow get the service port back.
    eprintln!("bench prog: tc egress");
    let noop_fd = noop_tc.as_raw_fd();
    let (_, out) = once(tc_in, &to_service(blue_port, TCP_SYN))?;
    ensure!(
        pkt::dport(&out) == BLUE_PORT,
        "egress setup: SYN to blue expected"
    );
    let reply = pkt::tcp(
        Tuple {
            src: LOCAL,
            dst: CLIENT,
            sport: BLUE_PORT,
            dport: blue_port,
        },
        TCP_ACK,
        9,
    );
    let (_, out) = once(tc_eg, &reply)?;
    ensure!(
        pkt::sport(&out) == SERVICE_PORT,
        "egress should restore the service port"
    );
    let other_reply = pkt::tcp(
        Tuple {
            src: LOCAL,
            dst: CLIENT,
            sport: OTHER_PORT,
            dport: 40_000,
        },
        TCP_ACK,
        9,
    );
    rows.push(Row {
        hook: "tc egress",
        path: "no-op program (baseline)",
        samples: sample(noop_fd, n, same(&other_reply), none)?,
        repeat_avg: Some(repeat_avg(noop_fd, &other_reply)?),
        goal: None,
    });
    rows.push(Row {
        hook: "tc egress",
        path: "non-service packet",
        samples: sample(tc_eg, n, same(&other_reply), none)?,
        repeat_avg: Some(repeat_avg(tc_eg, &other_reply)?),
        goal: Some(10.0),
    });
    rows.push(Row {
        hook: "tc egress",
        path: "reverse rewrite (flow-table hit)",
        samples: sample(tc_eg, n, same(&reply), none)?,
        repeat_avg: None,
        goal: Some(40.0),
    });
    clear(&mut flows)?;

    rows.extend(socket_dispatch_rows(opts)?);

    // Building blocks, each against the no-op of its type.
    eprintln!("bench prog: building blocks");
    flows.insert(FlowKey::default(), FlowValue::default(), 0)?;
    let open = |name: &str| {
        MapData::from_pin(plane.pin_dir.join(name)).with_context(|| format!("open {name}"))
    };
    let (svc_map, flow_map, cnt_map) = (
        open(shifter_common::MAP_SERVICES)?,
        open(MAP_FLOWS)?,
        open(shifter_common::MAP_COUNTERS)?,
    );
    let mut parts_json = Vec::new();
    let mut parts_table = Table::new(
        "bench prog: building blocks, each alone in a minimal program (ns over the no-op, trimmed mean)",
        &["hook", "block", "delta"],
    );
    for (hook, ty, verdict, noop, tc) in [
        ("tc", BPF_PROG_TYPE_SCHED_CLS, -1, &noop_tc, true),
        ("xdp", BPF_PROG_TYPE_XDP, XDP_PASS as i32, &noop_xdp, false),
    ] {
        let base = trimmed_mean(&sample(noop.as_raw_fd(), n, same(&nonservice), none)?);
        for part in parts::load(ty, verdict, tc, &svc_map, &flow_map, &cnt_map)? {
            let m = trimmed_mean(&sample(part.fd.as_raw_fd(), n, same(&nonservice), none)?);
            parts_table.row(vec![
                hook.to_owned(),
                part.name.to_owned(),
                format!("{:+.1}", m - base),
            ]);
            parts_json.push(
                json!({ "hook": hook, "block": part.name, "mean_ns": m, "delta_ns": m - base }),
            );
        }
    }
    clear(&mut flows)?;
    print!("{}", parts_table.render());

    let programs = program_sizes(&mut plane)?;
    drop(conn_blue);
    drop(conn_green);
    let mut v = render(&rows, &programs, opts);
    v["building_blocks"] = Value::Array(parts_json);
    Ok(v)
}

/// `struct bpf_sk_lookup` as the kernel builds it for an IPv4 TCP SYN from
/// (`CLIENT`, `client_port`) to (`LOCAL`, `port`): 72 bytes, only the input fields set.
fn sk_lookup_ctx(client_port: u16, port: u16) -> Vec<u8> {
    let mut c = vec![0u8; 72];
    c[8..12].copy_from_slice(&2u32.to_ne_bytes()); // family AF_INET
    c[12..16].copy_from_slice(&6u32.to_ne_bytes()); // protocol TCP
    c[16..20].copy_from_slice(&CLIENT.octets()); // remote_ip4, network order
    c[36..38].copy_from_slice(&client_port.to_be_bytes()); // remote_port, network order
    c[40..44].copy_from_slice(&LOCAL.octets()); // local_ip4
    c[60..64].copy_from_slice(&u32::from(port).to_ne_bytes()); // local_port, host order
    c
}

/// Durations (ns) of `n` single test runs of an sk_lookup program, after a warm-up, each on
/// its own context (`ctx(i)`); every run must return SK_PASS.
fn sample_ctx(fd: i32, n: usize, ctx: impl Fn(usize) -> Vec<u8>) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let r = sys::test_run_ctx(fd, &ctx(i))?;
        ensure!(
            r.retval == 1,
            "sk_lookup returned {} (not SK_PASS)",
            r.retval
        );
        if i >= WARMUP {
            out.push(f64::from(r.duration_ns));
        }
    }
    Ok(out)
}

/// Socket dispatch: the sk_lookup program's decision and socket assignment for a service
/// port (both backends listening), and its early return for another port, against a no-op
/// sk_lookup program; and TC ingress on a packet of the socket-dispatched service (what an
/// established connection's packets cost on an interface TC is attached to). Runs in the
/// bench namespace, where blue and green listen.
fn socket_dispatch_rows(opts: &Opts) -> anyhow::Result<Vec<Row>> {
    let n = opts.runs;
    eprintln!("bench prog: sk_lookup");
    let mut plane = Plane::load("prog-sock", None)?;
    let mut svc = Service::tcp(SERVICE_PORT, BLUE_PORT, GREEN_PORT, 5000);
    svc.config.dispatch = shifter::Dispatch::Socket;
    if let Some(why) = plane.dp().socket_dispatch_unavailable() {
        bail!("socket dispatch unavailable here: {why}");
    }
    plane
        .dp()
        .set_service(&svc)
        .context("set the socket service")?;
    let listening = plane.dp().listener_counts()?;
    ensure!(
        listening.get(&BLUE_PORT) == Some(&1) && listening.get(&GREEN_PORT) == Some(&1),
        "blue's and green's listeners must be registered: {listening:?}"
    );
    let sk = plane.prog_fd(PROG_SK_LOOKUP)?;
    let noop = sys::load_noop_for(BPF_PROG_TYPE_SK_LOOKUP, 1, sys::BPF_SK_LOOKUP)?;
    // A fresh client port per run: the decision varies as it does for real SYNs.
    let service = |i: usize| sk_lookup_ctx(20_000 + (i % 40_000) as u16, SERVICE_PORT);
    let tc_in = plane.prog_fd(PROG_TC_INGRESS)?;
    let established = pkt::tcp(
        Tuple {
            src: CLIENT,
            dst: LOCAL,
            sport: 40_001,
            dport: SERVICE_PORT,
        },
        TCP_ACK,
        1,
    );
    let (v, out) = once(tc_in, &established)?;
    ensure!(
        v == TC_PASS && out == established,
        "tc: a socket-dispatched service's packet was changed"
    );
    let tc_row = Row {
        hook: "tc",
        path: "socket-dispatched service's packet",
        samples: sample(tc_in, n, |_| established.clone(), |_| Ok(()))?,
        repeat_avg: Some(f64::from(
            sys::test_run(tc_in, &established, None, opts.repeat)?.duration_ns,
        )),
        goal: Some(10.0),
    };
    let rows = vec![
        tc_row,
        Row {
            hook: "sk_lookup",
            path: "no-op program (baseline)",
            samples: sample_ctx(noop.as_raw_fd(), n, service)?,
            repeat_avg: None,
            goal: None,
        },
        Row {
            hook: "sk_lookup",
            path: "non-service port",
            samples: sample_ctx(sk, n, |i| {
                sk_lookup_ctx(20_000 + (i % 40_000) as u16, OTHER_PORT)
            })?,
            repeat_avg: None,
            goal: None,
        },
        Row {
            hook: "sk_lookup",
            path: "decision + listener assigned",
            samples: sample_ctx(sk, n, service)?,
            repeat_avg: None,
            goal: Some(60.0),
        },
    ];
    plane.dp().detach_all()?;
    Ok(rows)
}

fn clear(flows: &mut HashMap<MapData, FlowKey, FlowValue>) -> anyhow::Result<()> {
    let keys: Vec<FlowKey> = flows.keys().filter_map(Result::ok).collect();
    for k in keys {
        let _ = flows.remove(&k);
    }
    if flows.keys().next().is_some() {
        bail!("flow table not empty after clearing");
    }
    Ok(())
}

fn program_sizes(plane: &mut Plane) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for name in [PROG_TC_INGRESS, PROG_XDP_INGRESS, PROG_TC_EGRESS] {
        let prog = plane.dp().program_mut(name).context("program")?;
        let info = prog.info()?;
        out.insert(
            name.to_owned(),
            json!({
                "xlated_insns": info.size_translated().map(|b| b / 8),
                "jited_bytes": info.size_jitted(),
                "verified_insns": info.verified_instruction_count(),
            }),
        );
    }
    Ok(Value::Object(out))
}

/// Short name of a path, for charts.
fn short(path: &str) -> &'static str {
    let table: [(&str, &str); 11] = [
        ("no-op", "no-op"),
        ("ours, unknown", "entry"),
        ("non-service", "non-service"),
        ("flow-table hit (blue", "hit blue"),
        ("flow-table hit (green", "hit green"),
        ("new flow", "new flow"),
        ("socket-lookup recovery (blue", "recovery blue"),
        ("socket-lookup recovery (green", "recovery green"),
        ("reverse rewrite", "egress rewrite"),
        ("decision + listener", "sk_lookup decision"),
        ("socket-dispatched", "socket svc packet"),
    ];
    table
        .iter()
        .find(|(p, _)| path.starts_with(p))
        .map_or("other", |(_, k)| k)
}

fn render(rows: &[Row], programs: &Value, opts: &Opts) -> Value {
    let mut table = Table::new(
        "bench prog: ns per packet. Single test runs: median and p5-p95 trimmed mean; delta = mean minus the no-op of the same hook. Paths that do not write also with repeat=N (avg, delta); goals judged on that when present",
        &[
            "hook",
            "path",
            "median",
            "mean",
            "p90",
            "delta",
            "repeat avg",
            "goal",
            "met",
        ],
    );
    let mut json_rows = Vec::new();
    let mut baseline = f64::NAN;
    let mut baseline_rep = f64::NAN;
    for r in rows {
        let med = report::median(&r.samples);
        let mean = trimmed_mean(&r.samples);
        if r.path.starts_with("no-op") {
            baseline = mean;
            baseline_rep = r.repeat_avg.unwrap_or(f64::NAN);
        }
        let delta = mean - baseline;
        // The kernel's per-run durations come in ~10 ns steps; where the packet is not written,
        // a repeat=N run averages that away and is the better judge.
        let judged = r.repeat_avg.map_or(delta, |v| v - baseline_rep);
        let met = r.goal.map(|g| judged <= g);
        table.row(vec![
            r.hook.to_owned(),
            r.path.to_owned(),
            f(med, 0),
            f(mean, 1),
            f(report::percentile(&r.samples, 90.0), 0),
            format!("{delta:+.1}"),
            r.repeat_avg.map_or("-".into(), |v| {
                format!("{} ({:+.0})", f(v, 0), v - baseline_rep)
            }),
            r.goal.map_or("-".into(), |g| format!("<= +{g:.0}")),
            match met {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "-".into(),
            },
        ]);
        json_rows.push(json!({
            "key": short(r.path),
            "hook": r.hook,
            "path": r.path,
            "median_ns": med,
            "trimmed_mean_ns": mean,
            "p10_ns": report::percentile(&r.samples, 10.0),
            "p90_ns": report::percentile(&r.samples, 90.0),
            "p99_ns": report::percentile(&r.samples, 99.0),
            "delta_ns": delta,
            "repeat_avg_ns": r.repeat_avg,
            "repeat_delta_ns": r.repeat_avg.map(|v| v - baseline_rep),
            "goal_delta_ns": r.goal,
            "goal_met": met,
            "goal_judged_on_ns": judged,
            "runs": r.samples.len(),
        }));
    }
    print!("{}", table.render());
    println!("program sizes: {programs}");
    json!({
        "suite": "prog",
        "method": "BPF_PROG_TEST_RUN, repeat=1 per run on a fresh packet copy, kernel-reported duration; per path the median and the p5-p95 trimmed mean over runs, delta = trimmed mean minus the no-op's; baseline = no-op program of the same type (r0=verdict; exit); 'repeat avg' = one run with repeat=N (only for paths that do not write the packet)",
        "runs_per_path": opts.runs,
        "repeat": opts.repeat,
        "environment": report::environment(),
        "rows": json_rows,
        "programs": programs,
    })
}

/// The building blocks of the program paths, each in a minimal program of its own (raw
/// instructions) so their cost can be told apart: helper calls and map lookups.
mod parts {
    use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};

    use aya::maps::MapData;

    use crate::sys::{self, insn};

    const R0: u8 = 0;
    const R1: u8 = 1;
    const R2: u8 = 2;
    const R3: u8 = 3;
    const R4: u8 = 4;
    const R5: u8 = 5;
    const R6: u8 = 6;
    const R10: u8 = 10;

    fn mov_imm(dst: u8, imm: i32) -> u64 {
        insn(0xb7, dst, 0, 0, imm)
    }
    fn mov_reg(dst: u8, src: u8) -> u64 {
        insn(0xbf, dst, src, 0, 0)
    }
    fn add_imm(dst: u8, imm: i32) -> u64 {
        insn(0x07, dst, 0, 0, imm)
    }
    fn call(helper: i32) -> u64 {
        insn(0x85, 0, 0, 0, helper)
    }
    fn st_dw(off: i16) -> u64 {
        insn(0x7a, R10, 0, off, 0)
    }
    fn ld_map(dst: u8, fd: i32) -> [u64; 2] {
        [insn(0x18, dst, 1, 0, fd), 0]
    }
    fn exit(verdict: i32) -> [u64; 2] {
        [mov_imm(R0, verdict), insn(0x95, 0, 0, 0, 0)]
    }

    /// `bpf_map_lookup_elem(map, &zero_key)` with a zeroed key of `key_len` bytes.
    fn lookup(map: &MapData, key_len: i16, verdict: i32) -> Vec<u64> {
        let fd = map.fd().as_fd().as_raw_fd();
        let words = (key_len + 7) / 8;
        let mut v: Vec<u64> = (1..=words).map(|i| st_dw(-8 * i)).collect();
        v.extend(ld_map(R1, fd));
        v.push(mov_reg(R2, R10));
        v.push(add_imm(R2, -8 * i32::from(words)));
        v.push(call(1));
        v.extend(exit(verdict));
        v
    }

    pub struct Part {
        pub name: &'static str,
        pub fd: OwnedFd,
    }

    /// Programs of `prog_type` returning `verdict`; `tc` adds the skb-only helpers.
    pub fn load(
        prog_type: u32,
        verdict: i32,
        tc: bool,
        svc: &MapData,
        flows: &MapData,
        counters: &MapData,
    ) -> anyhow::Result<Vec<Part>> {
        let mut progs: Vec<(&'static str, Vec<u64>)> = vec![
            ("bpf_ktime_get_ns", {
                let mut v = vec![call(5)];
                v.extend(exit(verdict));
                v
            }),
            (
                "hash lookup, 20-byte key, miss (service map)",
                lookup(svc, 20, verdict),
            ),
            (
                "LRU hash lookup, 40-byte key, hit (flow table)",
                lookup(flows, 40, verdict),
            ),
            (
                "per-CPU array lookup (counters)",
                lookup(counters, 4, verdict),
            ),
            (
                "LRU hash insert, new 40-byte key (incl. the ktime making it new)",
                {
                    // Key: zeroes with bpf_ktime_get_ns in its first word, so every run inserts
                    // a new entry; value: 24 zero bytes.
                    let fd = flows.fd().as_fd().as_raw_fd();
                    let mut v: Vec<u64> = (1..=8).map(|i| st_dw(-8 * i)).collect();
                    v.push(call(5));
                    v.push(insn(0x7b, R10, R0, -40, 0));
                    v.extend(ld_map(R1, fd));
                    v.push(mov_reg(R2, R10));
                    v.push(add_imm(R2, -40));
                    v.push(mov_reg(R3, R10));
                    v.push(add_imm(R3, -64));
                    v.push(mov_imm(R4, 0));
                    v.push(call(2));
                    v.extend(exit(verdict));
                    v
                },
            ),
        ];
        if tc {
            let mut v = vec![
                mov_reg(R6, R1),
                // bpf_l4_csum_replace(skb, 50, old, new, 2)
                mov_reg(R1, R6),
                mov_imm(R2, 50),
                mov_imm(R3, 0x5000),
                mov_imm(R4, 0x911f),
                mov_imm(R5, 2),
                call(11),
                // bpf_skb_store_bytes(skb, 36, &new, 2, 0)
                insn(0x6a, R10, 0, -8, 0x911f),
                mov_reg(R1, R6),
                mov_imm(R2, 36),
                mov_reg(R3, R10),
                add_imm(R3, -8),
                mov_imm(R4, 2),
                mov_imm(R5, 0),
                call(9),
            ];
            v.extend(exit(verdict));
            progs.push(("l4_csum_replace + skb_store_bytes (port rewrite)", v));
        }
        progs
            .into_iter()
            .map(|(name, insns)| {
                Ok(Part {
                    name,
                    fd: sys::load_insns(prog_type, &insns, "bench_part")?,
                })
            })
            .collect()
    }
}
