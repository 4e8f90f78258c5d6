//! Namespace tests of issue 2 with the ingress program at XDP (egress is TC): real TCP
//! and UDP servers, a client across a veth pair, IPv4 and IPv6. Needs root.

use crate::netns_suite;

use shifter::Hook;
use shifter_tests::netns::Family;

const HOOK: Hook = Hook::Xdp;

#[test]
fn v4_new_tcp_connections_follow_weight() {
    netns_suite::new_tcp_connections_follow_weight(HOOK, Family::V4, "xdp4-split");
}

#[test]
fn v6_new_tcp_connections_follow_weight() {
    netns_suite::new_tcp_connections_follow_weight(HOOK, Family::V6, "xdp6-split");
}

#[test]
fn v4_udp_datagrams_follow_weight() {
    netns_suite::udp_datagrams_follow_weight(HOOK, Family::V4, "xdp4-udp");
}

#[test]
fn v6_udp_datagrams_follow_weight() {
    netns_suite::udp_datagrams_follow_weight(HOOK, Family::V6, "xdp6-udp");
}

#[test]
fn v4_long_lived_connections_keep_backend() {
    netns_suite::long_lived_connections_keep_backend(HOOK, Family::V4, "xdp4-long", false);
}

#[test]
fn v6_long_lived_connections_keep_backend() {
    netns_suite::long_lived_connections_keep_backend(HOOK, Family::V6, "xdp6-long", false);
}

#[test]
fn v4_long_lived_connections_survive_cleared_flow_table() {
    netns_suite::long_lived_connections_keep_backend(HOOK, Family::V4, "xdp4-clear", true);
}

#[test]
fn v6_long_lived_connections_survive_cleared_flow_table() {
    netns_suite::long_lived_connections_keep_backend(HOOK, Family::V6, "xdp6-clear", true);
}

#[test]
fn v4_direct_and_other_ports_untouched() {
    netns_suite::direct_and_other_ports_untouched(HOOK, Family::V4, "xdp4-direct");
}

#[test]
fn v6_direct_and_other_ports_untouched() {
    netns_suite::direct_and_other_ports_untouched(HOOK, Family::V6, "xdp6-direct");
}

#[test]
fn v4_rewritten_checksums_verify() {
    netns_suite::rewritten_checksums_verify(HOOK, Family::V4, "xdp4-csum");
}

#[test]
fn v6_rewritten_checksums_verify() {
    netns_suite::rewritten_checksums_verify(HOOK, Family::V6, "xdp6-csum");
}
