//! `vpcd check`: every example lab passes, and a file with many mistakes gets every one of
//! them reported at the right line and column, with a fix, and exit code 1.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vpcd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vpcd"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run vpcd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The diagnostics of `text` as (line, col, path, message) tuples.
fn errors(text: &str) -> Vec<(usize, usize, String, String)> {
    match control::check_text(text) {
        Ok(_) => Vec::new(),
        Err(d) => d
            .into_iter()
            .map(|d| {
                (
                    d.at.line,
                    d.at.col,
                    d.at.path.to_string(),
                    format!("{}; {}", d.message, d.fix),
                )
            })
            .collect(),
    }
}

fn has(errs: &[(usize, usize, String, String)], line: usize, path: &str, words: &str) {
    assert!(
        errs.iter()
            .any(|(l, _, p, m)| *l == line && p == path && m.contains(words)),
        "no error at line {line} {path} containing {words:?}; got:\n{}",
        errs.iter()
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_example_lab_passes_check() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (code, out, err) = vpcd(&["check", path.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {out}{err}", path.display());
            assert!(out.contains(": ok"), "{out}");
            n += 1;
        }
    }
    assert!(n >= 5, "the wizard labs and the default lab");
}

#[test]
fn the_built_in_default_lab_is_valid() {
    control::load_text(control::DEFAULT_LAB, 1).expect("default lab");
}

#[test]
fn a_broken_lab_reports_every_error_with_its_place_and_exits_1() {
    let (code, out, err) = vpcd(&["check", "control/tests/labs/broken.yaml"]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    let expect = [
        "control/tests/labs/broken.yaml:5:5: vpcs[0].internet_gatway: unknown field `internet_gatway` in a VPC; did you mean `internet_gateway`?",
        "control/tests/labs/broken.yaml:7:63: vpcs[0].subnets[0].route_table: no route table has the id `rtb-publik`; did you mean `rtb-public`?",
        "control/tests/labs/broken.yaml:10:37: vpcs[0].subnets[3].cidr_block: `10.0.3.5/24` has host bits set; did you mean `10.0.3.0/24`?",
    ];
    for e in expect {
        assert!(lines.contains(&e), "missing {e:?} in:\n{err}");
    }
    assert!(err.trim_end().ends_with("15 error(s)"), "{err}");
    // Sorted by line.
    let nums: Vec<usize> = lines
        .iter()
        .filter_map(|l| l.split(':').nth(1)?.parse().ok())
        .collect();
    assert!(nums.windows(2).all(|w| w[0] <= w[1]), "{nums:?}");
}

#[test]
fn addressing_rules_of_section_1() {
    let text = r#"version: 1
vpcs:
  - id: vpc-x
    cidr_block: 10.0.0.0/12
    secondary_cidr_blocks: [10.0.128.0/17]
    ipv6_cidr_block: 2001:db8:10::/48
    subnets:
      - { id: s1, cidr_block: 10.0.1.0/29, ipv6_cidr_block: "2001:db8:10:1::/64" }
      - { id: s2, cidr_block: 10.0.2.0/30 }
    instances:
      - { id: i-net, subnet: s1, private_ip: 10.0.1.0 }
      - { id: i-dns, subnet: s1, private_ip: 10.0.1.2 }
      - { id: i-res, subnet: s1, private_ip: 10.0.1.3 }
      - { id: i-bcast, subnet: s1, private_ip: 10.0.1.7 }
      - { id: i-ok, subnet: s1, private_ip: 10.0.1.4, ipv6_address: "2001:db8:10:1::2" }
      - { id: i-out, subnet: s1, private_ip: 10.0.9.9 }
"#;
    let e = errors(text);
    has(&e, 4, "vpcs[0].cidr_block", "/16 to /28");
    has(&e, 5, "vpcs[0].secondary_cidr_blocks[0]", "overlaps");
    has(&e, 6, "vpcs[0].ipv6_cidr_block", "/56");
    has(&e, 9, "vpcs[0].subnets[1].cidr_block", "/16 to /28");
    has(&e, 11, "vpcs[0].instances[0].private_ip", "network address");
    has(&e, 12, "vpcs[0].instances[1].private_ip", "Amazon DNS");
    has(&e, 13, "vpcs[0].instances[2].private_ip", "base+3");
    has(&e, 14, "vpcs[0].instances[3].private_ip", "last address");
    has(&e, 15, "vpcs[0].instances[4].ipv6_address", "reserved");
    has(
        &e,
        16,
        "vpcs[0].instances[5].private_ip",
        "not inside subnet",
    );
}

#[test]
fn routing_rules_of_section_2() {
    let text = r#"version: 1
vpcs:
  - id: vpc-a
    cidr_block: 10.0.0.0/16
    internet_gateway: igw-a
    egress_only_internet_gateway: eigw-a
    subnets:
      - { id: pub, cidr_block: 10.0.1.0/24 }
      - { id: priv, cidr_block: 10.0.2.0/24, route_table: rt-b }
    route_tables:
      - id: rt-a
        main: true
        routes:
          - { destination: 0.0.0.0/0, target: eigw-a }
          - { destination: 10.0.2.0/24, target: igw-a }
          - { destination: 10.0.3.0/24, target: app-1 }
          - { destination: 192.0.2.0/24, target: igw-b }
          - { destination: 198.51.100.0/24, target: sg-a }
          - { destination: 203.0.113.0/24, target: local }
      - id: rt-b
        main: true
    security_groups:
      - { id: sg-a }
    nat_gateways:
      - { id: nat-a, subnet: priv, public_ip: 198.51.100.5 }
    instances:
      - { id: app-1, subnet: pub, private_ip: 10.0.1.10, source_dest_check: false }
  - id: vpc-b
    cidr_block: 10.1.0.0/16
    internet_gateway: igw-b
    subnets:
      - { id: b1, cidr_block: 10.1.1.0/24 }
"#;
    let e = errors(text);
    has(
        &e,
        14,
        "vpcs[0].route_tables[0].routes[0].destination",
        "IPv6 only",
    );
    has(
        &e,
        15,
        "vpcs[0].route_tables[0].routes[1].destination",
        "lies inside the VPC",
    );
    has(
        &e,
        17,
        "vpcs[0].route_tables[0].routes[3].target",
        "belongs to another VPC",
    );
    has(
        &e,
        18,
        "vpcs[0].route_tables[0].routes[4].target",
        "is a security group",
    );
    has(
        &e,
        19,
        "vpcs[0].route_tables[0].routes[5].target",
        "implicit",
    );
    has(&e, 20, "vpcs[0].route_tables[1]", "second main route table");
    has(&e, 25, "vpcs[0].nat_gateways[0].subnet", "internet gateway");
    // Middlebox routing needs a whole subnet's CIDR; 10.0.3.0/24 is none.
    has(
        &e,
        16,
        "vpcs[0].route_tables[0].routes[2].destination",
        "not the CIDR of a subnet",
    );
    assert!(
        !e.iter()
            .any(|x| x.0 == 16 && x.3.contains("only point to an instance")),
        "{e:?}"
    );
}

#[test]
fn ids_must_be_unique_and_well_formed_and_fields_known() {
    let text = r#"version: 2
vpcs:
  - id: Vpc_A
    cidr_block: 10.0.0.0/16
    subnet: []
  - id: vpc-b
    cidr_block: 10.1.0.0/16
    subnets:
      - { id: vpc-b, cidr_block: 10.1.1.0/24, map_public_ip_on_launch: maybe }
"#;
    let e = errors(text);
    has(&e, 1, "version", "version 2");
    has(&e, 3, "vpcs[0].id", "not a valid id");
    has(&e, 5, "vpcs[0].subnet", "did you mean `subnets`");
    has(
        &e,
        9,
        "vpcs[1].subnets[0].id",
        "already used by the VPC at line 6",
    );
    has(
        &e,
        9,
        "vpcs[1].subnets[0].map_public_ip_on_launch",
        "true or false",
    );
}

#[test]
fn peering_and_security_group_rules() {
    let text = r#"version: 1
vpcs:
  - id: vpc-a
    cidr_block: 10.0.0.0/16
    subnets: [{ id: a1, cidr_block: 10.0.1.0/24 }]
    security_groups:
      - id: sg-a
        inbound:
          - { protocol: tcp, port_range: 22, source: sg-c }
          - { protocol: icmp, port_range: 80, source: 0.0.0.0/0 }
          - { protocol: tcp, icmp_type: 8, source: 0.0.0.0/0 }
    instances:
      - id: a-1
        subnet: a1
        private_ip: 10.0.1.10
        connection_tracking: { tcp_established_timeout: 10, udp_timeout: 90 }
  - id: vpc-b
    cidr_block: 10.0.128.0/17
    subnets: [{ id: b1, cidr_block: 10.0.129.0/24 }]
  - id: vpc-c
    cidr_block: 10.2.0.0/16
    subnets: [{ id: c1, cidr_block: 10.2.1.0/24 }]
    security_groups: [{ id: sg-c }]
peering_connections:
  - { id: pcx-ab, requester_vpc: vpc-a, accepter_vpc: vpc-b }
  - { id: pcx-ab2, requester_vpc: vpc-b, accepter_vpc: vpc-a }
"#;
    let e = errors(text);
    has(
        &e,
        9,
        "vpcs[0].security_groups[0].inbound[0].source",
        "not peered",
    );
    has(
        &e,
        10,
        "vpcs[0].security_groups[0].inbound[1].port_range",
        "only to tcp and udp",
    );
    has(
        &e,
        11,
        "vpcs[0].security_groups[0].inbound[2].icmp_type",
        "only to icmp",
    );
    has(
        &e,
        16,
        "vpcs[0].instances[0].connection_tracking.tcp_established_timeout",
        "60 to 432000",
    );
    has(
        &e,
        16,
        "vpcs[0].instances[0].connection_tracking.udp_timeout",
        "30 to 60",
    );
    has(&e, 25, "peering_connections[0].id", "overlap");
    has(&e, 26, "peering_connections[1].id", "already peered");
}

#[test]
fn yaml_syntax_errors_have_a_place() {
    let e = errors("version: 1\nvpcs:\n  - id: [unclosed\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].3.contains("YAML syntax error"), "{e:?}");
    assert!(e[0].0 >= 3, "{e:?}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let (code, _, err) = vpcd(&["check", "no/such/lab.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read no/such/lab.yaml"), "{err}");
}

#[test]
fn review_findings_are_refused_or_compiled_right() {
    // `main` names the main table (implicit or marked), in subnets and endpoint lists.
    let ok = r#"version: 1
vpcs:
  - id: vpc-a
    cidr_block: 10.0.0.0/16
    subnets: [{ id: a1, cidr_block: 10.0.1.0/24, route_table: main }]
    endpoints:
      - { id: vpce-s3, type: gateway, service: s3, route_tables: [main] }
services:
  - { name: s3, prefix_list: pl-s3, cidr_blocks: [198.18.0.0/24], hosts: [{ id: s3-1, ipv4: 198.18.0.10 }] }
"#;
    let (_, snap) = control::load_text(ok, 1).expect("`main` compiles");
    let main = snap.route_table(snap.topo.subnets[0].route_table);
    let hit = main
        .lookup("198.18.0.10".parse().unwrap())
        .map(|(_, r)| r.target);
    assert!(
        matches!(hit, Some(dataplane::route::Target::GatewayEndpoint(_))),
        "{hit:?}"
    );

    // Address arithmetic at the top of the space does not panic.
    let e = errors(
        "version: 1\nvpcs:\n  - id: v\n    cidr_block: 255.255.255.0/24\n    subnets: [{ id: s, cidr_block: 255.255.255.254/31 }]\n    instances: [{ id: i, subnet: s, private_ip: 255.255.255.255 }]\n",
    );
    assert!(!e.is_empty());

    let text = r#"version: 1
vpcs:
  - id: vpc-a
    cidr_block: 169.254.0.0/16
  - id: vpc-b
    cidr_block: 10.0.0.0/16
    internet_gateway: igw-b
    egress_only_internet_gateway: eigw-b
    ipv6_cidr_block: 2001:db8:10::/56
    subnets: [{ id: b1, cidr_block: 10.0.1.0/24 }, { id: b2, cidr_block: 10.0.2.0/24 }]
    route_tables:
      - id: rt-b
        routes:
          - { destination: 10.0.2.128/25, target: app-1 }
          - { destination: pl-s3, target: eigw-b }
    instances:
      - { id: app-1, subnet: b1, private_ip: 10.0.1.10, public_ip: 10.0.2.20, source_dest_check: false }
services:
  - { name: s3, prefix_list: pl-s3, cidr_blocks: [198.18.0.0/24, 10.0.3.0/24] }
"#;
    let e = errors(text);
    has(&e, 4, "vpcs[0].cidr_block", "link-local");
    has(
        &e,
        14,
        "vpcs[1].route_tables[0].routes[0].destination",
        "not the CIDR of a subnet",
    );
    has(
        &e,
        15,
        "vpcs[1].route_tables[0].routes[1].destination",
        "IPv6 only",
    );
    has(
        &e,
        17,
        "vpcs[1].instances[0].public_ip",
        "lies inside vpc-b's block",
    );
    has(&e, 19, "services[0].cidr_blocks[1]", "overlaps vpc-b");
}

/// Mistakes hidden behind others: in objects that cannot be decoded whole, behind a CIDR
/// with host bits, inside a VPC whose block is unreadable.
const HIDDEN: &str = "version: 1
vpcs:
  - id: vpc-a
    cidr_block: 10.0.0.0/16
    subnets:
      - { id: s-1, cidr_block: 10.0.1.0/33, route_table: rtb-x }
      - { id: s-2, cidr_block: 10.0.2.5/24, network_acl: acl-x }
    instances:
      - { id: i-1, subnet: s-2, private_ip: 10.0.2.1 }
      - { id: i-2, subnet: s-9, private_ip: nope }
  - id: vpc-b
    cidr_block: banana
    subnets:
      - { id: s-1, cidr_block: 10.1.1.0/24, route_table: rtb-y }
    flow_logs:
      - { id: fl-1, resource: vpc-z, destination: x.log }
";

#[test]
fn every_mistake_is_found_in_one_pass() {
    let errs = errors(HIDDEN);
    for (line, path, words) in [
        (6, "vpcs[0].subnets[0].cidr_block", "bad prefix length"),
        (6, "vpcs[0].subnets[0].route_table", "`rtb-x`"),
        (7, "vpcs[0].subnets[1].cidr_block", "host bits"),
        (7, "vpcs[0].subnets[1].network_acl", "`acl-x`"),
        // Found because s-2 keeps the prefix that was meant.
        (9, "vpcs[0].instances[0].private_ip", "R-ADDR-RESERVED"),
        (10, "vpcs[0].instances[1].private_ip", "nope"),
        (10, "vpcs[0].instances[1].subnet", "`s-9`"),
        (12, "vpcs[1].cidr_block", "banana"),
        // Inside the VPC whose block cannot be read: still checked.
        (14, "vpcs[1].subnets[0].id", "already used"),
        (14, "vpcs[1].subnets[0].route_table", "`rtb-y`"),
        (16, "vpcs[1].flow_logs[0].resource", "`vpc-z`"),
    ] {
        has(&errs, line, path, words);
    }
    // Fixing what was reported leaves nothing to fix.
    let fixed = HIDDEN
        .replace("10.0.1.0/33, route_table: rtb-x", "10.0.1.0/24")
        .replace("10.0.2.5/24, network_acl: acl-x", "10.0.2.0/24")
        .replace("private_ip: 10.0.2.1", "private_ip: 10.0.2.10")
        .replace(
            "subnet: s-9, private_ip: nope",
            "subnet: s-1, private_ip: 10.0.1.10",
        )
        .replace("banana", "10.1.0.0/16")
        .replace(
            "{ id: s-1, cidr_block: 10.1.1.0/24, route_table: rtb-y }",
            "{ id: s-3, cidr_block: 10.1.1.0/24 }",
        )
        .replace("vpc-z", "vpc-b");
    assert_eq!(errors(&fixed), Vec::new());
}

#[test]
fn fixes_name_ids_of_the_file_and_top_level_errors_have_a_place() {
    let text = "version: 1
vpcs:
  - id: vpc-main
    cidr_block: 10.0.0.0/16
    internet_gateway: igw-main
    subnets:
      - { id: app-a, cidr_block: 10.0.1.0/24 }
    route_tables:
      - id: rt
        routes: [{ destination: 0.0.0.0/0 }]
    instances:
      - { id: i-1, private_ip: 10.0.1.10 }
    flow_logs:
      - { id: fl-1, destination: x.log }
";
    let errs = errors(text);
    has(
        &errs,
        10,
        "vpcs[0].route_tables[0].routes[0]",
        "add `target: igw-main`",
    );
    has(&errs, 12, "vpcs[0].instances[0]", "add `subnet: app-a`");
    has(
        &errs,
        14,
        "vpcs[0].flow_logs[0]",
        "add `resource: vpc-main`",
    );
    let top = errors("region: us-east-1\n");
    has(&top, 1, "", "the required field `version` is missing");
    assert!(top.iter().all(|(l, c, _, _)| (*l, *c) == (1, 1)), "{top:?}");
}

#[test]
fn secondary_blocks_follow_aws_association_restrictions() {
    let lab = |primary: &str, secondary: &str| {
        format!("version: 1\nvpcs:\n  - id: v\n    cidr_block: {primary}\n    secondary_cidr_blocks: [{secondary}]\n")
    };
    let refused = |primary: &str, secondary: &str| {
        let errs = errors(&lab(primary, secondary));
        errs.iter().any(|(l, _, p, m)| {
            *l == 5 && p.contains("secondary_cidr_blocks") && m.contains("cannot be added")
        })
    };
    // The issue's example: with a 10/8 primary, the other private ranges and 198.19/16
    // are refused; more of 10/8, a public block and 100.64/10 are fine.
    for s in ["172.16.0.0/16", "192.168.0.0/16", "198.19.0.0/16"] {
        assert!(refused("10.8.0.0/16", s), "{s}");
    }
    for s in ["10.9.0.0/16", "100.64.0.0/16", "203.0.113.0/24"] {
        assert!(!refused("10.8.0.0/16", s), "{s}");
    }
    assert!(refused("10.1.0.0/16", "10.0.4.0/24"), "10.0.0.0/15 rule");
    assert!(refused("172.20.0.0/16", "172.31.0.0/16"));
    assert!(refused("172.20.0.0/16", "10.1.0.0/16"));
    assert!(!refused("172.20.0.0/16", "172.21.0.0/16"));
    assert!(refused("192.168.0.0/16", "10.1.0.0/16"));
    assert!(refused("203.0.113.0/24", "10.1.0.0/16"));
    assert!(refused("203.0.113.0/24", "198.19.0.0/16"));
    assert!(!refused("203.0.113.0/24", "100.64.0.0/16"));
    assert!(refused("198.19.0.0/16", "10.1.0.0/16"));
    assert!(!refused("198.19.0.0/16", "100.64.0.0/16"));
}

#[test]
fn implicit_objects_and_cross_vpc_mistakes_are_read_as_documented() {
    // A VPC's own `default` NACL and `default` SG are two objects, and a rule may name
    // its VPC's default group.
    let ok = "version: 1
vpcs:
  - id: v
    cidr_block: 10.0.0.0/16
    network_acls: [{ id: default, inbound: [] }]
    security_groups:
      - { id: default, inbound: [{ protocol: tcp, port_range: 22, source: default }] }
";
    assert_eq!(errors(ok), Vec::new());
    // A table named `main` is the main table: subnets without a table use it.
    let main = "version: 1
vpcs:
  - id: v
    cidr_block: 10.0.0.0/16
    internet_gateway: igw-v
    subnets: [{ id: a, cidr_block: 10.0.1.0/24 }]
    route_tables:
      - { id: main, routes: [{ destination: 0.0.0.0/0, target: igw-v }] }
";
    let snap = control::load_text(main, 1).unwrap().1;
    assert_eq!(snap.topo.route_tables.len(), 1);
    // A flow log of one VPC cannot cover another's resource.
    let two = "version: 1
vpcs:
  - id: v1
    cidr_block: 10.1.0.0/16
    flow_logs: [{ id: fl, resource: v2, destination: x.log }]
  - id: v2
    cidr_block: 10.2.0.0/16
";
    has(
        &errors(two),
        5,
        "vpcs[0].flow_logs[0].resource",
        "another VPC",
    );
    // No VPC at all, written as an empty list.
    has(&errors("version: 1\nvpcs: []\n"), 1, "", "at least one VPC");
    // The launch pool lies on the internet, not in a VPC.
    let pool = "version: 1
vpcs:
  - { id: v, cidr_block: 10.0.0.0/16 }
internet:
  public_ip_pool: 10.0.200.0/24
";
    has(&errors(pool), 5, "internet.public_ip_pool", "overlaps");
}

/// A lab of one instance, `i-1` on line 7, with `inst` added to its fields.
fn one_instance(inst: &str) -> String {
    format!(
        "version: 1\nvpcs:\n  - id: v\n    cidr_block: 10.0.0.0/16\n    subnets: [{{ id: a, cidr_block: 10.0.1.0/24 }}]\n    instances:\n      - {{ id: i-1, subnet: a, private_ip: 10.0.1.10{inst} }}\n"
    )
}

#[test]
fn start_up_fields_are_checked() {
    let lab = one_instance;
    // A NAT instance forwards for others: its source/destination check must be off.
    has(
        &errors(&lab(", image: nat")),
        7,
        "vpcs[0].instances[0].image",
        "source_dest_check: false",
    );
    assert_eq!(
        errors(&lab(", image: nat, source_dest_check: false")),
        Vec::new()
    );
    has(
        &errors(&lab(", image: appliance")),
        7,
        "vpcs[0].instances[0].image",
        "not an image",
    );
    // User data: AWS's 16 KB, and more than the 4 KiB other values may have.
    let script = "x".repeat(10_000);
    assert_eq!(
        errors(&lab(&format!(", user_data: \"{script}\""))),
        Vec::new()
    );
    let script = "x".repeat(17_000);
    has(
        &errors(&lab(&format!(", user_data: \"{script}\""))),
        7,
        "vpcs[0].instances[0].user_data",
        "16384 bytes",
    );
}

#[test]
fn a_router_instance_with_its_source_dest_check_left_on_is_refused() {
    // R-ADDR-SRCDST: AWS drops what an instance forwards for others while its check is on.
    let errs = errors(&one_instance(", image: router"));
    has(
        &errs,
        7,
        "vpcs[0].instances[0].image",
        "`image: router` forwards for others",
    );
    has(
        &errs,
        7,
        "vpcs[0].instances[0].image",
        "add `source_dest_check: false`",
    );
    assert_eq!(
        errors(&one_instance(", image: router, source_dest_check: false")),
        Vec::new()
    );
}
