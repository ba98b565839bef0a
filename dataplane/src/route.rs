//! Route tables: longest-prefix match per table, IPv4 and IPv6 (R-RT-LPM).
//!
//! Each table is an `ip_network_table::IpNetworkTable`, a tree bitmap (Eatherton et al.):
//! lookups touch a few cache lines whatever the number of routes, memory stays near the
//! route count (a DIR-24-8 array would cost 32 MiB per table), and it holds IPv4 and IPv6
//! side by side. Ties between equal prefixes are settled when the table is built
//! ([`RouteTableBuilder`]), so a lookup is one LPM and nothing else.

use std::fmt;
use std::net::IpAddr;

use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;

use crate::snapshot::{EniIx, GatewayEndpointIx, NatGatewayIx, PeeringIx, VpcIx};

/// True when `addr` lies in `net` (an address never lies in a prefix of the other family).
#[inline]
pub fn net_contains(net: &IpNetwork, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpNetwork::V4(n), IpAddr::V4(a)) => n.contains(a),
        (IpNetwork::V6(n), IpAddr::V6(a)) => n.contains(a),
        _ => false,
    }
}

/// Where a route sends a packet (config.md `route_tables[].routes[].target`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The VPC's own blocks (R-RT-LOCAL).
    Local,
    /// An instance's ENI: middlebox / appliance routing.
    Eni(EniIx),
    /// The VPC's internet gateway.
    InternetGateway(VpcIx),
    /// The VPC's egress-only internet gateway.
    EgressOnlyInternetGateway(VpcIx),
    /// The VPC's virtual private gateway (to `on_premises`).
    VirtualPrivateGateway(VpcIx),
    NatGateway(NatGatewayIx),
    Peering(PeeringIx),
    GatewayEndpoint(GatewayEndpointIx),
    /// Drop (R-RT-BLACKHOLE).
    Blackhole,
}

/// Where a route came from; decides ties between equal prefixes (R-RT-LPM: local, then
/// static, then prefix-list, then propagated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteOrigin {
    Local = 0,
    Static = 1,
    PrefixList = 2,
    Propagated = 3,
}

/// One route as the dataplane and `trace` see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// What the person wrote: a CIDR or a prefix-list id. For a prefix-list route the
    /// table holds one entry per list CIDR (R-RT-PREFIXLIST: as specific as the longest
    /// matching entry), each naming the list here.
    pub destination: Box<str>,
    pub origin: RouteOrigin,
    pub target: Target,
    /// How the target is written in the lab file (`igw-lab`, `blackhole`, `local`).
    pub target_name: Box<str>,
}

/// An immutable route table.
pub struct RouteTable {
    pub id: Box<str>,
    pub vpc: VpcIx,
    lpm: IpNetworkTable<Route>,
}

impl RouteTable {
    /// The most specific route for `dst`, with the prefix that matched.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<(IpNetwork, &Route)> {
        self.lpm.longest_match(dst)
    }

    /// Every entry, for `trace` and tests.
    pub fn routes(&self) -> impl Iterator<Item = (IpNetwork, &Route)> {
        self.lpm.iter()
    }

    /// Number of (IPv4, IPv6) entries.
    pub fn len(&self) -> (usize, usize) {
        self.lpm.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lpm.is_empty()
    }
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("id", &self.id)
            .field("len", &self.len())
            .finish()
    }
}

/// Builds a [`RouteTable`], settling equal-prefix ties by [`RouteOrigin`].
pub struct RouteTableBuilder {
    id: Box<str>,
    vpc: VpcIx,
    lpm: IpNetworkTable<Route>,
}

impl RouteTableBuilder {
    pub fn new(id: &str, vpc: VpcIx) -> Self {
        RouteTableBuilder {
            id: id.into(),
            vpc,
            lpm: IpNetworkTable::new(),
        }
    }

    /// Adds a route; of two routes for the same prefix the one of higher priority origin
    /// stays (R-RT-LPM), and of two of the same origin the first one added.
    pub fn add(&mut self, prefix: IpNetwork, route: Route) {
        if let Some(existing) = self.lpm.exact_match(prefix) {
            if existing.origin <= route.origin {
                return;
            }
        }
        self.lpm.insert(prefix, route);
    }

    pub fn build(self) -> RouteTable {
        RouteTable {
            id: self.id,
            vpc: self.vpc,
            lpm: self.lpm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dest: &str, origin: RouteOrigin, target: Target) -> Route {
        Route {
            destination: dest.into(),
            origin,
            target,
            target_name: "t".into(),
        }
    }

    #[test]
    fn longest_prefix_wins_and_ties_follow_origin() {
        let mut b = RouteTableBuilder::new("rtb", VpcIx(0));
        let any: IpNetwork = "0.0.0.0/0".parse().unwrap();
        let vpc: IpNetwork = "10.0.0.0/16".parse().unwrap();
        let pl: IpNetwork = "198.18.0.0/24".parse().unwrap();
        b.add(
            any,
            route(
                "0.0.0.0/0",
                RouteOrigin::Static,
                Target::InternetGateway(VpcIx(0)),
            ),
        );
        b.add(vpc, route("10.0.0.0/16", RouteOrigin::Local, Target::Local));
        b.add(
            pl,
            route(
                "pl-s3",
                RouteOrigin::PrefixList,
                Target::GatewayEndpoint(GatewayEndpointIx(0)),
            ),
        );
        // A static route for the same prefix beats the prefix-list one whatever the order.
        b.add(
            pl,
            route("198.18.0.0/24", RouteOrigin::Static, Target::Blackhole),
        );
        b.add(
            pl,
            route(
                "pl-s3",
                RouteOrigin::Propagated,
                Target::VirtualPrivateGateway(VpcIx(0)),
            ),
        );
        let t = b.build();
        let hit = |a: &str| t.lookup(a.parse().unwrap()).map(|(_, r)| r.target);
        assert_eq!(hit("10.0.5.5"), Some(Target::Local));
        assert_eq!(hit("8.8.8.8"), Some(Target::InternetGateway(VpcIx(0))));
        assert_eq!(hit("198.18.0.10"), Some(Target::Blackhole));
        assert_eq!(hit("2001:db8::1"), None);
    }
}
