//! The flow-log writer: a thread off the packet path that appends the workers' record
//! lines to each flow log's file (R-FL-WRITE). Relative destinations are relative to the
//! lab file (config.md), or to the working directory for the built-in lab.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use dataplane::flow_log::Line;

/// Lines waiting for the writer at most; beyond, workers drop (and count) them.
pub const QUEUE: usize = 1 << 16;

/// Starts the writer; dropping every sender ends it, after writing what it got.
pub fn start(lab_file: Option<&Path>) -> (SyncSender<Line>, JoinHandle<()>) {
    let base = lab_file
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (tx, rx) = sync_channel::<Line>(QUEUE);
    let handle = std::thread::Builder::new()
        .name("vpcd-flowlogs".into())
        .spawn(move || {
            let mut files: HashMap<Box<str>, Option<BufWriter<File>>> = HashMap::new();
            loop {
                match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(line) => {
                        let f = files
                            .entry(line.destination.clone())
                            .or_insert_with(|| open(&base, &line.destination));
                        if let Some(f) = f {
                            let _ = writeln!(f, "{}", line.text);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        for f in files.values_mut().flatten() {
                            let _ = f.flush();
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            for f in files.values_mut().flatten() {
                let _ = f.flush();
            }
        })
        .expect("start the flow-log writer");
    (tx, handle)
}

fn open(base: &Path, destination: &str) -> Option<BufWriter<File>> {
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
        Ok(f) => Some(BufWriter::new(f)),
        Err(e) => {
            eprintln!("vpcd: flow log {}: {e}", path.display());
            None
        }
    }
}
