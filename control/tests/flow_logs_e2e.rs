//! End to end: flow-log files after real traffic (semantics.md §12). Needs root.

mod common;

use common::{e2e, iperf, received_bytes, unique_prefix, LabRun};

#[test]
fn flow_log_files_hold_the_traffic_that_crossed_the_lab() {
    if !e2e("flow_log_files_hold_the_traffic_that_crossed_the_lab") {
        return;
    }
    // The lab in a scratch directory: its relative destinations land there.
    let dir = std::env::temp_dir().join(format!("vpcd-fl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lab_file = dir.join("lab.yaml");
    std::fs::write(&lab_file, include_str!("labs/flow_logs.yaml")).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());

    let lab = LabRun::up(Some(lab_file.to_str().unwrap()), &unique_prefix("fl"), &[]);
    let _server = lab.spawn("web-1", &["iperf3", "-s"]);
    let r = iperf(&lab, "app-1", "10.0.1.10", &["-t", "1"]);
    assert!(received_bytes(&r) > 1e5, "{r}");
    // Refused: SSH from the internet to web-1.
    let _ = lab.exec(
        "inet-1",
        &[
            "timeout",
            "2",
            "bash",
            "-c",
            "echo > /dev/tcp/198.51.100.10/22",
        ],
    );
    // Through the NAT gateway and the IGW.
    lab.ping("app-1", "203.0.113.10", &[]);
    lab.ping("inet-1", "198.51.100.10", &[]);
    // Router traffic is never logged.
    lab.ping("web-1", "10.0.1.1", &[]);
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);

    let read =
        |name: &str| std::fs::read_to_string(dir.join("logs").join(name)).unwrap_or_default();
    let all = read("all.log");
    // A line holding every wanted word as a whole field.
    let has = |text: &str, want: &[&str]| {
        text.lines()
            .any(|l| want.iter().all(|w| l.split_whitespace().any(|f| f == *w)))
    };
    // TCP 5201 both ways, at both ENIs, accepted.
    assert!(
        has(
            &all,
            &["eni-app-1", "10.0.2.10", "10.0.1.10", "5201", "ACCEPT"]
        ),
        "{all}"
    );
    assert!(
        has(
            &all,
            &["eni-web-1", "10.0.1.10", "10.0.2.10", "5201", "ACCEPT"]
        ),
        "{all}"
    );
    // The refused SSH, at web-1, with the private destination.
    assert!(
        has(
            &all,
            &["eni-web-1", "203.0.113.10", "10.0.1.10", "22", "REJECT"]
        ),
        "{all}"
    );
    // Through NAT: app-1's ping out, and the NAT gateway's ENI records too.
    assert!(
        has(&all, &["eni-app-1", "10.0.2.10", "203.0.113.10", "ACCEPT"]),
        "{all}"
    );
    assert!(has(&all, &["eni-nat-a", "ACCEPT"]), "{all}");
    // Through the IGW: inet-1's ping in, at web-1, to its private address.
    assert!(
        has(
            &all,
            &["eni-web-1", "203.0.113.10", "10.0.1.10", "1", "ACCEPT"]
        ),
        "{all}"
    );
    // Nothing for the router.
    assert!(!all.contains(" 10.0.1.1 "), "{all}");
    // The REJECT-only log of web-1 holds no ACCEPT.
    let reject = read("reject.log");
    assert!(reject.contains("REJECT OK"), "{reject}");
    assert!(!reject.contains("ACCEPT"), "{reject}");
    // The custom log covers only the private subnet, with its fields.
    let custom = read("custom.log");
    // Its first line names the fields, as AWS's files in S3 do.
    let mut lines = custom.lines();
    assert_eq!(
        lines.next(),
        Some("version vpc-id subnet-id instance-id interface-id flow-direction tcp-flags type pkt-srcaddr pkt-dstaddr region az-id action"),
    );
    assert!(lines.all(|l| l.contains(" private-a ")), "{custom}");
    assert!(
        has(&custom, &["eni-app-1", "egress", "IPv4", "ACCEPT"]),
        "{custom}"
    );
    assert!(
        has(&custom, &["eni-app-1", "ingress", "IPv4", "ACCEPT"]),
        "{custom}"
    );
    // The reader summarises.
    let out = std::process::Command::new(common::VPCD)
        .args([
            "flowlogs",
            dir.join("logs/all.log").to_str().unwrap(),
            "--action",
            "REJECT",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("203.0.113.10") && report.contains("REJECT"),
        "{report}"
    );
}
