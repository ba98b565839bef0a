//! Public IPs assigned at launch (`map_public_ip_on_launch`, config.md): an instance of
//! such a subnet without a `public_ip` gets the next free address of the pool, as AWS
//! assigns one from its own pool.
//!
//! The pool is `internet.public_ip_pool` (a vpcd extension of config.md; default
//! 198.51.100.0/24, a documentation range). Addresses the lab names anywhere (public IPs,
//! Elastic IPs, outside hosts) are skipped, and assignment follows file order, so a lab
//! always gets the same addresses.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use ip_network::Ipv4Network;

use crate::model::Lab;

/// The pool when the lab names none.
pub const DEFAULT_POOL: &str = "198.51.100.0/24";

/// An instance that needed an address when the pool had none left.
#[derive(Debug)]
pub struct Exhausted {
    pub instance: String,
    pub pool: Ipv4Network,
}

/// The pool of a lab.
pub fn pool(lab: &Lab) -> Ipv4Network {
    lab.public_ip_pool
        .as_ref()
        .map_or_else(|| DEFAULT_POOL.parse().expect("the default pool"), |p| p.v)
}

/// Every public IPv4 the lab names: instances' and NAT gateways' public IPs, outside
/// hosts, customer gateways.
fn named(lab: &Lab) -> HashSet<Ipv4Addr> {
    let mut used: HashSet<Ipv4Addr> = HashSet::new();
    for v in &lab.vpcs {
        used.extend(
            v.instances
                .iter()
                .filter_map(|i| i.public_ip.as_ref().map(|p| p.v)),
        );
        used.extend(
            v.nat_gateways
                .iter()
                .filter_map(|n| n.public_ip.as_ref().map(|p| p.v)),
        );
    }
    let hosts = lab
        .internet
        .iter()
        .chain(lab.services.iter().flat_map(|s| s.hosts.iter()))
        .chain(lab.on_premises.iter().flat_map(|o| o.hosts.iter()));
    used.extend(hosts.filter_map(|h| h.ipv4.as_ref().map(|a| a.v)));
    used.extend(lab.vpn.customer_gateways.iter().map(|c| c.ip_address.v));
    used
}

/// The assigned address of every instance that gets one at launch, by instance id.
pub fn assign(lab: &Lab) -> Result<HashMap<String, Ipv4Addr>, Exhausted> {
    let pool = pool(lab);
    let used = named(lab);
    // Skip the network and broadcast addresses of the pool.
    let first = u32::from(pool.network_address());
    let last = u32::from(pool.broadcast_address());
    let mut free = (first.saturating_add(1)..last)
        .map(Ipv4Addr::from)
        .filter(|a| !used.contains(a));
    let mut out = HashMap::new();
    for v in &lab.vpcs {
        for inst in &v.instances {
            let launch = v
                .subnets
                .iter()
                .find(|s| s.id.v == inst.subnet.v)
                .is_some_and(|s| s.map_public_ip_on_launch);
            if inst.public_ip.is_some() || !launch {
                continue;
            }
            let Some(a) = free.next() else {
                return Err(Exhausted {
                    instance: inst.id.v.clone(),
                    pool,
                });
            };
            out.insert(inst.id.v.clone(), a);
        }
    }
    Ok(out)
}

/// The outside address of every VPN tunnel, by (connection id, 1 or 2): AWS gives each
/// tunnel its own Amazon public IP; vpcd takes them from the top of the same pool, so
/// that adding an instance (which takes from the bottom) never moves a tunnel.
pub fn tunnel_outside(
    lab: &Lab,
) -> Result<std::collections::BTreeMap<(String, u8), Ipv4Addr>, Exhausted> {
    let pool = pool(lab);
    let mut used = named(lab);
    used.extend(assign(lab)?.into_values());
    let first = u32::from(pool.network_address());
    let last = u32::from(pool.broadcast_address());
    let mut free = (first.saturating_add(1)..last)
        .rev()
        .map(Ipv4Addr::from)
        .filter(|a| !used.contains(a));
    let mut out = std::collections::BTreeMap::new();
    for c in &lab.vpn.connections {
        for n in 1..=2u8 {
            let Some(a) = free.next() else {
                return Err(Exhausted {
                    instance: format!("{} tunnel {n}", c.id.v),
                    pool,
                });
            };
            out.insert((c.id.v.clone(), n), a);
        }
    }
    Ok(out)
}
