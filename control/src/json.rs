//! The JSON forms of vpcd's reports (`--json`): `check`, `status`, `stats`, `routes` and
//! `fault list`, as serde types, so that each shape is written down once, here, and
//! docs/commands.md describes these same fields.

use schemars::JsonSchema;
use serde::Serialize;

use dataplane::{DropReason, Snapshot, Stats};

use crate::diag::Diagnostic;

/// One error or warning of `check`.
#[derive(Serialize, JsonSchema)]
pub struct Problem {
    /// The lab file, as given.
    pub file: String,
    /// 1-based line and column of the value at fault.
    pub line: usize,
    pub col: usize,
    /// The object path (`vpcs[0].subnets[1].cidr_block`).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
    /// `error` or `warning`.
    pub level: &'static str,
    /// For a line that sums up errors not shown: how many it stands for.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hidden: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `vpcd check --json`.
#[derive(Serialize, JsonSchema)]
pub struct Check {
    /// The lab file, as given.
    pub file: String,
    /// No errors (warnings may remain).
    pub ok: bool,
    /// The errors, counting those summed up.
    pub error_count: usize,
    /// Errors and warnings, in the order of the file.
    pub problems: Vec<Problem>,
    /// What a valid lab holds (absent when it has errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
}

/// The size of a valid lab, as `check` prints it.
#[derive(Serialize, JsonSchema)]
pub struct Counts {
    pub vpcs: usize,
    pub subnets: usize,
    pub route_tables: usize,
    pub instances: usize,
    pub outside_hosts: usize,
}

impl Counts {
    pub fn new(lab: &crate::Lab, snap: &Snapshot) -> Counts {
        let t = &snap.topo;
        Counts {
            vpcs: lab.vpcs.len(),
            subnets: t.subnets.len(),
            route_tables: t.route_tables.len(),
            instances: t.enis.iter().filter(|e| e.port.is_some()).count(),
            outside_hosts: t.hosts.len(),
        }
    }
}

impl Check {
    /// The report of a lab with errors (`diags` holds them), or of a valid one (`diags`
    /// holds its warnings, `counts` its size).
    pub fn new(file: &str, diags: &[Diagnostic], counts: Option<Counts>) -> Check {
        Check {
            file: file.to_string(),
            ok: counts.is_some(),
            counts,
            error_count: crate::diag::count(diags),
            problems: diags
                .iter()
                .map(|d| Problem {
                    file: file.to_string(),
                    line: d.at.line,
                    col: d.at.col,
                    path: d.at.path.to_string(),
                    message: d.message.clone(),
                    fix: d.fix.clone(),
                    level: if d.warning { "warning" } else { "error" },
                    hidden: d.hidden,
                })
                .collect(),
        }
    }
}

/// One port's counters.
#[derive(Serialize, JsonSchema)]
pub struct Port {
    /// The instance or outside host (its namespace is PREFIX + name).
    pub name: String,
    /// Packets and bytes read from its eth0 (sent by it).
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Packets and bytes written to its eth0 (delivered to it).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Writes that failed (also in `tx_packets`).
    pub tx_errors: u64,
}

/// `vpcd stats --json`. Each packet that came in is counted once, under what became of
/// it: `received = forwarded + to_the_router + dropped`. `answered` counts packets vpcd
/// wrote itself (an ICMP error or a reset in place of a dropped packet, which stays counted
/// in `dropped` under its reason; an answer of DNS, metadata, or the router's ping), and
/// `mirrored` the traffic-mirror copies it sent to instances, so `sent = forwarded +
/// answered + mirrored` (docs/commands.md, "The counters add up").
#[derive(Serialize, JsonSchema)]
pub struct StatsReport {
    /// Packets read from every port (the sum of the ports' `rx_packets`, with those of
    /// instances an apply has removed).
    pub received: u64,
    /// Packets written to every port (the sum of the ports' `tx_packets`, failed writes
    /// included: they are also in `tx_errors`).
    pub sent: u64,
    /// Packets forwarded (NAT and NAT64 included).
    pub forwarded: u64,
    /// Packets handed to the router's own services (DNS, metadata, ping of the router).
    pub to_the_router: u64,
    /// Packets vpcd wrote itself: ICMP errors and resets in place of dropped packets
    /// (those stay counted in `dropped`), and the answers of the router's services.
    pub answered: u64,
    /// Traffic-mirror copies: sent in VXLAN to instance targets (`mirrored`, also in
    /// their ports' `tx_packets`), not sent because the target does not admit VXLAN from
    /// the source (`refused`), handed to the capture writer (`captured`) or lost on the way
    /// to it (`lost`).
    pub traffic_mirror: MirrorCounts,
    /// Packets dropped, whatever the reason.
    pub dropped: u64,
    /// Drops by reason (only reasons with a count).
    pub dropped_by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// Security-group drops per ENI (only ENIs with a drop).
    pub dropped_by_security_groups: Vec<SgDrops>,
    /// Network-ACL drops per rule (`acl-web inbound rule 90`: count).
    pub dropped_by_network_acls: std::collections::BTreeMap<String, u64>,
    /// Reads from a TUN device that failed.
    pub rx_errors: u64,
    /// Flow-log records lost: by the workers (their aggregate map was full, or the
    /// writer's queue), and lines the writer could not write to their file.
    pub flow_log_records_lost: u64,
    pub flow_log_lines_unwritten: u64,
    /// What the router's services refused or timed out.
    pub router_services: std::collections::BTreeMap<&'static str, u64>,
    pub ports: Vec<Port>,
    /// The configuration generation.
    pub generation: u64,
    /// The flow table's occupancy.
    pub flow_table: Option<FlowTable>,
}

/// `stats --json`'s traffic-mirror counters.
#[derive(Serialize, JsonSchema)]
pub struct MirrorCounts {
    pub mirrored: u64,
    pub refused: u64,
    pub captured: u64,
    pub lost: u64,
}

/// One ENI's security-group drops.
#[derive(Serialize, JsonSchema)]
pub struct SgDrops {
    /// The instance (or NAT gateway, endpoint) whose security groups dropped.
    pub eni: String,
    pub inbound: u64,
    pub outbound: u64,
}

impl StatsReport {
    pub fn new(stats: &Stats, snap: &Snapshot) -> StatsReport {
        StatsReport {
            // Every port's, also those of instances an apply removed since.
            received: stats.ports.iter().map(|c| c.rx_packets).sum(),
            sent: stats.ports.iter().map(|c| c.tx_packets).sum(),
            forwarded: stats.forwarded,
            to_the_router: stats.local,
            answered: stats.replies,
            traffic_mirror: MirrorCounts {
                mirrored: stats.mirrored,
                refused: stats.mirror_refused,
                captured: stats.mirror_captured,
                lost: stats.mirror_lost,
            },
            dropped: stats.dropped_total(),
            dropped_by_reason: DropReason::ALL
                .iter()
                .filter(|r| stats.dropped(**r) > 0)
                .map(|r| (r.as_str(), stats.dropped(*r)))
                .collect(),
            dropped_by_security_groups: stats
                .sg_drops
                .iter()
                .zip(&snap.topo.enis)
                .filter(|(c, _)| c[0] + c[1] > 0)
                .map(|(c, eni)| SgDrops {
                    eni: eni.id.to_string(),
                    inbound: c[0],
                    outbound: c[1],
                })
                .collect(),
            dropped_by_network_acls: stats
                .nacl_drops
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .filter_map(|(i, n)| {
                    snap.topo
                        .network_acls
                        .iter()
                        .find_map(|a| a.counter_name(i as u32))
                        .map(|name| (name, *n))
                })
                .collect(),
            rx_errors: stats.rx_errors,
            flow_log_records_lost: stats.flow_log_lost,
            flow_log_lines_unwritten: 0,
            router_services: stats.services.named().into_iter().collect(),
            ports: snap
                .topo
                .ports
                .iter()
                .enumerate()
                .filter(|(_, p)| !p.name.is_empty())
                .map(|(i, p)| {
                    let c = stats.ports.get(i).copied().unwrap_or_default();
                    Port {
                        name: p.name.to_string(),
                        rx_packets: c.rx_packets,
                        rx_bytes: c.rx_bytes,
                        tx_packets: c.tx_packets,
                        tx_bytes: c.tx_bytes,
                        tx_errors: c.tx_errors,
                    }
                })
                .collect(),
            generation: snap.generation,
            flow_table: None,
        }
    }
}

/// One route of `vpcd routes --json`.
#[derive(Serialize, JsonSchema)]
pub struct Route {
    /// A CIDR or a prefix-list id.
    pub destination: String,
    /// As the lab file writes it (`igw-lab`, `nat-a`, `local`, `blackhole`).
    pub target: String,
    /// `local`, `static`, `prefix list` or `propagated`.
    pub origin: &'static str,
    /// `active` or `blackhole`.
    pub state: &'static str,
}

/// One route table of `vpcd routes --json`.
#[derive(Serialize, JsonSchema)]
pub struct RouteTable {
    pub id: String,
    pub vpc: String,
    /// The subnets associated with it (the main table: those with no table of their own).
    pub subnets: Vec<String>,
    /// In the order the console lists them.
    pub routes: Vec<Route>,
}

/// `vpcd routes --json`: every table, or the one named.
pub fn routes(snap: &Snapshot, only: Option<&str>) -> Result<Vec<RouteTable>, String> {
    let t = &snap.topo;
    let tables: Vec<RouteTable> = t
        .route_tables
        .iter()
        .enumerate()
        .filter(|(_, r)| only.is_none_or(|id| &*r.id == id))
        .map(|(i, table)| RouteTable {
            id: table.id.to_string(),
            vpc: snap.vpc(table.vpc).id.to_string(),
            subnets: t
                .subnets
                .iter()
                .filter(|s| s.route_table.ix() == i)
                .map(|s| s.id.to_string())
                .collect(),
            routes: crate::routes::rows(snap, table)
                .into_iter()
                .map(|r| Route {
                    destination: r.destination,
                    target: r.target,
                    origin: r.origin,
                    state: r.state,
                })
                .collect(),
        })
        .collect();
    if tables.is_empty() {
        return Err(format!(
            "no route table `{}`",
            crate::yaml::shown(only.unwrap_or(""))
        ));
    }
    Ok(tables)
}

/// One active fault of `vpcd fault list --json`.
#[derive(Serialize, JsonSchema)]
pub struct Fault {
    /// `f-1`, `f-2`, ...: what `vpcd fault stop` takes.
    pub id: String,
    /// The FIS action name.
    pub action: &'static str,
    /// The instance, subnet, NAT gateway or zone it acts on.
    pub target: String,
    /// For `aws:network:disrupt-connectivity`: `all`, `availability-zone`, or a prefix
    /// list.
    pub scope: Option<String>,
    /// Unix seconds.
    pub started: u64,
    /// Seconds until it ends by itself, if it has a duration.
    pub ends_in: Option<u64>,
}

pub fn faults(faults: &[crate::faults::Fault]) -> Vec<Fault> {
    faults
        .iter()
        .map(|f| Fault {
            id: f.name(),
            action: f.action.name(),
            target: f.target.clone(),
            scope: f.scope.as_ref().map(|s| match s {
                crate::faults::Scope::All => "all".to_string(),
                crate::faults::Scope::AvailabilityZone => "availability-zone".to_string(),
                crate::faults::Scope::Service(s) => s.clone(),
            }),
            started: f
                .started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            ends_in: f.until.map(|u| {
                u.saturating_duration_since(std::time::Instant::now())
                    .as_secs()
            }),
        })
        .collect()
}

/// One namespace of `vpcd status --json`.
#[derive(Serialize, JsonSchema)]
pub struct Namespace {
    /// The instance or outside host.
    pub id: String,
    /// Its network namespace (`ip netns exec NAME ...`).
    pub namespace: String,
    /// Its eth0 addresses, with prefix length.
    pub addresses: Vec<String>,
    /// Stopped by a fault (its eth0 is down).
    pub stopped: bool,
}

/// `vpcd status --json`.
#[derive(Serialize, JsonSchema)]
pub struct Status {
    /// The lab file (or `(built-in default)`).
    pub lab: String,
    pub region: String,
    /// The router's process id.
    pub pid: u32,
    pub uptime_seconds: u64,
    /// The configuration generation: 1 at start, one more per apply or fault change.
    pub generation: u64,
    /// Seconds since the last apply, if any.
    pub last_apply_seconds_ago: Option<u64>,
    /// Worker threads.
    pub workers: usize,
    pub flow_table: FlowTable,
    pub namespaces: Vec<Namespace>,
    /// The active faults.
    pub faults: Vec<Fault>,
    /// Each VPN tunnel (R-VPN-STATUS).
    pub vpn_tunnels: Vec<VpnTunnel>,
}

/// One VPN tunnel of `vpcd status --json`.
#[derive(Serialize, JsonSchema)]
pub struct VpnTunnel {
    /// `vpn-hq:1`.
    pub tunnel: String,
    /// `UP` or `DOWN`.
    pub status: String,
    /// Why it is down, if it is.
    pub reason: Option<String>,
    /// The AWS end's address on the internet, and the customer gateway's.
    pub outside_ip: String,
    pub customer_gateway_ip: String,
    /// The inside addresses: AWS side, customer side.
    pub inside_aws: String,
    pub inside_customer: String,
    /// `bgp` or `static`.
    pub routing: String,
    /// The BGP session's state (`Established`, `Idle`, ...), for BGP VPNs.
    pub bgp_state: Option<String>,
    /// Routes accepted from the customer gateway (BGP), or the static routes.
    pub accepted_routes: usize,
    /// Prefixes refused over AWS's limit of 100.
    pub refused_routes: u64,
}

/// The flow table's occupancy.
#[derive(Serialize, JsonSchema)]
pub struct FlowTable {
    /// Slots (`vpcd up --conntrack-max`).
    pub capacity: usize,
    /// Slots in use: a NAT translation takes two.
    pub used: usize,
    /// Security-group flows tracked (R-SG-STATEFUL).
    pub tracked_sg_flows: usize,
    pub nat_translations: usize,
    /// Flows out through an egress-only IGW, whose replies it admits.
    pub eigw_flows: usize,
}

/// Serializes a report (the types above cannot fail to).
pub fn to_string<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Serializes a report on one line (`trace --json`, one answer per line).
pub fn to_line<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// One direction of `vpcd trace --json`.
#[derive(Serialize, JsonSchema)]
pub struct Leg {
    /// The hops, as the text form numbers them.
    pub steps: Vec<String>,
    /// The instance or host it reached, if it did.
    pub delivered_to: Option<String>,
    /// Why it was dropped (a drop reason of docs/drop-reasons.md), if it was.
    pub reason: Option<&'static str>,
    /// What to change, for a drop.
    pub fix: Option<String>,
}

impl Leg {
    fn new(l: &crate::trace::Leg) -> Leg {
        Leg {
            steps: l.lines.clone(),
            delivered_to: l.delivered_to.clone(),
            reason: l.reason.map(|r| r.as_str()),
            fix: l.fix.clone(),
        }
    }
}

/// `vpcd trace --json`.
#[derive(Serialize, JsonSchema)]
pub struct Trace {
    /// Delivered both ways.
    pub reachable: bool,
    pub forward: Leg,
    /// The reply's way back; absent when the packet was not delivered.
    pub reply: Option<Leg>,
    /// With `--live`: what the running router's connection tracking holds for this flow,
    /// and the active faults.
    pub live: Vec<String>,
}

impl Trace {
    pub fn new(t: &crate::trace::Trace) -> Trace {
        Trace {
            reachable: t.reachable(),
            forward: Leg::new(&t.forward),
            reply: t.reply.as_ref().map(Leg::new),
            live: t.live.clone(),
        }
    }
}

/// The JSON Schema of each report, by the name of its file in docs/schemas/.
pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("check", schemars::schema_for!(Check)),
        ("status", schemars::schema_for!(Status)),
        ("stats", schemars::schema_for!(StatsReport)),
        ("routes", schemars::schema_for!(Vec<RouteTable>)),
        ("faults", schemars::schema_for!(Vec<Fault>)),
        ("trace", schemars::schema_for!(Trace)),
    ]
}
