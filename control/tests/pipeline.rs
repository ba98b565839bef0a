//! Real packets (built with etherparse) pushed through the compiled wizard labs of
//! configs/: where each one comes out, and why each dropped one is dropped.

mod support;

use dataplane::{DropReason, Verdict};
use support::*;

/// A VPC whose only way to the internet is an egress-only gateway.
const EIGW_ONLY: &str = r#"
version: 1
vpcs:
  - id: vpc-v6
    cidr_block: 10.40.0.0/16
    ipv6_cidr_block: 2001:db8:40::/56
    egress_only_internet_gateway: eigw-v6
    subnets:
      - { id: private-a, cidr_block: 10.40.2.0/24, ipv6_cidr_block: "2001:db8:40:2::/64", route_table: rtb-private }
    route_tables:
      - id: rtb-private
        routes:
          - { destination: "::/0", target: eigw-v6 }
    instances:
      - { id: app-1, subnet: private-a, private_ip: 10.40.2.10, ipv6_address: "2001:db8:40:2::10" }
internet:
  hosts:
    - { id: inet-1, ipv6: "2001:db8:ffff::10" }
"#;

#[test]
fn instances_in_different_subnets_reach_each_other_over_the_local_route_v4_and_v6() {
    let mut l = lab("default");
    let out = l.expect_to("web-1", udp("10.0.1.10", "10.0.2.10", 40000, 5201), "app-1");
    assert_eq!(
        out,
        udp("10.0.1.10", "10.0.2.10", 40000, 5201),
        "the local route does not change the packet"
    );
    l.expect_to(
        "app-1",
        tcp_syn("10.0.2.10", "10.0.1.10", 40001, 22),
        "web-1",
    );
    l.expect_to(
        "web-1",
        ping("2001:db8:10:1::10", "2001:db8:10:2::10"),
        "app-1",
    );
    l.expect_to(
        "app-1",
        udp("2001:db8:10:2::10", "2001:db8:10:1::10", 5353, 5353),
        "web-1",
    );
    assert_eq!(l.pipe.stats.forwarded, 4);
}

#[test]
fn the_route_table_step_names_the_matching_route() {
    let mut l = lab("default");
    let o = l.send("web-1", udp("10.0.1.10", "10.0.2.10", 1, 2));
    assert!(
        o.steps
            .iter()
            .any(|s| s.contains("Route") && s.contains("10.0.0.0/16") && s.contains("Local")),
        "{:#?}",
        o.steps
    );
}

#[test]
fn same_subnet_traffic_skips_the_route_table() {
    // R-RT-SAMESUBNET.
    let mut l = lab("single-public-subnet");
    let o = l.send("web-1", ping("10.10.0.10", "10.10.0.11"));
    assert_eq!(o.to.as_deref(), Some("web-2"));
    assert!(
        o.steps.iter().any(|s| s.starts_with("SameSubnet")),
        "{:#?}",
        o.steps
    );
    assert!(
        !o.steps.iter().any(|s| s.starts_with("Route")),
        "{:#?}",
        o.steps
    );
}

#[test]
fn the_internet_gateway_translates_public_ips_one_to_one_both_ways() {
    // R-IGW-NAT: out, the private source becomes the public IP; in, the public
    // destination becomes the private one. Checksums stay valid.
    let mut l = lab("default");
    let out = l.expect_to(
        "web-1",
        tcp_syn("10.0.1.10", "203.0.113.10", 40000, 443),
        "inet-1",
    );
    assert_eq!(src_of(&out), ip("198.51.100.10"));
    assert_eq!(dst_of(&out), ip("203.0.113.10"));
    assert_checksums_valid(&out);
    // The reply of the flow web-1 opened (tracked, R-SG-STATE).
    let back = l.expect_to(
        "inet-1",
        tcp_synack("203.0.113.10", "198.51.100.10", 443, 40000),
        "web-1",
    );
    assert_eq!(dst_of(&back), ip("10.0.1.10"));
    assert_checksums_valid(&back);
}

#[test]
fn ipv6_passes_the_internet_gateway_unchanged() {
    // R-IGW-V6.
    let mut l = lab("default");
    let pkt = ping("2001:db8:10:1::10", "2001:db8:ffff::10");
    let out = l.expect_to("web-1", pkt.clone(), "inet-1");
    assert_eq!(out, hop(pkt), "unchanged but for the router's hop");
    l.expect_to(
        "inet-1",
        ping("2001:db8:ffff::10", "2001:db8:10:1::10"),
        "web-1",
    );
}

#[test]
fn hairpin_through_the_igw_shows_the_public_source() {
    // R-IGW-HAIRPIN: web-1 → web-2's public IP goes out and back in.
    let mut l = lab("single-public-subnet");
    let out = l.expect_to(
        "web-1",
        tcp_syn("10.10.0.10", "198.51.100.21", 40000, 80),
        "web-2",
    );
    assert_eq!(src_of(&out), ip("198.51.100.20"));
    assert_eq!(dst_of(&out), ip("10.10.0.11"));
    assert_checksums_valid(&out);
}

#[test]
fn private_instances_ipv6_leaves_through_the_egress_only_gateway() {
    let mut l = lab("ipv6-egress-only");
    let pkt = tcp_syn("2001:db8:30:2::10", "2001:db8:ffff::10", 40000, 443);
    assert_eq!(
        l.expect_to("app-1", pkt.clone(), "inet-1"),
        hop(pkt),
        "R-EIGW: source unchanged"
    );
}

#[test]
fn peered_vpcs_reach_each_other_v4_and_v6() {
    let mut l = lab("peered-vpcs");
    l.expect_to("a-1", ping("10.1.1.10", "10.2.1.10"), "b-1");
    l.expect_to("b-1", ping("10.2.1.10", "10.1.1.10"), "a-1");
    l.expect_to(
        "a-1",
        udp("2001:db8:1:1::10", "2001:db8:2:1::10", 1000, 2000),
        "b-1",
    );
    l.expect_to("b-1", ping("10.2.1.10", "10.3.1.10"), "c-1");
}

#[test]
fn a_gateway_endpoint_reaches_the_service_privately_and_the_reply_comes_back() {
    // R-GWE-ROUTE: the service sees the private source.
    let mut l = lab("peered-vpcs");
    let out = l.expect_to(
        "a-1",
        tcp_syn("10.1.1.10", "198.18.0.10", 40000, 443),
        "s3-1",
    );
    assert_eq!(src_of(&out), ip("10.1.1.10"));
    l.expect_to(
        "s3-1",
        tcp_syn("198.18.0.10", "10.1.1.10", 443, 40000),
        "a-1",
    );
}

#[test]
fn router_addresses_dns_and_metadata_are_answered_locally() {
    // R-ADDR-EXEMPT: never routed, never filtered.
    let mut l = lab("default");
    for dst in [
        "10.0.1.1",
        "10.0.0.2",
        "169.254.169.253",
        "169.254.169.254",
        "169.254.169.123",
    ] {
        let o = l.send("web-1", udp("10.0.1.10", dst, 40000, 53));
        assert!(
            matches!(o.verdict, Verdict::Local(_)),
            "{dst}: {:?}",
            o.verdict
        );
    }
    let o = l.send("web-1", ping("2001:db8:10:1::10", "fd00:ec2::254"));
    assert!(matches!(
        o.verdict,
        Verdict::Local(dataplane::snapshot::LocalService::Metadata)
    ));
    assert_eq!(l.pipe.stats.local, 6);
}

// ---- One test per drop reason the routing pipeline decides ------------------------------

#[test]
fn no_route_drops() {
    // R-RT-NOROUTE: VPC C's table knows only its peers.
    let mut l = lab("peered-vpcs");
    l.expect_drop(
        "c-1",
        udp("10.3.1.10", "203.0.113.10", 1, 2),
        DropReason::NoRoute,
    );
}

#[test]
fn blackhole_route_drops_without_falling_back() {
    // R-RT-BLACKHOLE: the /32 blackhole wins over 0.0.0.0/0 → NAT.
    let mut l = lab("public-private-nat");
    l.expect_drop(
        "app-1",
        tcp_syn("10.20.10.10", "203.0.113.66", 40000, 443),
        DropReason::RouteBlackhole,
    );
}

#[test]
fn spoofed_source_is_dropped_by_the_source_dest_check() {
    // R-ADDR-SRCDST, sending side.
    let mut l = lab("default");
    l.expect_drop(
        "web-1",
        udp("10.0.1.99", "10.0.2.10", 1, 2),
        DropReason::EniSourceDestCheck,
    );
}

#[test]
fn instance_without_public_ip_cannot_use_the_igw() {
    // R-IGW-NOPUBLIC, outbound: batch-1's subnet routes to the IGW, but it has no public IP.
    let mut l = lab("single-public-subnet");
    l.expect_drop(
        "batch-1",
        tcp_syn("10.10.0.12", "203.0.113.10", 40000, 443),
        DropReason::IgwNoPublicIp,
    );
}

#[test]
fn inbound_to_an_unmapped_public_ip_is_dropped_at_the_igw() {
    // R-IGW-NOPUBLIC, inbound.
    let mut l = lab("default");
    l.expect_drop(
        "inet-1",
        udp("203.0.113.10", "198.51.100.99", 1, 2),
        DropReason::IgwNoPublicIp,
    );
}

#[test]
fn egress_only_gateway_refuses_connections_from_outside() {
    // R-EIGW: outbound passes with its source unchanged, nothing initiated outside gets in.
    let mut l = lab_text(EIGW_ONLY);
    let pkt = tcp_syn("2001:db8:40:2::10", "2001:db8:ffff::10", 40000, 443);
    assert_eq!(l.expect_to("app-1", pkt.clone(), "inet-1"), hop(pkt));
    l.expect_drop(
        "inet-1",
        tcp_syn("2001:db8:ffff::10", "2001:db8:40:2::10", 40000, 22),
        DropReason::EigwInbound,
    );
}

#[test]
fn with_an_igw_in_the_vpc_inbound_ipv6_is_delivered_by_the_local_route() {
    // AWS's IGW delivers inbound traffic by the VPC's local route, whatever the
    // destination subnet's table says: an IPv6 "private" subnet of a VPC that also has an
    // IGW is shielded by its security groups, not by the EIGW.
    let mut l = lab("ipv6-egress-only");
    let o = l.send(
        "inet-1",
        tcp_syn("2001:db8:ffff::10", "2001:db8:30:2::10", 40000, 22),
    );
    assert_eq!(
        o.verdict,
        Verdict::Drop(DropReason::SgIngress),
        "{:#?}",
        o.steps
    );
    assert!(o.steps.iter().any(|s| s.starts_with("InternetGateway")));
    assert!(o.steps.iter().any(|s| s.starts_with("NetworkAcl")));
}

#[test]
fn peering_is_not_transitive() {
    // R-PCX-EDGE: A routes 10.3/16 to the A–B peering; B does not forward it to C.
    let mut l = lab("peered-vpcs");
    l.expect_drop(
        "a-1",
        ping("10.1.1.10", "10.3.1.10"),
        DropReason::PcxNotTransitive,
    );
}

#[test]
fn a_pending_peering_carries_nothing() {
    // R-PCX-ACTIVE.
    let mut l = lab("peered-vpcs");
    l.expect_drop(
        "c-1",
        ping("10.3.1.10", "10.1.1.10"),
        DropReason::PcxInactive,
    );
}

#[test]
fn endpoint_policy_limits_destinations_and_ports() {
    // R-GWE-POLICY: only 198.18.0.10:443 is allowed.
    let mut l = lab("peered-vpcs");
    l.expect_drop(
        "a-1",
        tcp_syn("10.1.1.10", "198.18.0.10", 40000, 80),
        DropReason::EndpointPolicy,
    );
}

#[test]
fn connections_to_a_nat_gateway_from_outside_are_refused() {
    // R-NAT-INBOUND: the NAT gateway's EIP is not an entrance.
    let mut l = lab("default");
    l.expect_drop(
        "inet-1",
        tcp_syn("203.0.113.10", "198.51.100.5", 40000, 22),
        DropReason::NatInbound,
    );
}

#[test]
fn unassigned_addresses_inside_the_vpc_are_dropped_and_named() {
    let mut l = lab("default");
    l.expect_drop(
        "web-1",
        ping("10.0.1.10", "10.0.2.99"),
        DropReason::UnassignedAddress,
    );
}

#[test]
fn malformed_packets_are_dropped_and_counted_never_a_panic() {
    let mut l = lab("default");
    let good = udp("10.0.1.10", "10.0.2.10", 1, 2);
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x45],
        vec![0x55; 40],                  // version 5
        good[..good.len() - 4].to_vec(), // truncated payload (total length too long)
        good[..10].to_vec(),             // truncated header
    ];
    let mut bad_sum = good.clone();
    bad_sum[10] ^= 0xff;
    cases.push(bad_sum);
    let mut bad_udp_len = good.clone();
    bad_udp_len[24] = 0xff; // UDP length larger than the packet
    cases.push(bad_udp_len);
    let n = cases.len() as u64;
    for c in cases {
        let o = l.send("web-1", c);
        assert_eq!(o.verdict, Verdict::Drop(DropReason::Malformed));
    }
    assert_eq!(l.pipe.stats.dropped(DropReason::Malformed), n);
    // Forwarding goes on.
    l.expect_to("web-1", good, "app-1");
}

#[test]
fn mutated_packets_are_judged_without_panicking() {
    // A deterministic fuzz that gets past the checksum: valid packets of every kind with
    // random bytes changed, truncated or extended, and the IPv4 header checksum
    // recomputed so the mutation reaches the transport parser and the stages.
    let mut l = lab("default");
    let seeds = [
        udp("10.0.1.10", "10.0.2.10", 1, 2),
        tcp_syn("10.0.1.10", "203.0.113.10", 40000, 443),
        ping("10.0.1.10", "10.0.2.10"),
        ping("2001:db8:10:1::10", "2001:db8:ffff::10"),
        udp("2001:db8:10:1::10", "2001:db8:10:2::10", 1, 2),
    ];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut forwarded, mut dropped) = (0, 0);
    for i in 0..30_000 {
        let mut buf = seeds[i % seeds.len()].clone();
        for _ in 0..(next() % 4) {
            let at = (next() as usize) % buf.len();
            buf[at] = next() as u8;
        }
        match next() % 4 {
            0 => buf.truncate((next() as usize) % (buf.len() + 1)),
            1 => buf.extend((0..next() % 8).map(|_| next() as u8)),
            _ => {}
        }
        if buf.len() >= 20 && buf[0] >> 4 == 4 {
            let ihl = usize::from(buf[0] & 0xf) * 4;
            if ihl >= 20 && ihl <= buf.len() {
                buf[10..12].copy_from_slice(&[0, 0]);
                let c = dataplane::checksum::checksum(&buf[..ihl]);
                buf[10..12].copy_from_slice(&c.to_be_bytes());
            }
        }
        match l
            .send(if i % 2 == 0 { "web-1" } else { "inet-1" }, buf)
            .verdict
        {
            Verdict::Drop(_) => dropped += 1,
            _ => forwarded += 1,
        }
    }
    assert!(
        forwarded > 1000 && dropped > 1000,
        "both outcomes exercised: {forwarded} / {dropped}"
    );
}

#[test]
fn a_secondary_address_does_not_borrow_the_primary_public_ip() {
    // R-IGW-NAT: the public IP maps to the primary private IPv4 only.
    let mut l = lab_text(
        r#"version: 1
vpcs:
  - id: vpc-a
    cidr_block: 10.0.0.0/16
    internet_gateway: igw-a
    subnets: [{ id: pub, cidr_block: 10.0.1.0/24, route_table: rt }]
    route_tables: [{ id: rt, routes: [{ destination: 0.0.0.0/0, target: igw-a }] }]
    instances:
      - { id: web-1, subnet: pub, private_ip: 10.0.1.10, secondary_private_ips: [10.0.1.11], public_ip: 198.51.100.10 }
internet:
  hosts: [{ id: inet-1, ipv4: 203.0.113.10 }]
"#,
    );
    l.expect_to("web-1", udp("10.0.1.10", "203.0.113.10", 1, 2), "inet-1");
    l.expect_drop(
        "web-1",
        udp("10.0.1.11", "203.0.113.10", 1, 2),
        DropReason::IgwNoPublicIp,
    );
}

#[test]
fn a_service_host_reaches_back_only_subnets_routed_through_its_endpoint() {
    let mut l = lab_text(
        r#"version: 1
vpcs:
  - id: vpc-a
    cidr_block: 10.0.0.0/16
    subnets:
      - { id: with-ep, cidr_block: 10.0.1.0/24, route_table: rt-ep }
      - { id: without, cidr_block: 10.0.2.0/24 }
    route_tables: [{ id: rt-ep }]
    endpoints: [{ id: vpce-s3, type: gateway, service: s3, route_tables: [rt-ep] }]
    instances:
      - { id: a-1, subnet: with-ep, private_ip: 10.0.1.10 }
      - { id: a-2, subnet: without, private_ip: 10.0.2.10 }
services:
  - { name: s3, prefix_list: pl-s3, cidr_blocks: [198.18.0.0/24], hosts: [{ id: s3-1, ipv4: 198.18.0.10 }] }
"#,
    );
    l.expect_to("a-1", udp("10.0.1.10", "198.18.0.10", 40000, 443), "s3-1");
    l.expect_to("s3-1", udp("198.18.0.10", "10.0.1.10", 443, 40000), "a-1");
    l.expect_drop(
        "s3-1",
        udp("198.18.0.10", "10.0.2.10", 443, 40000),
        DropReason::NoRoute,
    );
}

#[test]
fn stats_count_ports_and_reasons() {
    // No reserve_ports call: the pipeline sizes its per-port counters itself.
    let mut l = lab("default");
    l.expect_to("web-1", udp("10.0.1.10", "10.0.2.10", 1, 2), "app-1");
    l.send("web-1", vec![1, 2, 3]);
    let web = l.port("web-1").ix();
    let app = l.port("app-1").ix();
    assert_eq!(l.pipe.stats.ports[web].rx_packets, 2);
    assert_eq!(l.pipe.stats.ports[app].tx_packets, 1);
    assert_eq!(l.pipe.stats.dropped(DropReason::Malformed), 1);
}

#[test]
fn the_recorder_shows_each_hop() {
    let mut l = lab("default");
    let o = l.send("web-1", tcp_syn("10.0.1.10", "203.0.113.10", 40000, 443));
    let kinds: Vec<&str> = o
        .steps
        .iter()
        .map(|s| s.split([' ', '{', '(']).next().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "Received",
            "SourceDestCheck",
            "SecurityGroup",
            "NetworkAcl",
            "Route",
            "RouterHop",
            "InternetGateway",
            "ToHost"
        ]
    );
}
