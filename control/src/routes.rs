//! `vpcd routes`: a lab's route tables as the console shows them, from a lab file or from
//! the running router: each route's destination, target, origin (local, static, prefix
//! list, propagated) and state (active, blackhole).

use std::fmt::Write as _;

use dataplane::route::{Route, RouteOrigin, Target};
use dataplane::Snapshot;

/// One route as a row: destination, target, origin, state.
pub struct Row {
    pub destination: String,
    pub target: String,
    pub origin: &'static str,
    pub state: &'static str,
}

/// A route's state: `blackhole` when it drops what it matches (its target is `blackhole`
/// or was deleted, its peering is not active, its NAT gateway failed or its instance is
/// stopped by a fault: R-RT-BLACKHOLE, R-PCX-ACTIVE).
pub fn state(snap: &Snapshot, route: &Route) -> &'static str {
    match route.target {
        Target::Blackhole => "blackhole",
        Target::Peering(p) if !snap.peering(p).active => "blackhole",
        Target::NatGateway(n) if snap.nat_gateway(n).failed != 0 => "blackhole",
        Target::Eni(e) if snap.eni(e).stopped != 0 => "blackhole",
        _ => "active",
    }
}

fn origin(o: RouteOrigin) -> &'static str {
    match o {
        RouteOrigin::Local => "local",
        RouteOrigin::Static => "static",
        RouteOrigin::PrefixList => "prefix list",
        RouteOrigin::Propagated => "propagated",
    }
}

/// The rows of one table: a prefix-list route once (the table holds it once per CIDR).
pub fn rows(snap: &Snapshot, table: &dataplane::route::RouteTable) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for (_, r) in table.routes() {
        let row = Row {
            destination: r.destination.to_string(),
            target: r.target_name.to_string(),
            origin: origin(r.origin),
            state: state(snap, r),
        };
        if !out
            .iter()
            .any(|o| o.destination == row.destination && o.target == row.target)
        {
            out.push(row);
        }
    }
    out
}

/// Every route table (or the one named `only`) as text. `Err` when `only` names none.
pub fn render(snap: &Snapshot, only: Option<&str>) -> Result<String, String> {
    let t = &snap.topo;
    let tables: Vec<usize> = (0..t.route_tables.len())
        .filter(|i| only.is_none_or(|id| &*t.route_tables[*i].id == id))
        .collect();
    if tables.is_empty() {
        let known: Vec<&str> = t.route_tables.iter().map(|r| &*r.id).collect();
        return Err(format!(
            "no route table `{}`; the lab has: {}",
            crate::yaml::shown(only.unwrap_or("")),
            known.join(", ")
        ));
    }
    let mut s = String::new();
    for i in tables {
        let table = &t.route_tables[i];
        let subnets: Vec<&str> = t
            .subnets
            .iter()
            .filter(|sn| sn.route_table.ix() == i)
            .map(|sn| &*sn.id)
            .collect();
        let _ = writeln!(
            s,
            "{} ({}; subnets: {})",
            table.id,
            snap.vpc(table.vpc).id,
            if subnets.is_empty() {
                "none".to_string()
            } else {
                subnets.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "  {:<24} {:<20} {:<12} state",
            "destination", "target", "origin"
        );
        for r in rows(snap, table) {
            let _ = writeln!(
                s,
                "  {:<24} {:<20} {:<12} {}",
                r.destination, r.target, r.origin, r.state
            );
        }
    }
    Ok(s)
}
