//! Rule matching for security groups (allow-only, union, stateful through
//! [`crate::conntrack`]) and network ACLs (numbered, first match, stateless).
//!
//! Both match the same things: a protocol (all, TCP/UDP with a destination port range,
//! ICMP/ICMPv6 with optional type and code, or a protocol number) and the other end of
//! the packet (its source inbound, its destination outbound). A port range always
//! applies to the packet's destination port, as in AWS.

use std::net::IpAddr;

use ip_network::IpNetwork;

use crate::observer::Direction;
use crate::packet::{proto, Packet, Transport};
use crate::route::net_contains;
use crate::snapshot::{NaclIx, PortRange, ServiceIx, SgIx, VpcIx};

/// What a rule's protocol fields select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoMatch {
    /// `protocol: all` (-1): every packet, ports ignored.
    All,
    /// TCP to a destination port in the range (0-65535 when the rule names none).
    Tcp(PortRange),
    /// UDP to a destination port in the range.
    Udp(PortRange),
    /// ICMP (`v6: false`) or ICMPv6, with the type and code (`None`: any).
    Icmp {
        v6: bool,
        ty: Option<u8>,
        code: Option<u8>,
    },
    /// Any other protocol number: no ports.
    Number(u8),
}

impl ProtoMatch {
    /// Whether the packet's protocol and ports match. A later fragment carries no ports:
    /// only rules that do not look at ports (all traffic, a protocol number, a full port
    /// range) can match it.
    #[inline]
    pub fn matches(&self, pkt: &Packet) -> bool {
        match *self {
            ProtoMatch::All => true,
            ProtoMatch::Tcp(r) => {
                pkt.proto == proto::TCP
                    && match pkt.transport {
                        Transport::Tcp { dst_port, .. } => r.contains(dst_port),
                        _ => r.is_all(),
                    }
            }
            ProtoMatch::Udp(r) => {
                pkt.proto == proto::UDP
                    && match pkt.transport {
                        Transport::Udp { dst_port, .. } => r.contains(dst_port),
                        _ => r.is_all(),
                    }
            }
            ProtoMatch::Icmp { v6, ty, code } => {
                let want = if v6 { proto::ICMPV6 } else { proto::ICMP };
                pkt.proto == want
                    && match pkt.transport {
                        Transport::Icmp { ty: t, code: c, .. } => {
                            ty.is_none_or(|x| x == t) && code.is_none_or(|x| x == c)
                        }
                        _ => ty.is_none() && code.is_none(),
                    }
            }
            ProtoMatch::Number(n) => pkt.proto == n,
        }
    }

    /// True when the rule covers every packet of `protocol` (all traffic, or all its
    /// ports): the rule shape of R-SG-UNTRACKED.
    pub fn covers_all_of(&self, protocol: u8) -> bool {
        match *self {
            ProtoMatch::All => true,
            ProtoMatch::Tcp(r) => protocol == proto::TCP && r.is_all(),
            ProtoMatch::Udp(r) => protocol == proto::UDP && r.is_all(),
            ProtoMatch::Number(n) => n == protocol,
            ProtoMatch::Icmp { .. } => false,
        }
    }
}

/// The other end of a security-group rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgPeer {
    Cidr(IpNetwork),
    /// The private addresses of the members of this group (R-SG-REF).
    Group(SgIx),
    /// Any CIDR of a service's prefix list (R-SG-PL).
    PrefixList(ServiceIx),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SgRule {
    pub proto: ProtoMatch,
    pub peer: SgPeer,
}

/// A security group: allow rules only (R-SG-ALLOW).
#[derive(Clone, Debug)]
pub struct SecurityGroup {
    pub id: Box<str>,
    pub vpc: VpcIx,
    pub inbound: Vec<SgRule>,
    pub outbound: Vec<SgRule>,
}

impl SecurityGroup {
    pub fn rules(&self, dir: Direction) -> &[SgRule] {
        match dir {
            Direction::Ingress => &self.inbound,
            Direction::Egress => &self.outbound,
        }
    }
}

/// The address at the other end of the packet, seen from an ENI or a subnet.
#[inline]
pub fn remote(pkt: &Packet, dir: Direction) -> IpAddr {
    match dir {
        Direction::Ingress => pkt.src,
        Direction::Egress => pkt.dst,
    }
}

/// One numbered NACL rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NaclRule {
    pub number: u16,
    pub allow: bool,
    pub proto: ProtoMatch,
    /// `cidr` (IPv4) or `ipv6_cidr`: matches only its family (R-NACL-FAMILY).
    pub cidr: IpNetwork,
}

/// A network ACL; each direction's rules sorted by number (R-NACL-ORDER).
#[derive(Clone, Debug)]
pub struct NetworkAcl {
    pub id: Box<str>,
    pub vpc: VpcIx,
    pub inbound: Vec<NaclRule>,
    pub outbound: Vec<NaclRule>,
    /// Where this ACL's counters start in the per-rule drop counters: inbound rules, the
    /// inbound `*`, outbound rules, the outbound `*`.
    pub counter_base: u32,
}

/// What a NACL decided, and which rule decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NaclDecision {
    pub allow: bool,
    /// The rule number, or `None` for the final `*` rule.
    pub rule: Option<u16>,
    /// The per-rule counter of the deciding rule.
    pub counter: u32,
}

impl NetworkAcl {
    pub fn rules(&self, dir: Direction) -> &[NaclRule] {
        match dir {
            Direction::Ingress => &self.inbound,
            Direction::Egress => &self.outbound,
        }
    }

    /// The number of per-rule counters this ACL uses.
    pub fn counters(&self) -> u32 {
        (self.inbound.len() + self.outbound.len() + 2) as u32
    }

    /// R-NACL-ORDER: the lowest-numbered matching rule decides; none matches: `*` denies.
    #[inline]
    pub fn evaluate(&self, dir: Direction, pkt: &Packet) -> NaclDecision {
        let rules = self.rules(dir);
        let base = self.counter_base
            + match dir {
                Direction::Ingress => 0,
                Direction::Egress => self.inbound.len() as u32 + 1,
            };
        let addr = remote(pkt, dir);
        for (i, r) in rules.iter().enumerate() {
            if net_contains(&r.cidr, addr) && r.proto.matches(pkt) {
                return NaclDecision {
                    allow: r.allow,
                    rule: Some(r.number),
                    counter: base + i as u32,
                };
            }
        }
        NaclDecision {
            allow: false,
            rule: None,
            counter: base + rules.len() as u32,
        }
    }

    /// The name of a per-rule counter of this ACL, for reports: `acl-x inbound rule 90`.
    pub fn counter_name(&self, counter: u32) -> Option<String> {
        let mut k = counter.checked_sub(self.counter_base)? as usize;
        for (dir, rules) in [("inbound", &self.inbound), ("outbound", &self.outbound)] {
            if k < rules.len() {
                return Some(format!("{} {dir} rule {}", self.id, rules[k].number));
            }
            if k == rules.len() {
                return Some(format!("{} {dir} rule *", self.id));
            }
            k -= rules.len() + 1;
        }
        None
    }
}

/// The default NACL of every VPC (R-NACL-DEFAULT): rule 100 allows all IPv4, rule 101 all
/// IPv6, both ways.
pub fn default_nacl_rules() -> Vec<NaclRule> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let v4 = IpNetwork::new(Ipv4Addr::UNSPECIFIED, 0).expect("0.0.0.0/0");
    let v6 = IpNetwork::new(Ipv6Addr::UNSPECIFIED, 0).expect("::/0");
    vec![
        NaclRule {
            number: 100,
            allow: true,
            proto: ProtoMatch::All,
            cidr: v4,
        },
        NaclRule {
            number: 101,
            allow: true,
            proto: ProtoMatch::All,
            cidr: v6,
        },
    ]
}

/// Identifies a NACL rule decision for trace output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NaclRef {
    pub acl: NaclIx,
    pub decision: NaclDecision,
}
