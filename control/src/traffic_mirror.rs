//! Traffic mirroring in the lab file (R-TM): `traffic_mirror_filters`,
//! `traffic_mirror_targets` and `traffic_mirror_sessions`, as the EC2 API names them
//! (CreateTrafficMirrorFilter, -Target, -Session), decoded, checked against AWS's rules
//! and quotas, and compiled into the dataplane's [`Mirroring`].
//!
//! A target is an instance (its ENI receives the copies in VXLAN, as on AWS) or, vpcd's
//! own, a `pcap_file`: a pcapng capture that also records the packets vpcd dropped, with
//! the reason.

use std::collections::{HashMap, HashSet};

use ip_network::IpNetwork;

use dataplane::traffic_mirror::{MirrorFilter, MirrorRule, MirrorSession, MirrorTarget, Mirroring};

use crate::diag::{Diagnostics, S};
use crate::validate::{Kind, Registry};
use crate::values::{self as val, Protocol};
use crate::yaml::{Decoder, Map};

pub(crate) const FILTER_FIELDS: &[&str] = &[
    "id",
    "description",
    "inbound",
    "outbound",
    "network_services",
];
pub(crate) const RULE_FIELDS: &[&str] = &[
    "rule",
    "action",
    "protocol",
    "source_cidr_block",
    "destination_cidr_block",
    "source_port_range",
    "destination_port_range",
    "description",
];
pub(crate) const TARGET_FIELDS: &[&str] = &["id", "description", "network_interface", "pcap_file"];
pub(crate) const SESSION_FIELDS: &[&str] = &[
    "id",
    "description",
    "network_interface",
    "traffic_mirror_target",
    "traffic_mirror_filter",
    "session_number",
    "packet_length",
    "virtual_network_id",
];

/// AWS's quotas: sessions per source ENI, rules per filter (both directions together).
pub const MAX_SESSIONS_PER_ENI: usize = 3;
pub const MAX_RULES: usize = 10;
/// The largest `packet_length`: the VPC's MTU.
pub const MAX_PACKET_LENGTH: u64 = 9001;

#[derive(Clone, Debug)]
pub struct FilterRule {
    pub rule: S<u64>,
    pub accept: bool,
    pub protocol: Protocol,
    pub source: S<IpNetwork>,
    pub destination: S<IpNetwork>,
    pub source_ports: Option<S<(u16, u16)>>,
    pub destination_ports: Option<S<(u16, u16)>>,
}

#[derive(Clone, Debug)]
pub struct Filter {
    pub id: S<String>,
    pub inbound: Vec<FilterRule>,
    pub outbound: Vec<FilterRule>,
}

#[derive(Clone, Debug)]
pub enum TargetKind {
    /// An instance's ENI.
    Instance(S<String>),
    /// A pcapng file, relative to the lab file.
    PcapFile(S<String>),
}

#[derive(Clone, Debug)]
pub struct Target {
    pub id: S<String>,
    pub kind: TargetKind,
}

#[derive(Clone, Debug)]
pub struct Session {
    pub id: S<String>,
    pub source: S<String>,
    pub target: S<String>,
    pub filter: S<String>,
    pub number: S<u64>,
    pub packet_length: Option<S<u64>>,
    pub vni: Option<S<u64>>,
}

/// The lab's traffic mirroring, as written.
#[derive(Clone, Debug, Default)]
pub struct TrafficMirror {
    pub filters: Vec<Filter>,
    pub targets: Vec<Target>,
    pub sessions: Vec<Session>,
}

/// Decodes the three top-level lists. Returns them and the ids of objects that could not
/// be decoded whole (references to those are not errors of their own).
pub fn decode(d: &mut Decoder<'_>, top: &Map<'_>) -> (TrafficMirror, Vec<String>) {
    let mut tm = TrafficMirror::default();
    let mut broken = Vec::new();
    let mut note = |node: &marked_yaml::Node| {
        if let Some(id) = node.as_mapping().and_then(|m| m.get_scalar("id")) {
            broken.push(id.as_str().trim().to_string());
        }
    };
    for (path, node) in d.list(top, "traffic_mirror_filters") {
        match filter(d, node, &path) {
            Some(f) => tm.filters.push(f),
            None => note(node),
        }
    }
    for (path, node) in d.list(top, "traffic_mirror_targets") {
        match target(d, node, &path) {
            Some(t) => tm.targets.push(t),
            None => note(node),
        }
    }
    for (path, node) in d.list(top, "traffic_mirror_sessions") {
        match session(d, node, &path) {
            Some(s) => tm.sessions.push(s),
            None => note(node),
        }
    }
    (tm, broken)
}

fn filter(d: &mut Decoder<'_>, node: &marked_yaml::Node, path: &str) -> Option<Filter> {
    let m = d.map(node, path, "a traffic mirror filter", FILTER_FIELDS)?;
    let id = d.req(&m, "id", "tmf-web", val::id);
    let _ = d.opt(&m, "description", val::description);
    for s in d.scalar_list(&m, "network_services", val::one_of(&["amazon-dns"])) {
        d.diags.error(
            &s.at,
            "vpcd does not mirror network services (amazon-dns) yet: the Amazon DNS resolver lives inside vpcd",
            "remove `network_services`, or mirror UDP and TCP port 53 to the resolver with rules",
        );
    }
    let mut rules = |key: &str| -> Vec<FilterRule> {
        let mut out = Vec::new();
        for (rpath, rnode) in d.list(&m, key) {
            let Some(r) = d.map(rnode, &rpath, "a traffic mirror filter rule", RULE_FIELDS) else {
                continue;
            };
            let rule = d.req(&r, "rule", "100", val::uint);
            let action = d.req(&r, "action", "accept", val::one_of(&["accept", "reject"]));
            let protocol = d
                .opt(&r, "protocol", val::protocol)
                .map_or(Protocol::All, |p| p.v);
            let source = d.req(&r, "source_cidr_block", "0.0.0.0/0", val::net);
            let destination = d.req(&r, "destination_cidr_block", "0.0.0.0/0", val::net);
            let source_ports = d.opt(&r, "source_port_range", val::port_range);
            let destination_ports = d.opt(&r, "destination_port_range", val::port_range);
            let _ = d.opt(&r, "description", val::description);
            for ports in [&source_ports, &destination_ports].into_iter().flatten() {
                if !protocol.has_ports() {
                    d.diags.error(
                        &ports.at,
                        "port ranges apply to TCP and UDP only",
                        "set `protocol: tcp` or `udp`, or remove the range",
                    );
                }
            }
            if let (Some(s), Some(t)) = (&source, &destination) {
                if s.v.is_ipv4() != t.v.is_ipv4() {
                    d.diags.error(
                        &t.at,
                        "the source and destination blocks are of different families",
                        "use two IPv4 blocks or two IPv6 blocks (one rule per family)",
                    );
                }
            }
            if let (Some(rule), Some(action), Some(source), Some(destination)) =
                (rule, action, source, destination)
            {
                out.push(FilterRule {
                    rule,
                    accept: action.v == "accept",
                    protocol,
                    source,
                    destination,
                    source_ports,
                    destination_ports,
                });
            }
        }
        out
    };
    let inbound = rules("inbound");
    let outbound = rules("outbound");
    Some(Filter {
        id: id?,
        inbound,
        outbound,
    })
}

fn target(d: &mut Decoder<'_>, node: &marked_yaml::Node, path: &str) -> Option<Target> {
    let m = d.map(node, path, "a traffic mirror target", TARGET_FIELDS)?;
    let id = d.req(&m, "id", "tmt-ids", val::id);
    let _ = d.opt(&m, "description", val::description);
    let eni = d.opt(&m, "network_interface", val::id);
    let file = d.opt(&m, "pcap_file", val::text);
    let kind = match (eni, file) {
        (Some(e), None) => TargetKind::Instance(e),
        (None, Some(f)) => TargetKind::PcapFile(f),
        (Some(_), Some(f)) => {
            d.diags.error(
                &f.at,
                "a target is an instance's network interface or a pcap file, not both",
                "make two targets",
            );
            return None;
        }
        (None, None) => {
            d.diags.error(
                &m.at,
                "a target needs `network_interface` (an instance id) or `pcap_file`",
                "add `network_interface: ids-1` or `pcap_file: captures/web.pcapng`",
            );
            return None;
        }
    };
    Some(Target { id: id?, kind })
}

fn session(d: &mut Decoder<'_>, node: &marked_yaml::Node, path: &str) -> Option<Session> {
    let m = d.map(node, path, "a traffic mirror session", SESSION_FIELDS)?;
    let id = d.req(&m, "id", "tms-web", val::id);
    let _ = d.opt(&m, "description", val::description);
    let source = d.req(&m, "network_interface", "web-1", val::id);
    let target = d.req(&m, "traffic_mirror_target", "tmt-ids", val::id);
    let filter = d.req(&m, "traffic_mirror_filter", "tmf-web", val::id);
    let number = d.req(&m, "session_number", "1", val::uint);
    let packet_length = d.opt(&m, "packet_length", val::uint);
    let vni = d.opt(&m, "virtual_network_id", val::uint);
    if let Some(n) = &number {
        if !(1..=32766).contains(&n.v) {
            d.diags.error(
                &n.at,
                format!("session number {} is out of range", n.v),
                "use a number from 1 to 32766",
            );
        }
    }
    if let Some(l) = &packet_length {
        if !(1..=MAX_PACKET_LENGTH).contains(&l.v) {
            d.diags.error(
                &l.at,
                format!("packet length {} is out of range", l.v),
                format!(
                    "use 1 to {MAX_PACKET_LENGTH} bytes, or leave it out to mirror whole packets"
                ),
            );
        }
    }
    if let Some(v) = &vni {
        if v.v > 0xff_ffff {
            d.diags.error(
                &v.at,
                format!("VXLAN network identifier {} is out of range", v.v),
                "use 0 to 16777215 (24 bits)",
            );
        }
    }
    Some(Session {
        id: id?,
        source: source?,
        target: target?,
        filter: filter?,
        number: number?,
        packet_length,
        vni,
    })
}

/// Defines the ids of filters, targets and sessions.
pub(crate) fn define(tm: &TrafficMirror, reg: &mut Registry, diags: &mut Diagnostics) {
    for f in &tm.filters {
        reg.define(diags, &f.id, Kind::TrafficMirrorFilter, None);
    }
    for t in &tm.targets {
        reg.define(diags, &t.id, Kind::TrafficMirrorTarget, None);
    }
    for s in &tm.sessions {
        reg.define(diags, &s.id, Kind::TrafficMirrorSession, None);
    }
}

/// AWS's rules for mirroring: rule numbers and quotas, references of the right kind,
/// source and target instances with IPv4 (not in IPv6-only subnets), in one VPC or in
/// VPCs joined by an active peering, never the same ENI, at most three sessions per
/// source with distinct numbers, one target per capture file.
pub(crate) fn check(lab: &crate::Lab, reg: &Registry, diags: &mut Diagnostics) {
    let tm = &lab.traffic_mirror;
    for f in &tm.filters {
        for (dir, rules) in [("inbound", &f.inbound), ("outbound", &f.outbound)] {
            let mut seen: HashMap<u64, usize> = HashMap::new();
            for (i, r) in rules.iter().enumerate() {
                if !(1..=32766).contains(&r.rule.v) {
                    diags.error(
                        &r.rule.at,
                        format!("rule number {} is out of range", r.rule.v),
                        "use a number from 1 to 32766",
                    );
                }
                if let Some(first) = seen.insert(r.rule.v, i) {
                    diags.error(
                        &r.rule.at,
                        format!(
                            "{dir} rule {} is already defined at line {}",
                            r.rule.v, rules[first].rule.at.line
                        ),
                        "give each rule its own number",
                    );
                }
            }
        }
        if let Some(r) = f.inbound.iter().chain(&f.outbound).nth(MAX_RULES) {
            diags.error(
                &r.rule.at,
                format!(
                    "a traffic mirror filter has at most {MAX_RULES} rules (inbound and outbound together), `{}` has {}",
                    f.id.v,
                    f.inbound.len() + f.outbound.len()
                ),
                "merge rules, or split the traffic over two filters and sessions",
            );
        }
    }
    // Instances by id: (VPC index, has IPv4).
    let mut instances: HashMap<&str, (usize, bool)> = HashMap::new();
    for (vi, vpc) in lab.vpcs.iter().enumerate() {
        for i in &vpc.instances {
            let v4 = vpc
                .subnets
                .iter()
                .find(|s| s.id.v == i.subnet.v)
                .is_some_and(|s| s.cidr_block.is_some());
            instances.insert(&i.id.v, (vi, v4));
        }
    }
    let instance = |diags: &mut Diagnostics, r: &S<String>| -> Option<usize> {
        reg.resolve(diags, r, &[Kind::Instance], None)?;
        let (vpc, v4) = *instances.get(r.v.as_str())?;
        if !v4 {
            diags.error(
                &r.at,
                format!(
                    "`{}` is in an IPv6-only subnet, where AWS offers no traffic mirroring",
                    r.v
                ),
                "mirror an instance of a dual-stack or IPv4 subnet",
            );
            return None;
        }
        Some(vpc)
    };
    let mut files: HashMap<String, &S<String>> = HashMap::new();
    let mut target_vpc: HashMap<&str, Option<usize>> = HashMap::new();
    for t in &tm.targets {
        match &t.kind {
            TargetKind::Instance(e) => {
                target_vpc.insert(&t.id.v, instance(diags, e));
            }
            TargetKind::PcapFile(f) => {
                if let Some(first) = files.insert(f.v.clone(), f) {
                    diags.error(
                        &f.at,
                        format!(
                            "the file `{}` is already the capture of the target at line {}",
                            crate::yaml::shown(&f.v),
                            first.at.line
                        ),
                        "give each pcap target its own file",
                    );
                }
                target_vpc.insert(&t.id.v, None);
            }
        }
    }
    let active_peering = |a: usize, b: usize| {
        lab.peering_connections.iter().any(|p| {
            p.status.v == "active" && {
                let ids = [&lab.vpcs[a].id.v, &lab.vpcs[b].id.v];
                ids.contains(&&p.requester_vpc.v) && ids.contains(&&p.accepter_vpc.v)
            }
        })
    };
    let mut per_source: HashMap<&str, Vec<&Session>> = HashMap::new();
    let mut numbers: HashSet<(&str, u64)> = HashSet::new();
    for s in &tm.sessions {
        let source_vpc = instance(diags, &s.source);
        reg.resolve(diags, &s.filter, &[Kind::TrafficMirrorFilter], None);
        if reg
            .resolve(diags, &s.target, &[Kind::TrafficMirrorTarget], None)
            .is_some()
        {
            let target = tm.targets.iter().find(|t| t.id.v == s.target.v);
            if let Some(TargetKind::Instance(e)) = target.map(|t| &t.kind) {
                if e.v == s.source.v {
                    diags.error(
                        &s.target.at,
                        format!("`{}` would mirror `{}` to itself", s.id.v, s.source.v),
                        "mirror to another instance, or to a pcap_file target",
                    );
                }
            }
            if let (Some(a), Some(Some(b))) =
                (source_vpc, target_vpc.get(s.target.v.as_str()).copied())
            {
                if a != b && !active_peering(a, b) {
                    diags.error(
                        &s.target.at,
                        format!(
                            "the target's instance is in VPC `{}`, the source in `{}`, and no active peering joins them",
                            lab.vpcs[b].id.v, lab.vpcs[a].id.v
                        ),
                        "put the target in the source's VPC, or peer the two VPCs",
                    );
                }
            }
        }
        if !numbers.insert((&s.source.v, s.number.v)) {
            diags.error(
                &s.number.at,
                format!(
                    "`{}` already has a session with number {}",
                    s.source.v, s.number.v
                ),
                "give each session of a source its own number (the lower one is evaluated first)",
            );
        }
        let list = per_source.entry(&s.source.v).or_default();
        list.push(s);
        if list.len() == MAX_SESSIONS_PER_ENI + 1 {
            diags.error(
                &s.source.at,
                format!(
                    "`{}` is the source of more than {MAX_SESSIONS_PER_ENI} traffic mirror sessions",
                    s.source.v
                ),
                "AWS allows 3 per network interface: merge filters",
            );
        }
    }
}

/// The dataplane's mirroring of a valid lab: `eni` finds an instance's ENI and port.
pub(crate) fn compile(
    tm: &TrafficMirror,
    eni: impl Fn(&str) -> Option<(dataplane::snapshot::EniIx, Option<dataplane::PortId>)>,
) -> Mirroring {
    let rule = |r: &FilterRule| MirrorRule {
        number: r.rule.v as u16,
        accept: r.accept,
        protocol: match r.protocol {
            Protocol::All => None,
            Protocol::Number(n) => Some(n),
        },
        source: r.source.v,
        destination: r.destination.v,
        source_ports: r.source_ports.as_ref().map_or((0, 65535), |p| p.v),
        destination_ports: r.destination_ports.as_ref().map_or((0, 65535), |p| p.v),
    };
    let sorted = |rules: &[FilterRule]| {
        let mut out: Vec<MirrorRule> = rules.iter().map(rule).collect();
        out.sort_by_key(|r| r.number);
        out
    };
    let filters: Vec<MirrorFilter> = tm
        .filters
        .iter()
        .map(|f| MirrorFilter {
            id: f.id.v.as_str().into(),
            inbound: sorted(&f.inbound),
            outbound: sorted(&f.outbound),
        })
        .collect();
    let mut files: Vec<Box<str>> = Vec::new();
    let mut sessions = Vec::new();
    for s in &tm.sessions {
        let Some(filter) = tm.filters.iter().position(|f| f.id.v == s.filter.v) else {
            continue;
        };
        let Some(t) = tm.targets.iter().find(|t| t.id.v == s.target.v) else {
            continue;
        };
        let Some((source, _)) = eni(&s.source.v) else {
            continue;
        };
        let target = match &t.kind {
            TargetKind::Instance(id) => match eni(&id.v) {
                Some((e, Some(port))) => MirrorTarget::Eni {
                    eni: e,
                    port,
                    admitted: Ok(()),
                },
                _ => continue,
            },
            TargetKind::PcapFile(f) => {
                let ix = match files.iter().position(|x| **x == *f.v) {
                    Some(i) => i,
                    None => {
                        files.push(f.v.as_str().into());
                        files.len() - 1
                    }
                };
                MirrorTarget::File(ix as u32)
            }
        };
        sessions.push(MirrorSession {
            id: s.id.v.as_str().into(),
            number: s.number.v as u16,
            source,
            filter: filter as u32,
            target,
            packet_length: s.packet_length.as_ref().map_or(0, |l| l.v as u16),
            vni: s
                .vni
                .as_ref()
                .map_or_else(|| default_vni(&s.id.v), |v| v.v as u32),
        });
    }
    let mut m = Mirroring::default();
    m.filters = filters;
    m.sessions = sessions;
    m.files = files;
    m
}

/// AWS picks a random VNI when none is given; vpcd derives one from the session id, so a
/// lab gives the same VNI every run.
fn default_vni(id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h & 0xff_ffff
}
