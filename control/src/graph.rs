//! `vpcd graph`: a picture of a lab, drawn from its compiled snapshot, so that the file's
//! picture and the running router's (`--live`, where faults are laid over the snapshot)
//! come from one place. VPCs hold their zones, zones their subnets, subnets their
//! instances, NAT gateways and endpoint ENIs; gateways, gateway endpoints and route tables
//! sit in their VPC; route tables point at their targets, one arrow per target labelled
//! with its destinations; the internet, the services and the on-premises network are
//! clusters of their hosts. What a fault stopped, failed or disrupted, and every
//! blackhole route, is drawn in red with the reason.
//!
//! One [`Graph`] is rendered two ways: Graphviz dot (and SVG, by running Graphviz's
//! `dot`, the reference renderer: no Rust crate lays out clustered graphs) and Mermaid
//! (which GitHub renders in markdown).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dataplane::route::Target;
use dataplane::snapshot::{EniKind, HostKind};
use dataplane::Snapshot;

/// What a node stands for; decides its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Instance,
    NatGateway,
    Gateway,
    Endpoint,
    RouteTable,
    Peering,
    Host,
    Internet,
    Capture,
}

/// One box of the picture.
#[derive(Clone, Debug)]
pub struct Node {
    pub id: String,
    pub lines: Vec<String>,
    pub shape: Shape,
    /// Why it is drawn red (a fault), if it is.
    pub down: Option<String>,
}

/// A group of nodes: a VPC, a zone, a subnet, the internet, a service.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub id: String,
    pub lines: Vec<String>,
    pub down: Option<String>,
    pub nodes: Vec<Node>,
    pub clusters: Vec<Cluster>,
}

/// An arrow. `to_cluster`: it points at a whole cluster (drawn to its border).
#[derive(Clone, Debug)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub to_cluster: Option<String>,
    pub label: String,
    /// Drawn red and dashed: a blackhole route, a peering that is not active.
    pub down: bool,
    /// Drawn without an arrow head (a peering, a link).
    pub undirected: bool,
    /// A traffic mirror session: dotted.
    pub mirror: bool,
}

/// The picture of one lab.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub title: String,
    pub clusters: Vec<Cluster>,
    /// Nodes outside every cluster (peering connections).
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

fn node(id: String, lines: Vec<String>, shape: Shape) -> Node {
    Node {
        id,
        lines,
        shape,
        down: None,
    }
}

fn fault(n: u32) -> String {
    format!("f-{n}")
}

impl Graph {
    /// The picture of a compiled lab (with its faults, if the router laid any over it).
    pub fn of(snap: &Snapshot) -> Graph {
        let t = &snap.topo;
        let mut g = Graph {
            title: format!("{} ({})", t.region, t.account_id),
            ..Graph::default()
        };
        // The node a route's target is drawn as, per VPC gateway.
        let igw = |v: usize| format!("igw{v}");
        let eigw = |v: usize| format!("eigw{v}");
        let vgw = |v: usize| format!("vgw{v}");
        let eni = |e: usize| format!("eni{e}");
        let service_cluster = |s: usize| format!("cluster_service{s}");
        for (v, vpc) in t.vpcs.iter().enumerate() {
            let mut lines = vec![vpc.id.to_string()];
            lines.extend(vpc.cidrs_v4.iter().map(ToString::to_string));
            lines.extend(vpc.cidr_v6.iter().map(ToString::to_string));
            let mut c = Cluster {
                id: format!("cluster_vpc{v}"),
                lines,
                ..Cluster::default()
            };
            for (id, name, what) in [
                (igw(v), &vpc.internet_gateway, "internet gateway"),
                (
                    eigw(v),
                    &vpc.egress_only_internet_gateway,
                    "egress-only IGW",
                ),
                (
                    vgw(v),
                    &vpc.virtual_private_gateway,
                    "virtual private gateway",
                ),
            ] {
                if let Some(name) = name {
                    c.nodes.push(node(
                        id,
                        vec![name.to_string(), what.into()],
                        Shape::Gateway,
                    ));
                }
            }
            for (i, e) in t.gateway_endpoints.iter().enumerate() {
                if e.vpc.ix() == v {
                    let service = snap.service(e.service);
                    c.nodes.push(node(
                        format!("gwe{i}"),
                        vec![
                            e.id.to_string(),
                            format!("gateway endpoint: {}", service.name),
                        ],
                        Shape::Endpoint,
                    ));
                    g.edges.push(Edge {
                        from: format!("gwe{i}"),
                        to: first_host(snap, e.service.ix()).unwrap_or_default(),
                        to_cluster: Some(service_cluster(e.service.ix())),
                        label: String::new(),
                        down: false,
                        undirected: false,
                        mirror: false,
                    });
                }
            }
            // Route tables, and an arrow per target.
            for (r, table) in t.route_tables.iter().enumerate() {
                if table.vpc.ix() != v {
                    continue;
                }
                let id = format!("rtb{r}");
                let mut lines = vec![format!("route table {}", table.id)];
                let mut targets: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
                let rows = crate::routes::rows(snap, table);
                for (row, route) in rows.iter().zip(unique_routes(table)) {
                    let blackhole = row.state == "blackhole";
                    lines.push(format!(
                        "{} → {}{}",
                        row.destination,
                        row.target,
                        if blackhole { " (blackhole)" } else { "" }
                    ));
                    let to = match route.target {
                        Target::Local | Target::Blackhole => continue,
                        Target::Eni(e) => eni(e.ix()),
                        Target::InternetGateway(v) => igw(v.ix()),
                        Target::EgressOnlyInternetGateway(v) => eigw(v.ix()),
                        Target::VirtualPrivateGateway(v) => vgw(v.ix()),
                        Target::NatGateway(n) => eni(snap.nat_gateway(n).eni.ix()),
                        Target::Peering(p) => format!("pcx{}", p.ix()),
                        Target::GatewayEndpoint(e) => format!("gwe{}", e.ix()),
                        Target::VpnTunnel(_) => continue,
                    };
                    let entry = targets.entry(to).or_default();
                    entry.0.push(row.destination.clone());
                    entry.1 |= blackhole;
                }
                c.nodes.push(node(id.clone(), lines, Shape::RouteTable));
                for (to, (destinations, down)) in targets {
                    g.edges.push(Edge {
                        from: id.clone(),
                        to,
                        to_cluster: None,
                        label: destinations.join(", "),
                        down,
                        undirected: false,
                        mirror: false,
                    });
                }
            }
            // Zones, subnets and what is in them.
            let mut zones: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (s, subnet) in t.subnets.iter().enumerate() {
                if subnet.vpc.ix() == v {
                    zones.entry(&subnet.availability_zone).or_default().push(s);
                }
            }
            for (z, (zone, subnets)) in zones.into_iter().enumerate() {
                let mut zc = Cluster {
                    id: format!("cluster_vpc{v}_zone{z}"),
                    lines: vec![format!(
                        "{zone} ({})",
                        dataplane::region::zone_id(&t.region, zone)
                    )],
                    ..Cluster::default()
                };
                for s in subnets {
                    zc.clusters.push(subnet_cluster(snap, s));
                }
                c.clusters.push(zc);
            }
            g.clusters.push(c);
        }
        // Interface endpoints reach their service.
        for e in &t.interface_endpoints {
            for (k, ix) in e.enis.iter().enumerate() {
                g.edges.push(Edge {
                    from: eni(ix.ix()),
                    to: first_host(snap, e.service.ix()).unwrap_or_default(),
                    to_cluster: Some(service_cluster(e.service.ix())),
                    label: if k == 0 {
                        format!("{} (interface endpoint)", e.id)
                    } else {
                        String::new()
                    },
                    down: false,
                    undirected: false,
                    mirror: false,
                });
            }
        }
        // Peering connections, between the VPCs' clusters.
        for (p, pcx) in t.peerings.iter().enumerate() {
            let id = format!("pcx{p}");
            let mut n = node(
                id.clone(),
                vec![pcx.id.to_string(), "peering connection".into()],
                Shape::Peering,
            );
            if !pcx.active {
                n.down = Some("not active".into());
            }
            g.nodes.push(n);
            for (vpc, role) in [(pcx.requester, "requester"), (pcx.accepter, "accepter")] {
                if let Some(anchor) = g.anchor(vpc.ix()) {
                    g.edges.push(Edge {
                        from: id.clone(),
                        to: anchor,
                        to_cluster: Some(format!("cluster_vpc{}", vpc.ix())),
                        label: role.into(),
                        down: !pcx.active,
                        undirected: true,
                        mirror: false,
                    });
                }
            }
        }
        g.outside(snap);
        g.mirrors(snap);
        g
    }

    /// Traffic mirror sessions: a dotted arrow from the source to its target (an
    /// instance, or a capture file drawn as a node of its own).
    fn mirrors(&mut self, snap: &Snapshot) {
        let m = &snap.topo.traffic_mirror;
        for (f, name) in m.files.iter().enumerate() {
            self.nodes.push(node(
                format!("capture{f}"),
                vec![name.to_string(), "pcapng capture".into()],
                Shape::Capture,
            ));
        }
        for s in &m.sessions {
            let to = match &s.target {
                dataplane::traffic_mirror::MirrorTarget::Eni { eni, .. } => {
                    format!("eni{}", eni.ix())
                }
                dataplane::traffic_mirror::MirrorTarget::File(f) => format!("capture{f}"),
            };
            let refused = matches!(
                &s.target,
                dataplane::traffic_mirror::MirrorTarget::Eni {
                    admitted: Err(_),
                    ..
                }
            );
            self.edges.push(Edge {
                from: format!("eni{}", s.source.ix()),
                to,
                to_cluster: None,
                label: match (&s.target, refused) {
                    (dataplane::traffic_mirror::MirrorTarget::File(_), _) => {
                        format!("mirror {}", s.id)
                    }
                    (_, false) => format!("mirror {} (VNI {})", s.id, s.vni),
                    (_, true) => format!(
                        "mirror {} (VNI {}): the target's groups refuse UDP 4789",
                        s.id, s.vni
                    ),
                },
                down: refused,
                undirected: false,
                mirror: true,
            });
        }
    }

    /// A node inside VPC `v`'s cluster, for arrows that point at the whole VPC.
    fn anchor(&self, v: usize) -> Option<String> {
        let c = self
            .clusters
            .iter()
            .find(|c| c.id == format!("cluster_vpc{v}"))?;
        c.nodes.first().map(|n| n.id.clone())
    }

    /// The internet, the services and the on-premises network, with their hosts, and the
    /// gateways that lead there.
    fn outside(&mut self, snap: &Snapshot) {
        let t = &snap.topo;
        let host = |h: usize| {
            let host = &t.hosts[h];
            let mut lines = vec![host.id.to_string()];
            lines.extend(host.ipv4.iter().map(ToString::to_string));
            lines.extend(host.ipv6.iter().map(ToString::to_string));
            node(format!("host{h}"), lines, Shape::Host)
        };
        let mut internet = Cluster {
            id: "cluster_internet".into(),
            lines: vec!["internet".into()],
            nodes: vec![node(
                "internet".into(),
                vec!["internet".into()],
                Shape::Internet,
            )],
            ..Cluster::default()
        };
        let mut on_premises = Cluster {
            id: "cluster_on_premises".into(),
            lines: vec!["on premises".into()],
            ..Cluster::default()
        };
        let mut services: Vec<Cluster> = t
            .services
            .iter()
            .enumerate()
            .map(|(s, service)| {
                let mut lines = vec![format!("{} ({})", service.name, service.prefix_list)];
                lines.extend(service.cidrs.iter().map(ToString::to_string));
                Cluster {
                    id: format!("cluster_service{s}"),
                    lines,
                    ..Cluster::default()
                }
            })
            .collect();
        for (h, kind) in t.hosts.iter().map(|h| h.kind).enumerate() {
            match kind {
                // A tunnel's AWS end sits on the internet at its outside address.
                HostKind::Internet | HostKind::VpnEndpoint(_) => {
                    internet.nodes.push(host(h));
                    self.edges.push(Edge {
                        from: "internet".into(),
                        to: format!("host{h}"),
                        to_cluster: None,
                        label: String::new(),
                        down: false,
                        undirected: true,
                        mirror: false,
                    });
                }
                HostKind::Service(s) => services[s.ix()].nodes.push(host(h)),
                HostKind::OnPremises => on_premises.nodes.push(host(h)),
            }
        }
        for (v, vpc) in t.vpcs.iter().enumerate() {
            for (gateway, present) in [
                (format!("igw{v}"), vpc.internet_gateway.is_some()),
                (
                    format!("eigw{v}"),
                    vpc.egress_only_internet_gateway.is_some(),
                ),
            ] {
                if present {
                    self.edges.push(Edge {
                        from: gateway,
                        to: "internet".into(),
                        to_cluster: None,
                        label: String::new(),
                        down: false,
                        undirected: false,
                        mirror: false,
                    });
                }
            }
            if vpc.virtual_private_gateway.is_some() {
                if let Some(first) = on_premises.nodes.first() {
                    self.edges.push(Edge {
                        from: format!("vgw{v}"),
                        to: first.id.clone(),
                        to_cluster: Some(on_premises.id.clone()),
                        label: String::new(),
                        down: false,
                        undirected: false,
                        mirror: false,
                    });
                }
            }
        }
        // VPN tunnels and Direct Connect virtual interfaces: from the VGW to their AWS end
        // (a VPN tunnel's end is on the internet, at its outside address); red when a
        // fault took one down.
        for tun in &t.vpn_tunnels {
            self.edges.push(Edge {
                from: format!("vgw{}", tun.vpc.ix()),
                to: format!("host{}", tun.host.ix()),
                to_cluster: None,
                label: if tun.direct_connect {
                    format!("{} (Direct Connect, MTU {})", tun.vpn, tun.mtu)
                } else {
                    format!("{} tunnel {}", tun.vpn, tun.number)
                },
                down: tun.fault != 0,
                undirected: true,
                mirror: false,
            });
        }
        // Services are public: the internet reaches them too.
        for s in services.iter().filter(|s| !s.nodes.is_empty()) {
            self.edges.push(Edge {
                from: "internet".into(),
                to: s.nodes[0].id.clone(),
                to_cluster: Some(s.id.clone()),
                label: String::new(),
                down: false,
                undirected: true,
                mirror: false,
            });
        }
        // An arrow to an empty cluster has nowhere to land.
        let empty: Vec<String> = services
            .iter()
            .filter(|s| s.nodes.is_empty())
            .map(|s| s.id.clone())
            .collect();
        self.edges
            .retain(|e| e.to_cluster.as_ref().is_none_or(|c| !empty.contains(c)));
        services.retain(|s| !s.nodes.is_empty());
        let reaches_internet = internet.nodes.len() > 1
            || t.vpcs
                .iter()
                .any(|v| v.internet_gateway.is_some() || v.egress_only_internet_gateway.is_some());
        if reaches_internet {
            self.clusters.push(internet);
        } else {
            self.edges.retain(|e| e.from != "internet");
        }
        self.clusters.extend(services);
        if !on_premises.nodes.is_empty() {
            self.clusters.push(on_premises);
        }
    }

    /// Graphviz dot.
    pub fn dot(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "digraph vpcd {{");
        let _ = writeln!(
            s,
            "  graph [label={}, labelloc=t, rankdir=LR, compound=true, fontname=\"Helvetica\", fontsize=12];",
            quote(&self.title)
        );
        let _ = writeln!(
            s,
            "  node [fontname=\"Helvetica\", fontsize=10, shape=box, style=\"rounded\"];"
        );
        let _ = writeln!(s, "  edge [fontname=\"Helvetica\", fontsize=9];");
        for c in &self.clusters {
            dot_cluster(&mut s, c, 1);
        }
        for n in &self.nodes {
            dot_node(&mut s, n, 1);
        }
        for e in &self.edges {
            let mut attrs = Vec::new();
            if !e.label.is_empty() {
                attrs.push(format!("label={}", quote(&e.label)));
            }
            if let Some(c) = &e.to_cluster {
                attrs.push(format!("lhead={}", quote(c)));
            }
            if e.down {
                attrs.push("color=red, fontcolor=red, style=dashed".into());
            }
            if e.undirected {
                attrs.push("dir=none".into());
            }
            if e.mirror && !e.down {
                attrs.push("style=dotted, color=\"#1f6feb\", fontcolor=\"#1f6feb\"".into());
            }
            let _ = writeln!(
                s,
                "  {} -> {}{};",
                quote(&e.from),
                quote(&e.to),
                if attrs.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", attrs.join(", "))
                }
            );
        }
        s.push_str("}\n");
        s
    }

    /// Mermaid (a flowchart): subgraphs for the clusters, red for what is down.
    pub fn mermaid(&self) -> String {
        let mut s = String::from("flowchart LR\n");
        let mut down = Vec::new();
        for c in &self.clusters {
            mermaid_cluster(&mut s, c, 1, &mut down);
        }
        for n in &self.nodes {
            mermaid_node(&mut s, n, 1, &mut down);
        }
        for e in &self.edges {
            let to = e.to_cluster.as_ref().unwrap_or(&e.to);
            let arrow = match (e.undirected, e.down) {
                (false, false) if e.mirror => "-.->",
                (false, false) => "-->",
                (true, false) => "---",
                (false, true) => "-.->",
                (true, true) => "-.-",
            };
            if e.label.is_empty() {
                let _ = writeln!(s, "  {} {arrow} {}", e.from, to);
            } else {
                let _ = writeln!(s, "  {} {arrow}|{}| {}", e.from, mermaid_text(&e.label), to);
            }
        }
        if !down.is_empty() {
            let _ = writeln!(s, "  classDef down fill:#fdd,stroke:#c00,color:#900");
            let _ = writeln!(s, "  class {} down", down.join(","));
        }
        s
    }
}

/// A table's routes in the order and with the deduplication of [`crate::routes::rows`]
/// (a prefix-list route once), so that the two zip.
fn unique_routes(table: &dataplane::route::RouteTable) -> Vec<&dataplane::route::Route> {
    let mut out: Vec<&dataplane::route::Route> = Vec::new();
    for (_, r) in table.routes() {
        if !out
            .iter()
            .any(|o| o.destination == r.destination && o.target_name == r.target_name)
        {
            out.push(r);
        }
    }
    out
}

/// The first host of a service (arrows to the service's cluster land on it).
fn first_host(snap: &Snapshot, service: usize) -> Option<String> {
    snap.topo
        .hosts
        .iter()
        .position(|h| matches!(h.kind, HostKind::Service(s) if s.ix() == service))
        .map(|h| format!("host{h}"))
}

/// One subnet's cluster: its blocks, tables, and the ENIs in it.
fn subnet_cluster(snap: &Snapshot, s: usize) -> Cluster {
    let t = &snap.topo;
    let subnet = &t.subnets[s];
    let mut lines = vec![subnet.id.to_string()];
    lines.extend(subnet.cidr_v4.iter().map(ToString::to_string));
    lines.extend(subnet.cidr_v6.iter().map(ToString::to_string));
    lines.push(format!(
        "route table {}, network ACL {}",
        snap.route_table(subnet.route_table).id,
        snap.network_acl(subnet.network_acl).id
    ));
    let mut c = Cluster {
        id: format!("cluster_subnet{s}"),
        lines,
        down: subnet
            .disruption
            .map(|(_, n)| format!("connectivity disrupted by {}", fault(n))),
        ..Cluster::default()
    };
    for (e, eni) in t.enis.iter().enumerate() {
        if eni.subnet.ix() != s {
            continue;
        }
        let mut lines = vec![eni.id.to_string()];
        let (shape, down) = match eni.kind {
            EniKind::Instance => (
                Shape::Instance,
                (eni.stopped != 0).then(|| format!("stopped by {}", fault(eni.stopped))),
            ),
            EniKind::NatGateway(n) => {
                let nat = snap.nat_gateway(n);
                lines[0] = nat.id.to_string();
                lines.push("NAT gateway".into());
                (
                    Shape::NatGateway,
                    (nat.failed != 0).then(|| format!("failed by {}", fault(nat.failed))),
                )
            }
            EniKind::InterfaceEndpoint(i) => {
                let ife = snap.interface_endpoint(i);
                lines[0] = ife.id.to_string();
                lines.push(format!(
                    "interface endpoint: {}",
                    snap.service(ife.service).name
                ));
                (
                    Shape::Endpoint,
                    (eni.stopped != 0).then(|| format!("stopped by {}", fault(eni.stopped))),
                )
            }
        };
        lines.extend(eni.private_v4.iter().map(ToString::to_string));
        lines.extend(eni.ipv6.iter().map(ToString::to_string));
        if let Some(p) = eni.public_v4 {
            lines.push(format!("public {p}"));
        }
        c.nodes.push(Node {
            id: format!("eni{e}"),
            lines,
            shape,
            down,
        });
    }
    c
}

/// The lines of a label, with the reason it is down last.
fn label(lines: &[String], down: &Option<String>) -> Vec<String> {
    let mut l = lines.to_vec();
    if let Some(d) = down {
        l.push(format!("({d})"));
    }
    l
}

/// A dot string: quoted, with `\n` between lines.
fn quote(text: &str) -> String {
    let mut q = String::with_capacity(text.len() + 2);
    q.push('"');
    for c in text.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c if c.is_control() => {}
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn dot_cluster(s: &mut String, c: &Cluster, depth: usize) {
    let pad = "  ".repeat(depth);
    let _ = writeln!(s, "{pad}subgraph {} {{", quote(&c.id));
    let _ = writeln!(
        s,
        "{pad}  label={}; style=\"rounded\"; color={};",
        quote(&label(&c.lines, &c.down).join("\n")),
        if c.down.is_some() { "red" } else { "gray40" }
    );
    if c.down.is_some() {
        let _ = writeln!(s, "{pad}  fontcolor=red;");
    }
    for n in &c.nodes {
        dot_node(s, n, depth + 1);
    }
    for sub in &c.clusters {
        dot_cluster(s, sub, depth + 1);
    }
    let _ = writeln!(s, "{pad}}}");
}

fn dot_node(s: &mut String, n: &Node, depth: usize) {
    let pad = "  ".repeat(depth);
    let shape = match n.shape {
        Shape::Instance => "shape=box, style=\"rounded,filled\", fillcolor=\"#e8f0fe\"",
        Shape::NatGateway => "shape=octagon",
        Shape::Gateway => "shape=box, style=\"filled\", fillcolor=\"#fff4d6\"",
        Shape::Endpoint => "shape=component",
        Shape::RouteTable => "shape=note, fontsize=9",
        Shape::Peering => "shape=diamond",
        Shape::Host => "shape=box, style=\"rounded,dashed\"",
        Shape::Internet => "shape=ellipse, style=\"filled\", fillcolor=\"#eeeeee\"",
        Shape::Capture => "shape=cylinder",
    };
    // A route table lists its routes left-aligned (`\l` ends each line).
    let text = if n.shape == Shape::RouteTable {
        let mut q = quote(&label(&n.lines, &n.down).join("\n"));
        q = q.replace("\\n", "\\l");
        q.insert_str(q.len() - 1, "\\l");
        q
    } else {
        quote(&label(&n.lines, &n.down).join("\n"))
    };
    let red = if n.down.is_some() {
        ", color=red, fontcolor=red, penwidth=2"
    } else {
        ""
    };
    let _ = writeln!(s, "{pad}{} [label={text}, {shape}{red}];", quote(&n.id));
}

/// Mermaid label text: inside `"..."`, with `<br/>` between lines and quotes escaped.
fn mermaid_text(text: &str) -> String {
    let escaped: String = text
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .map(|c| match c {
            '"' => "#quot;".to_string(),
            '<' => "#lt;".to_string(),
            '>' => "#gt;".to_string(),
            '|' => "#124;".to_string(),
            '\n' => "<br/>".to_string(),
            c => c.to_string(),
        })
        .collect();
    format!("\"{escaped}\"")
}

fn mermaid_cluster(s: &mut String, c: &Cluster, depth: usize, down: &mut Vec<String>) {
    let pad = "  ".repeat(depth);
    let _ = writeln!(
        s,
        "{pad}subgraph {}[{}]",
        c.id,
        mermaid_text(&label(&c.lines, &c.down).join("\n"))
    );
    for n in &c.nodes {
        mermaid_node(s, n, depth + 1, down);
    }
    for sub in &c.clusters {
        mermaid_cluster(s, sub, depth + 1, down);
    }
    let _ = writeln!(s, "{pad}end");
    if c.down.is_some() {
        down.push(c.id.clone());
    }
}

fn mermaid_node(s: &mut String, n: &Node, depth: usize, down: &mut Vec<String>) {
    let pad = "  ".repeat(depth);
    let text = mermaid_text(&label(&n.lines, &n.down).join("\n"));
    let shaped = match n.shape {
        Shape::Instance | Shape::Host => format!("[{text}]"),
        Shape::NatGateway => format!("{{{{{text}}}}}"),
        Shape::Gateway => format!("([{text}])"),
        Shape::Endpoint => format!("[[{text}]]"),
        Shape::RouteTable => format!("[/{text}/]"),
        Shape::Peering => format!("{{{text}}}"),
        Shape::Internet => format!("(({text}))"),
        Shape::Capture => format!("[({text})]"),
    };
    let _ = writeln!(s, "{pad}{}{shaped}", n.id);
    if n.down.is_some() {
        down.push(n.id.clone());
    }
}

/// Renders dot as SVG with Graphviz's `dot` (installed by scripts/install-deps.sh).
pub fn svg(dot: &str) -> Result<Vec<u8>, String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run Graphviz's `dot` ({e}): install it (scripts/install-deps.sh does), or use --format dot or mermaid"
            )
        })?;
    // Written from a thread: dot may start writing before it has read everything.
    let mut stdin = child.stdin.take().ok_or("dot has no stdin")?;
    let input = dot.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().map_err(|e| format!("dot: {e}"))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!(
            "dot -Tsvg failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}
