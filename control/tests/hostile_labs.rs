//! Lab files written to hurt (issue 22): each reproducer that crashed vpcd or made it
//! take seconds and gigabytes now gets a clear error, in bounded time and memory.

use std::path::PathBuf;
use std::process::Command;

use control::diag::{count, PER_PLACE};

fn vpcd_check(text: &str, name: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("vpcd-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vpcd"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("run vpcd");
    let _ = std::fs::remove_file(&path);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn errors(text: &str) -> Vec<control::Diagnostic> {
    control::check_text(text).expect_err("the lab must be refused")
}

/// A lab header, then `body` under `vpcs:`.
fn lab(body: &str) -> String {
    format!("version: 1\nvpcs:\n{body}")
}

#[test]
fn deeply_nested_block_sequences_are_refused_not_a_stack_overflow() {
    // The reproducer: `- - - … x`, 20,000 levels on one line (40 KB); 5,000 levels
    // killed the running router through `apply`.
    for depth in [5_000, 20_000] {
        let text = lab(&format!("{}x\n", "- ".repeat(depth)));
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].at.line, 3);
        assert!(errs[0].message.contains("nest more than"), "{errs:?}");
        let (code, err) = vpcd_check(&text, "deep.yaml");
        assert_eq!(code, 1, "exit code (134 was the abort): {err}");
        assert!(err.contains("deep.yaml:3:"), "{err}");
    }
}

#[test]
fn deeply_nested_block_mappings_and_flow_collections_are_refused() {
    let mut text = String::from("version: 1\nvpcs:\n");
    for i in 0..3_000 {
        text.push_str(&" ".repeat(i));
        text.push_str("a:\n");
    }
    let errs = errors(&text);
    assert!(errs[0].message.contains("nest more than"), "{errs:?}");
    let flow = lab(&format!("{}{}\n", "[".repeat(10_000), "]".repeat(10_000)));
    let errs = errors(&flow);
    assert_eq!(errs.len(), 1, "{errs:?}");
}

#[test]
fn nesting_as_deep_as_the_format_uses_is_accepted() {
    // An endpoint policy's allow list is the deepest the format goes.
    let text = r#"
version: 1
vpcs:
- id: vpc-a
  cidr_block: 10.0.0.0/16
  subnets: [{ id: a, cidr_block: 10.0.1.0/24 }]
  route_tables: [{ id: rtb-a, routes: [] }]
  endpoints:
  - id: vpce-s3
    type: gateway
    service: s3
    route_tables: [rtb-a]
    policy: { allow: [{ destination: 198.18.0.10/32, port_range: 443 }] }
services:
- { name: s3, prefix_list: pl-s3, cidr_blocks: [198.18.0.0/24], hosts: [{ id: s3-1, ipv4: 198.18.0.10 }] }
"#;
    control::check_text(text).expect("valid");
}

#[test]
fn four_thousand_copies_of_one_subnet_give_a_bounded_report() {
    let mut body = String::from("- id: vpc-a\n  cidr_block: 10.0.0.0/16\n  subnets:\n");
    for i in 0..4_000 {
        body.push_str(&format!("  - {{ id: s-{i}, cidr_block: 10.0.1.0/24 }}\n"));
    }
    let errs = errors(&lab(&body));
    // Every copy but the first overlaps: 3,999 errors reported, PER_PLACE of them shown
    // and one line that sums up the rest.
    assert_eq!(count(&errs), 3_999);
    assert_eq!(errs.len(), PER_PLACE + 1);
    let summary = errs.iter().find(|d| d.hidden > 0).expect("a summary line");
    assert_eq!(summary.hidden, 3_999 - PER_PLACE);
    assert!(
        summary.message.contains("vpcs[].subnets[].cidr_block"),
        "{summary:?}"
    );
    let (code, err) = vpcd_check(&lab(&body), "copies.yaml");
    assert_eq!(code, 1);
    assert!(
        err.trim_end().ends_with("copies.yaml: 3999 error(s)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), PER_PLACE + 2, "{err}");
}

#[test]
fn a_repeated_mistake_does_not_hide_the_others() {
    let mut body = String::from("- id: vpc-a\n  cidr_block: 10.0.0.0/16\n  subnets:\n");
    for i in 0..500 {
        body.push_str(&format!(
            "  - {{ id: s-{i}, cidr_block: 10.0.{i}.0/24, route_table: rtb-nowhere }}\n"
        ));
    }
    body.push_str("  instances:\n  - { id: web-1, subnet: s-1, private_ip: 10.0.1.1 }\n");
    let errs = errors(&lab(&body));
    assert!(errs
        .iter()
        .any(|d| d.at.path.contains("instances[0].private_ip")));
    assert!(errs.iter().any(|d| d.hidden > 0));
}

#[test]
fn overlapping_subnets_are_found_as_a_pairwise_check_finds_them() {
    // Random /24 to /28 subnets in 10.0.0.0/20: the sweep must report an overlap
    // exactly when some pair overlaps, and only true overlaps.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..200 {
        let n = 2 + next() % 12;
        let mut nets = Vec::new();
        for _ in 0..n {
            let len = 24 + (next() % 5) as u32;
            let size = 1u32 << (32 - len);
            let base = 0x0a00_0000 + (next() as u32 % (1 << 12)) / size * size;
            nets.push((base, base + size - 1, len));
        }
        let mut body = String::from("- id: vpc-a\n  cidr_block: 10.0.0.0/16\n  subnets:\n");
        for (i, (b, _, len)) in nets.iter().enumerate() {
            let a = std::net::Ipv4Addr::from(*b);
            body.push_str(&format!("  - {{ id: s-{i}, cidr_block: {a}/{len} }}\n"));
        }
        let overlap = |i: usize, j: usize| nets[i].0 <= nets[j].1 && nets[j].0 <= nets[i].1;
        let any = (0..nets.len()).any(|i| (0..i).any(|j| overlap(i, j)));
        let reported: Vec<(usize, String)> = match control::check_text(&lab(&body)) {
            Ok(_) => Vec::new(),
            Err(d) => d
                .iter()
                .filter(|d| d.message.contains("overlaps subnet"))
                .map(|d| {
                    let i = d.at.path.split(['[', ']']).nth(3).unwrap().parse().unwrap();
                    (i, d.message.clone())
                })
                .collect(),
        };
        assert_eq!(any, !reported.is_empty(), "{nets:?} {reported:?}");
        for (i, message) in reported {
            let j: usize = message
                .split("subnet `s-")
                .nth(1)
                .and_then(|r| r.split('`').next())
                .and_then(|n| n.parse().ok())
                .unwrap();
            assert!(j < i && overlap(i, j), "{nets:?}: {message}");
        }
    }
}

#[test]
fn a_lab_over_the_size_limit_is_refused_at_once() {
    let big = format!(
        "version: 1\n# {}\nvpcs: []\n",
        "x".repeat(control::yaml::MAX_LAB_BYTES)
    );
    let errs = errors(&big);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("at most 16 MiB"), "{errs:?}");
}

#[test]
fn long_values_are_refused_and_not_echoed() {
    let long_desc = "d".repeat(300);
    let text = lab(&format!(
        "- id: vpc-a\n  cidr_block: 10.0.0.0/16\n  security_groups:\n  - {{ id: sg-a, description: {long_desc} }}\n"
    ));
    let errs = errors(&text);
    assert!(
        errs.iter().any(|d| d.message.contains("at most 255")),
        "{errs:?}"
    );
    // A 20 MB description used to be applied; any value over 4096 bytes is refused
    // without being copied into the error.
    let huge = "d".repeat(1 << 20);
    let text = lab(&format!(
        "- id: vpc-a\n  cidr_block: 10.0.0.0/16\n  security_groups:\n  - {{ id: sg-a, description: {huge} }}\n"
    ));
    let errs = errors(&text);
    assert!(errs.iter().any(|d| d.message.contains("at most 4096")));
    // Unknown keys of any length (YAML takes up to 1024 characters) are not echoed
    // whole either.
    for key in [huge.as_str(), &huge[..1000]] {
        let text = lab(&format!(
            "- id: vpc-a\n  cidr_block: 10.0.0.0/16\n  x{key}: 1\n"
        ));
        let errs = errors(&text);
        for d in &errs {
            assert!(d.message.len() + d.fix.len() < 1_000, "{d:?}");
            assert!(d.at.path.len() < 200, "{d:?}");
        }
    }
}

#[test]
fn an_unclosed_bracket_is_reported_where_it_opened() {
    let text = "version: 1\nvpcs:\n- id: vpc-a\n  subnets: [ { id: x,\n\n\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].at.line, errs[0].at.col), (4, 14), "{errs:?}");
    assert!(errs[0].message.contains("never closed"), "{errs:?}");
}
