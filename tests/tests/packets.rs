//! Packet tests through BPF_PROG_TEST_RUN on the real loaded programs (issue 2, tests 2).
//!
//! Every expectation is a whole frame built with `shifter_tests::pkt`, compared byte for byte
//! with the program's output, and every rewritten frame's checksums are recomputed from
//! scratch by `pkt::verify`. Ingress cases run through TC and through XDP.
//!
//! Over 700 lines: the packet scenarios of one area (every header length field, every program
//! path), sharing the loaded programs and frame helpers at its top.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use shifter::{
    Affinity, Backend, Protocol, Service, ServiceConfig,
    dataplane::{Flow, Skip, SkipCounts, pinned_skip_counts},
};
use shifter_common::{FLOW_RECOVERED, FlowTuple, choose_backend, v4_mapped};
use shifter_tests::{
    pkt::{self, Ext, Frame, Ip, L4, LengthField, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN},
    testrun::{Prog, TestDataPlane, run, try_run},
};

/// A service under test: service port, blue port, green port.
#[derive(Clone, Copy, Debug)]
struct Svc {
    proto: Protocol,
    port: u16,
    blue: u16,
    green: u16,
}

const TCP_SVC: Svc = Svc {
    proto: Protocol::Tcp,
    port: 80,
    blue: 8081,
    green: 8082,
};
const UDP_SVC: Svc = Svc {
    proto: Protocol::Udp,
    port: 5353,
    blue: 5391,
    green: 5392,
};

impl Svc {
    fn config(self, weight: u16) -> ServiceConfig {
        ServiceConfig {
            blue_port: self.blue,
            green_port: self.green,
            weight,
            affinity: Affinity::Connection,
            dispatch: shifter_common::Dispatch::Rewrite,
        }
    }
    fn service(self, weight: u16) -> Service {
        Service {
            protocol: self.proto,
            port: self.port,
            local_addrs: vec![],
            config: self.config(weight),
        }
    }
    fn port_of(self, b: Backend) -> u16 {
        match b {
            Backend::Blue => self.blue,
            Backend::Green => self.green,
        }
    }
}

const INGRESS: [Prog; 2] = [Prog::TcIngress, Prog::XdpIngress];

const LOCAL4: [u8; 4] = [198, 19, 0, 1];
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

/// Network layer from client number `n` to the local address.
fn ip_from(fam: Fam, n: u16) -> Ip {
    match fam {
        Fam::V4 => pkt::v4([198, 18, (n >> 8) as u8, n as u8], LOCAL4),
        Fam::V6 => pkt::v6(Ipv6Addr::new(0x2001, 2, 0, 0xc, 0, 0, 0, n), LOCAL6),
    }
}

/// The first packet of a flow to `svc`: a SYN or a UDP datagram.
fn first(fam: Fam, svc: Svc, client: u16, sport: u16) -> Frame {
    let ip = ip_from(fam, client);
    match svc.proto {
        Protocol::Tcp => Frame::tcp(ip, sport, svc.port, 0x1000_0000 + u32::from(sport), TCP_SYN),
        Protocol::Udp => Frame::udp(ip, sport, svc.port),
    }
}

/// A later packet of the same flow: an ACK with data, or another datagram.
fn later(f: &Frame) -> Frame {
    match f.l4 {
        L4::Tcp { seq, .. } => f
            .clone()
            .with_tcp(TCP_ACK | TCP_PSH, seq + 1)
            .with_payload(b"GET / HTTP/1.1\r\n\r\n"),
        L4::Udp { .. } => f.clone().with_payload(b"second datagram"),
    }
}

fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => v4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

fn endpoints(f: &Frame) -> (IpAddr, IpAddr) {
    match &f.ip {
        Ip::V4 { src, dst, .. } => (IpAddr::V4(*src), IpAddr::V4(*dst)),
        Ip::V6 { src, dst, .. } => (IpAddr::V6(*src), IpAddr::V6(*dst)),
    }
}

/// The backend `choose_backend` picks for an ingress frame, computed on the host.
fn expected_backend(f: &Frame, svc: Svc, weight: u16) -> Backend {
    let (src, dst) = endpoints(f);
    let t = FlowTuple {
        proto: svc.proto.number(),
        client_addr: addr16(src),
        client_port: f.sport(),
        local_addr: addr16(dst),
        service_port: f.dport(),
    };
    choose_backend(&t, &svc.config(weight))
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Byte-for-byte comparison with a readable failure.
fn assert_frame(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: output differs at byte {at} (lengths {} vs {})\n got: {}\nwant: {}",
            got.len(),
            want.len(),
            hex(got),
            hex(want)
        );
    }
}

/// Asserts the output is exactly `want` and that its checksums verify independently.
fn assert_rewritten(got: &[u8], want: &Frame, what: &str) {
    let want_bytes = want.build();
    assert_frame(got, &want_bytes, what);
    let v = pkt::verify(got).unwrap_or_else(|e| panic!("{what}: checksum verification: {e}"));
    assert_eq!(
        (v.sport, v.dport),
        (want.sport(), want.dport()),
        "{what}: ports"
    );
}

/// Asserts the frame passed untouched.
fn assert_unchanged(got: &[u8], input: &[u8], what: &str) {
    assert_frame(got, input, &format!("{what} (must pass unchanged)"));
}

struct Fixture {
    dp: TestDataPlane,
    tcp: u32,
    udp: u32,
}

impl Fixture {
    fn new(test: &str, weight: u16) -> Self {
        let mut dp = TestDataPlane::load(test);
        let tcp = dp
            .set_service(&TCP_SVC.service(weight))
            .unwrap_or_else(|e| panic!("set tcp service: {e:?}"));
        let udp = dp
            .set_service(&UDP_SVC.service(weight))
            .unwrap_or_else(|e| panic!("set udp service: {e:?}"));
        Self { dp, tcp, udp }
    }
    fn slot(&self, svc: Svc) -> u32 {
        match svc.proto {
            Protocol::Tcp => self.tcp,
            Protocol::Udp => self.udp,
        }
    }
    fn set_weight(&mut self, svc: Svc, w: u16) {
        let slot = self.slot(svc);
        self.dp
            .set_weight(slot, w)
            .unwrap_or_else(|e| panic!("set weight {w}: {e:?}"));
    }
    fn run(&mut self, prog: Prog, input: &[u8]) -> Vec<u8> {
        run(&mut self.dp, prog, input)
    }
    /// The backend port of the flow entry for an ingress frame, if any.
    fn flow_port(&mut self, f: &Frame, svc: Svc) -> Option<u16> {
        let (client, local) = endpoints(f);
        let slot = self.slot(svc);
        let flows = self
            .dp
            .flows(Some(slot))
            .unwrap_or_else(|e| panic!("flows: {e:?}"));
        let mut found = flows.iter().filter(|fl| {
            fl.client == client
                && fl.local == local
                && fl.client_port == f.sport()
                && fl.protocol == svc.proto
        });
        let first = found.next().map(|fl| {
            assert_eq!(fl.service_port, svc.port, "flow's service port");
            assert_eq!(fl.backend_port, svc.port_of(fl.backend), "flow's backend");
            fl.backend_port
        });
        assert!(found.next().is_none(), "two flow entries for one tuple");
        first
    }
    fn counters(&mut self, svc: Svc) -> [shifter_common::BackendCounters; 2] {
        let slot = self.slot(svc);
        self.dp
            .counters(slot)
            .unwrap_or_else(|e| panic!("counters: {e:?}"))
    }
    /// The skip counters, read through the data plane and, read-only, through the pins:
    /// both readers must agree.
    fn skips(&mut self) -> SkipCounts {
        let mine = self
            .dp
            .skip_counts()
            .unwrap_or_else(|e| panic!("skip counts: {e:?}"));
        let pinned = pinned_skip_counts(self.dp.pin_dir())
            .unwrap_or_else(|e| panic!("pinned skip counts: {e:?}"))
            .expect("SHIFTER_SKIP is pinned");
        assert_eq!(mine, pinned, "the two readers disagree");
        mine
    }
    fn all_flows(&mut self) -> Vec<Flow> {
        self.dp
            .flows(None)
            .unwrap_or_else(|e| panic!("flows: {e:?}"))
    }
    /// Runs `input` through `prog` and asserts it was skipped for `reason`: passed byte for
    /// byte, the flow table untouched (no entry created, none changed), the counter of
    /// `reason` up by exactly one and every other reason's unchanged.
    fn assert_skipped(&mut self, prog: Prog, input: &[u8], reason: Skip, what: &str) {
        let (skips, flows) = (self.skips(), self.all_flows());
        let out = self.run(prog, input);
        assert_unchanged(&out, input, &format!("{prog:?} {what}"));
        assert_eq!(
            self.all_flows(),
            flows,
            "{prog:?} {what}: flow table changed"
        );
        let after = self.skips();
        for s in after.iter() {
            let want = skips.get(s.reason) + u64::from(s.reason == reason);
            assert_eq!(
                s.packets,
                want,
                "{prog:?} {what}: skip counter {} (expected reason {})",
                s.name,
                reason.name()
            );
        }
        assert_eq!(after.unknown(), 0);
    }
    /// Empties the service's configuration word in the pinned `SHIFTER_CFG`, leaving its
    /// service key in place: the state between the two writes of an add or a removal.
    fn clear_config_word(&mut self, svc: Svc) {
        use aya::maps::{Array, Map, MapData};
        let path = self.dp.pin_dir().join(shifter_common::MAP_SERVICE_CONFIG);
        let md = MapData::from_pin(&path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
        let mut words: Array<MapData, u64> =
            Array::try_from(Map::Array(md)).expect("SHIFTER_CFG is an array of u64");
        words
            .set(self.slot(svc), 0, 0)
            .unwrap_or_else(|e| panic!("clear the configuration word: {e}"));
    }
}

const FAMS: [Fam; 2] = [Fam::V4, Fam::V6];
const SVCS: [Svc; 2] = [TCP_SVC, UDP_SVC];

#[test]
fn new_flows_follow_choose_backend_and_hits_keep_it() {
    for prog in INGRESS {
        let mut fx = Fixture::new("newflows", 0);
        for fam in FAMS {
            for svc in SVCS {
                let before = fx.counters(svc);
                let mut seen = [0u64; 2];
                let mut sport = 20_000u16;
                for weight in [0u16, 10_000, 5_000] {
                    fx.set_weight(svc, weight);
                    for client in 1..=12u16 {
                        sport += 1;
                        let f = first(fam, svc, client, sport);
                        let backend = expected_backend(&f, svc, weight);
                        seen[backend as usize] += 1;
                        let port = svc.port_of(backend);
                        let what = format!("{prog:?} {fam:?} {svc:?} w={weight} first {sport}");
                        let out = fx.run(prog, &f.build());
                        assert_rewritten(&out, &f.clone().with_dport(port), &what);
                        assert_eq!(fx.flow_port(&f, svc), Some(port), "{what}: flow entry");

                        // A later packet hits the entry and keeps the backend whatever the
                        // weight is now.
                        fx.set_weight(svc, 10_000 - weight);
                        let l = later(&f);
                        let out = fx.run(prog, &l.build());
                        assert_rewritten(&out, &l.with_dport(port), &format!("{what} hit"));
                        fx.set_weight(svc, weight);
                    }
                }
                assert!(
                    seen[0] > 12 && seen[1] > 12,
                    "weight 5000 must send tuples to both backends: {seen:?}"
                );
                // Counters: one new flow per first packet, two packets per flow.
                let c = fx.counters(svc);
                for b in 0..2 {
                    let flows = c[b].new_flows - before[b].new_flows;
                    let packets = c[b].packets - before[b].packets;
                    assert_eq!(
                        (flows, packets),
                        (seen[b], 2 * seen[b]),
                        "{prog:?} {fam:?} {svc:?} backend {b}: counters {:?}",
                        c[b]
                    );
                }
            }
        }
    }
}

#[test]
fn counters_count_flows_packets_and_bytes_per_backend() {
    for prog in INGRESS {
        let mut fx = Fixture::new("counters", 5_000);
        for svc in SVCS {
            let mut want = [(0u64, 0u64, 0u64); 2]; // new flows, packets, bytes
            for client in 1..=40u16 {
                let fam = if client % 2 == 0 { Fam::V4 } else { Fam::V6 };
                let f = first(fam, svc, client, 30_000 + client);
                let b = expected_backend(&f, svc, 5_000) as usize;
                let bytes = f.build();
                fx.run(prog, &bytes);
                want[b].0 += 1;
                want[b].1 += 1;
                want[b].2 += bytes.len() as u64;
                for _ in 0..2 {
                    let l = later(&f).build();
                    fx.run(prog, &l);
                    want[b].1 += 1;
                    want[b].2 += l.len() as u64;
                }
            }
            assert!(
                want[0].0 > 0 && want[1].0 > 0,
                "both backends used: {want:?}"
            );
            let c = fx.counters(svc);
            for b in 0..2 {
                assert_eq!(
                    (c[b].new_flows, c[b].packets, c[b].bytes),
                    want[b],
                    "{prog:?} {svc:?} backend {b}: counters {:?}",
                    c[b]
                );
                assert_eq!(c[b].recoveries, 0);
            }
        }
    }
}

#[test]
fn miss_on_non_syn_without_an_owner_passes_unchanged() {
    for prog in INGRESS {
        let mut fx = Fixture::new("nonsyn", 5_000);
        for fam in FAMS {
            for (i, flags) in [
                TCP_ACK,
                TCP_ACK | TCP_PSH,
                TCP_FIN | TCP_ACK,
                TCP_RST,
                TCP_SYN | TCP_ACK,
            ]
            .into_iter()
            .enumerate()
            {
                let f = first(fam, TCP_SVC, 7, 40_000 + i as u16)
                    .with_tcp(flags, 99)
                    .with_payload(b"data");
                let input = f.build();
                // Nobody owns the connection: a recovery miss.
                fx.assert_skipped(
                    prog,
                    &input,
                    Skip::RecoveryMiss,
                    &format!("{fam:?} flags {flags:#x}"),
                );
                assert_eq!(fx.flow_port(&f, TCP_SVC), None, "no entry may be created");
            }
        }
        let c = fx.counters(TCP_SVC);
        assert_eq!(c[0].packets + c[1].packets, 0, "nothing was steered");
    }
}

#[test]
fn egress_rewrites_only_replies_of_shifted_flows() {
    for fam in FAMS {
        for svc in SVCS {
            let mut fx = Fixture::new("egress", 5_000);
            let mut egress = [0u64; 2];
            for client in 1..=10u16 {
                let f = first(fam, svc, client, 41_000 + client);
                let b = expected_backend(&f, svc, 5_000);
                let port = svc.port_of(b);
                fx.run(Prog::TcIngress, &f.build());
                // The backend's reply leaves with its own port as source.
                let reply_flags = TCP_SYN | TCP_ACK;
                let reply = f.clone().with_dport(port).reply(reply_flags);
                let out = fx.run(Prog::TcEgress, &reply.build());
                let want = reply.clone().with_sport(svc.port);
                assert_rewritten(&out, &want, &format!("{fam:?} {svc:?} reply from {port}"));
                egress[b as usize] += 1;

                // A reply from the other backend port on the same tuple is a direct
                // connection: untouched.
                let other = svc.port_of(if b == Backend::Blue {
                    Backend::Green
                } else {
                    Backend::Blue
                });
                let direct = f.clone().with_dport(other).reply(TCP_ACK).build();
                let out = fx.run(Prog::TcEgress, &direct);
                assert_unchanged(&out, &direct, &format!("{fam:?} {svc:?} from {other}"));
            }
            // Replies on tuples without an entry: direct connections to B and G.
            for port in [svc.blue, svc.green, svc.port, 9999] {
                let f = first(fam, svc, 77, 42_000).with_dport(port);
                let reply = f.reply(TCP_ACK).build();
                let out = fx.run(Prog::TcEgress, &reply);
                assert_unchanged(&out, &reply, &format!("{fam:?} {svc:?} direct from {port}"));
            }
            let c = fx.counters(svc);
            assert_eq!([c[0].egress_packets, c[1].egress_packets], egress);
        }
    }
}

#[test]
fn syn_retransmission_keeps_backend_and_port_reuse_decides_afresh() {
    for prog in INGRESS {
        for fam in FAMS {
            let mut fx = Fixture::new("synreuse", 0);
            let syn = first(fam, TCP_SVC, 3, 43_000);
            let out = fx.run(prog, &syn.build());
            assert_rewritten(&out, &syn.clone().with_dport(TCP_SVC.blue), "first SYN");
            fx.set_weight(TCP_SVC, 10_000);
            // Retransmission: same initial sequence number.
            let out = fx.run(prog, &syn.build());
            assert_rewritten(
                &out,
                &syn.clone().with_dport(TCP_SVC.blue),
                "retransmitted SYN",
            );
            assert_eq!(fx.flow_port(&syn, TCP_SVC), Some(TCP_SVC.blue));
            // A new connection reusing the client port: another ISN, decided at 10000.
            let reuse = syn.clone().with_tcp(TCP_SYN, 0x5555_0000);
            let out = fx.run(prog, &reuse.build());
            assert_rewritten(
                &out,
                &reuse.clone().with_dport(TCP_SVC.green),
                &format!("{prog:?} {fam:?} SYN with a new ISN"),
            );
            assert_eq!(fx.flow_port(&syn, TCP_SVC), Some(TCP_SVC.green));
            // And that one's retransmission stays on green after the weight drops.
            fx.set_weight(TCP_SVC, 0);
            let out = fx.run(prog, &reuse.build());
            assert_rewritten(
                &out,
                &reuse.clone().with_dport(TCP_SVC.green),
                "retransmission",
            );
            let c = fx.counters(TCP_SVC);
            assert_eq!((c[0].new_flows, c[1].new_flows), (1, 1), "{c:?}");
            assert_eq!(c[0].closed, 1, "the old entry was closed: {c:?}");
        }
    }
}

#[test]
fn rst_ends_flows_and_refusals_are_counted() {
    for prog in INGRESS {
        for fam in FAMS {
            let mut fx = Fixture::new("rst", 0);
            // Established connection reset by the client.
            let syn = first(fam, TCP_SVC, 4, 44_000);
            fx.run(prog, &syn.build());
            let ack = syn.clone().with_tcp(TCP_ACK, 0x1000_0000 + 44_001);
            fx.run(prog, &ack.build());
            let rst = syn
                .clone()
                .with_tcp(TCP_RST | TCP_ACK, 0x1000_0000 + 44_001);
            let out = fx.run(prog, &rst.build());
            assert_rewritten(&out, &rst.clone().with_dport(TCP_SVC.blue), "client RST");
            assert_eq!(fx.flow_port(&syn, TCP_SVC), None, "RST removes the entry");
            // Nothing more is rewritten for the tuple.
            let out = fx.run(prog, &ack.build());
            assert_unchanged(&out, &ack.build(), "ACK after RST");
            let c = fx.counters(TCP_SVC)[0];
            assert_eq!((c.closed, c.resets, c.refusals), (1, 1, 0), "{c:?}");

            // A SYN refused by the backend: RST from B before the client's ACK.
            let syn = first(fam, TCP_SVC, 5, 44_100);
            fx.run(prog, &syn.build());
            let refusal = syn
                .clone()
                .with_dport(TCP_SVC.blue)
                .reply(TCP_RST | TCP_ACK);
            let out = fx.run(Prog::TcEgress, &refusal.build());
            assert_rewritten(
                &out,
                &refusal.clone().with_sport(TCP_SVC.port),
                "refusal RST",
            );
            assert_eq!(
                fx.flow_port(&syn, TCP_SVC),
                None,
                "egress RST removes the entry"
            );
            let c = fx.counters(TCP_SVC)[0];
            assert_eq!((c.closed, c.resets, c.refusals), (2, 1, 1), "{c:?}");

            // A backend RST on an established connection is a reset, not a refusal.
            let syn = first(fam, TCP_SVC, 6, 44_200);
            fx.run(prog, &syn.build());
            fx.run(prog, &syn.clone().with_tcp(TCP_ACK, 1).build());
            let rst = syn.clone().with_dport(TCP_SVC.blue).reply(TCP_RST);
            fx.run(Prog::TcEgress, &rst.build());
            let c = fx.counters(TCP_SVC)[0];
            assert_eq!((c.closed, c.resets, c.refusals), (3, 2, 1), "{c:?}");
        }
    }
}

#[test]
fn a_service_without_configuration_word_is_skipped() {
    for prog in INGRESS {
        let mut fx = Fixture::new("noconfig", 5_000);
        for svc in SVCS {
            fx.clear_config_word(svc);
            for fam in FAMS {
                let f = first(fam, svc, 8, 40_500);
                let what = format!("{fam:?} {svc:?} without configuration word");
                fx.assert_skipped(prog, &f.build(), Skip::NoConfig, &what);
                fx.assert_skipped(prog, &later(&f).build(), Skip::NoConfig, &what);
                assert_eq!(fx.flow_port(&f, svc), None, "{what}: no entry");
            }
        }
        assert_eq!(fx.skips().get(Skip::NoConfig), 8);
    }
}

/// IPv4 options of `words` 32-bit words: a Record Route option padded with End-of-Options.
fn ipv4_options(words: usize) -> Vec<u8> {
    let len = 4 * words - 1;
    let mut o = vec![7u8, len as u8, 4];
    o.resize(len, 0);
    o.push(0);
    o
}

fn with_v4_options(f: Frame, words: usize) -> Frame {
    let mut f = f;
    if let Ip::V4 { options, .. } = &mut f.ip {
        *options = ipv4_options(words);
    }
    f
}

fn with_ext(f: Frame, exts: Vec<Ext>) -> Frame {
    let mut f = f;
    if let Ip::V6 { ext, .. } = &mut f.ip {
        *ext = exts;
    }
    f
}

fn with_v4_frag(f: Frame, offset: u16, more: bool) -> Frame {
    let mut f = f;
    if let Ip::V4 {
        frag_offset,
        more_fragments,
        ..
    } = &mut f.ip
    {
        *frag_offset = offset;
        *more_fragments = more;
    }
    f
}

fn dest_opts(n: usize) -> Vec<Ext> {
    (0..n)
        .map(|i| Ext::DestOpts { len: (i % 2) as u8 })
        .collect()
}

/// Ingress frames that must be steered (with their service), covering IP options, IPv6
/// extension headers, first fragments and VLAN tags.
fn steerable_variants() -> Vec<(String, Svc, Frame)> {
    let mut v = Vec::new();
    for svc in SVCS {
        for words in 1..=10 {
            let f = with_v4_options(first(Fam::V4, svc, 10, 45_000 + words as u16), words);
            v.push((format!("IPv4 IHL {}", 5 + words), svc, f));
        }
        let ext_sets: Vec<(&str, Vec<Ext>)> = vec![
            (
                "hop-by-hop + destination options + routing",
                vec![
                    Ext::HopByHop { len: 0 },
                    Ext::DestOpts { len: 1 },
                    Ext::Routing { len: 2 },
                ],
            ),
            (
                "hop-by-hop + routing + destination options + AH",
                vec![
                    Ext::HopByHop { len: 3 },
                    Ext::Routing { len: 0 },
                    Ext::DestOpts { len: 0 },
                    Ext::Auth { len: 4 },
                ],
            ),
            (
                "atomic fragment (offset 0, last)",
                vec![Ext::Fragment {
                    offset: 0,
                    more: false,
                    id: 7,
                }],
            ),
            (
                "first fragment (offset 0, more)",
                vec![
                    Ext::HopByHop { len: 0 },
                    Ext::Fragment {
                        offset: 0,
                        more: true,
                        id: 8,
                    },
                ],
            ),
            ("6 extension headers", dest_opts(6)),
        ];
        for (i, (name, exts)) in ext_sets.into_iter().enumerate() {
            let f = with_ext(first(Fam::V6, svc, 11, 46_000 + i as u16), exts);
            v.push((format!("IPv6 {name}"), svc, f));
        }
        let tags: [(&str, Vec<(u16, u16)>); 3] = [
            ("802.1Q", vec![(pkt::ETH_P_8021Q, 100)]),
            (
                "802.1ad + 802.1Q (QinQ)",
                vec![(pkt::ETH_P_8021AD, 200), (pkt::ETH_P_8021Q, 100)],
            ),
            (
                "802.1Q + 802.1Q",
                vec![(pkt::ETH_P_8021Q, 300), (pkt::ETH_P_8021Q, 301)],
            ),
        ];
        for (i, (name, tags)) in tags.into_iter().enumerate() {
            for fam in FAMS {
                let f = first(fam, svc, 12, 47_000 + i as u16).with_vlans(&tags);
                v.push((format!("{fam:?} {name}"), svc, f));
            }
        }
        // IPv4 first fragment (offset 0, more fragments): has ports, is steered.
        let f = with_v4_frag(first(Fam::V4, svc, 13, 48_000), 0, true);
        v.push(("IPv4 first fragment".into(), svc, f));
    }
    v
}

#[test]
fn options_extension_headers_fragments_and_vlans_are_parsed() {
    for prog in INGRESS {
        let mut fx = Fixture::new("variants", 5_000);
        let mut seen = [0; 2];
        for (name, svc, f) in steerable_variants() {
            let b = expected_backend(&f, svc, 5_000);
            seen[b as usize] += 1;
            let port = svc.port_of(b);
            let what = format!("{prog:?} {svc:?} {name}");
            let out = fx.run(prog, &f.build());
            assert_rewritten(&out, &f.clone().with_dport(port), &what);
            assert_eq!(fx.flow_port(&f, svc), Some(port), "{what}: flow entry");
            // The reply (same options / headers / tags) goes back to the service port.
            let reply = f.clone().with_dport(port).reply(TCP_SYN | TCP_ACK);
            let out = fx.run(Prog::TcEgress, &reply.build());
            assert_rewritten(&out, &reply.with_sport(svc.port), &format!("{what} reply"));
        }
        assert!(seen[0] > 0 && seen[1] > 0, "both backends: {seen:?}");
    }
}

/// Frames for a service port that must pass untouched.
fn untouchable_variants() -> Vec<(String, Frame)> {
    let mut v = Vec::new();
    for svc in SVCS {
        let p = svc.port;
        // Later fragments carry bytes that look exactly like a header to the service.
        for (i, off) in [1u16, 185, 0x1fff].into_iter().enumerate() {
            let f = with_v4_frag(first(Fam::V4, svc, 20, 49_000 + i as u16), off, i != 2);
            v.push((format!("IPv4 later fragment offset {off}"), f));
            let f = with_ext(
                first(Fam::V6, svc, 20, 49_100 + i as u16),
                vec![Ext::Fragment {
                    offset: off,
                    more: i != 2,
                    id: 9,
                }],
            );
            v.push((format!("IPv6 later fragment offset {off}"), f));
        }
        v.push((
            "IPv6 with 7 extension headers".into(),
            with_ext(first(Fam::V6, svc, 21, 49_200), dest_opts(7)),
        ));
        v.push((
            "IPv6 with 12 extension headers".into(),
            with_ext(first(Fam::V6, svc, 21, 49_201), dest_opts(12)),
        ));
        for (i, ethertype) in [0x0806u16, 0x88cc, 0x8847, 0x9100].into_iter().enumerate() {
            let mut f = first(Fam::V4, svc, 22, 49_300 + i as u16);
            f.ethertype = Some(ethertype);
            v.push((format!("ethertype {ethertype:#06x}"), f));
        }
        // Three VLAN tags are more than the parser walks.
        let f = first(Fam::V4, svc, 23, 49_400).with_vlans(&[
            (pkt::ETH_P_8021AD, 1),
            (pkt::ETH_P_8021Q, 2),
            (pkt::ETH_P_8021Q, 3),
        ]);
        v.push(("three VLAN tags".into(), f));
        for fam in FAMS {
            // Other ports, direct connections to the backends, other protocol on the port.
            for port in [9999, 443, svc.blue, svc.green] {
                let f = first(fam, svc, 24, 49_500).with_dport(port);
                v.push((format!("{fam:?} to port {port}"), f));
            }
            let other = if svc.proto == Protocol::Tcp {
                Frame::udp(ip_from(fam, 25), 49_600, p)
            } else {
                Frame::tcp(ip_from(fam, 25), 49_600, p, 1, TCP_SYN)
            };
            v.push((format!("{fam:?} other protocol to {p}"), other));
        }
    }
    v
}

#[test]
fn non_service_traffic_and_unparsable_frames_pass_unchanged() {
    for prog in [Prog::TcIngress, Prog::XdpIngress, Prog::TcEgress] {
        let mut fx = Fixture::new("untouched", 5_000);
        for (name, f) in untouchable_variants() {
            let input = f.build();
            let out = fx.run(prog, &input);
            assert_unchanged(&out, &input, &format!("{prog:?} {name}"));
            // Non-SYN direct traffic too.
            if let L4::Tcp { .. } = f.l4 {
                let input = f.clone().with_tcp(TCP_ACK, 5).build();
                let out = fx.run(prog, &input);
                assert_unchanged(&out, &input, &format!("{prog:?} {name} ACK"));
            }
        }
        let flows = fx.dp.flows(None).unwrap_or_else(|e| panic!("flows: {e:?}"));
        assert!(flows.is_empty(), "{prog:?}: entries created: {flows:?}");
        // None of them is a service's packet: nothing is a skip.
        assert_eq!(fx.skips(), SkipCounts::default(), "{prog:?}: skips counted");
    }
}

#[test]
fn direct_connections_to_backends_are_never_rewritten() {
    for prog in INGRESS {
        for fam in FAMS {
            let mut fx = Fixture::new("direct", 5_000);
            for port in [TCP_SVC.blue, TCP_SVC.green] {
                let syn = first(fam, TCP_SVC, 30, 50_000).with_dport(port);
                for f in [
                    syn.clone(),
                    syn.clone().with_tcp(TCP_ACK, 1),
                    syn.clone()
                        .with_tcp(TCP_ACK | TCP_PSH, 1)
                        .with_payload(b"x"),
                ] {
                    let input = f.build();
                    assert_unchanged(&fx.run(prog, &input), &input, "direct ingress");
                    let reply = f.reply(TCP_ACK).build();
                    assert_unchanged(&fx.run(Prog::TcEgress, &reply), &reply, "direct egress");
                }
            }
            for port in [UDP_SVC.blue, UDP_SVC.green] {
                let f = first(fam, UDP_SVC, 30, 50_000).with_dport(port);
                let input = f.build();
                assert_unchanged(&fx.run(prog, &input), &input, "direct UDP");
                let reply = f.reply(0).build();
                assert_unchanged(&fx.run(Prog::TcEgress, &reply), &reply, "direct UDP reply");
            }
            assert!(fx.dp.flows(None).expect("flows").is_empty());

            // A direct SYN to a backend port on the tuple of an earlier shifted connection
            // (client port reuse) drops the stale entry, so the direct connection's replies
            // are not rewritten.
            let syn = first(fam, TCP_SVC, 31, 50_100);
            let b = expected_backend(&syn, TCP_SVC, 5_000);
            let port = TCP_SVC.port_of(b);
            fx.run(prog, &syn.build());
            let direct = syn.clone().with_tcp(TCP_SYN, 77).with_dport(port);
            let input = direct.build();
            assert_unchanged(&fx.run(prog, &input), &input, "direct SYN on a stale tuple");
            let reply = direct.reply(TCP_SYN | TCP_ACK).build();
            assert_unchanged(&fx.run(Prog::TcEgress, &reply), &reply, "its reply");
            // Direct connections are not the services' packets: no skip either way.
            assert_eq!(fx.skips(), SkipCounts::default(), "{prog:?} {fam:?}: skips");
        }
    }
}

#[test]
fn udp_checksum_zero_stays_zero_and_computed_zero_is_sent_as_ffff() {
    for prog in INGRESS {
        let mut fx = Fixture::new("udpzero", 5_000);
        let mut f = first(Fam::V4, UDP_SVC, 40, 51_000);
        f.l4 = L4::Udp {
            sport: 51_000,
            dport: UDP_SVC.port,
            no_checksum: true,
        };
        let port = UDP_SVC.port_of(expected_backend(&f, UDP_SVC, 5_000));
        let out = fx.run(prog, &f.build());
        assert_rewritten(&out, &f.clone().with_dport(port), "UDP without checksum");
        let v = pkt::verify(&out).expect("verify");
        assert!(v.udp_no_checksum, "checksum 0 must stay 0");
        // The egress reply without checksum too.
        let reply = f.clone().with_dport(port).reply(0);
        let out = fx.run(Prog::TcEgress, &reply.build());
        assert_rewritten(
            &out,
            &reply.clone().with_sport(UDP_SVC.port),
            "reply without checksum",
        );

        // A datagram whose rewritten checksum computes to 0 must carry 0xffff (RFC 768).
        // Choose the payload word so that the rewritten datagram sums to 0xffff.
        let probe = first(Fam::V4, UDP_SVC, 41, 51_001);
        let port = UDP_SVC.port_of(expected_backend(&probe, UDP_SVC, 5_000));
        let zero_payload = probe.clone().with_payload(&[0, 0]).with_dport(port).build();
        let c = &zero_payload[zero_payload.len() - 4..zero_payload.len() - 2];
        let word = [c[0], c[1]];
        let g = probe.with_payload(&word);
        let want = g.clone().with_dport(port);
        let want_bytes = want.build();
        assert_eq!(
            &want_bytes[want_bytes.len() - 4..want_bytes.len() - 2],
            &[0xff, 0xff],
            "test setup: the rewritten datagram's checksum computes to 0"
        );
        let out = fx.run(prog, &g.build());
        assert_rewritten(&out, &want, &format!("{prog:?} computed checksum 0"));
    }
}

#[test]
fn tc_and_xdp_produce_identical_bytes() {
    let mut tc = Fixture::new("agree-tc", 5_000);
    let mut xdp = Fixture::new("agree-xdp", 5_000);
    let mut frames: Vec<Frame> = steerable_variants()
        .into_iter()
        .map(|(_, _, f)| f)
        .collect();
    frames.extend(untouchable_variants().into_iter().map(|(_, f)| f));
    for (i, fam) in FAMS.into_iter().enumerate() {
        for svc in SVCS {
            for client in 0..20u16 {
                let f = first(fam, svc, 100 + client, 52_000 + i as u16);
                frames.push(later(&f));
                frames.push(f);
            }
        }
    }
    let mut rewritten = 0;
    for f in &frames {
        let input = f.build();
        let a = tc.run(Prog::TcIngress, &input);
        let b = xdp.run(Prog::XdpIngress, &input);
        assert_frame(&b, &a, &format!("XDP vs TC for {f:?}"));
        if a != input {
            rewritten += 1;
            pkt::verify(&a).unwrap_or_else(|e| panic!("{f:?}: {e}"));
        }
    }
    println!(
        "{} frames, {rewritten} rewritten, identical under TC and XDP",
        frames.len()
    );
    assert!(
        rewritten > frames.len() / 3,
        "most frames must have been steered"
    );
}

/// Every frame kind truncated at every length: never written. For lengths the kernel
/// refuses to run (shorter than an Ethernet header), the refusal is accepted.
#[test]
fn truncated_frames_are_never_written() {
    let mut fx = Fixture::new("truncated", 5_000);
    // Ingress frames: first packets and later packets of flows that exist, so that a
    // successful parse of a truncated frame would be rewritten.
    let mut ingress: Vec<Frame> = Vec::new();
    for (_, _, f) in steerable_variants() {
        ingress.push(later(&f).with_payload(b"payload bytes"));
        ingress.push(f.with_payload(b"payload bytes"));
    }
    for (_, f) in untouchable_variants() {
        ingress.push(f);
    }
    for fam in FAMS {
        for svc in SVCS {
            let f = first(fam, svc, 200, 53_000);
            ingress.push(later(&f));
            ingress.push(f);
        }
    }
    // Create the flows (full frames), and collect the egress replies of those flows.
    let mut egress: Vec<Vec<u8>> = Vec::new();
    for f in &ingress {
        let out = fx.run(Prog::TcIngress, &f.build());
        if let Ok(v) = pkt::verify(&out)
            && v.dport != f.dport()
        {
            let reply = f.clone().with_dport(v.dport).reply(TCP_ACK);
            egress.push(reply.build());
        }
    }
    assert!(
        egress.len() > 20,
        "flows for egress replies exist: {}",
        egress.len()
    );
    let ingress: Vec<Vec<u8>> = ingress.iter().map(Frame::build).collect();
    let mut runs = 0u64;
    let mut refused = 0u64;
    let mut max_refused_len = 0;
    for (prog, frames) in [
        (Prog::TcIngress, &ingress),
        (Prog::XdpIngress, &ingress),
        (Prog::TcEgress, &egress),
    ] {
        for full in frames.iter() {
            for len in 0..full.len() {
                let input = &full[..len];
                match try_run(&mut fx.dp, prog, input) {
                    Ok(out) => {
                        runs += 1;
                        assert_eq!(out.retval, prog.expected_retval());
                        assert_unchanged(
                            &out.data,
                            input,
                            &format!("{prog:?} frame truncated to {len} of {}", full.len()),
                        );
                    }
                    Err(e) => {
                        refused += 1;
                        max_refused_len = max_refused_len.max(len);
                        // The kernel needs an Ethernet header, and for skb programs
                        // something after it.
                        // The kernel needs an Ethernet header; for skb programs also the
                        // whole IPv4 / IPv6 header when the ethertype says IP.
                        let outer = u16::from_be_bytes([full[12], full[13]]);
                        let needed = match (prog, outer) {
                            (Prog::XdpIngress, _) => 14,
                            (_, pkt::ETH_P_IP) => 14 + 20,
                            (_, pkt::ETH_P_IPV6) => 14 + 40,
                            _ => 14,
                        };
                        assert!(
                            len < needed || len == 14,
                            "{prog:?}: TEST_RUN refused a {len}-byte frame \
                             (ethertype {outer:#06x}): {e:?}"
                        );
                    }
                }
            }
        }
    }
    println!(
        "truncation: {runs} runs passed unchanged, {refused} refused by the kernel (len <= {max_refused_len})"
    );
}

/// The socket-lookup recovery path for real: in a fresh network namespace (of this thread
/// only) with 198.18.77.1 on loopback, a real TCP connection to a backend port exists;
/// a non-SYN segment of it addressed to the service port (as after a flow-table clear) is
/// recovered to the backend that owns it. A mere listener is not an owner.
#[test]
fn socket_lookup_recovers_connections_after_a_miss() {
    let mut fx = Fixture::new("recovery", 5_000);
    let dp = &mut fx;
    std::thread::scope(|s| {
        s.spawn(move || recovery_in_private_netns(dp))
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
    });
}

fn sh(args: &[&str]) {
    let st = std::process::Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(st.success(), "{args:?} failed: {st}");
}

fn recovery_in_private_netns(fx: &mut Fixture) {
    use std::net::{TcpListener, TcpStream};
    // SAFETY: unshare of the calling thread's network namespace only; the namespace goes
    // away with this thread and its sockets.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) failed: {}",
        std::io::Error::last_os_error()
    );
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&["ip", "addr", "add", "198.18.77.1/32", "dev", "lo"]);
    sh(&["ip", "addr", "add", "2001:2::77/128", "dev", "lo", "nodad"]);

    for (addr, fam) in [
        (IpAddr::V4(Ipv4Addr::new(198, 18, 77, 1)), Fam::V4),
        (IpAddr::V6("2001:2::77".parse().expect("addr")), Fam::V6),
    ] {
        for backend in [Backend::Blue, Backend::Green] {
            let port = TCP_SVC.port_of(backend);
            let listener = TcpListener::bind((addr, port))
                .unwrap_or_else(|e| panic!("listen on {addr}:{port}: {e}"));
            let client = TcpStream::connect((addr, port)).expect("connect");
            let (_server, _) = listener.accept().expect("accept");
            let cport = client.local_addr().expect("local addr").port();
            let ip = match addr {
                IpAddr::V4(a) => pkt::v4(a.octets(), a.octets()),
                IpAddr::V6(a) => pkt::v6(a, a),
            };
            for prog in INGRESS {
                fx.dp.clear_flows().expect("clear flows");
                let before = fx.counters(TCP_SVC)[backend as usize].recoveries;
                let seg = Frame::tcp(ip.clone(), cport, TCP_SVC.port, 1, TCP_ACK | TCP_PSH)
                    .with_payload(b"after the clear");
                let out = fx.run(prog, &seg.build());
                let what = format!("{prog:?} {fam:?} recovery to {backend:?}");
                assert_rewritten(&out, &seg.clone().with_dport(port), &what);
                let after = fx.counters(TCP_SVC)[backend as usize].recoveries;
                assert_eq!(after, before + 1, "{what}: recoveries counter");
                let flows = fx.dp.flows(None).expect("flows");
                assert!(
                    flows.iter().any(|f| f.client_port == cport
                        && f.backend_port == port
                        && f.flags & FLOW_RECOVERED != 0),
                    "{what}: recovered entry in {flows:?}"
                );
                // The reply is rewritten back to the service port.
                let reply = seg.clone().with_dport(port).reply(TCP_ACK);
                let out = fx.run(Prog::TcEgress, &reply.build());
                assert_rewritten(
                    &out,
                    &reply.with_sport(TCP_SVC.port),
                    &format!("{what} reply"),
                );

                // Another client port: only the listener matches, which owns nothing.
                let stray = Frame::tcp(ip.clone(), cport ^ 1, TCP_SVC.port, 1, TCP_ACK);
                let input = stray.build();
                fx.assert_skipped(prog, &input, Skip::RecoveryMiss, &format!("{what} stray"));
            }
        }
    }
}

/// A frame whose length fields disagree with the frame or with each other, and the reason
/// the programs must skip it for.
struct Malformed {
    what: String,
    bytes: Vec<u8>,
    reason: Skip,
}

/// `bytes` with `n` bytes of trailing Ethernet padding: not part of the IP datagram, so the
/// frame stays valid, but a length that points into the padding points past the datagram.
fn padded(mut bytes: Vec<u8>, n: usize) -> Vec<u8> {
    bytes.resize(bytes.len() + n, 0);
    bytes
}

fn with_tcp_options(f: Frame, n: usize) -> Frame {
    let mut f = f;
    if let L4::Tcp { options, .. } = &mut f.l4 {
        // NOPs: any content does, only the data offset matters here.
        *options = vec![1; n];
    }
    f
}

/// Every way of getting each length field of each header of `f` wrong: too small, too large
/// and inconsistent with another length. `f` is a valid TCP frame with payload or a valid UDP
/// datagram, without IP options or extension headers.
fn malformed_variants(f: &Frame) -> Vec<Malformed> {
    use LengthField::{Ipv4Ihl, Ipv4TotalLength, Ipv6PayloadLength, TcpDataOffset, UdpLength};
    let v4 = matches!(f.ip, Ip::V4 { .. });
    let tcp = matches!(f.l4, L4::Tcp { .. });
    let l4_min: u16 = if tcp { 20 } else { 8 };
    let (ip_len, ip_hdr, ip_reason) = if v4 {
        (Ipv4TotalLength, 20, Skip::Ipv4Length)
    } else {
        (Ipv6PayloadLength, 0, Skip::Ipv6Length)
    };
    let actual = f.length_field(ip_len);
    let mut v = Vec::new();
    let mut add = |what: String, bytes: Vec<u8>, reason: Skip| {
        v.push(Malformed {
            what,
            bytes,
            reason,
        });
    };
    let with = |field, value| f.build_with_length(field, value);

    // The IP length: too small for the L4 header, 0 outside GSO, past the frame.
    add(
        format!(
            "{ip_len:?} {} (too small for the L4 header)",
            ip_hdr + l4_min - 1
        ),
        with(ip_len, ip_hdr + l4_min - 1),
        ip_reason,
    );
    add(
        format!("{ip_len:?} 0 (not GSO)"),
        with(ip_len, 0),
        ip_reason,
    );
    for value in [actual + 1, 0xffff] {
        add(
            format!("{ip_len:?} {value} (past the frame)"),
            with(ip_len, value),
            Skip::Truncated,
        );
    }
    if v4 {
        add(
            "IPv4 total length 19 (below the IHL)".into(),
            with(Ipv4TotalLength, 19),
            Skip::Ipv4Length,
        );
        for ihl in [4, 0] {
            add(
                format!("IPv4 IHL {ihl} (too small)"),
                with(Ipv4Ihl, ihl),
                Skip::Ipv4Length,
            );
        }
        // 60 bytes of header: past the whole frame.
        add(
            "IPv4 IHL 15 (past the frame)".into(),
            with(Ipv4Ihl, 15),
            Skip::Ipv4Length,
        );
        // 60 bytes fit in the padded frame but not in the datagram.
        add(
            "IPv4 IHL 15 (past the total length)".into(),
            padded(with(Ipv4Ihl, 15), 40),
            Skip::Ipv4Length,
        );
    } else {
        // Extension headers the payload length does not cover.
        let ext = with_ext(f.clone(), vec![Ext::HopByHop { len: 1 }]);
        add(
            "IPv6 payload length 8 (below its 16-byte hop-by-hop header)".into(),
            ext.build_with_length(Ipv6PayloadLength, 8),
            Skip::Ipv6Length,
        );
    }
    if tcp {
        for doff in [4, 0] {
            add(
                format!("TCP data offset {doff} (too small)"),
                with(TcpDataOffset, doff),
                Skip::TcpLength,
            );
        }
        add(
            "TCP data offset 15 (past the frame)".into(),
            with(TcpDataOffset, 15),
            Skip::TcpLength,
        );
        add(
            "TCP data offset 15 (in the padding, past the IP payload)".into(),
            padded(with(TcpDataOffset, 15), 64),
            Skip::TcpLength,
        );
        // A 32-byte header (12 option bytes) in a datagram that ends 8 bytes into it.
        let opts = with_tcp_options(f.clone().with_payload(b""), 12);
        add(
            format!("{ip_len:?} ending inside the TCP options"),
            opts.build_with_length(ip_len, ip_hdr + 24),
            Skip::TcpLength,
        );
    } else {
        let ulen = f.length_field(UdpLength);
        for (value, why) in [
            (7, "too small"),
            (0, "too small"),
            (ulen + 1, "past the frame"),
            (0xffff, "past the frame"),
            (ulen - 1, "shorter than the IP payload"),
        ] {
            add(
                format!("UDP length {value} ({why})"),
                with(UdpLength, value),
                Skip::UdpLength,
            );
        }
        add(
            format!(
                "UDP length {} (in the padding, past the IP payload)",
                ulen + 4
            ),
            padded(with(UdpLength, ulen + 4), 16),
            Skip::UdpLength,
        );
        add(
            format!("{ip_len:?} {} (shorter than the UDP length)", actual - 1),
            with(ip_len, actual - 1),
            Skip::UdpLength,
        );
    }
    // Frames cut short: after the ports inside the L4 header, and inside the payload.
    let full = f.build();
    let (_, l4) = f.offsets();
    for len in [l4 + 6, full.len() - 1] {
        add(
            format!("frame cut to {len} of {} bytes", full.len()),
            full[..len].to_vec(),
            Skip::Truncated,
        );
    }
    v
}

/// A TCP segment with payload or a UDP datagram of `svc`, for the length tests.
fn length_test_frame(fam: Fam, svc: Svc, client: u16, sport: u16) -> Frame {
    let f = first(fam, svc, client, sport);
    match svc.proto {
        Protocol::Tcp => f.with_payload(b"sixteen bytes..."),
        Protocol::Udp => f,
    }
}

#[test]
fn packets_with_inconsistent_lengths_are_skipped_never_written_or_recorded() {
    for prog in INGRESS {
        let mut fx = Fixture::new("lengths", 5_000);
        let mut skipped = 0;
        for fam in FAMS {
            for svc in SVCS {
                // A new flow's first packet (nothing may be recorded) and a later packet of a
                // flow that exists (nothing may be rewritten).
                let f = length_test_frame(fam, svc, 60, 54_000);
                let established = first(fam, svc, 61, 54_001);
                fx.run(prog, &established.build());
                let port = fx
                    .flow_port(&established, svc)
                    .expect("the valid first packet made a flow");
                for (frame, kind) in [(f, "first"), (later(&established), "later")] {
                    for m in malformed_variants(&frame) {
                        let what = format!("{fam:?} {svc:?} {kind} packet: {}", m.what);
                        fx.assert_skipped(prog, &m.bytes, m.reason, &what);
                        skipped += 1;
                    }
                    assert_eq!(fx.flow_port(&frame, svc), (kind == "later").then_some(port));
                }
            }
        }
        assert_eq!(fx.skips().total(), skipped, "{prog:?}");
        println!("{prog:?}: {skipped} malformed packets skipped");
    }
}

#[test]
fn replies_with_inconsistent_lengths_are_skipped_at_egress() {
    let mut fx = Fixture::new("egresslengths", 5_000);
    for fam in FAMS {
        for svc in SVCS {
            let f = length_test_frame(fam, svc, 62, 54_100);
            fx.run(Prog::TcIngress, &f.build());
            let port = fx.flow_port(&f, svc).expect("flow");
            let reply = f.clone().with_dport(port).reply(TCP_ACK | TCP_PSH);
            // The valid reply is rewritten: the variants below would be too.
            let out = fx.run(Prog::TcEgress, &reply.build());
            assert_rewritten(&out, &reply.clone().with_sport(svc.port), "valid reply");
            for m in malformed_variants(&reply) {
                let what = format!("{fam:?} {svc:?} reply: {}", m.what);
                fx.assert_skipped(Prog::TcEgress, &m.bytes, m.reason, &what);
            }
        }
    }
}

#[test]
fn malformed_packets_for_other_ports_are_not_skips() {
    for prog in [Prog::TcIngress, Prog::XdpIngress, Prog::TcEgress] {
        let mut fx = Fixture::new("malformedother", 5_000);
        for fam in FAMS {
            for svc in SVCS {
                let f = length_test_frame(fam, svc, 63, 54_200).with_dport(9999);
                let f = if prog == Prog::TcEgress {
                    f.reply(TCP_ACK)
                } else {
                    f
                };
                for m in malformed_variants(&f) {
                    let out = fx.run(prog, &m.bytes);
                    assert_unchanged(&out, &m.bytes, &format!("{prog:?} {}", m.what));
                }
            }
        }
        assert_eq!(fx.skips(), SkipCounts::default(), "{prog:?}");
        assert!(fx.all_flows().is_empty());
    }
}

/// Runs `input` through TC ingress or egress as a GSO packet (`gso_size` set in the test
/// run's `__sk_buff`).
fn run_gso(fx: &mut Fixture, prog: Prog, input: &[u8]) -> Vec<u8> {
    use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
    // struct __sk_buff (uapi/linux/bpf.h): 192 bytes, gso_segs at 164, gso_size at 176.
    let mut ctx = [0u8; 192];
    ctx[164..168].copy_from_slice(&2u32.to_ne_bytes());
    ctx[176..180].copy_from_slice(&1400u32.to_ne_bytes());
    let name = match prog {
        Prog::TcIngress => shifter_common::PROG_TC_INGRESS,
        Prog::TcEgress => shifter_common::PROG_TC_EGRESS,
        Prog::XdpIngress => panic!("XDP has no GSO"),
    };
    let p: &mut SchedClassifier = fx
        .dp
        .program_mut(name)
        .expect("program")
        .try_into()
        .expect("classifier");
    let mut out = vec![0u8; input.len() + 256];
    let r = p
        .test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("GSO test run of {prog:?}: {e:?}"));
    assert_eq!(r.return_value, prog.expected_retval());
    out.truncate(r.data_size_out as usize);
    out
}

/// BIG TCP aggregates state no IP length (0): steered at TC when the skb is GSO, and still
/// skipped as a UDP datagram or without GSO (the malformed tests).
#[test]
fn gso_tcp_without_ip_length_is_steered() {
    let mut fx = Fixture::new("gso", 5_000);
    for fam in FAMS {
        let field = match fam {
            Fam::V4 => LengthField::Ipv4TotalLength,
            Fam::V6 => LengthField::Ipv6PayloadLength,
        };
        let f = length_test_frame(fam, TCP_SVC, 64, 54_300);
        let port = TCP_SVC.port_of(expected_backend(&f, TCP_SVC, 5_000));
        let out = run_gso(&mut fx, Prog::TcIngress, &f.build_with_length(field, 0));
        let want = f.clone().with_dport(port).build_with_length(field, 0);
        assert_frame(
            &out,
            &want,
            &format!("{fam:?} GSO segment without IP length"),
        );
        assert_eq!(fx.flow_port(&f, TCP_SVC), Some(port));
        let reply = f.clone().with_dport(port).reply(TCP_ACK);
        let out = run_gso(&mut fx, Prog::TcEgress, &reply.build_with_length(field, 0));
        let want = reply.with_sport(TCP_SVC.port).build_with_length(field, 0);
        assert_frame(&out, &want, &format!("{fam:?} GSO reply without IP length"));
        // A GSO UDP datagram must state its length.
        let u = first(fam, UDP_SVC, 64, 54_301);
        let before = fx.skips();
        let input = u.build_with_length(field, 0);
        assert_unchanged(
            &run_gso(&mut fx, Prog::TcIngress, &input),
            &input,
            "GSO UDP",
        );
        let reason = if fam == Fam::V4 {
            Skip::Ipv4Length
        } else {
            Skip::Ipv6Length
        };
        assert_eq!(fx.skips().get(reason), before.get(reason) + 1);
    }
    assert_eq!(fx.skips().total(), 2);
}
