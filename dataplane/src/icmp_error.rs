//! ICMP errors the VPC's own devices send (the router, a gateway): written over the packet
//! that caused them, and returned as [`Verdict::Reply`].
//!
//! Path MTU (R-IGW-MTU, R-VGW-MTU): inside a VPC packets may be 9001 bytes, but the path
//! through an internet gateway or a VPN is 1500. A larger packet that may not be
//! fragmented is answered with "fragmentation needed" (IPv6: "packet too big") carrying
//! the MTU, so the sender's path-MTU discovery lowers its packets. The error reaches an
//! instance only through its security groups (R-SG-ICMP-ERR: AWS tells users to allow
//! type 3 code 4), as on AWS.

use std::net::IpAddr;

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder};

use crate::observer::{Direction, NoObserver, Observer, Step};
use crate::packet::Packet;
use crate::pipeline::{Ctx, Verdict};
use crate::reason::DropReason;
use crate::security_group;
use crate::snapshot::{EniIx, PortId};

/// The MTU of the path through an internet gateway, an egress-only gateway or a VPN.
pub const INTERNET_MTU: u16 = 1500;

/// Bytes of the offending packet quoted in the error: its IP header and the first 8 bytes
/// of its payload (RFC 792), enough for the sender to find the flow.
const QUOTE_V4: usize = 28;
const QUOTE_V6: usize = 48;

/// Who sent the oversized packet, and where the error goes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sender {
    pub port: PortId,
    /// The sending instance, whose security groups must admit the error.
    pub eni: Option<EniIx>,
}

/// Whether `pkt` is too big for a path of `mtu` bytes. A GSO super-packet is judged by
/// its segments, which are what that path would carry.
#[inline]
pub fn too_big(pkt: &Packet, mtu: u16) -> bool {
    pkt.seg_len > u32::from(mtu)
}

/// Which error the router sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouterError {
    /// "Fragmentation needed" / "packet too big", with the path MTU.
    TooBig(u16),
    /// "Time exceeded in transit": the TTL / hop limit ran out at the router.
    TimeExceeded,
}

/// Answers an oversized packet: "fragmentation needed" / "packet too big" from `from`,
/// written over `buf`. IPv4 without DF would be fragmented by AWS; vpcd does not fragment,
/// so it drops it as `MTU_EXCEEDED` and says so.
pub(crate) fn packet_too_big<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    pkt: &Packet,
    buf: &mut [u8],
    mtu: u16,
    from: IpAddr,
    sender: Sender,
) -> Verdict {
    if !pkt.dont_fragment {
        return cx.drop(
            DropReason::MtuExceeded,
            "larger than the path MTU (1500); vpcd does not fragment",
        );
    }
    router_error(cx, pkt, buf, RouterError::TooBig(mtu), from, sender)
}

/// The router's ICMP error about `pkt`, from `from`, written over `buf` and handed to the
/// sender if its security groups admit it (R-SG-ICMP-ERR); else the packet is dropped with
/// the error's reason (MTU_EXCEEDED, TTL_EXPIRED).
pub(crate) fn router_error<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    pkt: &Packet,
    buf: &mut [u8],
    kind: RouterError,
    from: IpAddr,
    sender: Sender,
) -> Verdict {
    let (reason, what) = match kind {
        RouterError::TooBig(_) => (DropReason::MtuExceeded, "larger than the path MTU"),
        RouterError::TimeExceeded => (DropReason::TtlExpired, "the TTL ran out at the VPC router"),
    };
    // RFC 1122 / RFC 4443: never an error about an ICMP error or a later fragment.
    if pkt.is_icmp_error() || pkt.fragment == crate::packet::Fragment::Later {
        return cx.drop(reason, what);
    }
    let quote_len = if pkt.is_ipv6() { QUOTE_V6 } else { QUOTE_V4 };
    let mut quote = [0u8; QUOTE_V6];
    let q = quote_len.min(pkt.len as usize).min(buf.len());
    quote[..q].copy_from_slice(&buf[..q]);
    let written = match (from, pkt.src) {
        (IpAddr::V4(f), IpAddr::V4(to)) => {
            let t =
                match kind {
                    RouterError::TooBig(mtu) => Icmpv4Type::DestinationUnreachable(
                        DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
                    ),
                    RouterError::TimeExceeded => Icmpv4Type::TimeExceeded(
                        etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
                    ),
                };
            let b = PacketBuilder::ipv4(f.octets(), to.octets(), 64).icmpv4(t);
            let len = b.size(q);
            let mut w = &mut buf[..];
            b.write(&mut w, &quote[..q]).ok().map(|_| len)
        }
        (IpAddr::V6(f), IpAddr::V6(to)) => {
            let t = match kind {
                RouterError::TooBig(mtu) => Icmpv6Type::PacketTooBig {
                    mtu: u32::from(mtu),
                },
                RouterError::TimeExceeded => {
                    Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::HopLimitExceeded)
                }
            };
            let b = PacketBuilder::ipv6(f.octets(), to.octets(), 64).icmpv6(t);
            let len = b.size(q);
            let mut w = &mut buf[..];
            b.write(&mut w, &quote[..q]).ok().map(|_| len)
        }
        _ => None,
    };
    let Some(len) = written else {
        return cx.drop(reason, what);
    };
    match kind {
        RouterError::TooBig(mtu) => cx.obs.step(Step::PacketTooBig { mtu }),
        RouterError::TimeExceeded => cx.obs.step(Step::TimeExceeded),
    }
    if let Some(eni) = sender.eni {
        let Ok(error) = Packet::parse(&buf[..len]) else {
            return cx.drop(reason, what);
        };
        // Judged quietly: the packet being dropped is the oversized one, and its reason is
        // the MTU; the refused error only explains why the sender never hears of it.
        let mut quiet = Ctx {
            snap: cx.snap,
            ct: cx.ct,
            now: cx.now,
            obs: &mut NoObserver,
            cause: cx.cause,
            replaced: None,
            worker: cx.worker,
            workers: cx.workers,
            fl: cx.fl,
            hops: cx.hops,
            resized: None,
            mirror: cx.mirror,
            meta: cx.meta,
        };
        if security_group::check(&mut quiet, eni, Direction::Ingress, &error).is_err() {
            return cx.drop(
                reason,
                match kind {
                    RouterError::TooBig(_) => "larger than the path MTU (1500), and the sender's security groups refuse the ICMP error (allow type 3 code 4)",
                    RouterError::TimeExceeded => "the TTL ran out at the VPC router, and the sender's security groups refuse the ICMP error (allow type 11)",
                },
            );
        }
    }
    cx.replaced = Some(reason);
    Verdict::Reply {
        port: sender.port,
        len: len as u16,
    }
}
