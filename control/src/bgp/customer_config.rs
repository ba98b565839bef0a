//! The customer gateway's router configuration, as AWS's "download configuration" gives
//! it (hybrid.md): one BGP session per tunnel with AWS's timers (hold 30 s, keepalive
//! 10 s), the site's blocks advertised, and what AWS advertises installed in the site
//! router's kernel. `vpcd up` starts the site's daemon with it unless the lab names the
//! user's own (`customer_gateways[].config`).
//!
//! BIRD 2 is the daemon vpcd runs (Debian's `bird2`): one small process per site with one
//! file of configuration and a control socket (`birdc show protocols`, `show route`)
//! that a person can use as on a real router. FRR would need zebra, bgpd and vtysh per
//! site for the same job.

use std::fmt::Write;
use std::net::Ipv4Addr;

use ip_network::Ipv4Network;

/// One tunnel (or VIF) as the customer side sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerTunnel {
    /// The BGP protocol's name in BIRD (letters, digits and `_`).
    pub name: String,
    /// What the person reads: "vpn-hq tunnel 1".
    pub description: String,
    /// The customer side's inside address (the second of the /30).
    pub local: Ipv4Addr,
    /// The AWS side's inside address (the first of the /30).
    pub neighbor: Ipv4Addr,
    /// The AWS side's ASN (the VGW's `amazon_side_asn`).
    pub neighbor_asn: u32,
    /// The customer side's ASN on this session, when not the gateway's (a Direct
    /// Connect virtual interface has its own `bgp_asn`).
    pub local_asn: Option<u32>,
    /// A local preference for what this session learns: Direct Connect sessions get a
    /// higher one, so the site too prefers the VIF over a VPN backup, as AWS's Direct
    /// Connect guide recommends for active/passive designs.
    pub local_pref: Option<u32>,
}

/// A customer gateway's BGP configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerGateway {
    pub id: String,
    /// BIRD's router id: the gateway's public address.
    pub router_id: Ipv4Addr,
    pub asn: u32,
    /// The site's blocks, advertised to AWS.
    pub advertise: Vec<Ipv4Network>,
    pub tunnels: Vec<CustomerTunnel>,
}

/// AWS's BGP hold time and keepalive interval for VPN tunnels.
pub const HOLD_TIME: u16 = super::session::HOLD_TIME;
pub const KEEPALIVE: u16 = HOLD_TIME / 3;
/// How soon the site's router tries again after a failed or lost session. BIRD's defaults
/// (120 s, and 60 s after an error) would leave a tunnel that comes back idle for minutes;
/// a lab wants a tunnel back as soon as its other end is.
const RETRY: u16 = 5;
const ERROR_WAIT_MAX: u16 = 30;

/// A BIRD 2 configuration for the gateway.
pub fn bird(cgw: &CustomerGateway) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Customer gateway {} (AS {}): BIRD 2 configuration written by vpcd,\n\
         # as AWS's downloadable configuration sets it up: one BGP session per tunnel,\n\
         # hold time {HOLD_TIME} s, keepalive {KEEPALIVE} s.",
        cgw.id, cgw.asn
    );
    let _ = writeln!(s, "router id {};", cgw.router_id);
    s.push_str("log stderr all;\n\n");
    s.push_str("protocol device {\n}\n\n");
    s.push_str(
        "# What AWS advertises goes into this router's kernel table.\n\
         protocol kernel {\n  ipv4 { import none; export where source = RTS_BGP; };\n}\n\n",
    );
    s.push_str(
        "# The site's own blocks, advertised to AWS.\nprotocol static site_blocks {\n  ipv4;\n",
    );
    for p in &cgw.advertise {
        let _ = writeln!(s, "  route {p} unreachable;");
    }
    s.push_str("}\n");
    for t in &cgw.tunnels {
        let import = match t.local_pref {
            Some(p) => format!("import filter {{ bgp_local_pref = {p}; accept; }}"),
            None => "import all".to_string(),
        };
        let _ = write!(
            s,
            "\nprotocol bgp {name} {{\n  description \"{desc}\";\n  local {local} as {asn};\n  \
             neighbor {nbr} as {nasn};\n  hold time {HOLD_TIME};\n  keepalive time {KEEPALIVE};\n  \
             connect delay time 1;\n  connect retry time {RETRY};\n  error wait time {RETRY}, {ERROR_WAIT_MAX};\n  \
             ipv4 {{ {import}; export where proto = \"site_blocks\"; }};\n}}\n",
            name = t.name,
            desc = t.description,
            local = t.local,
            asn = t.local_asn.unwrap_or(cgw.asn),
            nbr = t.neighbor,
            nasn = t.neighbor_asn,
        );
    }
    s
}

/// A BIRD protocol name from an id: `vpn-hq` tunnel 1 → `vpn_hq_tunnel1`.
pub fn protocol_name(id: &str, what: &str, n: usize) -> String {
    let mut s: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s.insert(0, 'p');
    }
    format!("{s}_{what}{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bird_config_has_a_session_per_tunnel_with_aws_timers() {
        let cgw = CustomerGateway {
            id: "cgw-hq".into(),
            router_id: "203.0.113.50".parse().unwrap(),
            asn: 65000,
            advertise: vec!["192.168.0.0/16".parse().unwrap()],
            tunnels: (1..=2)
                .map(|n| CustomerTunnel {
                    name: protocol_name("vpn-hq", "tunnel", n),
                    description: format!("vpn-hq tunnel {n}"),
                    local: Ipv4Addr::new(169, 254, 10, 4 * (n as u8 - 1) + 2),
                    neighbor: Ipv4Addr::new(169, 254, 10, 4 * (n as u8 - 1) + 1),
                    neighbor_asn: 64512,
                    local_asn: None,
                    local_pref: None,
                })
                .collect(),
        };
        let c = bird(&cgw);
        assert!(c.contains("router id 203.0.113.50;"), "{c}");
        assert!(c.contains("route 192.168.0.0/16 unreachable;"), "{c}");
        assert!(c.contains("protocol bgp vpn_hq_tunnel1 {"), "{c}");
        assert!(c.contains("local 169.254.10.6 as 65000;"), "{c}");
        assert!(c.contains("neighbor 169.254.10.5 as 64512;"), "{c}");
        assert_eq!(c.matches("hold time 30;").count(), 2, "{c}");
        assert_eq!(c.matches("keepalive time 10;").count(), 2, "{c}");
        assert_eq!(protocol_name("1x", "vif", 1), "p1x_vif1");
    }
}
