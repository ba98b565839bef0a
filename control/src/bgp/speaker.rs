//! Runs one BGP session (`session.rs`) over TCP on a thread of its own: the AWS end of a
//! VPN tunnel or a VIF. The listening socket is made by the caller inside the endpoint's
//! network namespace (`netns::run_in`), so this thread never changes namespace.
//!
//! The AWS side waits for the customer gateway to connect (AWS's endpoints answer the
//! customer gateway's connection; its configurations make the customer side active), and
//! takes connections only from the configured neighbour. A second connection while one
//! is open is refused: the open one wins (RFC 4271 §6.8's collision rule, decided for the
//! side that was there first).
//!
//! What the session learns is published in `Status` (read by `vpcd status` and by the
//! route compiler) and announced on a channel, so the control thread can recompile and
//! swap the snapshot. None of this is on the packet path.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ip_network::Ipv4Network;

use super::session::{Config, Event, Output, Path, Session, State};

/// How often the thread looks at its stop flag and the routes to advertise.
const POLL: Duration = Duration::from_millis(100);
/// A peer that stops reading for this long is treated as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `vpcd status` shows of a session (R-VPN-STATUS).
#[derive(Clone, Debug)]
pub struct Status {
    pub state: State,
    /// The routes accepted from the peer.
    pub routes: BTreeMap<Ipv4Network, Path>,
    /// Prefixes refused over the limit (R-VPN-BGP).
    pub refused: u64,
    /// Why the session last went down.
    pub last_down: Option<String>,
    /// When the session was last established.
    pub established_at: Option<Instant>,
}

struct Shared {
    stop: AtomicBool,
    status: Mutex<Status>,
    /// Routes to advertise, taken by the thread at its next look.
    adverts: Mutex<Option<BTreeMap<Ipv4Network, Vec<u32>>>>,
}

/// A running session; dropping it shuts the session down (NOTIFICATION Cease).
pub struct Speaker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Speaker {
    /// Starts the session on `listener`, accepting only `peer`; `changed` receives `name`
    /// whenever the session's state or routes change.
    pub fn spawn(
        name: String,
        listener: TcpListener,
        peer: Ipv4Addr,
        cfg: Config,
        changed: Sender<String>,
    ) -> io::Result<Speaker> {
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            status: Mutex::new(Status {
                state: State::Idle,
                routes: BTreeMap::new(),
                refused: 0,
                last_down: None,
                established_at: None,
            }),
            adverts: Mutex::new(None),
        });
        let inner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("vpcd-bgp-{name}"))
            .spawn(move || {
                Driver {
                    name,
                    listener,
                    peer,
                    session: Session::new(cfg),
                    conn: None,
                    shared: inner,
                    changed,
                }
                .run()
            })?;
        Ok(Speaker {
            shared,
            thread: Some(thread),
        })
    }

    pub fn status(&self) -> Status {
        lock(&self.shared.status).clone()
    }

    /// Sets what the session advertises: prefix → AS path after the AWS side's ASN.
    pub fn advertise(&self, routes: BTreeMap<Ipv4Network, Vec<u32>>) {
        *lock(&self.shared.adverts) = Some(routes);
    }

    /// Ends the session with a Cease and waits for the thread.
    pub fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Driver {
    name: String,
    listener: TcpListener,
    peer: Ipv4Addr,
    session: Session,
    conn: Option<TcpStream>,
    shared: Arc<Shared>,
    changed: Sender<String>,
}

impl Driver {
    fn run(mut self) {
        let mut buf = vec![0u8; 8192];
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                let out = self.session.shutdown();
                self.apply(out);
                return;
            }
            let adverts = lock(&self.shared.adverts).take();
            if let Some(routes) = adverts {
                let out = self.session.advertise(routes);
                self.apply(out);
            }
            self.accept();
            let now = Instant::now();
            let wait = self
                .session
                .next_wake()
                .map_or(POLL, |w| w.saturating_duration_since(now).min(POLL));
            if self.readable(wait) {
                let read = match self.conn.as_mut() {
                    Some(c) => c.read(&mut buf),
                    None => Ok(0),
                };
                let out = match read {
                    Ok(0) => self.session.closed(),
                    Ok(n) => self.session.received_bytes(&buf[..n], Instant::now()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Output::default(),
                    Err(_) => self.session.closed(),
                };
                self.apply(out);
            }
            let out = self.session.tick(Instant::now());
            self.apply(out);
        }
    }

    /// Takes a waiting connection from the neighbour, if there is one and none is open.
    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, from)) => {
                    let ours = from.ip() == IpAddr::V4(self.peer);
                    if !ours || self.conn.is_some() {
                        continue; // dropped: closed at once
                    }
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                    self.conn = Some(stream);
                    let out = self.session.connected(Instant::now());
                    self.apply(out);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return, // WouldBlock: nobody waiting
            }
        }
    }

    /// Waits up to `wait` for the connection (or, without one, the listener) to be ready.
    fn readable(&self, wait: Duration) -> bool {
        let fd = match &self.conn {
            Some(c) => c.as_raw_fd(),
            None => self.listener.as_raw_fd(),
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd on the stack, for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        n > 0 && self.conn.is_some()
    }

    /// Sends what the session asked to send, closes if it asked, and publishes changes.
    fn apply(&mut self, out: Output) {
        let mut out = out;
        if !out.send.is_empty() {
            if let Some(c) = self.conn.as_mut() {
                if c.write_all(&out.send).is_err() {
                    let more = self.session.closed();
                    out.events.extend(more.events);
                    out.close = true;
                }
            }
        }
        if out.close {
            self.conn = None;
        }
        let state = self.session.state();
        {
            let mut st = lock(&self.shared.status);
            let moved = st.state != state;
            st.state = state;
            if !moved && out.events.is_empty() {
                return;
            }
            if !out.events.is_empty() {
                st.routes = self.session.received().clone();
                st.refused = self.session.refused();
                st.last_down = self.session.last_down().map(|d| d.to_string());
            }
            if out.events.contains(&Event::Established) {
                st.established_at = Some(Instant::now());
            }
            if state != State::Established {
                st.established_at = None;
            }
        }
        for e in &out.events {
            match e {
                Event::Established => log::info!("BGP {}: established", self.name),
                Event::Down(why) => log::info!("BGP {}: down: {why}", self.name),
                Event::RoutesChanged => {}
            }
        }
        let _ = self.changed.send(self.name.clone());
    }
}
