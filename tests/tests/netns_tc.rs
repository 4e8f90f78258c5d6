//! Namespace tests of issue 2 with the ingress program at TC (egress is TC): real TCP
//! and UDP servers, a client across a veth pair, IPv4 and IPv6. Needs root.

use crate::netns_suite;
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
    socket::on_kernel("sk4-split", |n| {
        socket::new_connections_follow_weight(Family::V4, n)
    });
}

#[test]
fn socket_v6_new_connections_follow_weight() {
    socket::on_kernel("sk6-split", |n| {
        socket::new_connections_follow_weight(Family::V6, n)
    });
}

#[test]
fn socket_v4_client_affinity() {
    socket::on_kernel("sk4-aff", |n| socket::client_affinity(Family::V4, n));
}

#[test]
fn socket_v6_client_affinity() {
    socket::on_kernel("sk6-aff", |n| socket::client_affinity(Family::V6, n));
}

#[test]
fn socket_v4_long_lived_connections_keep_backend() {
    socket::on_kernel("sk4-long", |n| {
        socket::long_lived_connections_keep_backend(Family::V4, n)
    });
}

#[test]
fn socket_v6_long_lived_connections_keep_backend() {
    socket::on_kernel("sk6-long", |n| {
        socket::long_lived_connections_keep_backend(Family::V6, n)
    });
}

#[test]
fn socket_v4_green_dies_then_returns() {
    socket::on_kernel("sk4-down", |n| {
        socket::green_dies_then_returns(Family::V4, n)
    });
}

#[test]
fn socket_v6_green_dies_then_returns() {
    socket::on_kernel("sk6-down", |n| {
        socket::green_dies_then_returns(Family::V6, n)
    });
}

#[test]
fn socket_local_clients_are_steered() {
    socket::on_kernel("sk-local", socket::local_clients_are_steered);
}

#[test]
fn socket_v4_direct_and_other_ports_untouched() {
    socket::on_kernel("sk4-direct", |n| {
        socket::direct_and_other_ports_untouched(Family::V4, n)
    });
}

#[test]
fn socket_service_on_one_local_address() {
    socket::on_kernel("sk-addr", socket::address_specific_service);
}

#[test]
fn socket_resets_are_counted() {
    socket::on_kernel("sk-reset", socket::resets_are_counted);
}

#[test]
fn socket_reuseport_workers_exiting_leave_no_slot_empty() {
    socket::on_kernel(
        "sk-reuse",
        socket::reuseport_workers_exiting_leave_no_slot_empty,
    );
}

#[test]
fn socket_preexisting_reuseport_group_is_registered_whole() {
    socket::on_kernel(
        "sk-reuse0",
        socket::preexisting_reuseport_group_is_registered_whole,
    );
}

#[test]
fn socket_accounting_by_decisions() {
    socket::on_kernel("sk-decide", socket::accounting_by_decisions);
}

#[test]
fn socket_in_kernel_registration() {
    socket::on_kernel("sk-inkern", socket::in_kernel_registration);
}

#[test]
fn socket_another_sk_lookup_program_keeps_working() {
    socket::on_kernel("sk-two", socket::another_sk_lookup_program_keeps_working);
}

#[test]
fn socket_programs_run_per_connection_not_per_packet() {
    socket::on_kernel(
        "sk-runcnt",
        socket::programs_run_per_connection_not_per_packet,
    );
}

#[test]
fn socket_switching_dispatch_keeps_live_connections() {
    socket::on_kernel(
        "sk-switch",
        socket::switching_dispatch_keeps_live_connections,
    );
}
