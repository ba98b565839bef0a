//! Linux TUN queues, opened with direct ioctls on `/dev/net/tun`.
//!
//! Why not a TUN crate: vpcd must create each device *inside* its namespace (a TUN device
//! belongs to the network namespace of the task that opened `/dev/net/tun`), so that
//! nothing ever appears in the namespace vpcd runs in; it opens one queue per worker
//! (`IFF_MULTI_QUEUE`); and the performance issue adds `IFF_VNET_HDR` with
//! `TUNSETOFFLOAD` (checksum and TSO offloads, GSO super-packets), which changes the
//! framing of every read and write. tun-tap knows neither multi-queue nor offloads; tun-rs
//! has both but wraps them in its own device model and async runtimes. The whole device is
//! two ioctls and `read`/`write` on a non-blocking fd, so owning it keeps every flag in
//! sight and adds no dependency.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::Queue;

/// Flags vpcd opens every queue with: layer-3 packets, no packet-information prefix, one
/// fd per worker.
pub const FLAGS: libc::c_int = libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in the union.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// One queue of a TUN device: a non-blocking fd that reads and writes whole IP packets.
#[derive(Debug)]
pub struct TunQueue {
    fd: OwnedFd,
}

impl TunQueue {
    /// Opens (or, for the second and later queue, attaches to) the TUN device `name` in the
    /// network namespace of the calling thread. The device lives as long as one of its
    /// queues is open: closing the last one removes it.
    pub fn open(name: &str) -> io::Result<TunQueue> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{name}` is not a valid interface name"),
            ));
        }
        let path: &CStr = c"/dev/net/tun";
        // SAFETY: `path` is a valid NUL-terminated string; open has no other preconditions.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: FLAGS as libc::c_short,
            _pad: [0; 22],
        };
        for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads a `struct ifreq`; `IfReq` has its layout (16-byte name,
        // short flags, padded to 40 bytes) and outlives the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TunQueue { fd })
    }
}

impl Queue for TunQueue {
    #[inline]
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes for the whole call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    #[inline]
    fn send(&self, packet: &[u8]) -> io::Result<()> {
        // SAFETY: `packet` is valid for `packet.len()` readable bytes for the whole call.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            // A TUN write takes the whole packet or fails.
            Ok(())
        }
    }
}

impl AsRawFd for TunQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for TunQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
