//! The flow-log writer: a thread off the packet path that appends the workers' record
//! lines to each flow log's file (R-FL-WRITE). Relative destinations are relative to the
//! lab file (config.md), or to the working directory for the built-in lab.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataplane::flow_log::{Line, NoData};
use dataplane::{Snapshot, SnapshotCell};

/// Lines waiting for the writer at most; beyond, workers drop (and count) them.
pub const QUEUE: usize = 1 << 16;

/// Starts the writer; dropping every sender ends it, after writing what it got. Each
/// second it also writes the `NODATA` records of the windows in which an ENI of `cell`'s
/// lab had no traffic (R-FL-STATUS). `unwritten` counts the lines it could not write (a
/// file it cannot open, a failed write), for `vpcd stats` and the metrics.
pub fn start(
    lab_file: Option<&Path>,
    cell: Arc<SnapshotCell>,
    unwritten: Arc<AtomicU64>,
) -> (SyncSender<Line>, JoinHandle<()>) {
    let base = lab_file
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (tx, rx) = sync_channel::<Line>(QUEUE);
    let handle = std::thread::Builder::new()
        .name("vpcd-flowlogs".into())
        .spawn(move || {
            let mut files = Files {
                base,
                open: HashMap::new(),
                unwritten,
            };
            let mut idle = NoData::default();
            let mut next_check = Instant::now();
            loop {
                match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(line) => {
                        idle.saw(&line);
                        files.write(&cell.load(), &line);
                    }
                    Err(RecvTimeoutError::Timeout) => files.flush(),
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if Instant::now() >= next_check {
                    next_check = Instant::now() + Duration::from_secs(1);
                    let snap = cell.load();
                    for line in idle.due(&snap, unix_now()) {
                        files.write(&snap, &line);
                    }
                }
            }
            files.flush();
        })
        .expect("start the flow-log writer");
    (tx, handle)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The open flow-log files, by destination.
struct Files {
    base: PathBuf,
    open: HashMap<Box<str>, Option<BufWriter<File>>>,
    unwritten: Arc<AtomicU64>,
}

impl Files {
    fn write(&mut self, snap: &Snapshot, line: &Line) {
        let f = self
            .open
            .entry(line.destination.clone())
            .or_insert_with(|| {
                let format = snap
                    .topo
                    .flow_logs
                    .iter()
                    .find(|l| l.id == line.log)
                    .map(|l| l.format.join(" "));
                open(&self.base, &line.destination, format.as_deref())
            });
        let written = match f {
            Some(f) => writeln!(f, "{}", line.text).is_ok(),
            None => false,
        };
        if !written {
            self.unwritten.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&mut self) {
        for f in self.open.values_mut().flatten() {
            let _ = f.flush();
        }
    }
}

/// Opens a flow log's file for appending. A new (empty) file starts with a header line
/// naming the fields, as AWS's log files in S3 do, so that `vpcd flowlogs` (or a person)
/// can read any format.
fn open(base: &Path, destination: &str, header: Option<&str>) -> Option<BufWriter<File>> {
    let p = Path::new(destination);
    let path: PathBuf = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match OpenOptions::new().create(true).append(true).open(&path) {
        Ok(f) => {
            let empty = f.metadata().is_ok_and(|m| m.len() == 0);
            let mut w = BufWriter::new(f);
            if let (true, Some(h)) = (empty, header) {
                let _ = writeln!(w, "{h}");
            }
            Some(w)
        }
        Err(e) => {
            log::error!("flow log {}: {e}", path.display());
            None
        }
    }
}
