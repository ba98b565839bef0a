//! End to end: several VPCs, peering, a gateway endpoint and an interface endpoint, with
//! real hosts (semantics.md §8, §9). Needs root (see `common::e2e`).

mod common;

use common::{e2e, iperf, received_bytes, unique_prefix, LabRun};

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/labs/endpoints.yaml");
const ENDPOINT: &str = "10.2.1.4";

#[test]
fn peering_and_endpoints_with_real_hosts() {
    if !e2e("peering_and_endpoints_with_real_hosts") {
        return;
    }
    let lab = LabRun::up(Some(LAB), &unique_prefix("ep"), &[]);
    assert!(
        lab.map
            .iter()
            .any(|l| l.contains("10.2.1.4") && l.contains("interface endpoint")),
        "{:?}",
        lab.map
    );
    // A–B and B–C carry traffic; A never reaches C, the internet through B's IGW, or D
    // over a pending peering.
    lab.ping("a-1", "10.2.1.10", &[]);
    lab.ping("c-1", "10.2.1.10", &[]);
    lab.ping_fails("a-1", "10.3.1.10", &[]);
    lab.ping_fails("a-1", "203.0.113.10", &[]);
    lab.ping_fails("a-1", "10.4.1.10", &[]);
    lab.ping("b-1", "203.0.113.10", &[]);

    // The gateway endpoint reaches s3-1:5201 (its policy) and nothing else.
    let _s3 = lab.spawn("s3-1", &["iperf3", "-s"]);
    let _s3b = lab.spawn("s3-2", &["iperf3", "-s"]);
    let r = iperf(&lab, "a-1", "198.18.0.10", &["-t", "1"]);
    assert!(received_bytes(&r) > 1e5, "{r}");
    let blocked = lab.exec(
        "a-1",
        &[
            "timeout",
            "4",
            "iperf3",
            "-c",
            "198.18.0.20",
            "-t",
            "1",
            "--connect-timeout",
            "1500",
        ],
    );
    assert!(!blocked.status.success(), "the policy let s3-2 through");

    // The interface endpoint carries TCP from B and, over the peering, from A; the queue
    // host sees the endpoint's address.
    let server = lab.spawn("queue-1", &["iperf3", "-s", "-1"]);
    let r = iperf(&lab, "b-1", ENDPOINT, &["-t", "1"]);
    assert!(received_bytes(&r) > 1e5, "{r}");
    let seen = server.output(10);
    assert!(seen.contains(ENDPOINT), "the host saw:\n{seen}");
    let _queue = lab.spawn("queue-1", &["iperf3", "-s"]);
    let r = iperf(&lab, "a-1", ENDPOINT, &["-t", "1"]);
    assert!(received_bytes(&r) > 1e5, "{r}");
    // UDP is not carried (R-IFE-ENI), although the endpoint's group admits it.
    let out = lab.exec(
        "b-1",
        &[
            "bash",
            "-c",
            &format!("for i in 1 2 3; do echo x > /dev/udp/{ENDPOINT}/5201; done"),
        ],
    );
    assert!(out.status.success());

    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    let s = &stopped.stdout;
    assert!(common::dropped(s, "ENDPOINT_PROTOCOL") >= 3, "{s}");
    assert!(common::dropped(s, "PCX_NOT_TRANSITIVE") > 0, "{s}");
    assert!(common::dropped(s, "PCX_INACTIVE") > 0, "{s}");
    assert!(common::dropped(s, "ENDPOINT_POLICY") > 0, "{s}");
}
