//! The end-to-end harness: runs the real `vpcd up` with a unique prefix, waits for
//! `ready`, runs commands inside the lab's namespaces, and always tears down what it
//! started (SIGTERM, then `vpcd down --prefix`), also when a test fails.
//!
//! End-to-end tests need root. Without it they skip with a message, except under
//! `CI=true`, where skipping would hide a broken lab: there they fail.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const VPCD: &str = env!("CARGO_BIN_EXE_vpcd");

/// Whether this end-to-end test may run; prints why when it skips.
pub fn e2e(test: &str) -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !root {
        if ci {
            panic!("{test}: CI=true but not root: end-to-end tests must run in CI (run the suite as root)");
        }
        // Straight to stderr, past the test harness's capture, so the skip is seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipping {test}: end-to-end tests build network namespaces and need root; run as root (CI=true makes this an error)"
        );
        return false;
    }
    // Everything the end-to-end tests run (scripts/install-deps.sh installs the rest of
    // a fresh machine's share; bash, timeout and getent come with the base system).
    for tool in [
        "ip",
        "ping",
        "iperf3",
        "tcpdump",
        "traceroute",
        "curl",
        "bash",
        "timeout",
        "getent",
        "bird",
        "birdc",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{test}: `{tool}` is missing; run scripts/install-deps.sh"
        );
    }
    true
}

/// A prefix no other test (or test run) uses at the same time.
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    // The whole pid: no two live test processes share it, so no two share a prefix.
    format!(
        "e{}{}{}-",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The namespaces whose names start with `prefix`.
pub fn namespaces_with(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// A running `vpcd up`.
pub struct LabRun {
    child: Option<Child>,
    pub prefix: String,
    /// stdout up to and including `ready`.
    pub map: Vec<String>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    cleanup: bool,
}

/// What a killed vpcd left, removed with `vpcd down` when dropped.
pub struct Leftovers(pub String);

impl Drop for Leftovers {
    fn drop(&mut self) {
        down(&self.0);
    }
}

/// What a stopped `vpcd up` left: its exit status and the rest of its output.
pub struct Stopped {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

fn spawn_vpcd(args: &[&str]) -> Child {
    Command::new(VPCD)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vpcd")
}

impl LabRun {
    /// Starts `vpcd up [lab] --prefix P` and waits for `ready`.
    pub fn up(lab: Option<&str>, prefix: &str, extra: &[&str]) -> LabRun {
        let mut args = vec!["up", "--prefix", prefix];
        args.extend(lab);
        args.extend(extra);
        let mut child = spawn_vpcd(&args);
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut run = LabRun {
            child: Some(child),
            prefix: prefix.to_string(),
            map: Vec::new(),
            lines,
            stderr,
            cleanup: true,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match run.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line == "ready";
                    run.map.push(line);
                    if done {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "vpcd up gave no `ready` within 30 s; stderr:\n{}",
                        run.stderr()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // vpcd exited by itself (and cleaned up what it made); reap it, and do
                    // not let Drop signal a pid that is no longer ours or `down` a prefix
                    // that may be another run's.
                    let _ = run.child.take().unwrap().wait();
                    run.cleanup = false;
                    panic!(
                        "vpcd up exited before `ready`; stdout:\n{}\nstderr:\n{}",
                        run.map.join("\n"),
                        run.stderr()
                    )
                }
            }
        }
        run
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn stderr(&self) -> String {
        // Give the reader thread a moment to catch up with what was written.
        std::thread::sleep(Duration::from_millis(50));
        self.stderr.lock().unwrap().clone()
    }

    /// The namespace of an instance or host.
    pub fn ns(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// Runs a command inside the namespace of `id`.
    pub fn exec(&self, id: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(id)])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ip netns exec")
    }

    /// Starts a long-running command inside the namespace of `id`; it is killed when the
    /// returned guard drops (`ip netns exec` execs the command, so the pid is its own).
    /// Its stdout is kept for [`Background::output`].
    pub fn spawn(&self, id: &str, args: &[&str]) -> Background {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(id)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a command in a namespace");
        Background::new(child)
    }

    /// `ping` from `id` (`-6` in `extra` for IPv6); panics with ping's output unless every
    /// echo is answered.
    /// `curl -s -m 3 ARGS` inside `id`: what it printed.
    pub fn curl(&self, id: &str, args: &[&str]) -> String {
        let mut all = vec!["curl", "-s", "-m", "3"];
        all.extend(args);
        String::from_utf8_lossy(&self.exec(id, &all).stdout).into_owned()
    }

    /// An IMDSv2 token for instance `id`, asked for as the AWS CLI does (empty if none).
    pub fn imds_token(&self, id: &str) -> String {
        self.curl(
            id,
            &[
                "-X",
                "PUT",
                "-H",
                "X-aws-ec2-metadata-token-ttl-seconds: 60",
                "http://169.254.169.254/latest/api/token",
            ],
        )
    }

    pub fn ping(&self, id: &str, to: &str, extra: &[&str]) {
        let mut args = vec!["ping", "-c", "3", "-i", "0.2", "-W", "2"];
        args.extend(extra);
        args.push(to);
        let out = self.exec(id, &args);
        assert!(
            out.status.success(),
            "{id} -> {to} {extra:?}: ping failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ping` that must get no answer.
    pub fn ping_fails(&self, id: &str, to: &str, extra: &[&str]) {
        let mut args = vec!["ping", "-c", "2", "-i", "0.2", "-W", "1"];
        args.extend(extra);
        args.push(to);
        let out = self.exec(id, &args);
        assert!(
            !out.status.success(),
            "{id} -> {to} {extra:?}: ping was answered but must not be:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Sends SIGTERM and waits for vpcd to tear the lab down and exit.
    pub fn stop(mut self) -> Stopped {
        let mut child = self.child.take().unwrap();
        signal(child.id() as i32, libc::SIGTERM);
        let status = wait_for(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("vpcd did not exit within 30 s of SIGTERM")
        });
        let mut stdout = String::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            stdout += &line;
            stdout.push('\n');
        }
        Stopped {
            success: status.success(),
            stdout,
            stderr: self.stderr(),
        }
    }

    /// Kills vpcd with SIGKILL, as a crash would: nothing is torn down. The returned guard
    /// runs `vpcd down` when dropped, so a failing test still cleans up.
    pub fn kill(mut self) -> Leftovers {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let prefix = std::mem::take(&mut self.prefix);
        self.cleanup = false;
        Leftovers(prefix)
    }
}

impl Drop for LabRun {
    fn drop(&mut self) {
        if !self.cleanup {
            return;
        }
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(_)) = child.try_wait() {
                // Already exited and now reaped: nothing to signal.
                down(&self.prefix);
                return;
            }
            signal(child.id() as i32, libc::SIGTERM);
            if wait_for(&mut child, Duration::from_secs(20)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        down(&self.prefix);
    }
}

/// Runs a vpcd command that must finish on its own (a refused `up`, say), killing it
/// after `secs` so that a regression cannot hang the suite or leave a router running.
pub fn vpcd_with_deadline(args: &[&str], secs: u64) -> Output {
    let mut child = spawn_vpcd(args);
    let status = wait_for(&mut child, Duration::from_secs(secs));
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("collect vpcd output");
    assert!(
        status.is_some(),
        "vpcd {args:?} did not finish within {secs} s"
    );
    out
}

/// `vpcd down --prefix P`.
pub fn down(prefix: &str) -> Output {
    Command::new(VPCD)
        .args(["down", "--prefix", prefix])
        .output()
        .expect("run vpcd down")
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no pointer arguments; the pid is a child this test started and has
    // not yet reaped.
    unsafe { libc::kill(pid, sig) };
}

fn wait_for(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A command running in a namespace; killed on drop. Its stdout is read as it comes (a
/// full pipe would stall a chatty command such as tcpdump).
pub struct Background(Child, Option<std::thread::JoinHandle<String>>);

impl Background {
    fn new(mut child: Child) -> Background {
        let reader = child.stdout.take().map(|mut o| {
            std::thread::spawn(move || {
                let mut out = String::new();
                let _ = o.read_to_string(&mut out);
                out
            })
        });
        Background(child, reader)
    }

    /// Waits up to `secs` for the command to exit by itself and returns its stdout (empty
    /// when it did not exit: it is killed).
    pub fn output(mut self, secs: u64) -> String {
        let done = wait_for(&mut self.0, Duration::from_secs(secs)).is_some();
        if !done {
            let _ = self.0.kill();
            let _ = self.0.wait();
            return String::new();
        }
        self.1
            .take()
            .and_then(|r| r.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends raw IP-layer bytes out of `eth0` of namespace `ns` (an AF_PACKET socket opened
/// on a thread that joined the namespace): what a broken or hostile host could send.
pub fn send_raw(ns: &str, packets: &[Vec<u8>]) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open the namespace");
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this short-lived thread only; the fd is an open namespace.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let proto = (libc::ETH_P_IP as u16).to_be();
            // SAFETY: plain socket call.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, proto as i32) };
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
            assert!(ifindex > 0);
            // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = proto;
            addr.sll_ifindex = ifindex as i32;
            for p in packets {
                // SAFETY: `p` and `addr` are valid for the lengths given.
                let n = unsafe {
                    libc::sendto(
                        fd,
                        p.as_ptr().cast(),
                        p.len(),
                        0,
                        (&addr as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                assert_eq!(
                    n,
                    p.len() as isize,
                    "sendto: {}",
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: closing the fd we opened.
            unsafe { libc::close(fd) };
        })
        .join()
        .expect("raw sender thread");
    });
}

/// The count of one drop reason in the summary `vpcd up` prints when it stops, or in
/// `vpcd stats`.
pub fn dropped(summary: &str, reason: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.starts_with("vpcd: ") && l.contains("forwarded"))
        .unwrap_or_else(|| panic!("no summary in:\n{summary}"));
    let key = format!("{reason} ");
    line.find(&key)
        .map(|i| {
            line[i + key.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .unwrap()
        })
        .unwrap_or(0)
}

/// Bytes received as iperf3's text summary reports them on its `receiver` line.
pub fn received_bytes(report: &str) -> f64 {
    let line = report
        .lines()
        .rev()
        .find(|l| l.contains("receiver"))
        .unwrap_or_else(|| panic!("no receiver line in:\n{report}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| w.ends_with("Bytes"))
        .unwrap_or_else(|| panic!("no byte count in {line:?}"));
    let n: f64 = words[i - 1].parse().unwrap();
    let unit = match words[i] {
        "KBytes" => 1e3,
        "MBytes" => 1e6,
        "GBytes" => 1e9,
        _ => 1.0,
    };
    n * unit
}

/// Runs an iperf3 client in `from` against `to` (a server must listen there), retrying
/// while the server is still starting; returns its report.
pub fn iperf(lab: &LabRun, from: &str, to: &str, extra: &[&str]) -> String {
    let mut args = vec!["iperf3", "-c", to, "--connect-timeout", "2000"];
    args.extend(extra);
    for _ in 0..20 {
        let out = lab.exec(from, &args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            return text;
        }
        if !text.contains("Connection refused") {
            panic!("iperf3 {from} -> {to} {extra:?} failed:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("iperf3 {from} -> {to}: the server never started");
}

/// Processes whose command line names `prefix` (an `ip netns add PREFIXk-3`, say).
fn processes_naming(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(prefix) && !cmd.contains("cargo") {
                found.push(cmd);
            }
        }
    }
    found
}

/// Nothing of a lab with `prefix` is left: no namespace, state file, control socket,
/// `/etc/netns` entry, or process that names it.
pub fn assert_clean(prefix: &str) {
    assert_eq!(
        namespaces_with(prefix),
        Vec::<String>::new(),
        "namespaces left"
    );
    for left in [
        format!("/run/vpcd/up-{prefix}.state"),
        format!("/run/vpcd/ctl-{prefix}.sock"),
        format!("/run/vpcd/{prefix}"),
    ] {
        assert!(!std::path::Path::new(&left).exists(), "{left} left behind");
    }
    let etc: Vec<String> = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(etc, Vec::<String>::new(), "/etc/netns entries left");
    assert_eq!(
        processes_naming(prefix),
        Vec::<String>::new(),
        "processes left"
    );
}

/// `GET /metrics` from the address `up` printed (loopback).
pub fn scrape(lab: &LabRun) -> String {
    use std::io::{Read, Write};
    let url = lab
        .map
        .iter()
        .find_map(|l| l.strip_prefix("metrics on http://"))
        .expect("up prints where it serves metrics");
    let addr = url.trim_end_matches("/metrics");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .expect("an HTTP answer")
        .1
        .to_string()
}

/// Polls `f` every 100 ms until it holds; panics naming `what` after `secs` seconds.
pub fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {secs} s");
}
