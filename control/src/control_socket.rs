//! The control socket (lab.md): a Unix socket, readable by root only, through which
//! `vpcd apply`, `vpcd status` and `vpcd stats` talk to the running router.
//!
//! One request per connection, in plain text: the first line names the command
//! (`status`, `stats`, or `apply FILE`, where FILE is only the name errors are reported
//! under), an `apply` carries the lab text after it, and the client then closes its
//! writing side. The answer's first line is `ok` or `error`; the rest is for a person.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The default socket of a prefix.
pub fn default_path(prefix: &str) -> PathBuf {
    Path::new(crate::runstate::RUN_DIR).join(format!("ctl-{prefix}.sock"))
}

/// What the router does with a request.
pub trait Handler: Send + Sync + 'static {
    /// Answers `command` (the first line) with `body` (the rest); `Ok` text or `Err` text.
    fn handle(&self, command: &str, body: &str) -> Result<String, String>;
}

/// Serves the socket at `path` on a thread until `stop` is set. Replaces a stale socket
/// file (the prefix lock says no other router uses it).
pub fn serve(
    path: &Path,
    handler: Arc<dyn Handler>,
    stop: Arc<AtomicBool>,
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
    std::thread::Builder::new()
        .name("vpcd-control".into())
        .spawn(move || {
            accept_until(listener.as_raw_fd(), &stop, || {
                if let Ok((stream, _)) = listener.accept() {
                    answer(stream, handler.as_ref());
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

fn answer(mut stream: UnixStream, handler: &dyn Handler) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut request = String::new();
    if stream.read_to_string(&mut request).is_err() {
        let _ = stream.write_all(b"error\nthe request could not be read\n");
        return;
    }
    let (command, body) = request.split_once('\n').unwrap_or((request.as_str(), ""));
    let reply = match handler.handle(command.trim(), body) {
        Ok(text) => format!("ok\n{text}"),
        Err(text) => format!("error\n{text}"),
    };
    let _ = stream.write_all(reply.as_bytes());
}

/// Sends one request and returns (succeeded, text).
pub fn request(path: &Path, command: &str, body: &str) -> io::Result<(bool, String)> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach a running vpcd at {}: {e} (is `vpcd up` running with this --prefix?)",
                path.display()
            ),
        )
    })?;
    stream.write_all(format!("{command}\n{body}").as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (status, text) = reply.split_once('\n').unwrap_or((reply.as_str(), ""));
    Ok((status == "ok", text.to_string()))
}
