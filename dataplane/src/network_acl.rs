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
