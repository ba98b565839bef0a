//! An instance's start-up (faults.md): its built-in `image` (a NAT instance, a router)
//! and its `user_data` script, run once in its namespace after it is up and before
//! `ready`, as EC2 runs user data at first boot.
//!
//! The script's output goes to `/run/vpcd/PREFIX/user-data-ID.log`; a script that fails is
//! reported with its exit code and the lab comes up all the same (as on EC2). Whatever it
//! leaves running in the namespace (a daemon it started) is recorded by PID and start time,
//! in the lab and in the prefix's state file, and stopped with the lab, also by `vpcd down`
//! after a crash: only those processes, never another with a reused PID.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab::Namespace;
use crate::model::Image;
use crate::netns::{self, NetnsError};

/// How long start-up waits for a script before `ready` (it is left running beyond).
pub const SCRIPT_WAIT: Duration = Duration::from_secs(60);

/// A process a lab started: its PID and its start time (clock ticks since boot, field 22
/// of `/proc/PID/stat`), which tells it from a later process with the same PID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub start: u64,
}

/// The start time of process `pid`, if it is alive (a zombie is not: it has ended and
/// waits only to be reaped).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The processes whose network namespace is the named one.
pub fn processes_in(name: &str) -> Vec<Proc> {
    let Ok(ns) = std::fs::metadata(Path::new(netns::NETNS_DIR).join(name)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let same = std::fs::metadata(e.path().join("ns/net"))
            .is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev());
        if let (true, Some(start)) = (same, start_time(pid)) {
            out.push(Proc { pid, start });
        }
    }
    out
}

/// Stops the processes a lab started: SIGTERM, then SIGKILL for those still there after
/// half a second. A PID whose start time changed is another process now: left alone.
pub fn stop(procs: &[Proc]) {
    let ours = |p: &Proc| start_time(p.pid) == Some(p.start);
    let signal = |p: &Proc, sig: i32| {
        if ours(p) {
            // SAFETY: kill has no pointer arguments; the PID is a process this lab started
            // (its start time matches the one recorded).
            unsafe { libc::kill(p.pid, sig) };
        }
    };
    procs.iter().for_each(|p| signal(p, libc::SIGTERM));
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline && procs.iter().any(ours) {
        std::thread::sleep(Duration::from_millis(20));
    }
    procs.iter().for_each(|p| signal(p, libc::SIGKILL));
}

/// What a start-up did.
#[derive(Debug)]
pub struct Outcome {
    pub id: String,
    /// The script's exit code; `None` while still running (after [`SCRIPT_WAIT`]), and
    /// for an image alone.
    pub exit: Option<i32>,
    pub log: Option<PathBuf>,
    /// What it left running in the namespace.
    pub procs: Vec<Proc>,
    /// What went wrong setting the image up, if anything.
    pub error: Option<String>,
}

impl Outcome {
    /// One line for the start-up report.
    pub fn line(&self) -> String {
        let mut s = format!("start-up {}: ", self.id);
        match (&self.error, &self.log, self.exit) {
            (Some(e), _, _) => s += &format!("image failed: {e}"),
            (None, None, _) => s += "image set up",
            (None, Some(_), Some(0)) => s += "user_data ran (exit 0)",
            (None, Some(_), Some(code)) => s += &format!("user_data FAILED with exit code {code}"),
            (None, Some(_), None) => {
                s += &format!(
                    "user_data still running after {} s, left running",
                    SCRIPT_WAIT.as_secs()
                )
            }
        }
        if let Some(log) = &self.log {
            s += &format!(" (log {})", log.display());
        }
        if !self.procs.is_empty() {
            s += &format!(", {} process(es) left running", self.procs.len());
        }
        s
    }
}

/// Removes the start-up scripts and logs of the namespaces `names` (named with `prefix`),
/// and the prefix's directory if that leaves it empty.
pub fn remove_files(prefix: &str, names: &[String]) {
    let dir = dir(prefix);
    for name in names {
        let id = name.strip_prefix(prefix).unwrap_or(name);
        for ext in ["sh", "log"] {
            let _ = std::fs::remove_file(dir.join(format!("user-data-{id}.{ext}")));
        }
    }
    // What a site's BGP daemon had: its configuration, control socket and log.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("bird-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if !prefix.is_empty() {
        let _ = std::fs::remove_dir(&dir);
    }
}

/// The directory of a lab's start-up files.
pub fn dir(prefix: &str) -> PathBuf {
    Path::new(crate::runstate::RUN_DIR).join(prefix)
}

/// Sets `image` up in the namespace: forwarding (IPv4 and IPv6), no redirects (its packets
/// go back out the interface they came in on), and for `nat` masquerade of what it
/// forwards out of eth0 (nftables), as a NAT instance's AMI does.
pub fn set_up_image(ns: &Namespace, image: Image) -> Result<(), NetnsError> {
    netns::run_in(&ns.name, || {
        for (key, value) in [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
            ("net/ipv4/conf/all/send_redirects", "0"),
            ("net/ipv4/conf/default/send_redirects", "0"),
            ("net/ipv4/conf/eth0/send_redirects", "0"),
        ] {
            netns::set_sysctl(key, value)?;
        }
        Ok(())
    })?;
    if image == Image::Nat {
        let own = ns.addrs.iter().find_map(|(a, _)| match a {
            std::net::IpAddr::V4(a) => Some(*a),
            _ => None,
        });
        let Some(own) = own else {
            return Ok(());
        };
        let rules = format!(
            "table ip vpcd_nat {{\n  chain post {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname \"eth0\" ip saddr != {own} masquerade\n  }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(NetnsError::NoIp)?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(rules.as_bytes());
        }
        let out = child.wait_with_output().map_err(NetnsError::NoIp)?;
        if !out.status.success() {
            return Err(NetnsError::Ip {
                args: format!("netns exec {} nft -f -", ns.name),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

/// Runs `script` once in the namespace, its output to the log; waits up to
/// [`SCRIPT_WAIT`]. A script with a `#!` line is run by that interpreter, any other by
/// `/bin/sh`.
pub fn run_user_data(prefix: &str, ns: &Namespace, script: &str) -> Outcome {
    let mut outcome = Outcome {
        id: ns.id.clone(),
        exit: None,
        log: None,
        procs: Vec::new(),
        error: None,
    };
    let dir = dir(prefix);
    let file = dir.join(format!("user-data-{}.sh", ns.id));
    let log = dir.join(format!("user-data-{}.log", ns.id));
    let prepared = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&file, script))
        .and_then(|_| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o700)))
        .and_then(|_| std::fs::File::create(&log));
    let log_file = match prepared {
        Ok(f) => f,
        Err(e) => {
            outcome.error = Some(format!("cannot write {}: {e}", file.display()));
            return outcome;
        }
    };
    outcome.log = Some(log.clone());
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name]);
    if script.starts_with("#!") {
        cmd.arg(&file);
    } else {
        cmd.arg("/bin/sh").arg(&file);
    }
    let err_file = log_file.try_clone();
    cmd.stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file.map_or_else(|_| Stdio::null(), Stdio::from));
    // Its own session: a Ctrl-C at vpcd's terminal is vpcd's to handle, and what the
    // script starts is told apart from the rest of the machine.
    // SAFETY: setsid is async-signal-safe and touches nothing of the parent's memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    match cmd.spawn() {
        Err(e) => outcome.error = Some(format!("cannot start the script: {e}")),
        Ok(mut child) => {
            let deadline = Instant::now() + SCRIPT_WAIT;
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        outcome.exit = Some(status.code().unwrap_or(128));
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => break,
                }
            }
        }
    }
    outcome.procs = processes_in(&ns.name);
    outcome
}

/// The instances of `lab` that have a start-up (an image or user data), restricted to
/// `only` when given: `(id, image, script)`.
pub fn of(
    lab: &crate::model::Lab,
    only: Option<&[String]>,
) -> Vec<(String, Option<Image>, Option<String>)> {
    lab.vpcs
        .iter()
        .flat_map(|v| v.instances.iter())
        .filter(|i| i.image.is_some() || i.user_data.is_some())
        .filter(|i| only.is_none_or(|ids| ids.contains(&i.id.v)))
        .map(|i| {
            (
                i.id.v.clone(),
                i.image.as_ref().map(|x| x.v),
                i.user_data.as_ref().map(|u| u.v.clone()),
            )
        })
        .collect()
}
