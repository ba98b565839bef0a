//! Network namespaces kept the way `ip netns` keeps them (a bind mount under
//! `/run/netns/NAME`), so that `ip netns exec web-1 ping …` works as is.
//!
//! Creating and configuring goes through iproute2's `ip` (one batch per namespace): it is
//! what a person would type, its errors read well, and the lab needs it anyway for
//! `ip netns exec`. Entering a namespace to open its TUN queues is done on a short-lived
//! thread with `setns`, so the thread that runs vpcd never leaves its own namespace.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Where `ip netns` keeps its named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// A failure of the lab builder, with what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot run `ip` (iproute2): {0}; install it with scripts/install-deps.sh")]
    NoIp(io::Error),
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("cannot enter namespace {name}: {source}")]
    Enter { name: String, source: io::Error },
    #[error("in namespace {name}: {source}")]
    Inside { name: String, source: io::Error },
}

/// Whether a namespace of that name exists.
pub fn exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// Runs `ip ARGS` with `batch` on stdin (for `-batch -`), and turns a failure into its
/// stderr.
pub fn ip(args: &[&str], batch: Option<&str>) -> Result<(), NetnsError> {
    let mut cmd = Command::new("ip");
    cmd.args(args)
        .stdin(if batch.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C at the terminal goes to vpcd, which tears down in
        // order, not to an `ip` half-way through creating or deleting a namespace.
        .process_group(0);
    // But it dies with vpcd: an `ip netns add` that outlived a killed vpcd could create
    // its namespace after `vpcd down` looked, and leave it behind.
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(NetnsError::NoIp)?;
    if let Some(text) = batch {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A write error shows up as the command's failure below.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(NetnsError::NoIp)?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetnsError::Ip {
        args: args.join(" "),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Creates one namespace.
pub fn add(name: &str) -> Result<(), NetnsError> {
    ip(&["netns", "add", name], None)
}

/// Where `ip netns exec NAME` finds the files it shows in place of `/etc/...`.
pub const ETC_NETNS: &str = "/etc/netns";

/// Gives the namespace its own `resolv.conf` (the VPC resolver and search domain).
pub fn write_resolv_conf(name: &str, server: std::net::IpAddr, search: &str) -> io::Result<()> {
    let dir = Path::new(ETC_NETNS).join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("resolv.conf"),
        format!("# written by vpcd: the VPC's Amazon DNS\nnameserver {server}\nsearch {search}\n"),
    )
}

/// Removes the files vpcd wrote for a namespace (nothing if there are none).
fn remove_etc(name: &str) {
    let dir = Path::new(ETC_NETNS).join(name);
    let _ = std::fs::remove_file(dir.join("resolv.conf"));
    let _ = std::fs::remove_dir(&dir);
    // `/etc/netns` itself goes too once empty (it fails, harmlessly, if anything is left).
    let _ = std::fs::remove_dir(ETC_NETNS);
}

/// Deletes those of the named namespaces that exist; carries on past a failure and returns
/// the last one. Processes still running inside a namespace keep it alive after its name is
/// gone, as with `ip netns del`.
pub fn delete(names: &[String]) -> Result<(), NetnsError> {
    for n in names {
        remove_etc(n);
    }
    let batch: String = names
        .iter()
        .filter(|n| exists(n))
        .map(|n| format!("netns del {n}\n"))
        .collect();
    if batch.is_empty() {
        return Ok(());
    }
    ip(&["-force", "-batch", "-"], Some(&batch))
}

/// Runs `f` on a new thread that has joined the namespace `name`; the calling thread's own
/// namespace is never changed.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> io::Result<T> + Send,
{
    let enter_err = |source| NetnsError::Enter {
        name: name.to_string(),
        source,
    };
    let ns = File::open(Path::new(NETNS_DIR).join(name)).map_err(enter_err)?;
    let inside = |source| NetnsError::Inside {
        name: name.to_string(),
        source,
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: `ns` is an open namespace file; setns changes only this thread, which
            // ends when `f` returns.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(enter_err(io::Error::last_os_error()));
            }
            f().map_err(inside)
        })
        .join()
        .unwrap_or_else(|_| Err(inside(io::Error::other("the namespace thread panicked"))))
    })
}

/// Writes a sysctl of the calling thread's network namespace (`/proc/sys/net/...` follows
/// the thread that opens it). A sysctl that does not exist (IPv6 disabled) is skipped.
pub fn set_sysctl(path: &str, value: &str) -> io::Result<()> {
    match std::fs::write(Path::new("/proc/sys").join(path), value) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("sysctl {path}: {e}"))),
        Ok(()) => Ok(()),
    }
}
