//! `vpcd vpn-config VPN --format bird|frr|strongswan`: what AWS's "download
//! configuration" gives for a customer gateway (hybrid.md): both tunnels' outside and
//! inside addresses, the ASNs, BGP timers (hold 30 s, keepalive 10 s), the tunnel MTU
//! 1399 and TCP MSS 1379 (R-VPN-MTU), and for strongSwan the IKEv2/IPsec settings of
//! AWS's generic configuration with a pre-shared key per tunnel.
//!
//! The BIRD form is the one `vpcd up` runs in the site's router. The FRR and strongSwan
//! forms are for a real device: inside the lab the tunnels are VXLAN (README), so
//! strongSwan's part is what the same design needs against AWS.

use std::fmt::Write as _;

use clap::ValueEnum;
use dataplane::Snapshot;

use crate::bgp::customer_config::{self, HOLD_TIME, KEEPALIVE};
use crate::model::Lab;
use crate::vpn::{CUSTOMER_MSS, CUSTOMER_TUNNEL_MTU};
use crate::vpn_lab::{customer_gateway, tunnels, TunnelPlan};

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Bird,
    Frr,
    Strongswan,
}

/// The configuration of VPN connection `vpn` of a compiled lab.
pub fn render(lab: &Lab, snap: &Snapshot, vpn: &str, format: Format) -> Result<String, String> {
    let Some(conn) = lab.vpn.connections.iter().find(|c| c.id.v == vpn) else {
        let ids: Vec<&str> = lab
            .vpn
            .connections
            .iter()
            .map(|c| c.id.v.as_str())
            .collect();
        return Err(if ids.is_empty() {
            "the lab has no VPN connection".to_string()
        } else {
            format!("no VPN connection `{vpn}`; the lab has: {}", ids.join(", "))
        });
    };
    let cgw = lab
        .vpn
        .customer_gateways
        .iter()
        .find(|g| g.id.v == conn.customer_gateway.v)
        .ok_or("the connection's customer gateway is missing")?;
    let site = lab
        .vpn
        .sites
        .iter()
        .find(|s| s.id.v == cgw.site.v)
        .ok_or("the customer gateway's site is missing")?;
    let plans = tunnels(lab, snap, "");
    let mine: Vec<&TunnelPlan> = plans.iter().filter(|p| p.vpn == vpn).collect();
    let mut s = String::new();
    let comment = match format {
        Format::Bird | Format::Strongswan => "#",
        Format::Frr => "!",
    };
    let _ = writeln!(
        s,
        "{comment} VPN connection {vpn}: customer gateway {} ({}, AS {}), {} routing",
        cgw.id.v,
        cgw.ip_address.v,
        cgw.bgp_asn.v,
        if conn.static_routes_only {
            "static"
        } else {
            "BGP"
        }
    );
    for p in &mine {
        let _ = writeln!(
            s,
            "{comment} tunnel {}: outside {} (AWS) <-> {} (you); inside {}/30 (AWS) <-> {}/30 (you), AWS AS {}",
            p.number, p.outside, p.customer_ip, p.inside_aws, p.inside_customer, p.amazon_asn
        );
    }
    let _ = writeln!(
        s,
        "{comment} tunnel interfaces: MTU {CUSTOMER_TUNNEL_MTU}, TCP MSS clamped to {CUSTOMER_MSS}; AWS sends no ICMP inside a tunnel"
    );
    s.push('\n');
    match format {
        Format::Bird => {
            if conn.static_routes_only {
                for p in &mine {
                    for b in &p.vpc_blocks {
                        let _ = writeln!(
                            s,
                            "# static: ip route add {b} via {} metric {}",
                            p.inside_aws,
                            100 * u32::from(p.number)
                        );
                    }
                }
            } else {
                s.push_str(&customer_config::bird(&customer_gateway(
                    site,
                    Some(cgw),
                    &mine,
                )));
            }
        }
        Format::Frr => {
            if conn.static_routes_only {
                for p in &mine {
                    for b in &p.vpc_blocks {
                        let _ = writeln!(
                            s,
                            "ip route {b} {} {}",
                            p.inside_aws,
                            100 * u32::from(p.number)
                        );
                    }
                }
            } else {
                let _ = writeln!(s, "router bgp {}", cgw.bgp_asn.v);
                let _ = writeln!(s, " bgp router-id {}", cgw.ip_address.v);
                for p in &mine {
                    let n = p.inside_aws;
                    let _ = writeln!(s, " neighbor {n} remote-as {}", p.amazon_asn);
                    let _ = writeln!(s, " neighbor {n} description {vpn} tunnel {}", p.number);
                    let _ = writeln!(s, " neighbor {n} timers {KEEPALIVE} {HOLD_TIME}");
                }
                s.push_str(" !\n address-family ipv4 unicast\n");
                for c in &site.cidr_blocks {
                    if c.v.is_ipv4() {
                        let _ = writeln!(s, "  network {}", c.v);
                    }
                }
                for p in &mine {
                    let _ = writeln!(s, "  neighbor {} activate", p.inside_aws);
                }
                s.push_str(" exit-address-family\n");
            }
        }
        Format::Strongswan => {
            s.push_str("connections {\n");
            for p in &mine {
                let name = format!("{}-tunnel{}", vpn, p.number);
                let _ = write!(
                    s,
                    "  {name} {{\n    version = 2\n    local_addrs = {}\n    remote_addrs = {}\n    \
                     proposals = aes128-sha1-modp1024\n    rekey_time = 28800s\n    dpd_delay = 10s\n    \
                     local {{ auth = psk }}\n    remote {{ auth = psk }}\n    children {{\n      {name} {{\n        \
                     local_ts = 0.0.0.0/0\n        remote_ts = 0.0.0.0/0\n        \
                     esp_proposals = aes128-sha1-modp1024\n        rekey_time = 3600s\n        \
                     dpd_action = restart\n        start_action = start\n        if_id_in = {n}\n        if_id_out = {n}\n      }}\n    }}\n  }}\n",
                    p.customer_ip,
                    p.outside,
                    n = p.number
                );
            }
            s.push_str("}\nsecrets {\n");
            for p in &mine {
                let _ = writeln!(
                    s,
                    "  ike-{vpn}-tunnel{n} {{ id = {} secret = \"{}\" }}",
                    p.outside,
                    pre_shared_key(vpn, p.number),
                    n = p.number
                );
            }
            s.push_str("}\n");
            for p in &mine {
                let _ = writeln!(
                    s,
                    "# ip link add ipsec{n} type xfrm if_id {n}; ip addr add {}/30 dev ipsec{n}; ip link set ipsec{n} mtu {CUSTOMER_TUNNEL_MTU} up",
                    p.inside_customer,
                    n = p.number
                );
            }
        }
    }
    Ok(s)
}

/// A tunnel's pre-shared key as AWS generates them (32 characters of letters, digits,
/// `.` and `_`, not starting with `0`): derived from the connection and tunnel, so the
/// same lab always prints the same key.
pub fn pre_shared_key(vpn: &str, tunnel: u8) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._";
    // FNV-1a, then xorshift: no cryptography is asked of it.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in vpn.bytes().chain([tunnel]) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = String::with_capacity(32);
    while out.len() < 32 {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
        if out.is_empty() && c == '0' {
            continue;
        }
        out.push(c);
    }
    out
}
