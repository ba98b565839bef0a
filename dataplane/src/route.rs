//! Route tables: longest-prefix match per table, IPv4 and IPv6 (R-RT-LPM).
//!
//! A table is gathered in a map by prefix ([`RouteTableBuilder`]), where ties between
//! equal prefixes are settled, and then frozen into one level-compressed trie per
//! address family (`iptrie`'s LC-trie, Nilsson and Karlsson), whose
//! values index the routes. A snapshot never changes a table, so the trie never needs
//! to be modified, which is the one thing an LC-trie cannot do. A lookup is then one
//! LPM and nothing else.
//!
//! Why the LC-trie: at 100,000 routes ip_network_table's tree bitmap took 54 to 61 ns a
//! lookup in criterion (`lpm/100k_routes`), the LC-trie takes 16 ns. Building it costs
//! about 20 ms more per 100,000 routes, once per apply. Memory stays near the route count
//! (a DIR-24-8 array would cost 32 MiB per table).

use std::collections::hash_map::Entry;
use std::fmt;
use std::net::IpAddr;

use ip_network::IpNetwork;
use iptrie::{Ipv4LCTrieMap, Ipv4Prefix, Ipv4RTrieMap, Ipv6LCTrieMap, Ipv6Prefix, Ipv6RTrieMap};
use rustc_hash::FxHashMap;

use crate::snapshot::{EniIx, GatewayEndpointIx, NatGatewayIx, PeeringIx, TunnelIx, VpcIx};

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
    /// A VPN tunnel: only in a VGW's own routes to sites (R-VPN-SCOPE).
    VpnTunnel(TunnelIx),
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

/// What a trie holds where no route covers an address (its root, without a /0 route).
const NO_ROUTE: u32 = u32::MAX;

/// An immutable route table.
pub struct RouteTable {
    pub id: Box<str>,
    pub vpc: VpcIx,
    /// Every route with its prefix, in the order [`RouteTable::routes`] lists them.
    entries: Vec<(IpNetwork, Route)>,
    /// Longest-prefix match: the position of the route in `entries`, or `NO_ROUTE`.
    v4: Ipv4LCTrieMap<u32>,
    v6: Ipv6LCTrieMap<u32>,
}

impl RouteTable {
    /// The most specific route for `dst`, with the prefix that matched.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<(IpNetwork, &Route)> {
        let ix = match dst {
            IpAddr::V4(a) => *self.v4.lookup(&a).1,
            IpAddr::V6(a) => *self.v6.lookup(&a).1,
        };
        // NO_ROUTE is past the end.
        let (net, route) = self.entries.get(ix as usize)?;
        Some((*net, route))
    }

    /// Every entry, for `trace` and tests.
    pub fn routes(&self) -> impl Iterator<Item = (IpNetwork, &Route)> {
        self.entries.iter().map(|(n, r)| (*n, r))
    }

    /// Number of (IPv4, IPv6) entries.
    pub fn len(&self) -> (usize, usize) {
        let v4 = self.entries.iter().filter(|(n, _)| n.is_ipv4()).count();
        (v4, self.entries.len() - v4)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
    routes: FxHashMap<IpNetwork, Route>,
}

impl RouteTableBuilder {
    pub fn new(id: &str, vpc: VpcIx) -> Self {
        RouteTableBuilder {
            id: id.into(),
            vpc,
            routes: FxHashMap::default(),
        }
    }

    /// Adds a route; of two routes for the same prefix the one of higher priority origin
    /// stays (R-RT-LPM), and of two of the same origin the first one added.
    pub fn add(&mut self, prefix: IpNetwork, route: Route) {
        match self.routes.entry(prefix) {
            Entry::Occupied(e) if e.get().origin <= route.origin => {}
            Entry::Occupied(mut e) => {
                e.insert(route);
            }
            Entry::Vacant(e) => {
                e.insert(route);
            }
        }
    }

    /// Whether `prefix` has a local route (it is a block of the VPC).
    pub fn has_local(&self, prefix: IpNetwork) -> bool {
        self.routes
            .get(&prefix)
            .is_some_and(|r| r.origin == RouteOrigin::Local)
    }

    /// Gives the local route of `prefix` another target (AWS lets the local route point at
    /// an appliance or a NAT gateway for inspection); it stays the local route.
    pub fn replace_local(&mut self, prefix: IpNetwork, route: Route) {
        self.routes.insert(prefix, route);
    }

    /// Freezes the table: its routes (IPv4 first, by address, then length), and one
    /// LC-trie per family indexing them.
    pub fn build(self) -> RouteTable {
        let mut entries: Vec<(IpNetwork, Route)> = self.routes.into_iter().collect();
        entries.sort_unstable_by_key(|(n, _)| *n);
        let mut v4 = Ipv4RTrieMap::with_root(NO_ROUTE);
        let mut v6 = Ipv6RTrieMap::with_root(NO_ROUTE);
        for (i, (net, _)) in entries.iter().enumerate() {
            // A /0 route replaces the root's NO_ROUTE.
            match net {
                IpNetwork::V4(n) => {
                    let p = Ipv4Prefix::new(n.network_address(), n.netmask());
                    v4.insert(p.expect("an IPv4 network is a valid prefix"), i as u32);
                }
                IpNetwork::V6(n) => {
                    let p = Ipv6Prefix::new(n.network_address(), n.netmask());
                    v6.insert(p.expect("an IPv6 network is a valid prefix"), i as u32);
                }
            }
        }
        RouteTable {
            id: self.id,
            vpc: self.vpc,
            entries,
            v4: v4.compress(),
            v6: v6.compress(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

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

    /// An address near one of a few bases, so that prefixes nest and overlap.
    fn addr(r: &mut Rng, v6: bool) -> IpAddr {
        let x = r.next();
        if v6 {
            let base = 0x2001_0db8u128 << 96 | u128::from(x % 3) << 64;
            IpAddr::V6((base | u128::from((x >> 8) as u16)).into())
        } else {
            let base = [0x0a00_0000u32, 0x6440_0000, 0xc612_0000][(x % 3) as usize];
            IpAddr::V4((base | ((x >> 8) as u32 & 0xffff)).into())
        }
    }

    /// The frozen tries find what a scan of every route finds: the longest prefix that
    /// holds the address, its own route, or nothing.
    #[test]
    fn the_tries_find_the_longest_covering_prefix_as_a_scan_does() {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        let (mut found, mut none) = (0, 0);
        for table in 0..120 {
            let mut b = RouteTableBuilder::new("rtb", VpcIx(0));
            // What the test added, by prefix (the first of a prefix stays, as R-RT-LPM
            // keeps the first of one origin): the expectation, independent of the table.
            let mut added: Vec<(IpNetwork, String)> = Vec::new();
            let n = r.next() % 300;
            for _ in 0..n {
                let v6 = r.next() % 3 == 0;
                let bits = if v6 { 128 } else { 32 };
                // Every length from 1 on, most of them long enough to leave gaps.
                let len = if r.next() % 8 == 0 {
                    1 + r.next() % bits
                } else {
                    bits - r.next() % (bits / 2)
                } as u8;
                let net = match addr(&mut r, v6) {
                    IpAddr::V4(a) => IpNetwork::new_truncate(a, len),
                    IpAddr::V6(a) => IpNetwork::new_truncate(a, len),
                }
                .unwrap();
                b.add(
                    net,
                    route(&net.to_string(), RouteOrigin::Static, Target::Local),
                );
                if !added.iter().any(|(n, _)| *n == net) {
                    added.push((net, net.to_string()));
                }
            }
            // A default route in a third of the tables, of either family.
            let default = ["0.0.0.0/0", "::/0", "", "", "", ""][(r.next() % 6) as usize];
            if let Ok(net) = default.parse::<IpNetwork>() {
                b.add(net, route(default, RouteOrigin::Static, Target::Blackhole));
                added.push((net, default.to_string()));
            }
            let t = b.build();
            assert_eq!(t.routes().count(), added.len());
            let routes = added;
            // Random addresses, and each route's first and last address and the ones
            // just outside it, where a trie that cut a prefix short or long would err.
            let mut probes: Vec<IpAddr> = (0..200)
                .map(|_| {
                    let v6 = r.next() % 2 == 0;
                    addr(&mut r, v6)
                })
                .collect();
            for (net, _) in &routes {
                probes.extend(edges(net));
            }
            for a in probes {
                let want = routes
                    .iter()
                    .filter(|(n, _)| net_contains(n, a))
                    .max_by_key(|(n, _)| n.netmask());
                let got = t.lookup(a);
                assert_eq!(
                    got.map(|(n, r)| (n, &*r.destination)),
                    want.map(|(n, d)| (*n, d.as_str())),
                    "table {table}, {a}"
                );
                if got.is_some() {
                    found += 1;
                } else {
                    none += 1;
                }
            }
        }
        // Both outcomes are exercised.
        assert!(found > 20_000 && none > 1_000, "{found} found, {none} none");
    }

    /// A prefix's first and last address and the neighbours just outside it.
    fn edges(net: &IpNetwork) -> [IpAddr; 4] {
        match net {
            IpNetwork::V4(n) => {
                let first = u32::from(n.network_address());
                let last = first | u32::MAX.checked_shr(u32::from(n.netmask())).unwrap_or(0);
                [first, last, first.wrapping_sub(1), last.wrapping_add(1)]
                    .map(|a| IpAddr::V4(a.into()))
            }
            IpNetwork::V6(n) => {
                let first = u128::from(n.network_address());
                let last = first | u128::MAX.checked_shr(u32::from(n.netmask())).unwrap_or(0);
                [first, last, first.wrapping_sub(1), last.wrapping_add(1)]
                    .map(|a| IpAddr::V6(a.into()))
            }
        }
    }

    #[test]
    fn of_two_routes_of_one_origin_for_one_prefix_the_first_stays() {
        let mut b = RouteTableBuilder::new("rtb", VpcIx(0));
        let net: IpNetwork = "203.0.113.0/24".parse().unwrap();
        b.add(net, route("first", RouteOrigin::Static, Target::Blackhole));
        b.add(net, route("second", RouteOrigin::Static, Target::Local));
        let t = b.build();
        let hit = t.lookup("203.0.113.9".parse().unwrap()).unwrap().1;
        assert_eq!(&*hit.destination, "first");
    }
}
