//! The instance metadata documents (R-ADDR-IMDS): what `GET /latest/meta-data/...`
//! answers, laid out as AWS lays it out. The HTTP and TCP around them are in
//! [`super::tcp_services`].

use std::fmt::Write as _;

use crate::snapshot::{EniIx, Snapshot};

/// A stable, locally administered MAC address for an ENI.
pub fn mac(snap: &Snapshot, eni: EniIx) -> String {
    let z = snap.eni(eni).zone;
    format!(
        "02:76:70:{:02x}:{:02x}:{:02x}",
        (z >> 16) as u8,
        (z >> 8) as u8,
        z as u8
    )
}

/// The metadata document at `path`, as AWS lays it out.
pub(super) fn facts(snap: &Snapshot, eni_ix: EniIx, path: &str) -> Option<String> {
    let eni = snap.eni(eni_ix);
    let subnet = snap.subnet(eni.subnet);
    let vpc = snap.vpc(eni.vpc);
    let region = &*snap.topo.region;
    let mac = mac(snap, eni_ix);
    let path = path.trim_end_matches('/');
    let rest = path
        .strip_prefix("/latest/meta-data")
        .or_else(|| (path == "/latest" || path.is_empty()).then_some("@"))?;
    let primary = eni.primary_v4();
    // An IPv6-only instance has a resource-based name (AWS: `i-0123….ec2.internal`).
    let name = match primary {
        Some(a) => super::names::private_name(region, a),
        None => format!("{}.{}", eni.id, super::names::private_domain(region)),
    };
    let sgs: Vec<&str> = eni
        .security_groups
        .iter()
        .map(|g| &*snap.security_group(*g).id)
        .collect();
    let iface = format!("/network/interfaces/macs/{mac}");
    let v = match rest {
        "@" => "meta-data".to_string(),
        "" => "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\npublic-ipv4\nsecurity-groups"
            .to_string(),
        "/instance-id" => eni.id.to_string(),
        "/local-ipv4" => primary?.to_string(),
        "/public-ipv4" => eni.public_v4?.to_string(),
        "/mac" => mac.clone(),
        "/hostname" | "/local-hostname" => name,
        "/placement" => "availability-zone\navailability-zone-id\nregion".to_string(),
        "/placement/availability-zone" => subnet.availability_zone.to_string(),
        "/placement/availability-zone-id" => {
            crate::region::zone_id(region, &subnet.availability_zone)
        }
        "/placement/region" => region.to_string(),
        "/security-groups" => sgs.join("\n"),
        "/network" => "interfaces/".to_string(),
        "/network/interfaces" => "macs/".to_string(),
        "/network/interfaces/macs" => format!("{mac}/"),
        p if p == iface => "local-ipv4s\nmac\nsecurity-group-ids\nsubnet-id\nsubnet-ipv4-cidr-block\nvpc-id\nvpc-ipv4-cidr-block\nvpc-ipv4-cidr-blocks\nipv6s"
            .to_string(),
        p => match p.strip_prefix(&iface)? {
            "/local-ipv4s" => {
                let mut s = String::new();
                for a in &eni.private_v4 {
                    let _ = writeln!(s, "{a}");
                }
                s.trim_end().to_string()
            }
            "/mac" => mac.clone(),
            "/security-group-ids" => sgs.join("\n"),
            "/subnet-id" => subnet.id.to_string(),
            "/subnet-ipv4-cidr-block" => subnet.cidr_v4?.to_string(),
            "/vpc-id" => vpc.id.to_string(),
            "/vpc-ipv4-cidr-block" => vpc.cidrs_v4.first()?.to_string(),
            "/vpc-ipv4-cidr-blocks" => vpc
                .cidrs_v4
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            "/ipv6s" => {
                let v6: Vec<String> = eni.ipv6.iter().map(|a| a.to_string()).collect();
                if v6.is_empty() {
                    return None;
                }
                v6.join("\n")
            }
            _ => return None,
        },
    };
    Some(v)
}
