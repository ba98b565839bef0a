//! The ENI's own checks: source/destination check (R-ADDR-SRCDST).
//!
//! With `source_dest_check: true` (the default) an ENI only sends packets whose source is
//! one of its addresses and only receives packets addressed to one of them. NAT instances
//! and appliances turn it off to forward for others.

use crate::observer::{Direction, Observer, Step};
use crate::packet::Packet;
use crate::pipeline::{drop, Verdict};
use crate::reason::DropReason;
use crate::snapshot::{Eni, EniIx};

/// Step 2: may this ENI send a packet with this source address?
#[inline]
pub fn source_check<'s, O: Observer<'s>>(
    eni: &Eni,
    ix: EniIx,
    pkt: &Packet,
    obs: &mut O,
) -> Result<(), Verdict> {
    if eni.source_dest_check && !eni.owns(pkt.src) {
        return Err(drop(
            obs,
            DropReason::EniSourceDestCheck,
            "the source is not an address of the sending ENI, and its source/destination check is on",
        ));
    }
    obs.step(Step::SourceDestCheck {
        eni: ix,
        direction: Direction::Egress,
    });
    Ok(())
}

/// Step 9: may this ENI receive a packet with this destination address?
#[inline]
pub fn destination_check<'s, O: Observer<'s>>(
    eni: &Eni,
    ix: EniIx,
    pkt: &Packet,
    obs: &mut O,
) -> Result<(), Verdict> {
    if eni.source_dest_check && !eni.owns(pkt.dst) {
        return Err(drop(
            obs,
            DropReason::EniSourceDestCheck,
            "the destination is not an address of the receiving ENI, and its source/destination check is on",
        ));
    }
    obs.step(Step::SourceDestCheck {
        eni: ix,
        direction: Direction::Ingress,
    });
    Ok(())
}
