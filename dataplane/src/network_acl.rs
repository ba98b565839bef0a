//! The network-ACL stage (semantics.md §4): stateless, at the subnet boundary, outbound
//! at the subnet a packet leaves (step 5) and inbound at the subnet it enters (step 7),
//! never for traffic within one subnet.

use crate::observer::{Direction, Observer, Step};
use crate::packet::Packet;
use crate::pipeline::{Ctx, Verdict};
use crate::reason::DropReason;
use crate::snapshot::SubnetIx;
use crate::stats::Cause;

/// Judges `pkt` by the NACL of `subnet` in direction `dir` (R-NACL-ORDER, R-NACL-DIR).
/// Replies are judged like any packet (stateless).
#[inline]
pub(crate) fn check<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    subnet: SubnetIx,
    dir: Direction,
    pkt: &Packet,
) -> Result<(), Verdict> {
    if let Some((d, _)) = cx.snap.subnet(subnet).disruption {
        if disrupted(cx.snap, subnet, d, dir, pkt) {
            return Err(cx.drop(
                DropReason::FaultDisrupted,
                "the subnet's connectivity is disrupted by a fault (aws:network:disrupt-connectivity)",
            ));
        }
    }
    let acl_ix = cx.snap.subnet(subnet).network_acl;
    let acl = cx.snap.network_acl(acl_ix);
    let d = acl.evaluate(dir, pkt);
    cx.obs.step(Step::NetworkAcl {
        acl: acl_ix,
        direction: dir,
        rule: d.rule,
        allow: d.allow,
    });
    if d.allow {
        return Ok(());
    }
    cx.cause = Cause::Nacl { counter: d.counter };
    Err(match (dir, d.rule) {
        (Direction::Ingress, Some(_)) => cx.drop(
            DropReason::NaclIngress,
            "a deny rule of the receiving subnet's network ACL matched",
        ),
        (Direction::Ingress, None) => cx.drop(
            DropReason::NaclIngress,
            "no rule of the receiving subnet's network ACL allows it (final * rule)",
        ),
        (Direction::Egress, Some(_)) => cx.drop(
            DropReason::NaclEgress,
            "a deny rule of the sending subnet's network ACL matched",
        ),
        (Direction::Egress, None) => cx.drop(
            DropReason::NaclEgress,
            "no rule of the sending subnet's network ACL allows it (final * rule)",
        ),
    })
}

/// Whether `aws:network:disrupt-connectivity` with `d` on `subnet` drops `pkt` crossing
/// its boundary in `dir` (FIS: the scope decides what the temporary NACL denies).
fn disrupted(
    snap: &crate::Snapshot,
    subnet: SubnetIx,
    d: crate::snapshot::Disruption,
    dir: Direction,
    pkt: &Packet,
) -> bool {
    use crate::snapshot::Disruption;
    let remote = match dir {
        Direction::Egress => pkt.dst,
        Direction::Ingress => pkt.src,
    };
    match d {
        Disruption::All => true,
        Disruption::AvailabilityZone => {
            let sn = snap.subnet(subnet);
            snap.eni_by_addr(sn.vpc, remote).is_some_and(|e| {
                snap.subnet(snap.eni(e).subnet).availability_zone != sn.availability_zone
            })
        }
        Disruption::Service(s) => snap
            .service(s)
            .cidrs
            .iter()
            .any(|c| crate::route::net_contains(c, remote)),
    }
}
