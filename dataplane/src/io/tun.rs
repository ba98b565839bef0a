//! Linux TUN queues, opened with direct ioctls on `/dev/net/tun`.
//!
//! Why not a TUN crate: vpcd must create each device *inside* its namespace (a TUN device
//! belongs to the network namespace of the task that opened `/dev/net/tun`), so that
//! nothing ever appears in the namespace vpcd runs in; it opens one queue per worker
//! (`IFF_MULTI_QUEUE`); and the performance issue adds `IFF_VNET_HDR` with
//! `TUNSETOFFLOAD` (checksum and TSO offloads, GSO super-packets), which changes the
//! framing of every read and write. tun-tap knows neither multi-queue nor offloads; tun-rs
//! has both but wraps them in its own device model and async runtimes. The whole device is
//! three ioctls and `readv`/`writev` on a non-blocking fd, so owning it keeps every flag
//! in sight and adds no dependency.
//!
//! Offloads ([`Offloads::On`], the default): `IFF_VNET_HDR` puts a `virtio_net_hdr` in
//! front of every packet, and `TUNSETOFFLOAD` tells the namespace's stack that this
//! device takes partial checksums and TSO/USO super-packets, so a 64 KiB TCP burst is
//! one read here and one write on the other side (see [`crate::offload`]).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::Queue;
use crate::offload::{Offload, VNET_HDR_LEN};

/// Flags vpcd opens every queue with: layer-3 packets, no packet-information prefix, one
/// fd per worker.
pub const FLAGS: libc::c_int = libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;

/// The offloads vpcd takes (`TUNSETOFFLOAD`): partial checksums, TCP segmentation for
/// IPv4 and IPv6 (with ECN), and UDP segmentation where the kernel has it (6.2+).
pub const OFFLOADS: libc::c_uint = libc::TUN_F_CSUM
    | libc::TUN_F_TSO4
    | libc::TUN_F_TSO6
    | libc::TUN_F_TSO_ECN
    | TUN_F_USO4
    | TUN_F_USO6;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;

/// Whether a queue carries the virtio-net header and takes offloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offloads {
    /// `IFF_VNET_HDR` with [`OFFLOADS`]: the namespace's stack hands over 64 KiB
    /// super-packets with partial checksums (the fast path).
    On,
    /// One packet per read and write, checksums complete (`vpcd up --no-offload`).
    Off,
}

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
    vnet_hdr: bool,
    /// The kernel took USO: UDP GSO super-packets may be written.
    uso: bool,
}

impl TunQueue {
    /// Opens (or, for the second and later queue, attaches to) the TUN device `name` in the
    /// network namespace of the calling thread. The device lives as long as one of its
    /// queues is open: closing the last one removes it.
    ///
    /// With [`Offloads::On`] every read and write carries a virtio-net header and the
    /// device offers the namespace's stack [`OFFLOADS`] (without USO on a kernel that
    /// does not know it).
    pub fn open(name: &str, offloads: Offloads) -> io::Result<TunQueue> {
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
        let vnet_hdr = offloads == Offloads::On;
        let flags = if vnet_hdr {
            FLAGS | libc::IFF_VNET_HDR
        } else {
            FLAGS
        };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: flags as libc::c_short,
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
        if vnet_hdr {
            // The header's fields in little-endian whatever the host's order (legacy
            // virtio would use the host's), which is what `Offload` reads and writes.
            // SAFETY: TUNSETVNETLE reads an int through the pointer for the call.
            let le: libc::c_int = 1;
            let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETLE as _, &le) };
            if rc < 0 && cfg!(target_endian = "big") {
                return Err(io::Error::last_os_error());
            }
            let uso = set_offload(&fd, OFFLOADS).is_ok();
            if !uso {
                set_offload(&fd, OFFLOADS & !(TUN_F_USO4 | TUN_F_USO6))?;
            }
            return Ok(TunQueue { fd, vnet_hdr, uso });
        }
        Ok(TunQueue {
            fd,
            vnet_hdr,
            uso: false,
        })
    }
}

fn set_offload(fd: &OwnedFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes the flags as the ioctl's integer argument.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD as _,
            flags as libc::c_ulong,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Queue for TunQueue {
    #[inline]
    fn recv(&self, buf: &mut [u8], meta: &mut Offload) -> io::Result<usize> {
        if !self.vnet_hdr {
            *meta = Offload::NONE;
            // SAFETY: `buf` is valid for `buf.len()` writable bytes for the whole call.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            return if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            };
        }
        // The header lands in its own array and the packet at the start of `buf`: one
        // syscall, no copy.
        let mut hdr = [0u8; VNET_HDR_LEN];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: VNET_HDR_LEN,
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
        ];
        // SAFETY: both iovecs point at writable memory of their lengths for the call.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        *meta = Offload::from_virtio(&hdr);
        // A short read (no whole header) leaves a zero-length packet: counted as malformed.
        Ok((n as usize).saturating_sub(VNET_HDR_LEN))
    }

    fn takes_uso(&self) -> bool {
        self.uso
    }

    #[inline]
    fn send(&self, packet: &[u8], meta: &Offload) -> io::Result<()> {
        let n = if self.vnet_hdr {
            let hdr = meta.to_virtio();
            let iov = [
                libc::iovec {
                    iov_base: hdr.as_ptr() as *mut libc::c_void,
                    iov_len: VNET_HDR_LEN,
                },
                libc::iovec {
                    iov_base: packet.as_ptr() as *mut libc::c_void,
                    iov_len: packet.len(),
                },
            ];
            // SAFETY: both iovecs point at readable memory of their lengths for the call;
            // writev does not write through them.
            unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) }
        } else {
            // SAFETY: `packet` is valid for `packet.len()` readable bytes for the call.
            unsafe { libc::write(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) }
        };
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
