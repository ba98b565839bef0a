//! The control socket (lab.md): a Unix socket, readable by root only, through which
//! `vpcd apply`, `status`, `stats` and `trace --live` talk to the running router.
//!
//! One request per connection, framed so that nothing partial is ever acted on (issue 22:
//! a truncated `apply` of the default lab once read as a valid lab with no instances and
//! removed every namespace):
//!
//! ```text
//! vpcd/1 LEN COMMAND ARGS…\n      the header line (at most 4 KiB)
//! BODY                             exactly LEN bytes of UTF-8 (a lab file for `apply`)
//! ```
//!
//! A request whose body is shorter than LEN, larger than a lab may be
//! ([`MAX_LAB_BYTES`]), or not complete within [`REQUEST_DEADLINE`] is refused and
//! nothing is done. The answer's first line is its [`Status`]; the rest is for a person.
//! Each client is served on its own thread (at most [`MAX_CLIENTS`] at once), so a slow or
//! idle client never delays another's `status`; what a client sent is never echoed back
//! whole.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::yaml::{shown, MAX_LAB_BYTES};

/// The protocol's name and version, the header line's first word.
pub const VERSION: &str = "vpcd/1";
/// The longest header line.
pub const MAX_HEADER: usize = 4096;
/// The time a client has to send its whole request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Clients served at once; more are turned away at once.
pub const MAX_CLIENTS: usize = 8;

/// What became of a request: the answer's first line, and how `vpcd` exits on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Done (exit 0; the text goes to stdout).
    Ok,
    /// Done, and the answer is "no": a trace that is not reachable (exit 1, stdout).
    No,
    /// Refused: an `apply` with errors, or one the router could not carry out (exit 1,
    /// stderr); the running lab is unchanged.
    Refused,
    /// A request the router cannot take: malformed, unknown, too large, too slow, a
    /// trace of an unknown instance (exit 2, stderr).
    Bad,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::No => "no",
            Status::Refused => "error",
            Status::Bad => "bad",
        }
    }

    pub fn from_word(w: &str) -> Option<Status> {
        [Status::Ok, Status::No, Status::Refused, Status::Bad]
            .into_iter()
            .find(|s| s.word() == w)
    }
}

/// An answer: its status and the text for a person.
pub type Reply = (Status, String);

/// A request as the router reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// The command and its arguments (`apply FILE`, `status`, `trace …`).
    pub command: String,
    pub body: String,
}

/// Why a request was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the request has no header line within {MAX_HEADER} bytes")]
    HeaderTooLong,
    #[error("the request does not start with `{VERSION} LEN COMMAND`; use a vpcd client of the same version")]
    Unframed,
    #[error("the request's body of {0} bytes is larger than a lab may be ({max} MiB)", max = MAX_LAB_BYTES >> 20)]
    TooLarge(usize),
    #[error("the request ended after {got} of {want} bytes; nothing was done")]
    Truncated { got: usize, want: usize },
    #[error("the request is not UTF-8 text")]
    NotText,
    #[error("the request was not complete in time; nothing was done")]
    TooSlow,
    #[error("the request could not be read: {0}")]
    Io(String),
}

/// The header line of a request for `command` with a body of `len` bytes.
pub fn header(command: &str, len: usize) -> String {
    format!("{VERSION} {len} {command}\n")
}

/// Reads one framed request: the header line, then exactly the body it announces.
pub fn read_request(r: &mut impl BufRead) -> Result<Request, RequestError> {
    let mut line = Vec::new();
    r.take(MAX_HEADER as u64)
        .read_until(b'\n', &mut line)
        .map_err(io_error)?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() >= MAX_HEADER {
            RequestError::HeaderTooLong
        } else {
            RequestError::Unframed
        });
    }
    let line = std::str::from_utf8(&line[..line.len() - 1]).map_err(|_| RequestError::NotText)?;
    let mut words = line.splitn(3, ' ');
    let (Some(VERSION), Some(len), command) = (words.next(), words.next(), words.next()) else {
        return Err(RequestError::Unframed);
    };
    let len: usize = len.parse().map_err(|_| RequestError::Unframed)?;
    if len > MAX_LAB_BYTES {
        return Err(RequestError::TooLarge(len));
    }
    let mut body = Vec::with_capacity(len.min(1 << 20));
    r.take(len as u64)
        .read_to_end(&mut body)
        .map_err(io_error)?;
    if body.len() < len {
        return Err(RequestError::Truncated {
            got: body.len(),
            want: len,
        });
    }
    Ok(Request {
        command: command.unwrap_or("").trim().to_string(),
        body: String::from_utf8(body).map_err(|_| RequestError::NotText)?,
    })
}

fn io_error(e: io::Error) -> RequestError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => RequestError::TooSlow,
        _ => RequestError::Io(e.to_string()),
    }
}

/// A stream read under one deadline for the whole request (a per-read timeout alone lets
/// a client that sends a byte every few seconds hold its thread for ever).
struct Deadline<'a> {
    stream: &'a UnixStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        (&mut &*self.stream).read(buf)
    }
}

/// The default socket of a prefix.
pub fn default_path(prefix: &str) -> PathBuf {
    Path::new(crate::runstate::RUN_DIR).join(format!("ctl-{prefix}.sock"))
}

/// What the router does with a request.
pub trait Handler: Send + Sync + 'static {
    /// Answers `command` (with its arguments) and `body`.
    fn handle(&self, command: &str, body: &str) -> Reply;
}

/// Serves the socket at `path` on a thread until `stop` is set. Replaces a stale socket
/// file (the prefix lock says no other router uses it).
pub fn serve(
    path: &Path,
    handler: Arc<dyn Handler>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    serve_with(path, handler, stop, REQUEST_DEADLINE)
}

/// [`serve`] with another time for a whole request (tests).
pub fn serve_with(
    path: &Path,
    handler: Arc<dyn Handler>,
    stop: Arc<AtomicBool>,
    deadline: Duration,
) -> io::Result<JoinHandle<()>> {
    // Only a stale socket is replaced, never another kind of file.
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
    // Created with mode 0600 from the start (umask), not opened to others for a moment.
    // SAFETY: umask has no pointer arguments; it is restored right after the bind.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound?;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    listener.set_nonblocking(true)?;
    let path = path.to_path_buf();
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("vpcd-control".into())
        .spawn(move || {
            accept_until(listener.as_raw_fd(), &stop, || {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let _ = stream.set_nonblocking(false);
                // A client that does not read its answer must not hold a thread.
                let _ = stream.set_write_timeout(Some(deadline));
                if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                    busy.fetch_sub(1, Ordering::AcqRel);
                    let reply = format!("{MAX_CLIENTS} other clients are being served; try again");
                    send(&stream, &(Status::Bad, reply));
                    return;
                }
                let (handler, served) = (Arc::clone(&handler), Arc::clone(&busy));
                let spawned = std::thread::Builder::new()
                    .name("vpcd-client".into())
                    .spawn(move || {
                        answer(&stream, handler.as_ref(), deadline);
                        served.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::AcqRel);
                }
            });
            let _ = std::fs::remove_file(&path);
        })
}

/// Calls `ready` whenever the listening socket `fd` has a connection waiting, until
/// `stop` is set (seen within 200 ms): the loop of the control socket and of metrics.
pub(crate) fn accept_until(fd: RawFd, stop: &AtomicBool, mut ready: impl FnMut()) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, 200) } > 0 {
            ready();
        }
    }
}

fn answer(stream: &UnixStream, handler: &dyn Handler, deadline: Duration) {
    let mut reader = BufReader::new(Deadline {
        stream,
        until: Instant::now() + deadline,
    });
    let reply = match read_request(&mut reader) {
        Ok(req) => handler.handle(&req.command, &req.body),
        Err(e) => (Status::Bad, e.to_string()),
    };
    send(stream, &reply);
}

fn send(mut stream: &UnixStream, (status, text): &Reply) {
    let _ = stream.write_all(format!("{}\n{text}", status.word()).as_bytes());
}

/// Sends one request and returns the router's answer.
pub fn request(path: &Path, command: &str, body: &str) -> io::Result<Reply> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach a running vpcd at {}: {e} (is `vpcd up` running with this --prefix?)",
                path.display()
            ),
        )
    })?;
    // The router may answer before it has read everything (turned away, too large): a
    // broken pipe here still leaves its answer to read.
    let sent = stream
        .write_all(header(command, body.len()).as_bytes())
        .and_then(|_| stream.write_all(body.as_bytes()))
        .and_then(|_| stream.shutdown(std::net::Shutdown::Write));
    match sent {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e),
        _ => {}
    }
    // Likewise a router that closes without reading all we sent resets the connection
    // after its answer: what came before the reset is the answer.
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !bytes.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    let reply = String::from_utf8_lossy(&bytes);
    let (word, text) = reply.split_once('\n').unwrap_or((&reply, ""));
    let status = Status::from_word(word).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the router answered `{}`, not a status", shown(word)),
        )
    })?;
    Ok((status, text.to_string()))
}
