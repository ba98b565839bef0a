//! `vpcd fault`: failures on command, named after the AWS Fault Injection Service actions
//! (faults.md). A fault is an overlay on the running lab: each snapshot the router
//! publishes (at start, at every apply, at every fault change) is the lab's own with the
//! active faults laid over it, so a fault reaches the workers through the same atomic swap
//! as an apply, and stopping it publishes the lab exactly as before (counters aside).
//!
//! | action                                  | target          | in the lab                        |
//! | `aws:ec2:stop-instances`                | instance id     | its ENI sends and receives nothing, its eth0 goes down |
//! | `aws:network:disrupt-connectivity`      | subnet id       | traffic across the subnet's boundary dropped, by scope |
//! | `aws:ec2:nat-gateway-failure` (vpcd)    | NAT gateway id  | its routes are blackholes         |
//! | `aws:az:power-interruption` (vpcd)      | zone name       | every instance, NAT gateway and endpoint ENI of the zone stops |
//! | `aws:vpn:tunnel-down` (vpcd)            | `VPN-ID:1` or `:2` | the tunnel goes down at the AWS end: its BGP session ends (Cease), it carries nothing |
//! | `aws:directconnect:virtual-interface-disconnect` | VIF id | its BGP session ends (Cease): routes withdrawn, a VPN takes over |
//!
//! The running router's side (start, stop, expiry, republishing) is in `fault_control`.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use dataplane::snapshot::{Attachment, Disruption, EniKind, ServiceIx};
use dataplane::Snapshot;

/// The actions, by their FIS names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    StopInstances,
    DisruptConnectivity,
    NatGatewayFailure,
    AzPowerInterruption,
    VpnTunnelDown,
    VirtualInterfaceDisconnect,
}

/// Every action name `vpcd fault start` knows, with what it takes.
pub const ACTIONS: &[(&str, &str)] = &[
    ("aws:ec2:stop-instances", "an instance id"),
    (
        "aws:network:disrupt-connectivity",
        "a subnet id, with --scope all|availability-zone|prefix-list|s3|dynamodb",
    ),
    ("aws:ec2:nat-gateway-failure", "a NAT gateway id"),
    ("aws:az:power-interruption", "an availability zone name"),
    ("aws:vpn:tunnel-down", "VPN-ID:1 or VPN-ID:2"),
    (
        "aws:directconnect:virtual-interface-disconnect",
        "a Direct Connect virtual interface id",
    ),
];

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::StopInstances => "aws:ec2:stop-instances",
            Action::DisruptConnectivity => "aws:network:disrupt-connectivity",
            Action::NatGatewayFailure => "aws:ec2:nat-gateway-failure",
            Action::AzPowerInterruption => "aws:az:power-interruption",
            Action::VpnTunnelDown => "aws:vpn:tunnel-down",
            Action::VirtualInterfaceDisconnect => "aws:directconnect:virtual-interface-disconnect",
        }
    }
}

/// The scope of `aws:network:disrupt-connectivity`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    AvailabilityZone,
    /// A prefix list (`prefix-list:pl-x`), or the service `s3` / `dynamodb`: its index.
    Service(String),
}

/// One active fault.
#[derive(Clone, Debug)]
pub struct Fault {
    pub id: u32,
    pub action: Action,
    pub target: String,
    pub scope: Option<Scope>,
    pub started: SystemTime,
    /// When it ends by itself (`--duration`).
    pub until: Option<Instant>,
}

impl Fault {
    /// `f-3`.
    pub fn name(&self) -> String {
        format!("f-{}", self.id)
    }

    /// One line for `fault list` and `status`.
    pub fn describe(&self) -> String {
        let scope = match &self.scope {
            Some(Scope::All) | None => String::new(),
            Some(Scope::AvailabilityZone) => " (scope availability-zone)".into(),
            Some(Scope::Service(s)) => format!(" (scope {s})"),
        };
        let started = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let left = self.until.map_or(String::new(), |u| {
            format!(
                ", ends in {}s",
                u.saturating_duration_since(Instant::now()).as_secs()
            )
        });
        format!(
            "{}  {} {}{scope}  started {started}{left}",
            self.name(),
            self.action.name(),
            self.target
        )
    }
}

/// A parsed `fault start` request, checked against the lab.
#[derive(Clone, Debug)]
pub struct Start {
    pub action: Action,
    pub target: String,
    pub scope: Option<Scope>,
    pub duration: Option<Duration>,
}

/// Reads a duration: `30s`, `5m`, `1h`, or seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 30s, 5m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{s}` is not a duration such as 30s, 5m or 1h")),
    };
    if secs == 0 {
        return Err("a fault's duration must be at least 1s".into());
    }
    Ok(Duration::from_secs(secs))
}

/// Checks a `fault start` against the running lab: the action exists, the target is of
/// the right kind and in the lab. `Err` says what is wrong (the request is refused).
pub fn check_start(
    snap: &Snapshot,
    action: &str,
    target: &str,
    scope: Option<&str>,
    duration: Option<&str>,
) -> Result<Start, String> {
    let t = &snap.topo;
    let shown = crate::yaml::shown;
    let duration = duration.map(parse_duration).transpose()?;
    let known = |names: Vec<String>| {
        if names.is_empty() {
            "the lab has none".to_string()
        } else {
            format!("the lab has: {}", names.join(", "))
        }
    };
    let action = match action {
        "aws:ec2:stop-instances" => Action::StopInstances,
        "aws:network:disrupt-connectivity" => Action::DisruptConnectivity,
        "aws:ec2:nat-gateway-failure" => Action::NatGatewayFailure,
        "aws:az:power-interruption" => Action::AzPowerInterruption,
        "aws:vpn:tunnel-down" => Action::VpnTunnelDown,
        "aws:directconnect:virtual-interface-disconnect" => Action::VirtualInterfaceDisconnect,
        other => {
            let names: Vec<&str> = ACTIONS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "`{}` is not a fault action; the actions are: {}",
                shown(other),
                names.join(", ")
            ));
        }
    };
    if scope.is_some() && action != Action::DisruptConnectivity {
        return Err(format!("{} takes no --scope", action.name()));
    }
    let mut scope_v = None;
    match action {
        Action::StopInstances => {
            let ok = t
                .enis
                .iter()
                .any(|e| &*e.id == target && e.kind == EniKind::Instance);
            if !ok {
                let names = t
                    .enis
                    .iter()
                    .filter(|e| e.kind == EniKind::Instance)
                    .map(|e| e.id.to_string())
                    .collect();
                return Err(format!(
                    "`{}` is not an instance; {}",
                    shown(target),
                    known(names)
                ));
            }
        }
        Action::DisruptConnectivity => {
            if !t.subnets.iter().any(|s| &*s.id == target) {
                let names = t.subnets.iter().map(|s| s.id.to_string()).collect();
                return Err(format!(
                    "`{}` is not a subnet; {}",
                    shown(target),
                    known(names)
                ));
            }
            scope_v = Some(match scope.unwrap_or("all") {
                "all" => Scope::All,
                "availability-zone" => Scope::AvailabilityZone,
                s @ ("s3" | "dynamodb") => {
                    service_of(snap, s).ok_or_else(|| {
                        format!("--scope {s}: the lab has no service named `{s}`")
                    })?;
                    Scope::Service(s.to_string())
                }
                s => match s.strip_prefix("prefix-list:") {
                    Some(pl) if service_of(snap, pl).is_some() => Scope::Service(pl.into()),
                    Some(pl) => {
                        return Err(format!(
                            "--scope prefix-list:{}: the lab has no such prefix list",
                            shown(pl)
                        ))
                    }
                    None => {
                        return Err(format!(
                            "--scope `{}`: use all, availability-zone, prefix-list:PL-ID, s3 or dynamodb",
                            shown(s)
                        ))
                    }
                },
            });
        }
        Action::NatGatewayFailure => {
            if !t.nat_gateways.iter().any(|n| &*n.id == target) {
                let names = t.nat_gateways.iter().map(|n| n.id.to_string()).collect();
                return Err(format!(
                    "`{}` is not a NAT gateway; {}",
                    shown(target),
                    known(names)
                ));
            }
        }
        Action::VirtualInterfaceDisconnect => {
            if !t
                .vpn_tunnels
                .iter()
                .any(|x| x.direct_connect && *x.vpn == *target)
            {
                let names = t
                    .vpn_tunnels
                    .iter()
                    .filter(|x| x.direct_connect)
                    .map(|x| x.vpn.to_string())
                    .collect();
                return Err(format!(
                    "`{}` is not a Direct Connect virtual interface; {}",
                    shown(target),
                    known(names)
                ));
            }
        }
        Action::VpnTunnelDown => {
            let ok = t
                .vpn_tunnels
                .iter()
                .any(|x| !x.direct_connect && format!("{}:{}", x.vpn, x.number) == target);
            if !ok {
                let names = t
                    .vpn_tunnels
                    .iter()
                    .filter(|x| !x.direct_connect)
                    .map(|x| format!("{}:{}", x.vpn, x.number))
                    .collect();
                return Err(format!(
                    "`{}` is not a VPN tunnel (VPN-ID:1 or VPN-ID:2); {}",
                    shown(target),
                    known(names)
                ));
            }
        }
        Action::AzPowerInterruption => {
            let mut zones: Vec<String> = t
                .subnets
                .iter()
                .map(|s| s.availability_zone.to_string())
                .collect();
            zones.sort();
            zones.dedup();
            if !zones.iter().any(|z| z == target) {
                return Err(format!(
                    "`{}` is not an availability zone of the lab; {}",
                    shown(target),
                    known(zones)
                ));
            }
        }
    }
    Ok(Start {
        action,
        target: target.to_string(),
        scope: scope_v,
        duration,
    })
}

/// The service a scope names: by service name (`s3`) or prefix-list id.
fn service_of(snap: &Snapshot, name: &str) -> Option<ServiceIx> {
    snap.topo
        .services
        .iter()
        .position(|s| &*s.name == name || &*s.prefix_list == name)
        .map(|i| ServiceIx(i as u32))
}

/// Lays `faults` over a snapshot not yet published: ENIs stopped, NAT gateways failed,
/// subnets disrupted. A fault whose target an apply removed does nothing.
pub fn overlay(snap: &mut Snapshot, faults: &[Fault]) {
    for f in faults {
        match f.action {
            Action::StopInstances => {
                for e in snap.topo.enis.iter_mut().filter(|e| *e.id == *f.target) {
                    e.stopped = f.id;
                }
            }
            Action::NatGatewayFailure => {
                for n in snap
                    .topo
                    .nat_gateways
                    .iter_mut()
                    .filter(|n| *n.id == *f.target)
                {
                    n.failed = f.id;
                }
            }
            Action::DisruptConnectivity => {
                let d = match &f.scope {
                    Some(Scope::AvailabilityZone) => Some(Disruption::AvailabilityZone),
                    Some(Scope::Service(s)) => service_of(snap, s).map(Disruption::Service),
                    _ => Some(Disruption::All),
                };
                if let Some(d) = d {
                    for s in snap.topo.subnets.iter_mut().filter(|s| *s.id == *f.target) {
                        s.disruption = Some((d, f.id));
                    }
                }
            }
            // Compiled in (the VGW's routes): see `Router::vpn_state`.
            Action::VpnTunnelDown | Action::VirtualInterfaceDisconnect => {}
            Action::AzPowerInterruption => {
                let in_zone: Vec<bool> = snap
                    .topo
                    .subnets
                    .iter()
                    .map(|s| *s.availability_zone == *f.target)
                    .collect();
                for e in snap.topo.enis.iter_mut() {
                    if in_zone[e.subnet.ix()] {
                        e.stopped = f.id;
                    }
                }
                for n in snap.topo.nat_gateways.iter_mut() {
                    if in_zone[n.subnet.ix()] {
                        n.failed = f.id;
                    }
                }
            }
        }
    }
}

/// The names of the instances whose namespaces a snapshot has stopped (their eth0 goes
/// down).
pub fn stopped_instances(snap: &Snapshot) -> Vec<String> {
    snap.topo
        .ports
        .iter()
        .filter_map(|p| match p.attachment {
            Attachment::Eni(e) if snap.eni(e).stopped != 0 => Some(p.name.to_string()),
            _ => None,
        })
        .collect()
}

/// The active faults, as `fault list` prints them.
pub fn list(faults: &[Fault]) -> String {
    if faults.is_empty() {
        return "no active faults\n".into();
    }
    let mut s = String::new();
    for f in faults {
        let _ = writeln!(s, "{}", f.describe());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_fis_writes_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
