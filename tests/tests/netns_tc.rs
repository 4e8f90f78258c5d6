//! Namespace tests of issue 2 with the ingress program at TC (egress is TC): real TCP
//! and UDP servers, a client across a veth pair, IPv4 and IPv6. Needs root.

mod netns_suite;
#[path = "netns_suite/socket.rs"]
mod socket;

use shifter::Hook;
use shifter_tests::netns::Family;

const HOOK: Hook = Hook::Tc;

#[test]
fn v4_new_tcp_connections_follow_weight() {
    netns_suite::new_tcp_connections_follow_weight(HOOK, Family::V4, "tc4-split");
}

#[test]
fn v6_new_tcp_connections_follow_weight() {
    netns_suite::new_tcp_connections_follow_weight(HOOK, Family::V6, "tc6-split");
}

#[test]
fn v4_udp_datagrams_follow_weight() {
    netns_suite::udp_datagrams_follow_weight(HOOK, Family::V4, "tc4-udp");
}

#[test]
fn v6_udp_datagrams_follow_weight() {
    netns_suite::udp_datagrams_follow_weight(HOOK, Family::V6, "tc6-udp");
}

#[test]
fn v4_long_lived_connections_keep_backend() {
    netns_suite::long_lived_connections_keep_backend(HOOK, Family::V4, "tc4-long", false);
}

#[test]
fn v6_long_lived_connections_keep_backend() {
    netns_suite::long_lived_connections_keep_backend(HOOK, Family::V6, "tc6-long", false);
}

#[test]
fn v4_long_lived_connections_survive_cleared_flow_table() {
    netns_suite::long_lived_connections_keep_backend(HOOK, Family::V4, "tc4-clear", true);
}

#[test]
fn v6_long_lived_connections_survive_cleared_flow_table() {
    netns_suite::long_lived_connections_keep_backend(HOOK, Family::V6, "tc6-clear", true);
}

#[test]
fn v4_direct_and_other_ports_untouched() {
    netns_suite::direct_and_other_ports_untouched(HOOK, Family::V4, "tc4-direct");
}

#[test]
fn v6_direct_and_other_ports_untouched() {
    netns_suite::direct_and_other_ports_untouched(HOOK, Family::V6, "tc6-direct");
}

#[test]
fn v4_rewritten_checksums_verify() {
    netns_suite::rewritten_checksums_verify(HOOK, Family::V4, "tc4-csum");
}

#[test]
fn v6_rewritten_checksums_verify() {
    netns_suite::rewritten_checksums_verify(HOOK, Family::V6, "tc6-csum");
}

// Socket dispatch (sk_lookup); TC stays attached for rewrite services and must leave the
// socket-dispatched service's packets alone.

#[test]
fn socket_v4_new_connections_follow_weight() {
    socket::new_connections_follow_weight(Family::V4, "sk4-split");
}

#[test]
fn socket_v6_new_connections_follow_weight() {
    socket::new_connections_follow_weight(Family::V6, "sk6-split");
}

#[test]
fn socket_v4_client_affinity() {
    socket::client_affinity(Family::V4, "sk4-aff");
}

#[test]
fn socket_v6_client_affinity() {
    socket::client_affinity(Family::V6, "sk6-aff");
}

#[test]
fn socket_v4_long_lived_connections_keep_backend() {
    socket::long_lived_connections_keep_backend(Family::V4, "sk4-long");
}

#[test]
fn socket_v6_long_lived_connections_keep_backend() {
    socket::long_lived_connections_keep_backend(Family::V6, "sk6-long");
}

#[test]
fn socket_v4_green_dies_then_returns() {
    socket::green_dies_then_returns(Family::V4, "sk4-down");
}

#[test]
fn socket_v6_green_dies_then_returns() {
    socket::green_dies_then_returns(Family::V6, "sk6-down");
}

#[test]
fn socket_local_clients_are_steered() {
    socket::local_clients_are_steered("sk-local");
}

#[test]
fn socket_v4_direct_and_other_ports_untouched() {
    socket::direct_and_other_ports_untouched(Family::V4, "sk4-direct");
}

#[test]
fn socket_resets_are_counted() {
    socket::resets_are_counted("sk-reset");
}

#[test]
fn socket_reuseport_workers_exiting_leave_no_slot_empty() {
    socket::reuseport_workers_exiting_leave_no_slot_empty("sk-reuse");
}

#[test]
fn socket_preexisting_reuseport_group_is_registered_whole() {
    socket::preexisting_reuseport_group_is_registered_whole("sk-reuse0");
}

#[test]
fn socket_accounting_by_decisions() {
    socket::accounting_by_decisions("sk-decide");
}

#[test]
fn socket_in_kernel_registration() {
    socket::in_kernel_registration("sk-inkern");
}

#[test]
fn socket_another_sk_lookup_program_keeps_working() {
    socket::another_sk_lookup_program_keeps_working("sk-two");
}

#[test]
fn socket_programs_run_per_connection_not_per_packet() {
    socket::programs_run_per_connection_not_per_packet("sk-runcnt");
}

#[test]
fn socket_switching_dispatch_keeps_live_connections() {
    socket::switching_dispatch_keeps_live_connections("sk-switch");
}
