//! Security groups and network ACLs of a lab → the dataplane's rule lists.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use dataplane::acl::{
    default_nacl_rules, NaclRule, NetworkAcl, ProtoMatch, SecurityGroup, SgPeer, SgRule,
};
use dataplane::conntrack::Timeouts;
use dataplane::snapshot::{NaclIx, PortRange, ServiceIx, SgIx, VpcIx};
use ip_network::IpNetwork;

use super::{missing, CompileError};
use crate::model::{self, Lab, Peer};
use crate::values::Protocol;

/// The implicit objects' id (config.md): each VPC has its own `default` SG and NACL.
pub const DEFAULT: &str = "default";

/// Where each security group and NACL landed.
#[derive(Default)]
pub struct AclNames {
    /// (VPC, id) → group; `default` is per VPC, other ids are unique in the lab.
    sg: HashMap<(usize, String), SgIx>,
    sg_by_id: HashMap<String, SgIx>,
    nacl: HashMap<(usize, String), NaclIx>,
}

impl AclNames {
    /// The group an instance or rule in VPC `vpc` means by `id`.
    pub fn sg(&self, vpc: usize, id: &str) -> Result<SgIx, CompileError> {
        self.sg
            .get(&(vpc, id.to_string()))
            .or_else(|| (id != DEFAULT).then(|| self.sg_by_id.get(id)).flatten())
            .copied()
            .ok_or_else(|| missing("security group", id))
    }

    /// A subnet's NACL: the named one, or the VPC's default.
    pub fn nacl(&self, vpc: usize, id: Option<&str>) -> Result<NaclIx, CompileError> {
        let id = id.unwrap_or(DEFAULT);
        self.nacl
            .get(&(vpc, id.to_string()))
            .copied()
            .ok_or_else(|| missing("network ACL", id))
    }
}

fn all_v4() -> IpNetwork {
    IpNetwork::new(Ipv4Addr::UNSPECIFIED, 0).expect("0.0.0.0/0")
}

fn all_v6() -> IpNetwork {
    IpNetwork::new(Ipv6Addr::UNSPECIFIED, 0).expect("::/0")
}

/// "Allow all outbound": what an omitted `outbound` means, and the default SG's.
fn allow_all_out() -> Vec<SgRule> {
    [all_v4(), all_v6()]
        .into_iter()
        .map(|n| SgRule {
            proto: ProtoMatch::All,
            peer: SgPeer::Cidr(n),
        })
        .collect()
}

/// A rule's protocol fields. tcp/udp without `port_range` mean every port; icmp without
/// type or code (or -1) means any.
pub fn proto_match(
    protocol: Protocol,
    ports: Option<(u16, u16)>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
) -> ProtoMatch {
    let range = ports.map_or(PortRange::ANY, |(from, to)| PortRange { from, to });
    match protocol {
        Protocol::All => ProtoMatch::All,
        Protocol::TCP => ProtoMatch::Tcp(range),
        Protocol::UDP => ProtoMatch::Udp(range),
        Protocol::ICMP | Protocol::ICMPV6 => ProtoMatch::Icmp {
            v6: protocol == Protocol::ICMPV6,
            ty: icmp_type,
            code: icmp_code,
        },
        Protocol::Number(n) => ProtoMatch::Number(n),
    }
}

/// Every VPC's security groups (the explicit ones in file order, then the implicit
/// `default` unless the lab names it) and NACLs likewise. Rules are resolved after all
/// groups are numbered, so a rule may name any group of its VPC or a peered one.
pub fn compile(
    lab: &Lab,
    service_by_pl: &HashMap<String, ServiceIx>,
) -> Result<(Vec<SecurityGroup>, Vec<NetworkAcl>, AclNames), CompileError> {
    let mut names = AclNames::default();
    let mut order: Vec<(usize, Option<&model::SecurityGroup>)> = Vec::new();
    for (vi, v) in lab.vpcs.iter().enumerate() {
        for sg in &v.security_groups {
            let ix = SgIx(order.len() as u32);
            names.sg.insert((vi, sg.id.v.clone()), ix);
            if sg.id.v != DEFAULT {
                names.sg_by_id.insert(sg.id.v.clone(), ix);
            }
            order.push((vi, Some(sg)));
        }
        if !v.security_groups.iter().any(|s| s.id.v == DEFAULT) {
            names
                .sg
                .insert((vi, DEFAULT.to_string()), SgIx(order.len() as u32));
            order.push((vi, None));
        }
    }
    let rules = |vi: usize, rules: &[model::SgRule]| -> Result<Vec<SgRule>, CompileError> {
        rules
            .iter()
            .map(|r| {
                let peer = match &r.peer.v {
                    Peer::Cidr(c) => SgPeer::Cidr(*c),
                    Peer::SecurityGroup(id) => SgPeer::Group(names.sg(vi, id)?),
                    Peer::PrefixList(pl) => SgPeer::PrefixList(
                        *service_by_pl
                            .get(pl)
                            .ok_or_else(|| missing("prefix list", pl))?,
                    ),
                };
                Ok(SgRule {
                    proto: proto_match(
                        r.protocol.v,
                        r.port_range.as_ref().map(|p| p.v),
                        r.icmp_type.as_ref().and_then(|t| t.v),
                        r.icmp_code.as_ref().and_then(|c| c.v),
                    ),
                    peer,
                })
            })
            .collect()
    };
    let mut groups = Vec::with_capacity(order.len());
    for (i, (vi, sg)) in order.iter().enumerate() {
        let vpc = VpcIx(*vi as u32);
        groups.push(match sg {
            Some(sg) => SecurityGroup {
                id: sg.id.v.as_str().into(),
                vpc,
                inbound: rules(*vi, &sg.inbound)?,
                outbound: match &sg.outbound {
                    Some(out) => rules(*vi, out)?,
                    None => allow_all_out(),
                },
            },
            // The default SG: inbound from its own members, outbound to all.
            None => SecurityGroup {
                id: DEFAULT.into(),
                vpc,
                inbound: vec![SgRule {
                    proto: ProtoMatch::All,
                    peer: SgPeer::Group(SgIx(i as u32)),
                }],
                outbound: allow_all_out(),
            },
        });
    }

    let mut acls = Vec::new();
    for (vi, v) in lab.vpcs.iter().enumerate() {
        let vpc = VpcIx(vi as u32);
        for acl in &v.network_acls {
            names
                .nacl
                .insert((vi, acl.id.v.clone()), NaclIx(acls.len() as u32));
            let rules = |rs: &[model::NaclRule]| -> Vec<NaclRule> {
                rs.iter()
                    .map(|r| NaclRule {
                        number: r.rule.v.min(u16::MAX as u64) as u16,
                        allow: r.allow,
                        proto: proto_match(
                            r.protocol.v,
                            r.port_range.as_ref().map(|p| p.v),
                            r.icmp_type.as_ref().and_then(|t| t.v),
                            r.icmp_code.as_ref().and_then(|c| c.v),
                        ),
                        cidr: r.cidr.v,
                    })
                    .collect()
            };
            acls.push(NetworkAcl::new(
                &acl.id.v,
                vpc,
                rules(&acl.inbound),
                rules(&acl.outbound),
            ));
        }
        if !v.network_acls.iter().any(|a| a.id.v == DEFAULT) {
            names
                .nacl
                .insert((vi, DEFAULT.to_string()), NaclIx(acls.len() as u32));
            acls.push(NetworkAcl::new(
                DEFAULT,
                vpc,
                default_nacl_rules(),
                default_nacl_rules(),
            ));
        }
    }
    Ok((groups, acls, names))
}

/// An instance's connection-tracking timeouts: its own where set, AWS's defaults else.
pub fn timeouts(ct: Option<&model::ConnectionTracking>) -> Timeouts {
    let d = Timeouts::default();
    let Some(ct) = ct else { return d };
    let secs = |v: &Option<crate::diag::S<u64>>, default: u32| {
        v.as_ref()
            .map_or(default, |s| s.v.min(u32::MAX as u64) as u32)
    };
    Timeouts {
        tcp_established: secs(&ct.tcp_established_timeout, d.tcp_established),
        udp: secs(&ct.udp_timeout, d.udp),
        udp_stream: secs(&ct.udp_stream_timeout, d.udp_stream),
    }
}
