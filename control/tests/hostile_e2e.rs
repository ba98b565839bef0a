//! A running router against hostile input and sudden death (issue 22), end to end: what
//! used to kill it or empty the lab through the control socket is refused while the lab
//! keeps forwarding, and a `vpcd up` killed with SIGKILL at any moment leaves nothing
//! that `vpcd down` does not remove.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_clean, down, e2e, namespaces_with, unique_prefix, LabRun, VPCD};
use control::control_socket::{request, Status};

fn socket(lab: &LabRun) -> PathBuf {
    control::control_socket::default_path(&lab.prefix)
}

#[test]
fn hostile_applies_are_refused_and_the_lab_keeps_running() {
    if !e2e("hostile_applies_are_refused_and_the_lab_keeps_running") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("ha"), &[]);
    lab.ping("web-1", "10.0.2.10", &[]);
    let ctl = socket(&lab);

    // 5,000 nested `- ` killed the control thread (stack overflow) and left namespaces.
    // Sent raw, past the client's own check.
    let deep = format!("version: 1\nvpcs:\n{}x\n", "- ".repeat(5_000));
    let (status, text) = request(&ctl, "apply deep.yaml", &deep).unwrap();
    assert_eq!(status, Status::Refused, "{text}");
    assert!(text.contains("nest more than"), "{text}");
    assert!(text.contains("unchanged"), "{text}");

    // The default lab cut in half read as a valid lab with no instances and removed every
    // namespace. Framed, the router sees it is short and does nothing.
    let half = &control::DEFAULT_LAB[..control::DEFAULT_LAB.len() / 2];
    let mut s = std::os::unix::net::UnixStream::connect(&ctl).unwrap();
    use std::io::{Read, Write};
    s.write_all(
        control::control_socket::header("apply d.yaml", control::DEFAULT_LAB.len()).as_bytes(),
    )
    .unwrap();
    s.write_all(half.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("bad\n"), "{answer}");

    // 4,000 copies of one subnet: a bounded refusal.
    let mut copies =
        String::from("version: 1\nvpcs:\n- id: vpc-lab\n  cidr_block: 10.0.0.0/16\n  subnets:\n");
    for i in 0..4_000 {
        copies.push_str(&format!("  - {{ id: s-{i}, cidr_block: 10.0.1.0/24 }}\n"));
    }
    let (status, text) = request(&ctl, "apply copies.yaml", &copies).unwrap();
    assert_eq!(status, Status::Refused);
    assert!(text.lines().count() < 30, "{text}");
    assert!(text.contains("3999 error(s)"), "{text}");

    // The client checks a file itself first: the router is not asked.
    let dir = std::env::temp_dir().join(format!("vpcd-ha-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("deep.yaml");
    std::fs::write(&file, &deep).unwrap();
    let out = Command::new(VPCD)
        .args(["apply", "--prefix", &lab.prefix, file.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was sent to the router"));

    // Through all of it: the same generation, the same namespaces, still forwarding.
    let (status, text) = request(&ctl, "status", "").unwrap();
    assert_eq!(status, Status::Ok);
    assert!(text.contains("generation 1"), "{text}");
    assert_eq!(namespaces_with(&lab.prefix).len(), 3);
    lab.ping("web-1", "10.0.2.10", &[]);
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
}

/// A lab of `n` instances, so that building it takes long enough to be killed midway.
fn wide_lab(n: usize) -> String {
    let mut s = String::from(
        "version: 1\nvpcs:\n- id: vpc-k\n  cidr_block: 10.0.0.0/16\n  subnets:\n  - { id: a, cidr_block: 10.0.1.0/24 }\n  instances:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "  - {{ id: k-{i}, subnet: a, private_ip: 10.0.1.{} }}\n",
            10 + i
        ));
    }
    s
}

#[test]
fn sigkill_at_any_moment_then_down_leaves_nothing() {
    if !e2e("sigkill_at_any_moment_then_down_leaves_nothing") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vpcd-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("wide.yaml");
    std::fs::write(&file, wide_lab(24)).unwrap();
    let start = |prefix: &str| {
        Command::new(VPCD)
            .args(["up", "--prefix", prefix, "--workers", "1"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let kill_and_down = |mut child: std::process::Child, prefix: &str, at: Duration| {
        let _ = child.kill();
        let _ = child.wait();
        let made = namespaces_with(prefix).len();
        let d = down(prefix);
        assert!(
            d.status.success(),
            "down after a kill at {at:?}: {}",
            String::from_utf8_lossy(&d.stderr)
        );
        assert_clean(prefix);
        made
    };
    // First a whole start, killed once it is `ready`: how long a start takes.
    let prefix = unique_prefix("kl");
    let mut child = start(&prefix);
    let started = Instant::now();
    let stdout = child.stdout.take().unwrap();
    use std::io::BufRead;
    let ready = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l == "ready");
    assert!(ready, "the wide lab did not come up");
    let took = started.elapsed();
    assert_eq!(kill_and_down(child, &prefix, took), 24);
    // Then kills spread over a start: before the lock, while namespaces are being made,
    // while TUNs open and addresses are set, near `ready`. Jittered with a fixed seed,
    // so that a failure can be replayed.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut outcomes = Vec::new();
    for tenth in 0..12u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let jitter = Duration::from_micros(seed % 20_000);
        let at = took * tenth / 10 + jitter;
        let prefix = unique_prefix("kl");
        let child = start(&prefix);
        std::thread::sleep(at);
        let made = kill_and_down(child, &prefix, at);
        outcomes.push((at, made));
    }
    let _ = std::fs::remove_dir_all(&dir);
    // The kills must have landed midway at least once, or they proved little.
    assert!(
        outcomes.iter().any(|(_, made)| (1..24).contains(made)),
        "no kill landed while namespaces were being made: {outcomes:?}"
    );
}

#[test]
fn abandoned_requests_do_not_shut_the_metadata_service() {
    if !e2e("abandoned_requests_do_not_shut_the_metadata_service") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("md"), &[]);
    // The reproducer: sixteen connections (twice the slots) that send part of a request
    // and close, to metadata and to DNS over TCP, made the services refuse every later
    // connection for good.
    let script = "for i in $(seq 16); do \
        exec 3<>/dev/tcp/169.254.169.254/80; printf 'GET /latest/me' >&3; exec 3>&-; \
        exec 4<>/dev/tcp/10.0.0.2/53; printf '\\000\\100abc' >&4; exec 4>&-; \
        done; echo sent";
    let o = lab.exec("web-1", &["bash", "-c", script]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "sent", "{o:?}");
    let token = lab.imds_token("web-1");
    assert_eq!(token.len(), 32, "{token:?}");
    let id = lab.curl(
        "web-1",
        &[
            "-H",
            &format!("X-aws-ec2-metadata-token: {token}"),
            "http://169.254.169.254/latest/meta-data/instance-id",
        ],
    );
    assert_eq!(id, "web-1");
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
}
