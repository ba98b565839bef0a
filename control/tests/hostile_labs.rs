//! Lab files written to hurt (issue 22): each reproducer that crashed vpcd or made it
//! take seconds and gigabytes now gets a clear error, in bounded time and memory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use control::diag::{count, PER_PLACE};

/// What `vpcd check` left: exit code, stderr, and its peak resident set in KiB.
struct Checked {
    code: i32,
    stderr: String,
    peak_kib: u64,
}

/// Runs `vpcd check FILE`, reading its peak resident set (`VmHWM`, the kernel's
/// high-water mark of the process's memory) every millisecond until it exits; only
/// growth in its last millisecond could be missed. Not wait4's `ru_maxrss`: that is at
/// least the spawning process's own peak (the child's memory before exec is this test
/// binary's), so it measures the tests running beside this one.
fn check_file(path: &Path) -> Checked {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vpcd"))
        .arg("check")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vpcd");
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let status = loop {
        if let Some(kib) = vm_hwm_kib(&status_file) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait for vpcd") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    Checked {
        code: status.code().unwrap_or(-1),
        stderr: reader.join().unwrap(),
        peak_kib,
    }
}

/// `VmHWM` of a /proc status file, in KiB; none once the process has exited.
fn vm_hwm_kib(status_file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_file).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vpcd-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn vpcd_check(text: &str, name: &str) -> Checked {
    let path = scratch(name);
    std::fs::write(&path, text).unwrap();
    let checked = check_file(&path);
    let _ = std::fs::remove_file(&path);
    checked
}

/// A lab header, then `body` under `vpcs:`.
fn lab(body: &str) -> String {
    format!("version: 1\nvpcs:\n{body}")
}

/// `n` copies of one subnet in one VPC: every copy but the first overlaps the first.
fn copies(n: usize) -> String {
    let mut body = String::from("- id: vpc-a\n  cidr_block: 10.0.0.0/16\n  subnets:\n");
    for i in 0..n {
        body.push_str(&format!("  - {{ id: s-{i}, cidr_block: 10.0.1.0/24 }}\n"));
    }
    lab(&body)
}

// Peak resident set of `vpcd check` (the debug build the tests run), in KiB: 2 to 4
// times what was measured on the 2-core machine, where checking a one-line lab peaks at
// 11 MiB.

/// 4,000 copies of one subnet (175 KB) peaked at 18 MiB.
const COPIES_PEAK_KIB: u64 = 64 << 10;
/// A file at the 16 MiB limit (a comment and no lab: the text and its line index)
/// peaked at 27 MiB; one over it, by one byte or by 240 MiB, at 26 MiB: it is read no
/// further than the limit (a 256 MiB file peaked at 265 MiB before).
const LIMIT_PEAK_KIB: u64 = 64 << 10;
/// The largest file that is read whole: 16 MiB of subnet copies (367,136 of them)
/// peaked at 660 MiB, the YAML tree and the decoded lab at about 40 times the text.
const DENSE_AT_LIMIT_PEAK_KIB: u64 = 1536 << 10;

fn errors(text: &str) -> Vec<control::Diagnostic> {
    control::check_text(text).expect_err("the lab must be refused")
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
        let Checked { code, stderr, .. } = vpcd_check(&text, "deep.yaml");
        assert_eq!(code, 1, "exit code (134 was the abort): {stderr}");
        assert!(stderr.contains("deep.yaml:3:"), "{stderr}");
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
    let text = copies(4_000);
    let errs = errors(&text);
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
    let checked = vpcd_check(&text, "copies.yaml");
    assert_eq!(checked.code, 1);
    let err = &checked.stderr;
    assert!(
        err.trim_end().ends_with("copies.yaml: 3999 error(s)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), PER_PLACE + 2, "{err}");
    assert!(
        checked.peak_kib < COPIES_PEAK_KIB,
        "vpcd check of 4,000 copies peaked at {} KiB, over the bound of {COPIES_PEAK_KIB}",
        checked.peak_kib
    );
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

/// A file of `len` bytes: a lab with no VPC and a comment that fills the rest.
fn commented(len: usize) -> String {
    let (head, tail) = ("version: 1\n# ", "\nvpcs: []\n");
    format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
}

#[test]
fn checking_a_file_at_or_over_the_size_limit_stays_under_its_memory_bound() {
    let max = control::yaml::MAX_LAB_BYTES;
    let at = vpcd_check(&commented(max), "at.yaml");
    assert_eq!(at.code, 1, "{}", at.stderr);
    assert!(
        at.stderr.contains("needs at least one VPC"),
        "{}",
        at.stderr
    );
    assert!(
        at.peak_kib < LIMIT_PEAK_KIB,
        "a 16 MiB file peaked at {} KiB, over the bound of {LIMIT_PEAK_KIB}",
        at.peak_kib
    );
    let over = vpcd_check(&commented(max + 1), "over.yaml");
    assert_eq!(over.code, 1, "{}", over.stderr);
    assert!(over.stderr.contains("at most 16 MiB"), "{}", over.stderr);
    // 256 MiB of NUL bytes, sparse on disk: read no further than the limit.
    let huge = scratch("huge.yaml");
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(256 << 20))
        .unwrap();
    let far = check_file(&huge);
    let _ = std::fs::remove_file(&huge);
    assert_eq!(far.code, 1, "{}", far.stderr);
    assert!(far.stderr.contains("at most 16 MiB"), "{}", far.stderr);
    for (what, c) in [("one byte", &over), ("240 MiB", &far)] {
        assert!(
            c.peak_kib < LIMIT_PEAK_KIB,
            "a file over the limit by {what} peaked at {} KiB, over the bound of {LIMIT_PEAK_KIB}",
            c.peak_kib
        );
    }
}

#[test]
fn checking_sixteen_mib_of_subnet_copies_stays_under_its_memory_bound() {
    // The densest lab the size limit lets through: every line a subnet, every subnet
    // an overlap to report.
    let mut text = copies(0);
    let mut i = 0;
    loop {
        let line = format!("  - {{ id: s-{i}, cidr_block: 10.0.1.0/24 }}\n");
        if text.len() + line.len() > control::yaml::MAX_LAB_BYTES {
            break;
        }
        text.push_str(&line);
        i += 1;
    }
    let checked = vpcd_check(&text, "dense.yaml");
    drop(text);
    assert_eq!(checked.code, 1);
    assert!(
        checked
            .stderr
            .trim_end()
            .ends_with(&format!("dense.yaml: {} error(s)", i - 1)),
        "{}",
        checked.stderr
    );
    assert!(
        checked.peak_kib < DENSE_AT_LIMIT_PEAK_KIB,
        "vpcd check of 16 MiB of subnet copies peaked at {} KiB, over the bound of {DENSE_AT_LIMIT_PEAK_KIB}",
        checked.peak_kib
    );
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
