//! The control socket against hostile clients (issue 22): framing (a truncated request is
//! never acted on), bounded size, a deadline for slow clients, a thread per client (an
//! idle one never delays `status`), no echo of what was sent. No root needed: the socket
//! lives in a temporary directory and the handler is a recording stand-in.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control::control_socket::{
    header, read_request, request, serve_with, Handler, Reply, Request, RequestError, Status,
    MAX_CLIENTS, MAX_HEADER, VERSION,
};
use control::yaml::MAX_LAB_BYTES;

/// Records what it was asked.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(String, usize)>>,
}

impl Handler for Recorder {
    fn handle(&self, command: &str, body: &str) -> Reply {
        self.calls
            .lock()
            .unwrap()
            .push((command.to_string(), body.len()));
        (Status::Ok, format!("did {command}\n"))
    }
}

/// A served socket that stops (and is removed) when dropped.
struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    recorder: Arc<Recorder>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(name: &str, deadline: Duration) -> Server {
        let dir = std::env::temp_dir().join(format!("vpcd-ctl-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = Arc::new(Recorder::default());
        let thread = serve_with(
            &path,
            Arc::clone(&recorder) as Arc<dyn Handler>,
            Arc::clone(&stop),
            deadline,
        )
        .unwrap();
        Server {
            path,
            stop,
            recorder,
            thread: Some(thread),
        }
    }

    fn calls(&self) -> Vec<(String, usize)> {
        self.recorder.calls.lock().unwrap().clone()
    }

    /// Connects and sends `bytes` raw; returns the stream.
    fn raw(&self, bytes: &[u8]) -> UnixStream {
        let mut s = UnixStream::connect(&self.path).unwrap();
        s.write_all(bytes).unwrap();
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(self.path.parent().unwrap());
    }
}

fn answer_of(mut s: UnixStream) -> String {
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn parse(bytes: &[u8]) -> Result<Request, RequestError> {
    read_request(&mut BufReader::new(bytes))
}

#[test]
fn a_framed_request_is_read_whole() {
    let mut bytes = header("apply lab.yaml", 11).into_bytes();
    bytes.extend_from_slice(b"version: 1\nthe next request");
    let r = parse(&bytes).unwrap();
    assert_eq!(r.command, "apply lab.yaml");
    assert_eq!(r.body, "version: 1\n");
    assert_eq!(parse(b"vpcd/1 0 status\n").unwrap().command, "status");
}

#[test]
fn malformed_requests_are_named() {
    assert_eq!(
        parse(b"vpcd/1 100 apply x\nshort"),
        Err(RequestError::Truncated { got: 5, want: 100 })
    );
    assert_eq!(parse(b"status\n"), Err(RequestError::Unframed));
    assert_eq!(parse(b"vpcd/1 status\n"), Err(RequestError::Unframed));
    assert_eq!(parse(b"vpcd/2 0 status\n"), Err(RequestError::Unframed));
    assert_eq!(parse(b"vpcd/1 -1 status\n"), Err(RequestError::Unframed));
    assert_eq!(parse(b"vpcd/1 0 status"), Err(RequestError::Unframed));
    assert_eq!(parse(b""), Err(RequestError::Unframed));
    let long = vec![b'a'; MAX_HEADER + 10];
    assert_eq!(parse(&long), Err(RequestError::HeaderTooLong));
    let big = format!("{VERSION} {} apply x\n", MAX_LAB_BYTES + 1);
    assert_eq!(
        parse(big.as_bytes()),
        Err(RequestError::TooLarge(MAX_LAB_BYTES + 1))
    );
    assert_eq!(
        parse(b"vpcd/1 2 apply x\n\xff\xfe"),
        Err(RequestError::NotText)
    );
}

#[test]
fn a_truncated_apply_is_refused_and_never_handled() {
    let server = Server::start("truncated", Duration::from_secs(5));
    // The reproducer: the default lab cut short still parsed as a valid lab with no
    // instances. Framed, the router sees it is short.
    let lab = control::DEFAULT_LAB;
    let mut s = server.raw(header("apply default.yaml", lab.len()).as_bytes());
    s.write_all(&lab.as_bytes()[..lab.len() / 2]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let answer = answer_of(s);
    assert!(answer.starts_with("bad\n"), "{answer}");
    assert!(answer.contains("nothing was done"), "{answer}");
    assert!(server.calls().is_empty());
    // A whole one is handled.
    let (status, text) = request(&server.path, "apply default.yaml", lab).unwrap();
    assert_eq!(status, Status::Ok, "{text}");
    assert_eq!(
        server.calls(),
        vec![("apply default.yaml".into(), lab.len())]
    );
}

#[test]
fn a_huge_request_is_refused_unread_and_not_echoed() {
    let server = Server::start("huge", Duration::from_secs(5));
    // Announces 512 MiB: refused from the header alone.
    let mut s = server.raw(format!("{VERSION} {} apply x\n", 512usize << 20).as_bytes());
    let _ = s.write_all(&vec![b'x'; 1 << 16]);
    let answer = answer_of(s);
    assert!(answer.starts_with("bad\n"), "{answer}");
    assert!(answer.len() < 300, "{answer}");
    // An endless header line with no newline: refused after MAX_HEADER bytes, not echoed.
    let mut s = UnixStream::connect(&server.path).unwrap();
    let _ = s.write_all(&vec![b'y'; 64 << 10]);
    let answer = answer_of(s);
    assert!(answer.starts_with("bad\n"), "{answer}");
    assert!(!answer.contains("yyyy"), "{answer}");
    assert!(server.calls().is_empty());
}

#[test]
fn an_idle_or_slow_client_does_not_delay_status() {
    let server = Server::start("slow", Duration::from_secs(3));
    // One client connects and says nothing; another sends a byte now and then.
    let idle = UnixStream::connect(&server.path).unwrap();
    let mut slow = UnixStream::connect(&server.path).unwrap();
    slow.write_all(b"vpcd/1 ").unwrap();
    let (tx, rx) = mpsc::channel();
    let t1 = tx.clone();
    std::thread::spawn(move || t1.send(("idle", answer_of(idle))).unwrap());
    std::thread::spawn(move || {
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(500));
            if slow.write_all(b"1").is_err() {
                break;
            }
        }
        tx.send(("slow", answer_of(slow))).unwrap();
    });
    // status is answered while both are still connected: neither has an answer yet.
    let (status, text) = request(&server.path, "status", "").unwrap();
    assert_eq!((status, text.as_str()), (Status::Ok, "did status\n"));
    assert!(
        rx.try_recv().is_err(),
        "status waited for the other clients"
    );
    // Then the deadline ends both, whatever the slow one keeps sending.
    let mut ended = Vec::new();
    for _ in 0..2 {
        let (who, answer) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(answer.starts_with("bad\n"), "{who}: {answer}");
        ended.push(who);
    }
    assert_eq!(server.calls(), vec![("status".into(), 0)]);
}

#[test]
fn too_many_clients_at_once_are_turned_away_and_the_rest_served() {
    let server = Server::start("many", Duration::from_secs(3));
    let held: Vec<UnixStream> = (0..MAX_CLIENTS)
        .map(|_| UnixStream::connect(&server.path).unwrap())
        .collect();
    // Each accepted client has its thread; the next is told so at once.
    let mut turned_away = None;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(20));
        let (status, text) = request(&server.path, "status", "").unwrap();
        if status == Status::Bad {
            turned_away = Some(text);
            break;
        }
    }
    let text = turned_away.expect("a client beyond the limit is turned away");
    assert!(text.contains("other clients"), "{text}");
    drop(held);
    // Once they are gone (their threads end at EOF), status is served again.
    let mut served = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(20));
        if request(&server.path, "status", "").unwrap().0 == Status::Ok {
            served = true;
            break;
        }
    }
    assert!(served);
}
