//! The demo of issue 2: a client and a server namespace joined by veth, blue and green TCP
//! servers in the server namespace, the data plane attached to the server's veth end at TC,
//! and 1000 new connections at each of several weights. Prints the observed split and removes
//! everything again. Exits non-zero when a connection fails or a split misses its weight by
//! more than 5 points. Needs root.

use std::{
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use shifter::{Affinity, Hook, Protocol, Service, ServiceConfig};
use shifter_tests::{
    netns::{
        BLUE_ID, BLUE_PORT, GREEN_ID, GREEN_PORT, SERVER_V4, SERVICE_PORT, Servers, Testbed, run_in,
    },
    traffic,
};

const CONNECTIONS: usize = 1000;
const WEIGHTS_PERCENT: [u16; 6] = [0, 10, 25, 50, 90, 100];
/// With 1000 connections the binomial spread at 50 % is 1.6 points; 5 points is over 3 sigma.
const MAX_MISS_POINTS: f64 = 5.0;

fn main() -> ExitCode {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("shifter-demo needs root: it creates network namespaces and loads BPF programs");
        return ExitCode::from(1);
    }
    let started = Instant::now();
    let mut tb = Testbed::new("demo", Hook::Tc, Servers::Tcp);
    let attach = tb
        .dp
        .dp()
        .attachments()
        .into_iter()
        .map(|(iface, a)| format!("{iface}: ingress {} / egress tc via {}", a.hook, a.tc_mode))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "namespaces {} (client) and {} (server); data plane on {attach}",
        tb.client_ns(),
        tb.server_ns()
    );
    println!(
        "service tcp/{SERVICE_PORT} on {SERVER_V4}: blue :{BLUE_PORT}, green :{GREEN_PORT}; {CONNECTIONS} new connections per weight\n"
    );
    let svc = Service {
        protocol: Protocol::Tcp,
        port: SERVICE_PORT,
        local_addrs: vec![],
        config: ServiceConfig {
            blue_port: BLUE_PORT,
            green_port: GREEN_PORT,
            weight: 0,
            affinity: Affinity::Connection,
        },
    };
    let slot = match tb.dp.dp().set_service(&svc) {
        Ok(slot) => slot,
        Err(e) => {
            eprintln!(
                "setting the service: {}",
                shifter_tests::netns::error_chain(&e)
            );
            return ExitCode::from(1);
        }
    };
    let target = SocketAddr::new(SERVER_V4.into(), SERVICE_PORT);
    println!(
        "{:>7} | {:>5} | {:>5} | {:>17} | {:>8}",
        "weight", "blue", "green", "observed green %", "failures"
    );
    println!("{:-<8}+{:-<7}+{:-<7}+{:-<19}+{:-<9}", "", "", "", "", "");
    let mut ok = true;
    for percent in WEIGHTS_PERCENT {
        if let Err(e) = tb.dp.dp().set_weight(slot, percent * 100) {
            eprintln!(
                "setting weight {percent}%: {}",
                shifter_tests::netns::error_chain(&e)
            );
            ok = false;
            break;
        }
        let report = run_in(tb.client_ns(), || {
            traffic::tcp_short(
                target,
                CONNECTIONS,
                Duration::from_secs(3),
                Duration::from_secs(60),
            )
        });
        let share = report.green_percent();
        let failures = report.failures().len();
        let miss = (share - f64::from(percent)).abs() > MAX_MISS_POINTS;
        ok &= failures == 0 && !miss;
        println!(
            "{:>6}% | {:>5} | {:>5} | {:>16.1}% | {:>8}{}",
            percent,
            report.count(BLUE_ID),
            report.count(GREEN_ID),
            share,
            failures,
            if miss {
                "  <- off by more than 5 points"
            } else {
                ""
            }
        );
        if failures > 0 {
            eprintln!("  {}", report.failure_summary());
        }
    }
    drop(tb);
    println!("\ncleaned up; {:.1} s", started.elapsed().as_secs_f64());
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("demo FAILED: see the table above");
        ExitCode::from(1)
    }
}
