//! `vpcd fault` end to end (faults.md) on the HA lab: each action started on the running
//! router, its effect seen with real traffic, stopped (or ended by its duration), and the
//! lab as before; all the while a TCP stream through the other zone never stalls. Needs
//! root (see `common::e2e`).

mod common;

use std::process::Output;

use common::{e2e, unique_prefix, LabRun};

const HA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/ha-nat-per-az.yaml");

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

/// Starts a fault; returns its id.
fn start(lab: &LabRun, args: &[&str]) -> String {
    let mut all = vec!["fault", "start"];
    all.extend(args);
    let o = vpcd(lab, &all);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.split_whitespace().next().unwrap().to_string()
}

fn stop(lab: &LabRun, id: &str) {
    let o = vpcd(lab, &["fault", "stop", id]);
    assert!(o.status.success(), "{}", text(&o));
}

fn pings(lab: &LabRun, from: &str, to: &str) -> bool {
    lab.exec(from, &["ping", "-c", "1", "-W", "1", to])
        .status
        .success()
}

#[test]
fn each_fault_acts_on_real_traffic_and_stopping_it_restores_the_lab() {
    if !e2e("each_fault_acts_on_real_traffic_and_stopping_it_restores_the_lab") {
        return;
    }
    let lab = LabRun::up(Some(HA), &unique_prefix("fa"), &[]);
    // The stream elsewhere: app-b to the internet through its own zone's NAT gateway,
    // reported every half second, for as long as the faults below take.
    let _server = lab.spawn("inet-1", &["iperf3", "-s"]);
    let _ = common::iperf(&lab, "app-b", "203.0.113.10", &["-t", "1"]);
    let stream = lab.spawn(
        "app-b",
        &[
            "iperf3",
            "-c",
            "203.0.113.10",
            "-t",
            "14",
            "-i",
            "0.5",
            "-b",
            "200M",
        ],
    );
    assert!(pings(&lab, "app-b", "10.30.10.10"));

    // aws:ec2:stop-instances: app-a is unreachable and its eth0 is down; then back.
    let f = start(&lab, &["aws:ec2:stop-instances", "app-a"]);
    assert!(!pings(&lab, "app-b", "10.30.10.10"));
    let link = lab.exec("app-a", &["ip", "-o", "link", "show", "eth0"]);
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("state DOWN"),
        "{link:?}"
    );
    let status = text(&vpcd(&lab, &["status"]));
    assert!(status.contains("(stopped by a fault)"), "{status}");
    let live = text(&vpcd(
        &lab,
        &["trace", "--live", "--from", "app-b", "--to", "app-a"],
    ));
    assert!(live.contains(&format!("fault {f} is active")), "{live}");
    stop(&lab, &f);
    assert!(pings(&lab, "app-b", "10.30.10.10"));
    assert!(
        pings(&lab, "app-a", "203.0.113.10"),
        "app-a's routes came back"
    );

    // aws:network:disrupt-connectivity on private-a: nothing crosses its boundary.
    let f = start(&lab, &["aws:network:disrupt-connectivity", "private-a"]);
    assert!(!pings(&lab, "app-b", "10.30.10.10"));
    assert!(!pings(&lab, "app-a", "203.0.113.10"));
    stop(&lab, &f);
    assert!(pings(&lab, "app-b", "10.30.10.10"));

    // aws:ec2:nat-gateway-failure with a duration: it ends by itself.
    let _f = start(
        &lab,
        &["aws:ec2:nat-gateway-failure", "nat-a", "--duration", "2s"],
    );
    assert!(!pings(&lab, "app-a", "203.0.113.10"));
    std::thread::sleep(std::time::Duration::from_millis(3000));
    let list = text(&vpcd(&lab, &["fault", "list"]));
    assert!(list.contains("no active faults"), "{list}");
    assert!(pings(&lab, "app-a", "203.0.113.10"));

    // aws:az:power-interruption of us-east-1a: app-s (zone b, zone a's NAT gateway) loses
    // the internet, app-b keeps it.
    let f = start(&lab, &["aws:az:power-interruption", "us-east-1a"]);
    assert!(!pings(&lab, "app-s", "203.0.113.10"));
    assert!(!pings(&lab, "app-b", "10.30.10.10"));
    stop(&lab, &f);
    assert!(pings(&lab, "app-s", "203.0.113.10"));

    // `fault stop --all`: two faults at once (zone a's, so the stream through zone b
    // goes on), both stopped, the lab as before.
    let instance = start(&lab, &["aws:ec2:stop-instances", "app-a"]);
    let nat = start(&lab, &["aws:ec2:nat-gateway-failure", "nat-a"]);
    assert!(!pings(&lab, "app-b", "10.30.10.10"));
    assert!(!pings(&lab, "app-s", "203.0.113.10"));
    let o = vpcd(&lab, &["fault", "stop", "--all"]);
    assert!(o.status.success(), "{}", text(&o));
    let stopped = String::from_utf8_lossy(&o.stdout).into_owned();
    for f in [&instance, &nat] {
        assert!(stopped.contains(&format!("stopped {f} ")), "{stopped}");
    }
    let list = text(&vpcd(&lab, &["fault", "list"]));
    assert!(list.contains("no active faults"), "{list}");
    assert!(pings(&lab, "app-b", "10.30.10.10"));
    assert!(pings(&lab, "app-s", "203.0.113.10"));
    assert!(pings(&lab, "app-a", "203.0.113.10"));

    // Bad requests: exit 2, nothing changed.
    for bad in [
        &["fault", "start", "aws:ec2:stop-instances", "nat-a"][..],
        &["fault", "start", "aws:nothing", "app-a"],
        &["fault", "stop", "f-99"],
    ] {
        let o = vpcd(&lab, bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", text(&o));
    }
    assert!(text(&vpcd(&lab, &["fault", "list"])).contains("no active faults"));

    // The stream through zone b never stalled: every half-second interval moved data.
    let out = stream.output(30);
    let intervals: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("sec") && l.contains("bits/sec") && !l.contains("sender"))
        .filter(|l| !l.contains("receiver"))
        .collect();
    assert!(intervals.len() >= 20, "{out}");
    for l in &intervals {
        assert!(!l.contains(" 0.00 Bytes"), "a stalled interval: {l}\n{out}");
    }
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    assert!(common::dropped(&stopped.stdout, "FAULT_DISRUPTED") > 0);
    assert!(common::dropped(&stopped.stdout, "ROUTE_BLACKHOLE") > 0);
}
