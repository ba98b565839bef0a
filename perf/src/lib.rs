//! Shared helpers for vpcd benchmarks: the generated 100,000-route lab.

use std::net::Ipv4Addr;

use dataplane::{PortId, Snapshot, Timestamp};

/// Static routes written into `rtb-big`, besides `0.0.0.0/0`.
pub const ROUTES: usize = 100_000;
/// The first `SHORT_ROUTES` routes are the /24s of 100.64.0.0/10 (all 16,384 of them).
pub const SHORT_ROUTES: usize = 1 << 14;
/// Packets per `process` batch.
pub const BATCH: usize = 64;
/// Destinations per LPM iteration.
pub const LOOKUPS: usize = 1024;
pub const PAYLOAD: [u8; 64] = [0x5a; 64];
pub const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);

/// The port of the instance or host `name` of a bench lab.
pub fn port(snap: &Snapshot, name: &str) -> PortId {
    snap.port_named(name)
        .unwrap_or_else(|| panic!("no port {name}"))
}

pub const IGW: &str = "igw-bench";
pub const TABLE: &str = "rtb-big";
pub const SENDER: &str = "web-1";
pub const SENDER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
pub const SENDER_PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const PEER: &str = "app-1";
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 10);
pub const INTERNET_HOST: &str = "inet-1";
pub const INTERNET_HOST_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// The `i`-th generated route: its prefix and length. None overlaps another, and none lies
/// inside the VPC block 10.0.0.0/16:
/// - `0..16384`: every /24 of 100.64.0.0/10;
/// - the rest: /32s spread over the 4096 /24s of 172.16.0.0/12 (about 20 per /24, 12
///   addresses apart), which makes the tree both wide and deep.
pub fn route_prefix(i: usize) -> (Ipv4Addr, u8) {
    assert!(i < ROUTES, "route {i} is out of range");
    if i < SHORT_ROUTES {
        let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
        (Ipv4Addr::from(base + ((i as u32) << 8)), 24)
    } else {
        let j = (i - SHORT_ROUTES) as u32;
        let base = u32::from(Ipv4Addr::new(172, 16, 0, 0));
        let (block, host) = (j % 4096, 1 + (j / 4096) * 12);
        (Ipv4Addr::from(base + (block << 8) + host), 32)
    }
}

/// One route in ten is a blackhole, the others go to the IGW.
pub fn route_target(i: usize) -> &'static str {
    if i % 10 == 9 {
        "blackhole"
    } else {
        IGW
    }
}

/// The lab file: one VPC, a public subnet using `rtb-big`, a private subnet on the implicit
/// main table, an instance in each, an IGW and one internet host.
pub fn lab_yaml() -> String {
    use std::fmt::Write as _;
    let mut y = String::with_capacity(ROUTES * 64 + 1024);
    y.push_str(&format!(
        "version: 1
vpcs:
  - id: vpc-bench
    cidr_block: 10.0.0.0/16
    internet_gateway: {IGW}
    subnets:
      - {{ id: public-a, cidr_block: 10.0.1.0/24, route_table: {TABLE} }}
      - {{ id: private-a, cidr_block: 10.0.2.0/24 }}
    instances:
      - {{ id: {SENDER}, subnet: public-a, private_ip: {SENDER_IP}, public_ip: {SENDER_PUBLIC_IP} }}
      - {{ id: {PEER}, subnet: private-a, private_ip: {PEER_IP} }}
    route_tables:
      - id: {TABLE}
        routes:
          - {{ destination: 0.0.0.0/0, target: {IGW} }}
"
    ));
    for i in 0..ROUTES {
        let (addr, len) = route_prefix(i);
        writeln!(
            y,
            "          - {{ destination: {addr}/{len}, target: {} }}",
            route_target(i)
        )
        .expect("writing to a String cannot fail");
    }
    y.push_str(&format!(
        "internet:
  hosts:
    - {{ id: {INTERNET_HOST}, ipv4: {INTERNET_HOST_IP} }}
"
    ));
    y
}
