//! `vpcd import terraform FILE` (issue 23, first slice): a lab file from the JSON of
//! `terraform show -json`, a plan or a state, for the AWS provider's core VPC resources:
//! aws_vpc, aws_subnet, aws_internet_gateway, aws_route_table (with inline routes),
//! aws_route, aws_route_table_association, aws_main_route_table_association, aws_eip,
//! aws_nat_gateway, aws_security_group (with inline rules), aws_instance,
//! aws_egress_only_internet_gateway, aws_network_acl (with inline rules) and
//! aws_network_acl_association.
//!
//! - AWS ids are kept as ids (a state's `id`); a plan's resources, whose ids are "known
//!   after apply", get one made from their address (`aws_vpc.main` → `vpc-main`), and
//!   references between them are followed through the plan's configuration
//!   (`expressions.vpc_id.references`). Every made-up value is flagged in a comment.
//! - Every object carries a comment naming its source (the resource address).
//! - What is not imported is listed with why (an unsupported type, another provider, a
//!   data source), never dropped silently.
//! - So that `vpcd up` gives a lab a person can ping, the lab gets an internet host.
//!
//! The JSON is read with serde: a file that is not JSON, or truncated, is refused naming
//! the file, line and column.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

/// Resource types this slice imports.
pub const SUPPORTED: &[&str] = &[
    "aws_vpc",
    "aws_subnet",
    "aws_internet_gateway",
    "aws_route_table",
    "aws_route",
    "aws_route_table_association",
    "aws_main_route_table_association",
    "aws_eip",
    "aws_nat_gateway",
    "aws_security_group",
    "aws_instance",
    "aws_egress_only_internet_gateway",
    "aws_network_acl",
    "aws_network_acl_association",
];

#[derive(Deserialize)]
struct Show {
    #[serde(default)]
    values: Option<Values>,
    #[serde(default)]
    planned_values: Option<Values>,
    #[serde(default)]
    configuration: Option<Configuration>,
}

#[derive(Deserialize)]
struct Values {
    root_module: Module,
}

#[derive(Deserialize, Default)]
struct Module {
    #[serde(default)]
    resources: Vec<Resource>,
    #[serde(default)]
    child_modules: Vec<Module>,
}

#[derive(Deserialize, Clone)]
struct Resource {
    address: String,
    #[serde(default)]
    mode: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    provider_name: String,
    #[serde(default)]
    values: Value,
}

#[derive(Deserialize)]
struct Configuration {
    root_module: ConfigModule,
}

#[derive(Deserialize, Default)]
struct ConfigModule {
    #[serde(default)]
    resources: Vec<ConfigResource>,
}

#[derive(Deserialize)]
struct ConfigResource {
    address: String,
    #[serde(default)]
    expressions: BTreeMap<String, Value>,
}

/// An import's result: the lab text, and what was left out.
#[derive(Debug)]
pub struct Imported {
    pub lab: String,
    pub skipped: Vec<String>,
}

fn flatten(m: &Module, out: &mut Vec<Resource>) {
    out.extend(m.resources.iter().cloned());
    for c in &m.child_modules {
        flatten(c, out);
    }
}

/// The id a plan's resource gets: its type's AWS prefix and its address's name.
fn made_up_id(r: &Resource) -> String {
    let prefix = match r.kind.as_str() {
        "aws_vpc" => "vpc",
        "aws_subnet" => "subnet",
        "aws_internet_gateway" => "igw",
        "aws_route_table" => "rtb",
        "aws_eip" => "eipalloc",
        "aws_nat_gateway" => "nat",
        "aws_security_group" => "sg",
        "aws_instance" => "i",
        "aws_egress_only_internet_gateway" => "eigw",
        "aws_network_acl" => "acl",
        _ => "x",
    };
    let name: String = r
        .address
        .rsplit('.')
        .next()
        .unwrap_or("x")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{prefix}-{name}")
}

struct Ctx<'a> {
    by_address: HashMap<&'a str, &'a Resource>,
    /// A resource's lab id, by address, and whether it was made up.
    ids: HashMap<&'a str, (String, bool)>,
    /// A resource's AWS id (state), by that id: its address.
    by_id: HashMap<String, &'a str>,
    refs: HashMap<(&'a str, &'a str), Vec<String>>,
    /// A plan's configuration expressions, by address: nested blocks (inline routes and
    /// rules) keep their references there.
    exprs: HashMap<&'a str, &'a BTreeMap<String, Value>>,
}

impl<'a> Ctx<'a> {
    fn s<'v>(r: &'v Resource, key: &str) -> Option<&'v str> {
        r.values
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// What attribute `key` of `r` refers to: the lab id of the resource it names, from
    /// the state's value or (a plan) the configuration's reference.
    fn target(&self, r: &Resource, key: &str) -> Option<String> {
        if let Some(v) = Self::s(r, key) {
            return Some(
                self.by_id
                    .get(v)
                    .and_then(|a| self.ids.get(a))
                    .map_or_else(|| v.to_string(), |(id, _)| id.clone()),
            );
        }
        self.refs
            .get(&(r.address.as_str(), key))?
            .iter()
            .find_map(|a| {
                let base = a.strip_suffix(".id").unwrap_or(a);
                self.ids.get(base).map(|(id, _)| id.clone())
            })
    }

    /// The lab id that element `i` of the nested block `block` of `r` names in `key`, by
    /// the plan's configuration.
    fn nested(&self, r: &Resource, block: &str, i: usize, key: &str) -> Vec<String> {
        self.exprs
            .get(r.address.as_str())
            .and_then(|e| e.get(block))
            .and_then(|b| b.get(i))
            .and_then(|el| el.get(key))
            .and_then(|k| k.get("references"))
            .and_then(Value::as_array)
            .map(|refs| {
                let mut ids: Vec<String> = refs
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(|a| self.ids.get(a.strip_suffix(".id").unwrap_or(a)))
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.dedup();
                ids
            })
            .unwrap_or_default()
    }

    /// The lab ids a list attribute (`subnet_ids`) of `r` names: the state's values, or
    /// the plan's references.
    fn targets(&self, r: &Resource, key: &str) -> Vec<String> {
        let known: Vec<String> = r
            .values
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|v| {
                self.by_id
                    .get(v)
                    .and_then(|a| self.ids.get(a))
                    .map_or_else(|| v.to_string(), |(id, _)| id.clone())
            })
            .collect();
        if !known.is_empty() {
            return known;
        }
        let mut ids: Vec<String> = self
            .refs
            .get(&(r.address.as_str(), key))
            .into_iter()
            .flatten()
            .filter_map(|a| self.ids.get(a.strip_suffix(".id").unwrap_or(a)))
            .map(|(id, _)| id.clone())
            .collect();
        ids.dedup();
        ids
    }

    fn id(&self, r: &Resource) -> &str {
        &self.ids[r.address.as_str()].0
    }

    fn comment(&self, r: &Resource) -> String {
        let made = if self.ids[r.address.as_str()].1 {
            "; id made up (known after apply)"
        } else {
            ""
        };
        format!("# from {}{made}", r.address)
    }
}

/// Reads `terraform show -json` output (`file` names it in errors).
pub fn terraform(text: &str, file: &str) -> Result<Imported, String> {
    let show: Show = serde_json::from_str(text).map_err(|e| {
        format!(
            "{file}:{}:{}: not the JSON of `terraform show -json`: {e}",
            e.line(),
            e.column()
        )
    })?;
    let values = show.values.or(show.planned_values).ok_or_else(|| {
        format!("{file}: neither `values` (a state) nor `planned_values` (a plan): is this `terraform show -json` output?")
    })?;
    let mut all = Vec::new();
    flatten(&values.root_module, &mut all);
    let mut skipped = Vec::new();
    let mut resources: Vec<&Resource> = Vec::new();
    for r in &all {
        if r.mode == "data" {
            skipped.push(format!(
                "{}: a data source, not a resource of the design",
                r.address
            ));
        } else if !r.provider_name.is_empty() && !r.provider_name.ends_with("hashicorp/aws") {
            skipped.push(format!(
                "{}: provider {} is not AWS",
                r.address, r.provider_name
            ));
        } else if !SUPPORTED.contains(&r.kind.as_str()) {
            skipped.push(format!("{}: {} is not imported yet", r.address, r.kind));
        } else {
            resources.push(r);
        }
    }
    let mut cx = Ctx {
        by_address: HashMap::new(),
        ids: HashMap::new(),
        by_id: HashMap::new(),
        refs: HashMap::new(),
        exprs: HashMap::new(),
    };
    for r in &resources {
        cx.by_address.insert(&r.address, r);
        let (id, made) = match Ctx::s(r, "id") {
            Some(id) => (id.to_string(), false),
            None => (made_up_id(r), true),
        };
        if !made {
            cx.by_id.insert(id.clone(), &r.address);
        }
        cx.ids.insert(&r.address, (id, made));
    }
    if let Some(c) = &show.configuration {
        for cr in &c.root_module.resources {
            if let Some(addr) = cx.by_address.keys().find(|a| **a == cr.address).copied() {
                cx.exprs.insert(addr, &cr.expressions);
                for (key, e) in &cr.expressions {
                    let refs: Vec<String> = e
                        .get("references")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    if !refs.is_empty() {
                        cx.refs.insert((addr, key.as_str()), refs);
                    }
                }
            }
        }
    }
    let lab = render(&cx, &resources, &mut skipped);
    Ok(Imported { lab, skipped })
}

fn of_kind<'r>(resources: &[&'r Resource], kind: &str) -> Vec<&'r Resource> {
    resources
        .iter()
        .filter(|r| r.kind == kind)
        .copied()
        .collect()
}

fn render(cx: &Ctx<'_>, resources: &[&Resource], skipped: &mut Vec<String>) -> String {
    let mut s = String::new();
    s.push_str(
        "# Imported by `vpcd import terraform`: each object names its source.\nversion: 1\nvpcs:\n",
    );
    let vpcs = of_kind(resources, "aws_vpc");
    // Elastic IPs; one known after apply gets 198.51.100.100 and up (flagged).
    let eips: HashMap<String, (String, bool)> = of_kind(resources, "aws_eip")
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let ip = match Ctx::s(e, "public_ip") {
                Some(ip) => (ip.to_string(), false),
                None => (format!("198.51.100.{}", 100 + k.min(150)), true),
            };
            (cx.id(e).to_string(), ip)
        })
        .collect();
    // Addresses known after apply: each subnet's instances from base + 10, in file order.
    let mut host_seq: HashMap<String, u32> = HashMap::new();
    for v in &vpcs {
        let vid = cx.id(v).to_string();
        let in_vpc = |kind: &str| -> Vec<&Resource> {
            of_kind(resources, kind)
                .into_iter()
                .filter(|r| cx.target(r, "vpc_id").as_deref() == Some(vid.as_str()))
                .collect()
        };
        let _ = writeln!(s, "  {}", cx.comment(v));
        let _ = writeln!(s, "  - id: {vid}");
        let _ = writeln!(
            s,
            "    cidr_block: {}",
            Ctx::s(v, "cidr_block").unwrap_or("10.0.0.0/16")
        );
        if let Some(c6) = Ctx::s(v, "ipv6_cidr_block") {
            let _ = writeln!(s, "    ipv6_cidr_block: \"{c6}\"");
        }
        let igws = in_vpc("aws_internet_gateway");
        if let Some(g) = igws.first() {
            let _ = writeln!(s, "    internet_gateway: {}   {}", cx.id(g), cx.comment(g));
        }
        if let Some(g) = in_vpc("aws_egress_only_internet_gateway").first() {
            let _ = writeln!(
                s,
                "    egress_only_internet_gateway: {}   {}",
                cx.id(g),
                cx.comment(g)
            );
        }
        let acls = in_vpc("aws_network_acl");
        // A subnet's network ACL: by the ACL's `subnet_ids`, or an association.
        let acl_of = |subnet: &str| -> Option<String> {
            acls.iter()
                .find(|a| cx.targets(a, "subnet_ids").iter().any(|s| s == subnet))
                .map(|a| cx.id(a).to_string())
                .or_else(|| {
                    of_kind(resources, "aws_network_acl_association")
                        .into_iter()
                        .find(|a| cx.target(a, "subnet_id").as_deref() == Some(subnet))
                        .and_then(|a| cx.target(a, "network_acl_id"))
                })
        };
        let tables = in_vpc("aws_route_table");
        let table_of = |subnet: &str| -> Option<String> {
            of_kind(resources, "aws_route_table_association")
                .into_iter()
                .find(|a| cx.target(a, "subnet_id").as_deref() == Some(subnet))
                .and_then(|a| cx.target(a, "route_table_id"))
        };
        let main_table = of_kind(resources, "aws_main_route_table_association")
            .into_iter()
            .find(|a| cx.target(a, "vpc_id").as_deref() == Some(vid.as_str()))
            .and_then(|a| cx.target(a, "route_table_id"));
        let subnets = in_vpc("aws_subnet");
        if !subnets.is_empty() {
            s.push_str("    subnets:\n");
        }
        for sn in &subnets {
            let sid = cx.id(sn);
            let mut line = format!(
                "      - {{ id: {sid}, cidr_block: {}",
                Ctx::s(sn, "cidr_block").unwrap_or("10.0.0.0/24")
            );
            if let Some(az) = Ctx::s(sn, "availability_zone") {
                let _ = write!(line, ", availability_zone: {az}");
            }
            if let Some(t) = table_of(sid) {
                let _ = write!(line, ", route_table: {t}");
            }
            if let Some(a) = acl_of(sid) {
                let _ = write!(line, ", network_acl: {a}");
            }
            if sn
                .values
                .get("map_public_ip_on_launch")
                .and_then(Value::as_bool)
                == Some(true)
            {
                line.push_str(", map_public_ip_on_launch: true");
            }
            let _ = writeln!(s, "{line} }}   {}", cx.comment(sn));
        }
        if !tables.is_empty() {
            s.push_str("    route_tables:\n");
        }
        for t in &tables {
            let tid = cx.id(t).to_string();
            let _ = writeln!(s, "      {}", cx.comment(t));
            let _ = writeln!(s, "      - id: {tid}");
            if main_table.as_deref() == Some(tid.as_str()) {
                s.push_str("        main: true\n");
            }
            let mut routes: Vec<String> = Vec::new();
            let target = |r: &Value, res: Option<&Resource>| -> Option<String> {
                for key in [
                    "gateway_id",
                    "nat_gateway_id",
                    "network_interface_id",
                    "vpc_peering_connection_id",
                    "egress_only_gateway_id",
                ] {
                    if let Some(v) = r.get(key).and_then(Value::as_str).filter(|v| !v.is_empty()) {
                        return Some(
                            cx.by_id
                                .get(v)
                                .and_then(|a| cx.ids.get(a))
                                .map_or_else(|| v.to_string(), |(id, _)| id.clone()),
                        );
                    }
                    if let Some(res) = res {
                        if let Some(t) = cx.target(res, key) {
                            return Some(t);
                        }
                    }
                }
                None
            };
            let inline = t.values.get("route").and_then(Value::as_array);
            for (i, r) in inline.into_iter().flatten().enumerate() {
                let dest = ["cidr_block", "ipv6_cidr_block"]
                    .iter()
                    .find_map(|k| r.get(*k).and_then(Value::as_str).filter(|v| !v.is_empty()));
                let to = target(r, None).or_else(|| {
                    [
                        "gateway_id",
                        "nat_gateway_id",
                        "network_interface_id",
                        "vpc_peering_connection_id",
                        "egress_only_gateway_id",
                    ]
                    .iter()
                    .find_map(|k| cx.nested(t, "route", i, k).into_iter().next())
                });
                match (dest, to) {
                    (Some(d), Some(to)) => {
                        routes.push(format!("{{ destination: \"{d}\", target: {to} }}"))
                    }
                    _ => skipped.push(format!(
                        "{}: a route with no CIDR destination or known target",
                        t.address
                    )),
                }
            }
            for r in of_kind(resources, "aws_route") {
                if cx.target(r, "route_table_id").as_deref() != Some(tid.as_str()) {
                    continue;
                }
                let dest = ["destination_cidr_block", "destination_ipv6_cidr_block"]
                    .iter()
                    .find_map(|k| Ctx::s(r, k));
                match (dest, target(&r.values, Some(r))) {
                    (Some(d), Some(to)) => routes.push(format!(
                        "{{ destination: \"{d}\", target: {to} }}   # from {}",
                        r.address
                    )),
                    _ => skipped.push(format!(
                        "{}: no CIDR destination or known target",
                        r.address
                    )),
                }
            }
            if !routes.is_empty() {
                s.push_str("        routes:\n");
                for r in routes {
                    let _ = writeln!(s, "          - {r}");
                }
            }
        }
        if !acls.is_empty() {
            s.push_str("    network_acls:\n");
        }
        for a in &acls {
            let _ = writeln!(s, "      {}", cx.comment(a));
            let _ = writeln!(s, "      - id: {}", cx.id(a));
            for (dir, key) in [("inbound", "ingress"), ("outbound", "egress")] {
                let rules = nacl_rules(a, key);
                if !rules.is_empty() {
                    let _ = writeln!(s, "        {dir}:");
                    for r in rules {
                        let _ = writeln!(s, "          - {r}");
                    }
                }
            }
        }
        let groups = in_vpc("aws_security_group");
        if !groups.is_empty() {
            s.push_str("    security_groups:\n");
        }
        for g in &groups {
            let _ = writeln!(s, "      {}", cx.comment(g));
            let _ = writeln!(s, "      - id: {}", cx.id(g));
            if let Some(d) = Ctx::s(g, "description") {
                let _ = writeln!(
                    s,
                    "        description: {}",
                    serde_json::to_string(d).unwrap_or_default()
                );
            }
            for (dir, key, peer) in [
                ("inbound", "ingress", "source"),
                ("outbound", "egress", "destination"),
            ] {
                let rules = sg_rules(cx, g, key, peer);
                if rules.is_empty() && key == "egress" {
                    // AWS's default is all out; a group whose egress was emptied allows none.
                    s.push_str("        outbound: []\n");
                    continue;
                }
                if !rules.is_empty() {
                    let _ = writeln!(s, "        {dir}:");
                    for r in rules {
                        let _ = writeln!(s, "          - {r}");
                    }
                }
            }
        }
        let nats: Vec<&Resource> = of_kind(resources, "aws_nat_gateway")
            .into_iter()
            .filter(|n| {
                cx.target(n, "subnet_id")
                    .is_some_and(|sn| subnets.iter().any(|s| cx.id(s) == sn))
            })
            .collect();
        if !nats.is_empty() {
            s.push_str("    nat_gateways:\n");
        }
        for n in &nats {
            let mut line = format!(
                "      - {{ id: {}, subnet: {}",
                cx.id(n),
                cx.target(n, "subnet_id").unwrap_or_default()
            );
            if let Some(ip) = Ctx::s(n, "private_ip") {
                let _ = write!(line, ", private_ip: {ip}");
            }
            let public = Ctx::s(n, "public_ip")
                .map(|p| (p.to_string(), false))
                .or_else(|| {
                    cx.target(n, "allocation_id")
                        .and_then(|a| eips.get(&a).cloned())
                });
            let mut note = String::new();
            if Ctx::s(n, "connectivity_type") == Some("private") {
                line.push_str(", connectivity: private");
            } else if let Some((p, made)) = public {
                let _ = write!(line, ", public_ip: {p}");
                if made {
                    note = "; public_ip made up (its Elastic IP is known after apply)".into();
                }
            }
            let _ = writeln!(s, "{line} }}   {}{note}", cx.comment(n));
        }
        let instances: Vec<&Resource> = of_kind(resources, "aws_instance")
            .into_iter()
            .filter(|i| {
                cx.target(i, "subnet_id")
                    .is_some_and(|sn| subnets.iter().any(|s| cx.id(s) == sn))
            })
            .collect();
        if !instances.is_empty() {
            s.push_str("    instances:\n");
        }
        for i in &instances {
            let subnet = cx.target(i, "subnet_id").unwrap_or_default();
            let mut line = format!("      - {{ id: {}, subnet: {subnet}", cx.id(i));
            let mut note = String::new();
            match Ctx::s(i, "private_ip") {
                Some(ip) => {
                    let _ = write!(line, ", private_ip: {ip}");
                }
                None => {
                    // Known after apply: the subnet's next address from base + 10.
                    let base = subnets
                        .iter()
                        .find(|s| cx.id(s) == subnet)
                        .and_then(|s| Ctx::s(s, "cidr_block"))
                        .and_then(|c| c.parse::<ip_network::Ipv4Network>().ok());
                    if let Some(b) = base {
                        let n = host_seq.entry(subnet.clone()).or_insert(10);
                        let a = std::net::Ipv4Addr::from(u32::from(b.network_address()) + *n);
                        *n += 1;
                        let _ = write!(line, ", private_ip: {a}");
                        note = "; private_ip made up (known after apply)".into();
                    }
                }
            }
            if let Some(p) = Ctx::s(i, "public_ip") {
                let _ = write!(line, ", public_ip: {p}");
            }
            let groups: Vec<String> = i
                .values
                .get("vpc_security_group_ids")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|g| {
                            cx.by_id
                                .get(g)
                                .and_then(|a| cx.ids.get(a))
                                .map_or_else(|| g.to_string(), |(id, _)| id.clone())
                        })
                        .collect()
                })
                .filter(|v: &Vec<String>| !v.is_empty())
                .or_else(|| {
                    cx.refs
                        .get(&(i.address.as_str(), "vpc_security_group_ids"))
                        .map(|refs| {
                            refs.iter()
                                .filter_map(|a| {
                                    cx.ids
                                        .get(a.strip_suffix(".id").unwrap_or(a))
                                        .map(|(id, _)| id.clone())
                                })
                                .collect()
                        })
                })
                .unwrap_or_default();
            let mut groups = groups;
            groups.dedup();
            if !groups.is_empty() {
                let _ = write!(line, ", security_groups: [{}]", groups.join(", "));
            }
            if i.values.get("source_dest_check").and_then(Value::as_bool) == Some(false) {
                line.push_str(", source_dest_check: false");
            }
            let _ = writeln!(s, "{line} }}   {}{note}", cx.comment(i));
        }
    }
    // An outside host, so that a lab with an internet gateway has someone to ping.
    s.push_str("internet:\n  hosts:\n    - { id: inet-1, ipv4: 203.0.113.10 }   # added by vpcd import: the internet, to ping\n");
    s
}

/// The protocol as the lab file names it, from Terraform's (`-1`, `tcp`, `6`, ...).
fn protocol(p: &str) -> String {
    match p.to_ascii_lowercase().as_str() {
        "-1" | "all" => "all".into(),
        "6" | "tcp" => "tcp".into(),
        "17" | "udp" => "udp".into(),
        "1" | "icmp" => "icmp".into(),
        "58" | "icmpv6" => "icmpv6".into(),
        other => other.into(),
    }
}

/// A network ACL's inline rules as the lab file writes them.
fn nacl_rules(a: &Resource, key: &str) -> Vec<String> {
    let mut rules: Vec<(i64, String)> = Vec::new();
    for r in a
        .values
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let no = r.get("rule_no").and_then(Value::as_i64).unwrap_or(0);
        let action = r.get("action").and_then(Value::as_str).unwrap_or("deny");
        let proto = protocol(r.get("protocol").and_then(Value::as_str).unwrap_or("-1"));
        let from = r.get("from_port").and_then(Value::as_i64).unwrap_or(0);
        let to = r.get("to_port").and_then(Value::as_i64).unwrap_or(0);
        let mut line = format!("{{ rule: {no}, action: {action}, protocol: {proto}");
        if matches!(proto.as_str(), "tcp" | "udp") && !(from == 0 && to == 65535) {
            if from == to {
                let _ = write!(line, ", port_range: {from}");
            } else {
                let _ = write!(line, ", port_range: {from}-{to}");
            }
        }
        let v4 = r
            .get("cidr_block")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty());
        let v6 = r
            .get("ipv6_cidr_block")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty());
        match (v4, v6) {
            (Some(c), _) => {
                let _ = write!(line, ", cidr: \"{c}\"");
            }
            (None, Some(c)) => {
                let _ = write!(line, ", ipv6_cidr: \"{c}\"");
            }
            (None, None) => continue,
        }
        line.push_str(" }");
        rules.push((no, line));
    }
    rules.sort_by_key(|(n, _)| *n);
    rules.into_iter().map(|(_, l)| l).collect()
}

/// A security group's inline rules as the lab file writes them.
fn sg_rules(cx: &Ctx<'_>, g: &Resource, key: &str, peer: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in g
        .values
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let proto = protocol(r.get("protocol").and_then(Value::as_str).unwrap_or("-1"));
        let from = r.get("from_port").and_then(Value::as_i64).unwrap_or(0);
        let to = r.get("to_port").and_then(Value::as_i64).unwrap_or(0);
        let ports = match proto.as_str() {
            "tcp" | "udp" if !(from == 0 && to == 65535) => {
                if from == to {
                    format!(", port_range: {from}")
                } else {
                    format!(", port_range: {from}-{to}")
                }
            }
            _ => String::new(),
        };
        let mut peers: Vec<String> = Vec::new();
        for k in ["cidr_blocks", "ipv6_cidr_blocks"] {
            for c in r.get(k).and_then(Value::as_array).into_iter().flatten() {
                if let Some(c) = c.as_str() {
                    peers.push(format!("\"{c}\""));
                }
            }
        }
        for sg in r
            .get("security_groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(sg) = sg.as_str() {
                peers.push(
                    cx.by_id
                        .get(sg)
                        .and_then(|a| cx.ids.get(a))
                        .map_or_else(|| sg.to_string(), |(id, _)| id.clone()),
                );
            }
        }
        // A plan's group references are known after apply: the configuration has them.
        let named = r
            .get("security_groups")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if !named {
            peers.extend(cx.nested(g, key, i, "security_groups"));
        }
        if r.get("self").and_then(Value::as_bool) == Some(true) {
            peers.push(cx.id(g).to_string());
        }
        for p in peers {
            out.push(format!("{{ protocol: {proto}{ports}, {peer}: {p} }}"));
        }
    }
    out
}
