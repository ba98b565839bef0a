//! What the Amazon DNS resolver knows (R-ADDR-DNS, R-IFE-DNS): names in AWS's schemes,
//! computed from the snapshot at query time.
//!
//! - private names: `ip-10-0-1-10.ec2.internal` in us-east-1,
//!   `ip-10-0-1-10.REGION.compute.internal` elsewhere, for the VPC's ENIs and those of
//!   active peers; reverse (PTR) names for the same addresses;
//! - public names: `ec2-198-51-100-10.compute-1.amazonaws.com` (us-east-1) or
//!   `ec2-…​.REGION.compute.amazonaws.com`: the private address inside the VPC (and in a
//!   peer that allows DNS resolution), the public one elsewhere;
//! - services: `services[].dns_name` → the service's hosts, or the VPC's interface
//!   endpoint addresses when that endpoint has private DNS;
//! - endpoints: `ID.SERVICE.REGION.vpce.amazonaws.com` (regional: every endpoint ENI) and
//!   `ID-AZ.SERVICE.REGION.vpce.amazonaws.com` (zonal).
//!
//! Anything else does not exist: nothing is forwarded outside the lab.

use std::net::{IpAddr, Ipv4Addr};

use crate::snapshot::{HostKind, Snapshot, VpcIx};

/// The answer to one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Addresses(Vec<IpAddr>),
    Name(String),
    /// The name exists, but has no record of the asked type.
    NoData,
    NxDomain,
}

/// What was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    A,
    Aaaa,
    Ptr,
    Other,
}

/// The private DNS domain of a region.
pub fn private_domain(region: &str) -> String {
    if region == "us-east-1" {
        "ec2.internal".into()
    } else {
        format!("{region}.compute.internal")
    }
}

fn public_domain(region: &str) -> String {
    if region == "us-east-1" {
        "compute-1.amazonaws.com".into()
    } else {
        format!("{region}.compute.amazonaws.com")
    }
}

/// The private DNS name of an address.
pub fn private_name(region: &str, a: Ipv4Addr) -> String {
    let o = a.octets();
    format!(
        "ip-{}-{}-{}-{}.{}",
        o[0],
        o[1],
        o[2],
        o[3],
        private_domain(region)
    )
}

/// `a-b-c-d` → the address.
fn dashed(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<u8> = s
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (parts.len() == 4).then(|| Ipv4Addr::new(parts[0], parts[1], parts[2], parts[3]))
}

/// VPCs whose names `vpc` sees: itself and its active peers; `dns` says whether the peer
/// allows resolving its public names to private addresses.
fn visible(snap: &Snapshot, vpc: VpcIx) -> Vec<(VpcIx, bool)> {
    let mut v = vec![(vpc, true)];
    for p in &snap.topo.peerings {
        if p.active && (p.requester == vpc || p.accepter == vpc) {
            v.push((p.peer_of(vpc), p.allow_dns));
        }
    }
    v
}

/// Answers `name` (lower case, no final dot) asked from `vpc`.
pub fn resolve(snap: &Snapshot, vpc: VpcIx, name: &str, ask: Ask) -> Answer {
    let t = &snap.topo;
    let region = &*t.region;
    let only_v4 = |addrs: Vec<IpAddr>| -> Answer {
        if addrs.is_empty() {
            return Answer::NxDomain;
        }
        match ask {
            Ask::A => Answer::Addresses(addrs),
            _ => Answer::NoData,
        }
    };
    // Reverse names.
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let o: Vec<u8> = match rest
            .split('.')
            .map(|p| p.parse().ok())
            .collect::<Option<Vec<u8>>>()
        {
            Some(o) if o.len() == 4 => o,
            _ => return Answer::NxDomain,
        };
        let a = Ipv4Addr::new(o[3], o[2], o[1], o[0]);
        let known = visible(snap, vpc)
            .iter()
            .any(|(v, _)| snap.eni_by_addr(*v, a.into()).is_some());
        return match (known, ask) {
            (true, Ask::Ptr) => Answer::Name(private_name(region, a)),
            (true, _) => Answer::NoData,
            (false, _) => Answer::NxDomain,
        };
    }
    // Resource-based names (an IPv6-only instance's hostname, AWS: `i-….ec2.internal`):
    // AAAA gives its IPv6 addresses, A its IPv4 ones if it has any.
    if let Some(id) = name.strip_suffix(&format!(".{}", private_domain(region))) {
        let seen = visible(snap, vpc);
        let eni = t.enis.iter().find(|e| {
            e.port.is_some()
                && &*e.id == id
                && e.primary_v4().is_none()
                && seen.iter().any(|(v, _)| *v == e.vpc)
        });
        if let Some(e) = eni {
            let addrs: Vec<IpAddr> = match ask {
                Ask::Aaaa => e.ipv6.iter().map(|a| IpAddr::V6(*a)).collect(),
                Ask::A => e.private_v4.iter().map(|a| IpAddr::V4(*a)).collect(),
                _ => Vec::new(),
            };
            return if addrs.is_empty() {
                Answer::NoData
            } else {
                Answer::Addresses(addrs)
            };
        }
    }
    // Private names.
    if let Some(host) = name
        .strip_suffix(&format!(".{}", private_domain(region)))
        .and_then(|h| h.strip_prefix("ip-"))
    {
        let Some(a) = dashed(host) else {
            return Answer::NxDomain;
        };
        let known = visible(snap, vpc)
            .iter()
            .any(|(v, _)| snap.eni_by_addr(*v, a.into()).is_some());
        return only_v4(if known { vec![a.into()] } else { vec![] });
    }
    // Public names.
    if let Some(host) = name
        .strip_suffix(&format!(".{}", public_domain(region)))
        .and_then(|h| h.strip_prefix("ec2-"))
    {
        let Some(public) = dashed(host) else {
            return Answer::NxDomain;
        };
        let Some(eni) = t.enis.iter().find(|e| e.public_v4 == Some(public)) else {
            return Answer::NxDomain;
        };
        let inside = visible(snap, vpc)
            .iter()
            .any(|(v, dns)| *v == eni.vpc && *dns);
        let a = match eni.primary_v4() {
            Some(private) if inside => private,
            _ => public,
        };
        return only_v4(vec![a.into()]);
    }
    // Endpoint names.
    if let Some(rest) = name.strip_suffix(&format!(".{region}.vpce.amazonaws.com")) {
        for ep in t.interface_endpoints.iter() {
            let service = &*t.services[ep.service.ix()].name;
            let Some(label) = rest.strip_suffix(&format!(".{service}")) else {
                continue;
            };
            let enis = ep.enis.iter().map(|e| snap.eni(*e));
            let addrs: Vec<IpAddr> = if label == &*ep.id {
                enis.flat_map(|e| e.private_v4.iter().map(|a| IpAddr::V4(*a)))
                    .collect()
            } else if let Some(az) = label.strip_prefix(&format!("{}-", ep.id)) {
                enis.filter(|e| &*snap.subnet(e.subnet).availability_zone == az)
                    .flat_map(|e| e.private_v4.iter().map(|a| IpAddr::V4(*a)))
                    .collect()
            } else {
                continue;
            };
            return only_v4(addrs);
        }
        return Answer::NxDomain;
    }
    // Service names: the VPC's private-DNS endpoint wins over the public hosts.
    for (si, s) in t.services.iter().enumerate() {
        if s.dns_name
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
            != Some(name)
        {
            continue;
        }
        let endpoint = t
            .interface_endpoints
            .iter()
            .find(|ep| ep.vpc == vpc && ep.service.ix() == si && ep.private_dns);
        let addrs: Vec<IpAddr> = match endpoint {
            Some(ep) => ep
                .enis
                .iter()
                .flat_map(|e| snap.eni(*e).private_v4.iter().map(|a| IpAddr::V4(*a)))
                .collect(),
            None => t
                .hosts
                .iter()
                .filter(|h| h.kind == HostKind::Service(crate::snapshot::ServiceIx(si as u32)))
                .filter_map(|h| h.ipv4.map(IpAddr::V4))
                .collect(),
        };
        return only_v4(addrs);
    }
    Answer::NxDomain
}
