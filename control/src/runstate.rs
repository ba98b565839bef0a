//! Who owns a prefix: one state file per prefix under `/run/vpcd/`, locked with `flock`
//! by the running `vpcd up` and listing the namespaces it made.
//!
//! The lock answers "is a vpcd running with this prefix?" without trusting a pid (the
//! kernel drops it when the process dies, however it dies); the list lets `vpcd down`
//! remove exactly what a killed run made, and never a namespace vpcd did not create.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where state files live (lab.md puts the control socket here too).
pub const RUN_DIR: &str = "/run/vpcd";

/// The state file of a prefix.
pub fn path(prefix: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("up-{prefix}.state"))
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(
        "prefix {prefix:?} is in use by a running vpcd (pid {pid}); stop it (vpcd down --prefix {prefix:?}) or choose another --prefix"
    )]
    InUse { prefix: String, pid: String },
    #[error(
        "a vpcd that was killed left namespace(s) {names} with prefix {prefix:?}; remove them with `vpcd down --prefix {prefix:?}`"
    )]
    Leftovers { prefix: String, names: String },
    #[error("the vpcd with prefix {prefix:?} (pid {pid}) did not stop within {secs} s")]
    StillRunning {
        prefix: String,
        pid: String,
        secs: u64,
    },
}

/// What a state file records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub pid: String,
    pub namespaces: Vec<String>,
    /// Processes the lab started (`user_data` and what it left running).
    pub procs: Vec<crate::startup::Proc>,
}

impl Record {
    fn parse(text: &str) -> Record {
        let mut r = Record::default();
        for line in text.lines() {
            if let Some(pid) = line.strip_prefix("pid ") {
                r.pid = pid.trim().to_string();
            } else if let Some(ns) = line.strip_prefix("netns ") {
                r.namespaces.push(ns.trim().to_string());
            } else if let Some(p) = line.strip_prefix("proc ") {
                let mut w = p.split_whitespace().map(str::parse::<u64>);
                if let (Some(Ok(pid)), Some(Ok(start))) = (w.next(), w.next()) {
                    if let Ok(pid) = i32::try_from(pid) {
                        r.procs.push(crate::startup::Proc { pid, start });
                    }
                }
            }
        }
        r
    }

    fn render(&self) -> String {
        let mut s = format!("pid {}\n", self.pid);
        for n in &self.namespaces {
            s += &format!("netns {n}\n");
        }
        for p in &self.procs {
            s += &format!("proc {} {}\n", p.pid, p.start);
        }
        s
    }
}

/// The held lock on a prefix: dropped (or [`Lease::release`]d) when the run ends.
#[derive(Debug)]
pub struct Lease {
    file: File,
    path: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Opens the state file and tries to lock it. `Ok(None)`: another process holds it.
/// Retries when the file was replaced between open and lock (a run that just ended removes
/// its file), so two processes never both believe they hold one prefix.
fn try_lock(path: &Path) -> Result<Option<File>, StateError> {
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err(path))?;
        // SAFETY: flock on an fd we own; no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(io_err(path)(e));
        }
        let same = match (file.metadata(), fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if same {
            return Ok(Some(file));
        }
    }
}

/// The pid of the process holding the `flock` on `path`, as the kernel reports it in
/// `/proc/locks` (a pid written in the file could be stale and reused).
fn lock_holder(path: &Path) -> Option<libc::pid_t> {
    let meta = fs::metadata(path).ok()?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF"; waiters show "->" and are
        // skipped.
        if f.len() >= 6 && f[1] == "FLOCK" && f[5] == want {
            f[4].parse().ok()
        } else {
            None
        }
    })
}

/// Whether `pid` is a `vpcd up` (and not, say, another `vpcd down` holding the lock).
fn is_vpcd_up(pid: libc::pid_t) -> bool {
    let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
    args.first().is_some_and(|a| a.ends_with(b"vpcd")) && args.iter().any(|a| *a == b"up")
}

fn read_record(path: &Path) -> Record {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    Record::parse(&text)
}

impl Lease {
    /// Takes the prefix for this process, or says who has it. Refuses too when a killed run
    /// left namespaces behind: they would collide, and only `vpcd down` may remove them.
    pub fn acquire(prefix: &str) -> Result<Lease, StateError> {
        fs::create_dir_all(RUN_DIR).map_err(io_err(Path::new(RUN_DIR)))?;
        let path = self::path(prefix);
        let Some(file) = try_lock(&path)? else {
            return Err(StateError::InUse {
                prefix: prefix.to_string(),
                pid: lock_holder(&path).map_or_else(|| read_record(&path).pid, |p| p.to_string()),
            });
        };
        let left: Vec<String> = read_record(&path)
            .namespaces
            .into_iter()
            .filter(|n| crate::netns::exists(n))
            .collect();
        if !left.is_empty() {
            return Err(StateError::Leftovers {
                prefix: prefix.to_string(),
                names: left.join(", "),
            });
        }
        let mut lease = Lease { file, path };
        lease.record(&[], &[])?;
        Ok(lease)
    }

    /// Records this process and the namespaces it is about to create, before creating
    /// them, so that a crash at any point leaves a list `vpcd down` can act on.
    pub fn record(
        &mut self,
        namespaces: &[String],
        procs: &[crate::startup::Proc],
    ) -> Result<(), StateError> {
        let rec = Record {
            pid: std::process::id().to_string(),
            namespaces: namespaces.to_vec(),
            procs: procs.to_vec(),
        };
        let path = self.path.clone();
        let text = rec.render();
        // Written over the old record, then cut to length: a kill between the two leaves
        // the new record followed by the old one's tail, whose whole lines name only
        // namespaces this run recorded earlier (a superset, safe for `down`). Truncating
        // first would leave an empty record for a moment, and a kill then would lose the
        // list.
        use std::os::unix::fs::FileExt;
        let f = &mut self.file;
        f.write_all_at(text.as_bytes(), 0)
            .and_then(|_| f.set_len(text.len() as u64))
            .and_then(|_| f.sync_data())
            .map_err(io_err(&path))
    }

    /// Ends the run: removes the state file while still holding the lock.
    pub fn release(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// What `vpcd down` did.
#[derive(Debug, Default)]
pub struct Down {
    /// The pid of a running vpcd that was asked to stop (SIGTERM), if any.
    pub stopped: Option<String>,
    /// Namespaces removed from what a killed run left.
    pub removed: Vec<String>,
}

/// `vpcd down`: stops a running vpcd of this prefix (SIGTERM, then waits up to `wait` for
/// its own teardown), or removes what a killed one left. Removes only namespaces the state
/// file lists.
pub fn down(prefix: &str, wait: Duration) -> Result<Down, StateError> {
    let path = self::path(prefix);
    let mut out = Down::default();
    if !path.exists() {
        return Ok(out);
    }
    let start = Instant::now();
    let file = loop {
        if let Some(f) = try_lock(&path)? {
            break f;
        }
        let holder = lock_holder(&path);
        let pid = holder.map_or_else(String::new, |p| p.to_string());
        if let Some(p) = holder.filter(|p| *p > 1 && is_vpcd_up(*p)) {
            if out.stopped.is_none() {
                // SAFETY: kill has no pointer arguments. `p` holds the lock right now (the
                // kernel says so) and is a `vpcd up`.
                unsafe { libc::kill(p, libc::SIGTERM) };
                out.stopped = Some(pid.clone());
            }
        }
        if start.elapsed() > wait {
            return Err(StateError::StillRunning {
                prefix: prefix.to_string(),
                pid,
                secs: wait.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A vpcd that stopped cleanly removed its file, and `try_lock` made an empty one: the
    // record lists nothing then.
    let rec = read_record(&path);
    // What its start-up left running goes first, by PID and start time; then its
    // start-up scripts and logs.
    crate::startup::stop(&rec.procs);
    crate::startup::remove_files(prefix, &rec.namespaces);
    // An `ip netns add` a killed vpcd had started dies with it (PDEATHSIG), but it may
    // finish making its namespace first, just after this looked: look again, a tenth of
    // a second later, until a look finds nothing of the record left (one second at most).
    for round in 0..10 {
        let left: Vec<String> = rec
            .namespaces
            .iter()
            .filter(|n| crate::netns::exists(n))
            .cloned()
            .collect();
        if left.is_empty() && round > 0 {
            break;
        }
        crate::netns::delete(&left).map_err(|e| StateError::Io {
            path: crate::netns::NETNS_DIR.to_string(),
            source: io::Error::other(e.to_string()),
        })?;
        out.removed.extend(left);
        std::thread::sleep(Duration::from_millis(100));
    }
    // The control socket a killed run left (only a socket, never another file).
    let ctl = crate::control_socket::default_path(prefix);
    if fs::symlink_metadata(&ctl).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    }) {
        let _ = fs::remove_file(&ctl);
    }
    let _ = fs::remove_file(&path);
    drop(file);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let r = Record {
            pid: "42".into(),
            namespaces: vec!["t-web-1".into(), "t-inet-1".into()],
            procs: vec![crate::startup::Proc {
                pid: 7,
                start: 1234,
            }],
        };
        assert_eq!(Record::parse(&r.render()), r);
        assert_eq!(Record::parse(""), Record::default());
    }
}
