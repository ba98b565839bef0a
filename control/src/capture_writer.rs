//! The capture writer: a thread off the packet path that writes the traffic-mirror copies
//! of `pcap_file` targets (R-TM) as pcapng, which tcpdump and Wireshark read.
//!
//! Each file has one interface per session that writes to it (named after the source
//! instance and the session), Ethernet frames with nanosecond timestamps, and the
//! direction as the packet's flags (inbound: what the instance received). A packet vpcd
//! dropped carries the reason as its comment (`vpcd dropped this packet: SG_INGRESS`),
//! which AWS's mirroring never shows: Wireshark lists it under Packet Comments, and
//! `tshark -Y frame.comment` filters on it.
//!
//! The workers' records travel in buffers this thread hands back to their worker, so
//! sending one never allocates; a worker that finds no free buffer counts the copy as
//! lost. Files are relative to the lab file, as flow-log destinations are.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;

use dataplane::io::mirror::{MirrorSink, Record, RECORDS_PER_WORKER, RECORD_BYTES};
use dataplane::observer::Direction;
use dataplane::traffic_mirror::Outcome;
use dataplane::{Snapshot, SnapshotCell};

/// The writer's end of each worker's line, and the thread.
pub struct CaptureWriter {
    pub sinks: Vec<MirrorSink>,
    pub handle: JoinHandle<()>,
}

/// Starts the writer for `workers` workers. It stops when every worker dropped its sink,
/// after writing what it got.
pub fn start(lab_file: Option<&Path>, cell: Arc<SnapshotCell>, workers: usize) -> CaptureWriter {
    let base = lab_file
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (records_tx, records) = sync_channel::<Record>(RECORDS_PER_WORKER * workers.max(1));
    let mut sinks = Vec::new();
    let mut give_back = Vec::new();
    for _ in 0..workers {
        let (free_tx, free) = std::sync::mpsc::channel::<Vec<u8>>();
        give_back.push(free_tx);
        sinks.push(MirrorSink {
            records: records_tx.clone(),
            free,
        });
    }
    drop(records_tx);
    let handle = std::thread::Builder::new()
        .name("vpcd-captures".into())
        .spawn(move || run(base, cell, records, give_back))
        .expect("start the capture writer");
    CaptureWriter { sinks, handle }
}

fn run(
    base: PathBuf,
    cell: Arc<SnapshotCell>,
    records: Receiver<Record>,
    give_back: Vec<Sender<Vec<u8>>>,
) {
    let mut files = Files {
        base,
        open: HashMap::new(),
    };
    let mut primed = false;
    loop {
        // The buffers exist only once the lab captures to a file (at start, or after
        // the apply that adds the first pcap target).
        if !primed && !cell.load().topo.traffic_mirror.files.is_empty() {
            for tx in &give_back {
                for _ in 0..RECORDS_PER_WORKER {
                    let _ = tx.send(vec![0; RECORD_BYTES]);
                }
            }
            primed = true;
        }
        match records.recv_timeout(Duration::from_millis(500)) {
            Ok(r) => {
                files.write(&cell.load(), &r);
                if let Some(tx) = give_back.get(usize::from(r.worker)) {
                    let _ = tx.send(r.data);
                }
            }
            Err(RecvTimeoutError::Timeout) => files.flush(),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    files.flush();
}

/// One open capture file: its writer, and the interface id of each session in it.
struct Capture {
    writer: PcapNgWriter<BufWriter<File>>,
    interfaces: HashMap<Box<str>, u32>,
}

struct Files {
    base: PathBuf,
    /// By file name; `None` when it could not be opened (said once).
    open: HashMap<Box<str>, Option<Capture>>,
}

impl Files {
    fn write(&mut self, snap: &Snapshot, r: &Record) {
        let m = &snap.topo.traffic_mirror;
        let (Some(name), Some(session)) = (
            m.files.get(r.file as usize),
            m.sessions.get(r.session as usize),
        ) else {
            return;
        };
        let base = &self.base;
        let capture = self
            .open
            .entry(name.clone())
            .or_insert_with(|| open(base, name));
        let Some(capture) = capture else { return };
        let interface = match capture.interfaces.get(&session.id) {
            Some(i) => *i,
            None => {
                let source = &snap.eni(session.source).id;
                let idb = InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: 0,
                    options: vec![
                        InterfaceDescriptionOption::IfName(Cow::Owned(format!(
                            "{source} ({})",
                            session.id
                        ))),
                        InterfaceDescriptionOption::IfDescription(Cow::Owned(format!(
                            "vpcd traffic mirror session {} of {source}",
                            session.id
                        ))),
                        // Timestamps in nanoseconds (what the writer stores).
                        InterfaceDescriptionOption::IfTsResol(9),
                    ],
                };
                if capture.writer.write_pcapng_block(idb).is_err() {
                    return;
                }
                let i = capture.interfaces.len() as u32;
                capture.interfaces.insert(session.id.clone(), i);
                i
            }
        };
        let mut options = vec![EnhancedPacketOption::Flags(match r.dir {
            Direction::Ingress => 1,
            Direction::Egress => 2,
        })];
        if let Outcome::Dropped(reason) = r.outcome {
            options.push(EnhancedPacketOption::Comment(Cow::Owned(format!(
                "vpcd dropped this packet: {reason}"
            ))));
        }
        let epb = EnhancedPacketBlock {
            interface_id: interface,
            // The workers' clock is Unix time in nanoseconds.
            timestamp: Duration::from_nanos(r.at.0),
            original_len: r.original_len,
            data: Cow::Borrowed(&r.data[..r.len]),
            options,
        };
        let _ = capture.writer.write_pcapng_block(epb);
    }

    fn flush(&mut self) {
        use std::io::Write as _;
        for c in self.open.values_mut().flatten() {
            let _ = c.writer.get_mut().flush();
        }
    }
}

/// Creates (or truncates) a capture file: a pcapng file holds one capture, from its
/// section header on.
fn open(base: &Path, name: &str) -> Option<Capture> {
    let p = Path::new(name);
    let path = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = match File::create(&path) {
        Ok(f) => f,
        Err(e) => {
            log::error!("traffic mirror capture {}: {e}", path.display());
            return None;
        }
    };
    match PcapNgWriter::new(BufWriter::new(file)) {
        Ok(writer) => Some(Capture {
            writer,
            interfaces: HashMap::new(),
        }),
        Err(e) => {
            log::error!("traffic mirror capture {}: {e}", path.display());
            None
        }
    }
}
