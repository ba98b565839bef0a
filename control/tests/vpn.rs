//! Site-to-site VPN at the virtual private gateway, in process (hybrid.md): which tunnel
//! carries a site's prefix (R-VPN-PRIORITY, R-VPN-TUNNELS), what propagates into route
//! tables (R-VPN-PROPAGATE), what a site may reach (R-VPN-NONAT, R-VPN-SCOPE,
//! R-VPN-CLOUDHUB), the tunnel MTU (R-VPN-MTU), and what `check` refuses. The running
//! lab's BGP state is given as the router would hold it.

mod support;

use control::vpn::{Learned, TunnelState, VpnState};
use dataplane::{DropReason, Pipeline, Verdict};
use etherparse::PacketBuilder;
use support::*;

const LAB: &str = include_str!("../../configs/vpn-bgp.yaml");

fn learned(path: &[u32], med: u32) -> Learned {
    Learned {
        asns: path.to_vec(),
        as_path_len: path.len(),
        med,
    }
}

/// Tunnel `n` of `vpn` established, with these prefixes learned.
fn up(state: &mut VpnState, vpn: &str, n: u8, routes: &[(&str, Learned)]) {
    state.tunnels.insert(
        (vpn.to_string(), n),
        TunnelState {
            established: true,
            fault: None,
            routes: routes
                .iter()
                .map(|(p, l)| (p.parse().unwrap(), l.clone()))
                .collect(),
        },
    );
}

fn lab_with(text: &str, state: VpnState) -> Lab {
    let mut lab = control::check_text(text).unwrap_or_else(|e| panic!("{e:?}"));
    lab.vpn_state = state;
    Lab {
        snap: control::compile::compile(&lab, 1).unwrap(),
        pipe: Pipeline::new(),
    }
}

fn both_up(path1: &[u32], path2: &[u32]) -> VpnState {
    let mut s = VpnState::default();
    up(
        &mut s,
        "vpn-hq",
        1,
        &[("192.168.0.0/16", learned(path1, 0))],
    );
    up(
        &mut s,
        "vpn-hq",
        2,
        &[("192.168.0.0/16", learned(path2, 0))],
    );
    s
}

fn big_ping(src: &str, dst: &str, size: usize, df: bool) -> Vec<u8> {
    let (s, d) = match (ip(src), ip(dst)) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => (s, d),
        _ => panic!("IPv4"),
    };
    let b = PacketBuilder::ipv4(s.octets(), d.octets(), 64);
    let mut out = Vec::new();
    b.icmpv4_echo_request(7, 1)
        .write(&mut out, &vec![0u8; size - 28])
        .unwrap();
    // etherparse sets DF by default; clear it by hand when asked.
    if !df {
        out[6] &= !0x40;
        let sum = {
            out[10] = 0;
            out[11] = 0;
            let mut acc = 0u32;
            for c in out[..20].chunks(2) {
                acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
            }
            while acc > 0xffff {
                acc = (acc & 0xffff) + (acc >> 16);
            }
            !(acc as u16)
        };
        out[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    out
}

#[test]
fn r_vpn_bgp_a_learned_prefix_goes_over_tunnel_1_and_a_tie_keeps_the_tunnel_in_use() {
    let mut lab = lab_with(LAB, both_up(&[65000], &[65000]));
    let out = lab.send("app-1", ping("10.0.2.10", "192.168.1.10"));
    assert_eq!(out.to.as_deref(), Some("vpn-hq-t1"), "{:#?}", out.steps);
    // The same tie with tunnel 2 in use: the VGW keeps it.
    let mut s = both_up(&[65000], &[65000]);
    s.in_use
        .insert("192.168.0.0/16".parse().unwrap(), ("vpn-hq".to_string(), 2));
    let mut lab = lab_with(LAB, s);
    lab.expect_to("app-1", ping("10.0.2.10", "192.168.1.10"), "vpn-hq-t2");
}

#[test]
fn r_vpn_priority_a_prepended_path_steers_to_the_other_tunnel_and_a_down_tunnel_fails_over() {
    let mut lab = lab_with(LAB, both_up(&[65000, 65000, 65000], &[65000]));
    lab.expect_to("app-1", ping("10.0.2.10", "192.168.1.10"), "vpn-hq-t2");
    // Tunnel 2's session down: its routes are gone, tunnel 1 carries everything.
    let mut s = both_up(&[65000, 65000, 65000], &[65000]);
    s.tunnels
        .get_mut(&("vpn-hq".into(), 2))
        .unwrap()
        .established = false;
    let mut lab = lab_with(LAB, s);
    lab.expect_to("app-1", ping("10.0.2.10", "192.168.1.10"), "vpn-hq-t1");
    // A more specific prefix on one tunnel wins over the shorter path of the other.
    let mut s = both_up(&[65000], &[65000]);
    up(
        &mut s,
        "vpn-hq",
        2,
        &[
            ("192.168.0.0/16", learned(&[65000], 0)),
            ("192.168.1.0/24", learned(&[65000, 65000], 0)),
        ],
    );
    let mut lab = lab_with(LAB, s);
    lab.expect_to("app-1", ping("10.0.2.10", "192.168.1.10"), "vpn-hq-t2");
    lab.expect_to("app-1", ping("10.0.2.10", "192.168.2.10"), "vpn-hq-t1");
}

#[test]
fn r_vpn_propagate_the_route_table_gets_the_vgw_routes_and_loses_them_with_the_tunnels() {
    let lab = lab_with(LAB, both_up(&[65000], &[65000]));
    let rt = lab
        .snap
        .topo
        .route_tables
        .iter()
        .find(|t| &*t.id == "rtb-private")
        .unwrap();
    let (net, r) = rt.lookup(ip("192.168.7.7")).unwrap();
    assert_eq!(net.to_string(), "192.168.0.0/16");
    assert_eq!(r.origin, dataplane::route::RouteOrigin::Propagated);
    assert_eq!(&*r.target_name, "vgw-lab");
    // No BGP session: nothing propagated, and nothing routes to the site.
    let mut lab = lab_with(LAB, VpnState::default());
    lab.expect_drop(
        "app-1",
        ping("10.0.2.10", "192.168.1.10"),
        DropReason::NoRoute,
    );
}

#[test]
fn r_vpn_priority_a_static_route_beats_a_propagated_one_and_the_local_route_beats_both() {
    let text = LAB
        .replace(
            "        propagating_vgws: [vgw-lab]",
            "        propagating_vgws: [vgw-lab]\n        routes:\n          - { destination: 192.168.0.0/16, target: blackhole }",
        );
    let mut s = both_up(&[65000], &[65000]);
    // The site also claims a block inside the VPC: the local route keeps it.
    up(
        &mut s,
        "vpn-hq",
        1,
        &[
            ("192.168.0.0/16", learned(&[65000], 0)),
            ("10.0.2.0/24", learned(&[65000], 0)),
            ("172.20.0.0/16", learned(&[65000], 0)),
        ],
    );
    let mut lab = lab_with(&text, s);
    lab.expect_drop(
        "app-1",
        ping("10.0.2.10", "192.168.1.10"),
        DropReason::RouteBlackhole,
    );
    let rt = lab
        .snap
        .topo
        .route_tables
        .iter()
        .find(|t| &*t.id == "rtb-private")
        .unwrap();
    assert_eq!(
        rt.lookup(ip("10.0.2.99")).unwrap().1.target,
        dataplane::route::Target::Local
    );
    lab.expect_to("app-1", ping("10.0.2.10", "172.20.0.1"), "vpn-hq-t1");
}

#[test]
fn r_vpn_nonat_a_site_reaches_the_vpc_by_private_address_and_nothing_beyond() {
    let mut lab = lab_with(LAB, both_up(&[65000], &[65000]));
    // In through either tunnel, to app-1 (its group admits the site's ICMP).
    lab.expect_to("vpn-hq-t2", ping("192.168.1.10", "10.0.2.10"), "app-1");
    // Not on to the internet through the VPC.
    lab.expect_drop(
        "vpn-hq-t1",
        ping("192.168.1.10", "203.0.113.10"),
        DropReason::VgwNotTransitive,
    );
}

#[test]
fn the_tunnel_ends_own_packets_cross_the_internet_to_the_customer_gateway() {
    let mut lab = lab_with(LAB, VpnState::default());
    let outside = lab
        .snap
        .topo
        .hosts
        .iter()
        .find(|h| &*h.id == "vpn-hq-t1")
        .and_then(|h| h.ipv4)
        .unwrap()
        .to_string();
    // The top of the public pool, tunnel 1 first.
    assert_eq!(outside, "198.51.100.254");
    lab.expect_to("vpn-hq-t1", udp(&outside, "203.0.113.50", 4789, 4789), "hq");
    lab.expect_to("hq", udp("203.0.113.50", &outside, 4789, 4789), "vpn-hq-t1");
}

#[test]
fn r_vpn_mtu_a_packet_over_1446_bytes_with_df_is_dropped_unanswered() {
    let mut lab = lab_with(LAB, both_up(&[65000], &[65000]));
    let o = lab.send("app-1", big_ping("10.0.2.10", "192.168.1.10", 1447, true));
    assert_eq!(
        o.verdict,
        Verdict::Drop(DropReason::MtuExceeded),
        "{:#?}",
        o.steps
    );
    lab.expect_to(
        "app-1",
        big_ping("10.0.2.10", "192.168.1.10", 1446, true),
        "vpn-hq-t1",
    );
    // Without DF it goes on, to be fragmented at the tunnel.
    lab.expect_to(
        "app-1",
        big_ping("10.0.2.10", "192.168.1.10", 3000, false),
        "vpn-hq-t1",
    );
}

#[test]
fn r_vpn_scope_the_vgw_drops_what_no_vpn_routes() {
    let text = LAB.replace(
        "        propagating_vgws: [vgw-lab]",
        "        propagating_vgws: [vgw-lab]\n        routes:\n          - { destination: 172.16.0.0/12, target: vgw-lab }",
    );
    let mut lab = lab_with(&text, both_up(&[65000], &[65000]));
    lab.expect_drop(
        "app-1",
        ping("10.0.2.10", "172.16.1.1"),
        DropReason::VgwNoRoute,
    );
}

const STATIC: &str =
    "static_routes_only: true\n    routes: [192.168.0.0/16]\n    customer_gateway: cgw-hq";

#[test]
fn r_vpn_static_a_static_vpn_carries_its_routes_without_bgp_over_one_tunnel() {
    let text = LAB.replace(
        "customer_gateway: cgw-hq\n    tunnels",
        &format!("{STATIC}\n    tunnels"),
    );
    assert_ne!(text, LAB);
    let mut lab = lab_with(&text, VpnState::default());
    lab.expect_to("app-1", ping("10.0.2.10", "192.168.1.10"), "vpn-hq-t1");
    // Tunnel 1 taken down by a fault: tunnel 2.
    let mut s = VpnState::default();
    s.tunnels.insert(
        ("vpn-hq".into(), 1),
        TunnelState {
            fault: Some(3),
            ..TunnelState::default()
        },
    );
    let mut lab = lab_with(&text, s);
    lab.expect_to("app-1", ping("10.0.2.10", "192.168.1.10"), "vpn-hq-t2");
    lab.expect_drop(
        "vpn-hq-t1",
        ping("192.168.1.10", "10.0.2.10"),
        DropReason::FaultDisrupted,
    );
}

const CLOUDHUB: &str = r#"
sites:
  - { id: hq, cidr_blocks: [192.168.0.0/16], hosts: [{ id: corp-1, ipv4: 192.168.1.10 }] }
  - { id: branch, cidr_blocks: [172.16.0.0/16], hosts: [{ id: branch-1, ipv4: 172.16.1.10 }] }
customer_gateways:
  - { id: cgw-hq, site: hq, ip_address: 203.0.113.50, bgp_asn: 65000 }
  - { id: cgw-branch, site: branch, ip_address: 203.0.113.60, bgp_asn: 65001 }
vpn_connections:
  - { id: vpn-hq, virtual_private_gateway: vgw-lab, customer_gateway: cgw-hq }
  - { id: vpn-branch, virtual_private_gateway: vgw-lab, customer_gateway: cgw-branch }
"#;

fn cloudhub_lab() -> String {
    let head = LAB.split("sites:").next().unwrap();
    format!("{head}{CLOUDHUB}")
}

#[test]
fn r_vpn_cloudhub_the_vgw_carries_one_site_to_another() {
    let mut s = VpnState::default();
    up(
        &mut s,
        "vpn-hq",
        1,
        &[("192.168.0.0/16", learned(&[65000], 0))],
    );
    up(
        &mut s,
        "vpn-branch",
        1,
        &[("172.16.0.0/16", learned(&[65001], 0))],
    );
    let mut lab = lab_with(&cloudhub_lab(), s);
    lab.expect_to(
        "vpn-hq-t1",
        ping("192.168.1.10", "172.16.1.10"),
        "vpn-branch-t1",
    );
    lab.expect_to(
        "vpn-branch-t1",
        ping("172.16.1.10", "192.168.1.10"),
        "vpn-hq-t1",
    );
    // Inside CIDRs not given: AWS picks free /30s, one per tunnel.
    let t = &lab.snap.topo.vpn_tunnels;
    let mut inside: Vec<String> = t.iter().map(|t| t.inside_aws.to_string()).collect();
    inside.dedup();
    assert_eq!(inside.len(), 4, "{inside:?}");
}

fn errors(text: &str) -> String {
    match control::check_text(text) {
        Ok(_) => String::new(),
        Err(d) => control::diag::render("lab.yaml", &d),
    }
}

#[test]
fn check_refuses_what_aws_refuses_for_vpns() {
    let bgp_with_routes = LAB.replace(
        "customer_gateway: cgw-hq\n    tunnels",
        "customer_gateway: cgw-hq\n    routes: [192.168.0.0/16]\n    tunnels",
    );
    assert!(
        errors(&bgp_with_routes)
            .contains("uses BGP (static_routes_only is false): it takes no static routes"),
        "{}",
        errors(&bgp_with_routes)
    );
    let outside_ll = LAB.replace("169.254.10.4/30", "10.1.0.0/30");
    assert!(errors(&outside_ll).contains("is not a /30 of 169.254.0.0/16"));
    let reserved = LAB.replace("169.254.10.4/30", "169.254.169.252/30");
    assert!(errors(&reserved).contains("AWS reserves 169.254.169.252/30"));
    let twice = LAB.replace("169.254.10.4/30", "169.254.10.0/30");
    assert!(errors(&twice).contains("is already used by a tunnel of this gateway"));
    let same_asn = LAB.replace("bgp_asn: 65000", "bgp_asn: 64512");
    assert!(errors(&same_asn).contains("is the Amazon side's ASN of `vgw-lab`"));
    let unknown = LAB.replace("customer_gateway: cgw-hq", "customer_gateway: cgw-hk");
    let e = errors(&unknown);
    assert!(
        e.contains("no customer gateway has the id `cgw-hk`")
            && e.contains("did you mean `cgw-hq`?"),
        "{e}"
    );
    let overlap = LAB.replace("cidr_blocks: [192.168.0.0/16]", "cidr_blocks: [10.0.0.0/8]");
    assert!(errors(&overlap).contains("overlaps vpc-lab's block"));
    let host_outside = LAB.replace("ipv4: 192.168.1.10", "ipv4: 172.16.1.10");
    assert!(errors(&host_outside).contains("is not in site hq's blocks"));
    let bad_vgw_asn = LAB.replace("amazon_side_asn: 64512", "amazon_side_asn: 65000000");
    assert!(errors(&bad_vgw_asn).contains("is not a private ASN AWS takes"));
    let wrong_vgw = LAB.replace("propagating_vgws: [vgw-lab]", "propagating_vgws: [vgw-lob]");
    assert!(errors(&wrong_vgw).contains("did you mean `vgw-lab`?"));
    let many: Vec<String> = (0..101)
        .map(|i| format!("10.{}.0.0/16", 100 + i % 100 + i / 100))
        .collect();
    let too_many = LAB.replace(
        "customer_gateway: cgw-hq\n    tunnels",
        &format!(
            "customer_gateway: cgw-hq\n    static_routes_only: true\n    routes: [{}]\n    tunnels",
            many.join(", ")
        ),
    );
    assert!(
        errors(&too_many).contains("at most 100 static routes"),
        "{}",
        errors(&too_many)
    );
    // Every one in one pass.
    assert_eq!(errors(LAB), "");
}

fn vpcd(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpcd"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn vpn_config_prints_what_aws_download_configuration_gives() {
    let lab = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/vpn-bgp.yaml");
    let (code, bird, _) = vpcd(&["vpn-config", lab, "vpn-hq"]);
    assert_eq!(code, 0);
    for want in [
        "tunnel 1: outside 198.51.100.254 (AWS) <-> 203.0.113.50 (you); inside 169.254.10.1/30 (AWS) <-> 169.254.10.2/30 (you), AWS AS 64512",
        "MTU 1399, TCP MSS clamped to 1379",
        "protocol bgp vpn_hq_tunnel2 {",
        "neighbor 169.254.10.5 as 64512;",
        "route 192.168.0.0/16 unreachable;",
    ] {
        assert!(bird.contains(want), "{want}:\n{bird}");
    }
    let (_, frr, _) = vpcd(&["vpn-config", lab, "vpn-hq", "--format", "frr"]);
    assert!(frr.contains("neighbor 169.254.10.1 timers 10 30"), "{frr}");
    assert!(frr.contains("  network 192.168.0.0/16"), "{frr}");
    let (_, swan, _) = vpcd(&["vpn-config", lab, "vpn-hq", "--format", "strongswan"]);
    assert!(swan.contains("remote_addrs = 198.51.100.253"), "{swan}");
    assert_eq!(swan.matches("secret = \"").count(), 2, "{swan}");
    // The same lab, the same keys; each tunnel its own.
    let (_, again, _) = vpcd(&["vpn-config", lab, "vpn-hq", "--format", "strongswan"]);
    assert_eq!(swan, again);
    assert_ne!(
        control::vpn_config::pre_shared_key("vpn-hq", 1),
        control::vpn_config::pre_shared_key("vpn-hq", 2)
    );
    let (code, _, err) = vpcd(&["vpn-config", lab, "vpn-hk"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no VPN connection `vpn-hk`; the lab has: vpn-hq"),
        "{err}"
    );
}

const DX: &str = include_str!("../../configs/dx-vpn-backup.yaml");

#[test]
fn r_dx_private_a_virtual_interface_wins_over_the_vpn_and_the_vpn_takes_over_when_it_goes() {
    let mut s = both_up(&[65000], &[65000]);
    up(
        &mut s,
        "dxvif-hq",
        1,
        &[("192.168.0.0/16", learned(&[65000, 65000], 0))],
    );
    let mut lab = lab_with(DX, s.clone());
    // Direct Connect first, even with a longer AS path (R-VPN-PRIORITY).
    lab.expect_to("app-1", ping("10.0.2.10", "192.168.1.10"), "dxvif-hq");
    // Jumbo frames over the VIF.
    lab.expect_to(
        "app-1",
        big_ping("10.0.2.10", "192.168.1.10", 9001, true),
        "dxvif-hq",
    );
    let o = lab.send("app-1", big_ping("10.0.2.10", "192.168.1.10", 9002, true));
    assert_eq!(o.verdict, Verdict::Drop(DropReason::MtuExceeded));
    // In from the VIF: everything it sends is the site's.
    lab.expect_to("dxvif-hq", ping("192.168.1.10", "10.0.2.10"), "app-1");
    // The VIF disconnected (a fault): the VPN carries the site, at 1446 bytes.
    s.tunnels.get_mut(&("dxvif-hq".into(), 1)).unwrap().fault = Some(4);
    let mut lab = lab_with(DX, s.clone());
    lab.expect_to("app-1", ping("10.0.2.10", "192.168.1.10"), "vpn-hq-t1");
    let o = lab.send("app-1", big_ping("10.0.2.10", "192.168.1.10", 9001, true));
    assert_eq!(o.verdict, Verdict::Drop(DropReason::MtuExceeded));
    lab.expect_drop(
        "dxvif-hq",
        ping("192.168.1.10", "10.0.2.10"),
        DropReason::FaultDisrupted,
    );
}

#[test]
fn check_refuses_what_aws_refuses_for_direct_connect() {
    let transit = DX.replace("type: private", "type: transit");
    assert!(errors(&transit).contains("transit virtual interfaces need a transit gateway"));
    let mtu = DX.replace("mtu: 9001", "mtu: 8000");
    assert!(errors(&mtu).contains("MTU 8000 is not one a private virtual interface takes"));
    let vlan = DX.replace("vlan: 101", "vlan: 5000");
    assert!(errors(&vlan).contains("VLAN 5000 is out of range"));
    let con = DX.replace("connection: dxcon-hq", "connection: dxcon-hk");
    assert!(
        errors(&con).contains("did you mean `dxcon-hq`?"),
        "{}",
        errors(&con)
    );
    let speed = DX.replace("bandwidth: 1Gbps", "bandwidth: 3Gbps");
    assert!(errors(&speed).contains("3Gbps"), "{}", errors(&speed));
    assert_eq!(errors(DX), "");
}

#[test]
fn the_graph_draws_tunnels_and_virtual_interfaces_and_what_a_fault_took_down_in_red() {
    let mut s = both_up(&[65000], &[65000]);
    s.tunnels.insert(
        ("dxvif-hq".into(), 1),
        TunnelState {
            fault: Some(2),
            ..TunnelState::default()
        },
    );
    let lab = lab_with(DX, s);
    let dot = control::graph::Graph::of(&lab.snap).dot();
    let line = |label: &str| {
        dot.lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no {label}:\n{dot}"))
            .to_string()
    };
    assert!(!line("vpn-hq tunnel 1").contains("red"));
    assert!(line("vpn-hq tunnel 2").contains("dir=none"));
    assert!(
        line("dxvif-hq (Direct Connect, MTU 9001)").contains("red"),
        "{dot}"
    );
}
