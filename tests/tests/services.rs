//! The service table: many services at once, address-specific services, and bad service
//! definitions that must be refused without changing anything; reading a large flow table.

use std::net::{IpAddr, Ipv4Addr};

use shifter::{Affinity, Error, Protocol, Service, ServiceConfig};
use shifter_common::MAX_SERVICES;
use shifter_tests::{
    pkt::{Frame, TCP_SYN, v4},
    testrun::{Prog, TestDataPlane, run},
};

fn service(protocol: Protocol, port: u16, blue: u16, green: u16, weight: u16) -> Service {
    Service {
        protocol,
        port,
        local_addrs: vec![],
        config: ServiceConfig {
            blue_port: blue,
            green_port: green,
            weight,
            affinity: Affinity::Connection,
            dispatch: shifter_common::Dispatch::Rewrite,
        },
    }
}

fn dport_after(dp: &mut shifter::DataPlane, prog: Prog, frame: &Frame) -> u16 {
    let out = run(dp, prog, &frame.build());
    u16::from_be_bytes([out[36], out[37]])
}

#[test]
fn sixty_four_services_steer_independently() {
    let mut dp = TestDataPlane::load("svc64");
    let mut defined = Vec::new();
    for i in 0..64u16 {
        let protocol = if i % 2 == 0 {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        let weight = if i % 4 < 2 { 0 } else { 10_000 };
        let svc = service(protocol, 1000 + i, 20_000 + i, 30_000 + i, weight);
        dp.set_service(&svc)
            .unwrap_or_else(|e| panic!("service {i}: {e:?}"));
        defined.push(svc);
    }
    assert_eq!(dp.services().expect("read services").len(), 64);
    for (i, svc) in defined.iter().enumerate() {
        let ip = v4([198, 18, 0, 1], [198, 18, 0, 2]);
        let frame = match svc.protocol {
            Protocol::Tcp => Frame::tcp(ip, 40_000 + i as u16, svc.port, 7, TCP_SYN),
            Protocol::Udp => Frame::udp(ip, 40_000 + i as u16, svc.port),
        };
        let want = if svc.config.weight == 0 {
            svc.config.blue_port
        } else {
            svc.config.green_port
        };
        for prog in [Prog::TcIngress, Prog::XdpIngress] {
            assert_eq!(
                dport_after(&mut dp, prog, &frame),
                want,
                "service {svc} through {prog:?}"
            );
        }
    }
}

#[test]
fn address_specific_service_wins_over_wildcard() {
    let mut dp = TestDataPlane::load("svcaddr");
    let local = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    let mut specific = service(Protocol::Tcp, 80, 8081, 8082, 0);
    specific.local_addrs = vec![local];
    dp.set_service(&specific).expect("specific service");
    dp.set_service(&service(Protocol::Tcp, 80, 9081, 9082, 0))
        .expect("wildcard service on the same port");
    let to_specific = Frame::tcp(v4([198, 18, 0, 1], [198, 18, 0, 2]), 40_001, 80, 1, TCP_SYN);
    let to_other = Frame::tcp(v4([198, 18, 0, 1], [198, 18, 0, 3]), 40_001, 80, 1, TCP_SYN);
    assert_eq!(dport_after(&mut dp, Prog::TcIngress, &to_specific), 8081);
    assert_eq!(dport_after(&mut dp, Prog::TcIngress, &to_other), 9081);

    // Removing the specific one leaves the wildcard in charge.
    dp.remove_service(&specific).expect("remove specific");
    let again = to_specific.clone().with_sport(40_002);
    assert_eq!(dport_after(&mut dp, Prog::TcIngress, &again), 9081);
}

#[test]
fn weight_change_and_removal_take_effect_for_new_flows() {
    let mut dp = TestDataPlane::load("svcweight");
    let slot = dp
        .set_service(&service(Protocol::Udp, 53, 5301, 5302, 0))
        .expect("service");
    let ip = v4([198, 18, 0, 1], [198, 18, 0, 2]);
    assert_eq!(
        dport_after(&mut dp, Prog::TcIngress, &Frame::udp(ip.clone(), 1000, 53)),
        5301
    );
    dp.set_weight(slot, 10_000).expect("weight 100 %");
    // The known flow keeps its backend; a new one goes green.
    assert_eq!(
        dport_after(&mut dp, Prog::TcIngress, &Frame::udp(ip.clone(), 1000, 53)),
        5301
    );
    assert_eq!(
        dport_after(&mut dp, Prog::TcIngress, &Frame::udp(ip.clone(), 1001, 53)),
        5302
    );
    let svc = dp.services().expect("services")[&slot].clone();
    dp.remove_service(&svc).expect("remove");
    assert!(dp.services().expect("services").is_empty());
    let input = Frame::udp(ip, 1002, 53).build();
    assert_eq!(
        run(&mut dp, Prog::TcIngress, &input),
        input,
        "no service: unchanged"
    );
}

#[test]
fn bad_services_are_refused_and_change_nothing() {
    let mut dp = TestDataPlane::load("svcbad");
    dp.set_service(&service(Protocol::Tcp, 80, 8081, 8082, 2500))
        .expect("first service");
    let before = dp.services().expect("services");
    let bad = [
        (
            "weight above 100 %",
            service(Protocol::Tcp, 81, 8181, 8182, 10_001),
        ),
        (
            "blue equals green",
            service(Protocol::Tcp, 81, 8181, 8181, 0),
        ),
        ("backend port 0", service(Protocol::Tcp, 81, 0, 8182, 0)),
        ("service port 0", service(Protocol::Tcp, 0, 8181, 8182, 0)),
        (
            "service port is its own backend",
            service(Protocol::Tcp, 81, 81, 8182, 0),
        ),
        (
            "service port is another's backend",
            service(Protocol::Tcp, 8081, 9001, 9002, 0),
        ),
        (
            "backend is another's service port",
            service(Protocol::Tcp, 81, 80, 8182, 0),
        ),
    ];
    for (what, svc) in bad {
        match dp.set_service(&svc) {
            Err(Error::InvalidService { .. }) => {}
            other => panic!("{what}: expected InvalidService, got {other:?}"),
        }
        assert_eq!(
            dp.services().expect("services"),
            before,
            "{what} changed the table"
        );
    }
    // Removing a service that does not exist is an error, not a silent success.
    match dp.remove_service(&service(Protocol::Udp, 80, 8081, 8082, 0)) {
        Err(Error::UnknownService { .. }) => {}
        other => panic!("expected UnknownService, got {other:?}"),
    }
    assert_eq!(dp.services().expect("services"), before);
    // A weight change is one word write: it is refused for an empty or out-of-range slot
    // and for a weight above 100 %, and leaves the table as it was.
    let slot = *before.keys().next().expect("one slot");
    for (what, slot, weight) in [
        ("empty slot", slot + 1, 5000),
        ("slot out of range", shifter_common::MAX_SERVICES, 5000),
    ] {
        match dp.set_weight(slot, weight) {
            Err(Error::UnknownService { .. }) => {}
            other => panic!("{what}: expected UnknownService, got {other:?}"),
        }
    }
    match dp.set_weight(slot, 10_001) {
        Err(Error::InvalidService { .. }) => {}
        other => panic!("weight 10001: expected InvalidService, got {other:?}"),
    }
    assert_eq!(dp.services().expect("services"), before);
    let changed = dp.set_weight(slot, 7500).expect("valid weight");
    assert_eq!(changed.weight, 7500);
    let after = dp.services().expect("services");
    assert_eq!(after[&slot].config, changed, "only the weight changed");
    assert_eq!(
        (after[&slot].port, after[&slot].protocol),
        (before[&slot].port, before[&slot].protocol)
    );
}

#[test]
fn slots_run_out_cleanly() {
    let mut dp = TestDataPlane::load("svcfull");
    for i in 0..MAX_SERVICES as u16 {
        dp.set_service(&service(Protocol::Udp, 1000 + i, 20_000 + i, 30_000 + i, 0))
            .unwrap_or_else(|e| panic!("service {i}: {e:?}"));
    }
    let before = dp.services().expect("services");
    match dp.set_service(&service(Protocol::Udp, 999, 19_000, 19_001, 0)) {
        Err(Error::NoFreeSlot { max, .. }) => assert_eq!(max, MAX_SERVICES),
        other => panic!("expected NoFreeSlot, got {other:?}"),
    }
    assert_eq!(dp.services().expect("services"), before);
}

#[test]
fn flow_table_walks_see_every_entry_exactly_once() {
    use std::collections::HashSet;

    use aya::maps::{HashMap, Map, MapData};
    use shifter_common::{FlowKey, FlowValue, MAP_FLOWS, PROTO_TCP, v4_mapped};

    // More entries than one batched read returns (4096), over two slots and both backends.
    const N: u32 = 10_000;
    let mut dp = TestDataPlane::load("flowwalk");
    let pinned = MapData::from_pin(dp.pin_dir().join(MAP_FLOWS)).expect("pinned flow map");
    let mut map: HashMap<MapData, FlowKey, FlowValue> =
        HashMap::try_from(Map::LruHashMap(pinned)).expect("flow map");
    let mut want = std::collections::BTreeMap::<u32, [u64; 2]>::new();
    for i in 0..N {
        let (slot, backend) = (i % 2, ((i / 2) % 2) as u8);
        let key = FlowKey {
            client_addr: v4_mapped([198, 19, (i >> 8) as u8, i as u8]),
            local_addr: v4_mapped([198, 18, 0, 2]),
            client_port: 1024 + (i % 50_000) as u16,
            backend_port: 8081 + u16::from(backend),
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        let value = FlowValue {
            service_port: 80,
            slot: slot as u16,
            backend,
            ..Default::default()
        };
        map.insert(key, value, 0).expect("insert");
        want.entry(slot).or_default()[usize::from(backend)] += 1;
    }

    let flows = dp.flows(None).expect("flows");
    assert_eq!(flows.len(), N as usize);
    let distinct: HashSet<_> = flows
        .iter()
        .map(|f| (f.client, f.client_port, f.backend_port))
        .collect();
    assert_eq!(distinct.len(), N as usize, "an entry was seen twice");
    assert_eq!(dp.flow_counts().expect("counts"), want);
    assert_eq!(dp.flows(Some(1)).expect("slot 1").len(), (N / 2) as usize);
    // The offline reader walks the same way.
    let offline = shifter::dataplane::PinnedMaps::open(dp.pin_dir()).expect("pinned maps");
    assert_eq!(
        offline.flows(None).expect("offline flows").len(),
        N as usize
    );
    assert_eq!(dp.clear_flows().expect("clear"), N as usize);
    assert!(dp.flows(None).expect("flows").is_empty());
}
