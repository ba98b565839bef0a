//! IPv6-only subnets (issue 21): AWS allows a subnet with an IPv6 block and no IPv4 one in
//! a VPC with an IPv6 block; its instances have IPv6 addresses only, resource-based names
//! (`i-….ec2.internal`, here the instance id) and the Amazon DNS at fd00:ec2::253. In
//! process and end to end.

mod common;
mod support;

use common::{e2e, unique_prefix, LabRun};
use support::*;

const LAB: &str = include_str!("labs/ipv6_only.yaml");

#[test]
fn an_ipv6_only_subnet_is_a_valid_lab_and_its_instance_talks_ipv6() {
    let mut l = lab_text(LAB);
    let eni = l.snap.topo.enis.iter().find(|e| &*e.id == "v6-1").unwrap();
    assert!(eni.private_v4.is_empty());
    let pkt = ping("2001:db8:60:2::10", "2001:db8:60:1::10");
    l.expect_to("v6-1", pkt, "d-1");
    let pkt = ping("2001:db8:60:2::10", "2001:db8:ffff::10");
    l.expect_to("v6-1", pkt, "inet-1");
    // An IPv4 packet it might send anyway is not its own address: dropped.
    let o = l.send("v6-1", ping("10.6.2.10", "10.6.1.10"));
    assert!(
        matches!(o.verdict, dataplane::Verdict::Drop(_)),
        "{:?}",
        o.verdict
    );
}

#[test]
fn ipv6_only_mistakes_are_named() {
    let errs = |text: &str| control::check_text(text).unwrap_err();
    let has = |text: &str, words: &str| {
        let e = errs(text);
        assert!(
            e.iter().any(|d| d.message.contains(words)),
            "{words}: {e:?}"
        );
    };
    has(
        &LAB.replace(
            "{ id: v6-1, subnet: only6,",
            "{ id: v6-1, subnet: only6, private_ip: 10.6.2.10,",
        ),
        "is IPv6-only",
    );
    has(
        &LAB.replace(", ipv6_address: \"2001:db8:60:2::10\" }", " }"),
        "needs an `ipv6_address`",
    );
    has(
        &LAB.replace("    ipv6_cidr_block: 2001:db8:60::/56\n", "")
            .replace("    egress_only_internet_gateway: eigw-6\n", "")
            .replace(
                "        routes: [{ destination: \"::/0\", target: eigw-6 }]",
                "        routes: []",
            ),
        "its VPC has none",
    );
    has(
        &LAB.replace(
            "    instances:",
            "    nat_gateways:\n      - { id: nat-6, subnet: only6, connectivity: private }\n    instances:",
        ),
        "needs an IPv4 address",
    );
    // Neither block: a subnet needs one.
    has(
        &LAB.replace(
            "      - { id: only6, ipv6_cidr_block: \"2001:db8:60:2::/64\", route_table: rt6 }",
            "      - { id: only6, route_table: rt6 }",
        ),
        "`cidr_block` is missing",
    );
}

#[test]
fn an_ipv6_only_instance_resolves_names_over_ipv6_and_pings() {
    if !e2e("an_ipv6_only_instance_resolves_names_over_ipv6_and_pings") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vpcd-v6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ipv6_only.yaml");
    std::fs::write(&file, LAB).unwrap();
    let lab = LabRun::up(Some(file.to_str().unwrap()), &unique_prefix("v6"), &[]);
    let _ = std::fs::remove_dir_all(&dir);
    let addrs = lab.exec("v6-1", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.stdout.is_empty(), "an IPv4 address: {addrs:?}");
    lab.ping("v6-1", "2001:db8:60:1::10", &["-6"]);
    lab.ping("v6-1", "2001:db8:ffff::10", &["-6"]);
    let resolv = std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", lab.ns("v6-1")))
        .unwrap_or_default();
    assert!(resolv.contains("nameserver fd00:ec2::253"), "{resolv}");
    // Its own resource-based name, from the Amazon DNS over IPv6.
    let o = lab.exec("v6-1", &["getent", "ahostsv6", "v6-1.ec2.internal"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("2001:db8:60:2::10"), "{out}");
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
}
