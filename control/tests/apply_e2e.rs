//! End to end: live apply, status and stats on a running lab (issue 9). Needs root (see
//! `common::e2e`).

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use common::{e2e, iperf, received_bytes, unique_prefix, LabRun};

/// A scratch copy of a lab file, removed on drop.
struct LabFile(PathBuf);

impl LabFile {
    fn new(tag: &str, text: &str) -> LabFile {
        let p = std::env::temp_dir().join(format!("vpcd-{}-{tag}.yaml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        LabFile(p)
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for LabFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn vpcd(lab: &LabRun, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--prefix", lab.prefix.as_str()]);
    common::vpcd_with_deadline(&all, 20)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const DEFAULT: &str = include_str!("../../configs/default.yaml");

/// The default lab with one more (unused) inbound rule: a real change, nothing else.
fn variant(i: usize) -> String {
    DEFAULT.replace(
        "          - { protocol: tcp, port_range: 80, source: 0.0.0.0/0 }",
        &format!(
            "          - {{ protocol: tcp, port_range: 80, source: 0.0.0.0/0 }}\n          - {{ protocol: tcp, port_range: {}, source: 192.0.2.0/24 }}",
            10_000 + i
        ),
    )
}

#[test]
fn a_tcp_stream_and_a_ping_cross_a_hundred_applies_untouched() {
    if !e2e("a_tcp_stream_and_a_ping_cross_a_hundred_applies_untouched") {
        return;
    }
    let file = LabFile::new("hundred", DEFAULT);
    let lab = LabRun::up(Some(file.path()), &unique_prefix("ap"), &[]);
    let _server = lab.spawn("app-1", &["iperf3", "-s"]);
    // Let the server listen before the stream starts.
    let _ = iperf(&lab, "web-1", "10.0.2.10", &["-t", "1"]);
    let stream = lab.spawn("web-1", &["iperf3", "-c", "10.0.2.10", "-t", "8"]);
    let ping = lab.spawn(
        "web-1",
        &["ping", "-c", "100", "-i", "0.05", "-W", "1", "203.0.113.10"],
    );
    for i in 0..100 {
        file.write(&variant(i));
        let o = vpcd(&lab, &["apply", file.path()]);
        assert!(o.status.success(), "apply {i}: {}", text(&o));
        assert!(
            text(&o).contains(&format!("generation {}", i + 2)),
            "{}",
            text(&o)
        );
    }
    let ping = ping.output(30);
    assert!(
        ping.contains("100 received") && ping.contains(" 0% packet loss"),
        "{ping}"
    );
    let stream = stream.output(30);
    assert!(received_bytes(&stream) > 1e8, "{stream}");
    let status = text(&vpcd(&lab, &["status"]));
    assert!(status.contains("generation 101"), "{status}");
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
}

#[test]
fn rule_and_route_changes_take_effect_and_bad_files_change_nothing() {
    if !e2e("rule_and_route_changes_take_effect_and_bad_files_change_nothing") {
        return;
    }
    // iperf3 from inet-1 only: a rule for one address keeps the flow tracked (a rule for
    // 0.0.0.0/0 with sg-web's all-open outbound would leave it untracked, R-SG-UNTRACKED,
    // and removing the rule would cut it: see the next test).
    let tracked = DEFAULT.replace(
        "          - { protocol: tcp, port_range: 5201, source: 0.0.0.0/0 }\n",
        "          - { protocol: tcp, port_range: 5201, source: 203.0.113.10/32 }\n",
    );
    assert_ne!(tracked, DEFAULT);
    let file = LabFile::new("rules", &tracked);
    let lab = LabRun::up(Some(file.path()), &unique_prefix("ar"), &[]);
    let _server = lab.spawn("web-1", &["iperf3", "-s"]);
    let _ = iperf(&lab, "inet-1", "198.51.100.10", &["-t", "1"]);

    // R-SG-CHANGE: a stream opened under the old rules goes on after its rule is
    // removed; a new connection is refused at once.
    let stream = lab.spawn("inet-1", &["iperf3", "-c", "198.51.100.10", "-t", "4"]);
    std::thread::sleep(Duration::from_millis(1500));
    let connect = |lab: &LabRun| {
        lab.exec(
            "inet-1",
            &[
                "timeout",
                "2",
                "bash",
                "-c",
                "echo > /dev/tcp/198.51.100.10/5201",
            ],
        )
        .status
        .code()
    };
    // While the rule stands, the same bare connect gets through.
    assert_eq!(connect(&lab), Some(0));
    file.write(&tracked.replace(
        "          - { protocol: tcp, port_range: 5201, source: 203.0.113.10/32 }\n",
        "",
    ));
    let o = vpcd(&lab, &["apply", file.path()]);
    assert!(o.status.success(), "{}", text(&o));
    // A bare connect (the busy iperf3 server would turn away an iperf3 client even if
    // the SG let it in): the SYN is dropped, so it hangs until `timeout` ends it (124).
    assert_eq!(
        connect(&lab),
        Some(124),
        "a new connection passed the removed rule"
    );
    let stream = stream.output(20);
    assert!(
        received_bytes(&stream) > 1e6,
        "the tracked stream was cut:\n{stream}"
    );

    // A blackhole route stops traffic at the next packet.
    lab.ping("web-1", "203.0.113.10", &[]);
    file.write(&DEFAULT.replace(
        "          - { destination: 0.0.0.0/0, target: igw-lab }",
        "          - { destination: 0.0.0.0/0, target: igw-lab }\n          - { destination: 203.0.113.10/32, target: blackhole }",
    ));
    assert!(vpcd(&lab, &["apply", file.path()]).status.success());
    lab.ping_fails("web-1", "203.0.113.10", &[]);

    // An invalid file is refused with check's errors, and nothing changes.
    let before = text(&vpcd(&lab, &["status"]));
    file.write("version: 1\nvpcs:\n  - id: vpc-lab\n    cidr_blok: 10.0.0.0/16\n");
    let o = vpcd(&lab, &["apply", file.path()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o);
    assert!(
        err.contains("did you mean `cidr_block`") && err.contains("unchanged"),
        "{err}"
    );
    let after = text(&vpcd(&lab, &["status"]));
    let generation = |s: &str| {
        s.split("generation ").nth(1).map(|r| {
            r.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        })
    };
    assert_eq!(generation(&before), generation(&after));
    lab.ping_fails("web-1", "203.0.113.10", &[]);
    lab.ping("web-1", "10.0.2.10", &[]);

    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    assert!(common::dropped(&stopped.stdout, "ROUTE_BLACKHOLE") > 0);
}

#[test]
fn an_untracked_stream_is_cut_at_once_when_its_rule_goes() {
    // R-SG-UNTRACKED, R-SG-CHANGE: sg-web admits TCP 5201 from 0.0.0.0/0 and opens every
    // port outbound, so AWS keeps no state for the stream; with the rule gone, its very
    // next packets are refused (a tracked stream would go on, as above).
    if !e2e("an_untracked_stream_is_cut_at_once_when_its_rule_goes") {
        return;
    }
    let file = LabFile::new("untracked", DEFAULT);
    let lab = LabRun::up(Some(file.path()), &unique_prefix("au"), &[]);
    let _server = lab.spawn("web-1", &["iperf3", "-s"]);
    let _ = iperf(&lab, "inet-1", "198.51.100.10", &["-t", "1"]);
    let dropped = |lab: &LabRun| common::dropped(&text(&vpcd(lab, &["stats"])), "SG_INGRESS");
    let stream = lab.spawn(
        "inet-1",
        &["timeout", "8", "iperf3", "-c", "198.51.100.10", "-t", "4"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let before = dropped(&lab);
    file.write(&DEFAULT.replace(
        "          - { protocol: tcp, port_range: 5201, source: 0.0.0.0/0 }\n",
        "",
    ));
    assert!(vpcd(&lab, &["apply", file.path()]).status.success());
    let mut after = before;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        after = dropped(&lab);
        if after > before {
            break;
        }
    }
    let out = stream.output(20);
    assert!(
        after > before,
        "the untracked stream's packets still pass: SG_INGRESS {before} -> {after}\n{out}"
    );
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
}

#[test]
fn stats_count_exactly_what_was_sent() {
    if !e2e("stats_count_exactly_what_was_sent") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("as"), &["--metrics", "127.0.0.1:0"]);
    lab.ping("web-1", "10.0.2.10", &[]);
    // Published every 100 ms.
    std::thread::sleep(Duration::from_millis(400));
    let stats = text(&vpcd(&lab, &["stats"]));
    let row = |port: &str| -> Vec<u64> {
        let line = stats
            .lines()
            .find(|l| l.split_whitespace().next() == Some(port))
            .unwrap_or_else(|| panic!("no {port} in\n{stats}"));
        line.split_whitespace()
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect()
    };
    // ping -c 3 (common::LabRun::ping): 3 requests in at web-1, 3 replies in at app-1,
    // each 84 bytes; nothing else crossed.
    assert_eq!(row("web-1"), [3, 252, 3, 252, 0], "{stats}");
    assert_eq!(row("app-1"), [3, 252, 3, 252, 0], "{stats}");
    assert!(stats.contains("forwarded 6,"), "{stats}");
    assert!(stats.contains("2 SG flows"), "{stats}");
    let stopped = lab.stop();
    assert!(stopped.success);
}

#[test]
fn sighup_re_reads_the_lab_file() {
    if !e2e("sighup_re_reads_the_lab_file") {
        return;
    }
    let file = LabFile::new("hup", DEFAULT);
    let lab = LabRun::up(Some(file.path()), &unique_prefix("ah"), &[]);
    file.write(&variant(1));
    // SAFETY: a signal to the vpcd this test started.
    unsafe { libc::kill(lab.pid(), libc::SIGHUP) };
    let mut applied = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        if text(&vpcd(&lab, &["status"])).contains("generation 2") {
            applied = true;
            break;
        }
    }
    assert!(applied, "SIGHUP did not apply: {}", lab.stderr());
    let stopped = lab.stop();
    assert!(stopped.success);
}

#[test]
fn an_apply_adds_and_removes_instances_with_their_namespaces() {
    if !e2e("an_apply_adds_and_removes_instances_with_their_namespaces") {
        return;
    }
    let file = LabFile::new("grow", DEFAULT);
    let lab = LabRun::up(Some(file.path()), &unique_prefix("ag"), &[]);
    // A new instance, written before app-1 (its port number must not shift app-1's).
    file.write(&DEFAULT.replace(
        "      - { id: app-1,",
        "      - { id: app-2, subnet: private-a, private_ip: 10.0.2.20 }\n      - { id: app-1,",
    ));
    let o = vpcd(&lab, &["apply", file.path()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(common::namespaces_with(&lab.prefix).len(), 4);
    lab.ping("app-2", "10.0.2.10", &[]);
    lab.ping("app-1", "10.0.2.20", &[]);
    lab.ping("web-1", "10.0.2.10", &[]);
    // Readdressing a running instance is refused, naming it.
    file.write(&DEFAULT.replace("private_ip: 10.0.2.10,", "private_ip: 10.0.2.11,"));
    let o = vpcd(&lab, &["apply", file.path()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("app-1"), "{}", text(&o));
    // Back to the original: app-2 and its namespace go; the rest goes on.
    file.write(DEFAULT);
    let o = vpcd(&lab, &["apply", file.path()]);
    assert!(o.status.success(), "{}", text(&o));
    let left = common::namespaces_with(&lab.prefix);
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(!left.iter().any(|n| n.ends_with("app-2")));
    lab.ping("web-1", "10.0.2.10", &[]);
    let prefix = lab.prefix.clone();
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    assert!(common::namespaces_with(&prefix).is_empty());
}

#[test]
fn trace_live_sees_the_running_routers_tracked_connections() {
    if !e2e("trace_live_sees_the_running_routers_tracked_connections") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("tl"), &[]);
    let _server = lab.spawn("app-1", &["iperf3", "-s"]);
    let _ = iperf(&lab, "web-1", "10.0.2.10", &["-t", "1"]);
    let stream = lab.spawn(
        "web-1",
        &["iperf3", "-c", "10.0.2.10", "-t", "3", "--cport", "41000"],
    );
    std::thread::sleep(Duration::from_millis(800));
    let args = [
        "trace",
        "--live",
        "--from",
        "web-1",
        "--to",
        "app-1",
        "--proto",
        "tcp",
        "--port",
        "5201",
        "--src-port",
        "41000",
    ];
    let o = vpcd(&lab, &args);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("web-1: a tracked connection exists"), "{t}");
    assert!(t.contains("app-1: a tracked connection exists"), "{t}");
    let mut other = args;
    other[11] = "41999";
    let t = text(&vpcd(&lab, &other));
    assert!(
        t.contains("web-1: no tracked connection for this flow"),
        "{t}"
    );
    let _ = stream.output(10);
    // Unreachable is a result: on stdout, exit 1, also with --json.
    for json in [false, true] {
        let mut a = vec![
            "trace", "--live", "--from", "inet-1", "--to", "web-1", "--proto", "tcp", "--port",
            "22",
        ];
        if json {
            a.push("--json");
        }
        let o = vpcd(&lab, &a);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(out.contains("SG_INGRESS"), "json {json}: {}", text(&o));
        assert!(o.stderr.is_empty(), "{}", text(&o));
    }
    // Bad input is exit 2, on stderr.
    let o = vpcd(
        &lab,
        &["trace", "--live", "--from", "nobody", "--to", "web-1"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nobody"));
    assert!(o.stdout.is_empty());
    assert!(lab.stop().success);
}
