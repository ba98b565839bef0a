//! Instance start-up end to end (faults.md): a NAT instance made by `image: nat` carries a
//! private subnet's traffic to the internet under its own public IP, and a router made by
//! `image: router` forwards what a route sends it; `user_data` runs once before `ready`
//! with its output logged, a failing script is reported with its exit code and the lab
//! still comes up, and what a script leaves running is stopped with the lab, also by
//! `vpcd down` after a crash. Needs root (see `common::e2e`).

mod common;

use common::{e2e, unique_prefix, LabRun};

const NAT_INSTANCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/nat-instance.yaml");

/// The NAT instance lab with more start-up: app-1's script leaves a daemon running (a
/// long `sleep`), bad-1's fails.
fn with_scripts() -> String {
    std::fs::read_to_string(NAT_INSTANCE).unwrap().replace(
        "      - { id: app-1, subnet: private-a, private_ip: 10.40.1.10 }",
        "      - id: app-1
        subnet: private-a
        private_ip: 10.40.1.10
        user_data: |
          #!/bin/bash
          setsid sleep 3600 &
          echo daemon $!
      - id: bad-1
        subnet: private-a
        private_ip: 10.40.1.11
        user_data: |
          echo about to fail
          exit 3",
    )
}

/// `lab` with a router instance made by `image: router` in the middle: private-a's
/// table sends dmz-a's block to rtr-1 (middlebox routing), whose own Linux stack forwards
/// it on to db-1; db-1 answers app-1 directly by the local route.
fn with_a_router(lab: String) -> String {
    lab.replace(
        "        routes: [{ destination: 0.0.0.0/0, target: nat-1 }]",
        "        routes:
          - { destination: 0.0.0.0/0, target: nat-1 }
          - { destination: 10.40.2.0/24, target: rtr-1 }",
    )
    .replace(
        "      - { id: private-a, cidr_block: 10.40.1.0/24, route_table: rtb-private }",
        "      - { id: private-a, cidr_block: 10.40.1.0/24, route_table: rtb-private }
      - { id: dmz-a, cidr_block: 10.40.2.0/24 }",
    )
    .replace(
        "    instances:\n",
        "    instances:
      - { id: rtr-1, subnet: public-a, private_ip: 10.40.0.20, security_groups: [sg-nat], source_dest_check: false, image: router }
      - { id: db-1, subnet: dmz-a, private_ip: 10.40.2.10, security_groups: [sg-nat] }\n",
    )
}

/// Whether `pid` runs (a zombie has ended: it only waits for its parent to reap it).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

#[test]
fn a_nat_instance_and_user_data_come_up_before_ready_and_go_with_the_lab() {
    if !e2e("a_nat_instance_and_user_data_come_up_before_ready_and_go_with_the_lab") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vpcd-ud-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lab.yaml");
    std::fs::write(&file, with_a_router(with_scripts())).unwrap();
    let prefix = unique_prefix("ud");
    let lab = LabRun::up(Some(file.to_str().unwrap()), &prefix, &[]);
    let map = lab.map.join("\n");
    assert!(
        map.contains("start-up nat-1: user_data ran (exit 0)"),
        "{map}"
    );
    assert!(
        map.contains("start-up bad-1: user_data FAILED with exit code 3"),
        "{map}"
    );
    assert!(
        map.contains("start-up app-1: user_data ran (exit 0)"),
        "{map}"
    );
    let log = std::fs::read_to_string(format!("/run/vpcd/{prefix}/user-data-bad-1.log")).unwrap();
    assert_eq!(log, "about to fail\n");
    let log = std::fs::read_to_string(format!("/run/vpcd/{prefix}/user-data-app-1.log")).unwrap();
    let daemon: i32 = log
        .lines()
        .find_map(|l| l.strip_prefix("daemon "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    assert!(alive(daemon));
    // The NAT instance: app-1 reaches inet-1, which sees the NAT instance's public IP.
    let capture = lab.spawn(
        "inet-1",
        &["timeout", "5", "tcpdump", "-lni", "eth0", "-c", "1", "icmp"],
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    lab.ping("app-1", "203.0.113.10", &[]);
    let seen = capture.output(10);
    assert!(seen.contains("198.51.100.50 > 203.0.113.10"), "{seen}");
    // The router instance: app-1 reaches db-1 only if rtr-1's Linux forwards.
    assert!(map.contains("start-up rtr-1: image set up"), "{map}");
    lab.ping("app-1", "10.40.2.10", &[]);
    // It fails with its instance: the private subnet's route becomes a blackhole.
    let f = common::vpcd_with_deadline(
        &[
            "fault",
            "start",
            "aws:ec2:stop-instances",
            "nat-1",
            "--prefix",
            &prefix,
        ],
        10,
    );
    assert!(f.status.success());
    lab.ping_fails("app-1", "203.0.113.10", &[]);
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    assert!(common::dropped(&stopped.stdout, "ROUTE_BLACKHOLE") > 0);
    // What app-1's script left running went with the lab.
    assert!(
        !alive(daemon),
        "the daemon user_data started outlived the lab"
    );
    common::assert_clean(&prefix);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn down_after_a_crash_stops_what_user_data_left_running() {
    if !e2e("down_after_a_crash_stops_what_user_data_left_running") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vpcd-udk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lab.yaml");
    std::fs::write(&file, with_scripts()).unwrap();
    let prefix = unique_prefix("uk");
    let lab = LabRun::up(Some(file.to_str().unwrap()), &prefix, &[]);
    let log = std::fs::read_to_string(format!("/run/vpcd/{prefix}/user-data-app-1.log")).unwrap();
    let daemon: i32 = log
        .lines()
        .find_map(|l| l.strip_prefix("daemon "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap();
    let left = lab.kill();
    assert!(alive(daemon), "a killed vpcd cannot stop it");
    let d = common::down(&prefix);
    assert!(d.status.success());
    assert!(!alive(daemon), "down left the daemon running");
    drop(left);
    common::assert_clean(&prefix);
    let _ = std::fs::remove_dir_all(&dir);
}
