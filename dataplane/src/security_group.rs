//! The security-group stage (semantics.md §3): at the sending ENI on the way out (step
//! 3) and at the receiving ENI on the way in (step 8), the flow's tracked state or else
//! the union of the ENI's groups' allow rules.

use std::net::IpAddr;

use crate::acl::{remote, SgPeer};
use crate::conntrack::{FlowKey, FlowState, Hit};
use crate::observer::{Direction, Observer, SgDecision, Step};
use crate::packet::{tcp_flags, Packet, Transport};
use crate::pipeline::{Ctx, Verdict};
use crate::reason::DropReason;
use crate::route::{net_contains, Target};
use crate::snapshot::{Eni, EniIx, EniKind, SgIx, Snapshot, Untracked};
use crate::stats::Cause;

/// R-SG-BOTHGATES: one of the two gates of a packet between ENIs. An ENI without groups
/// (a NAT gateway's) has no gate.
#[inline]
pub(crate) fn check<'s, O: Observer<'s>>(
    cx: &mut Ctx<'_, 's, O>,
    ix: EniIx,
    dir: Direction,
    pkt: &Packet,
) -> Result<(), Verdict> {
    let snap = cx.snap;
    let eni = snap.eni(ix);
    if eni.security_groups.is_empty() {
        return Ok(());
    }
    // R-SG-ICMP-ERR: an ICMP error is never let in as "related" to a tracked flow: like
    // any packet it needs a rule, and it opens no flow of its own.
    let error = pkt.is_icmp_error();
    let key = FlowKey::at_eni(eni.zone, dir, pkt);
    if !error {
        // R-SG-STATE: a packet of a tracked flow passes, whichever way, whatever the rules.
        if let Some(hit) = cx.ct.lookup(&key, cx.now) {
            if !starts_over(&hit, dir, pkt) {
                cx.ct.refresh(hit, dir, pkt, cx.now, &eni.timeouts);
                cx.obs.step(Step::SecurityGroup {
                    eni: ix,
                    direction: dir,
                    decision: SgDecision::Tracked,
                });
                return Ok(());
            }
            // A new connection on old addresses and ports is judged by the rules like any
            // new one, and takes the old slot.
            return match matching_rule(snap, eni, dir, pkt) {
                Some((group, rule)) => {
                    cx.ct.restart(hit, dir, pkt, cx.now, &eni.timeouts);
                    cx.obs.step(Step::SecurityGroup {
                        eni: ix,
                        direction: dir,
                        decision: SgDecision::Rule {
                            group,
                            rule,
                            tracked: true,
                        },
                    });
                    Ok(())
                }
                None => Err(deny(cx, ix, dir)),
            };
        }
    }
    let Some((group, rule)) = matching_rule(snap, eni, dir, pkt) else {
        return Err(deny(cx, ix, dir));
    };
    let tracked = !error && !untracked(snap, eni, dir, pkt);
    if tracked && cx.ct.insert(&key, dir, pkt, cx.now, &eni.timeouts).is_err() {
        return Err(cx.drop(
            DropReason::TableFull,
            "the connection-tracking table has no room for a new flow",
        ));
    }
    cx.obs.step(Step::SecurityGroup {
        eni: ix,
        direction: dir,
        decision: SgDecision::Rule {
            group,
            rule,
            tracked,
        },
    });
    Ok(())
}

/// No rule allows the packet (R-SG-ALLOW).
fn deny<'s, O: Observer<'s>>(cx: &mut Ctx<'_, 's, O>, ix: EniIx, dir: Direction) -> Verdict {
    cx.obs.step(Step::SecurityGroup {
        eni: ix,
        direction: dir,
        decision: SgDecision::Denied,
    });
    cx.cause = Cause::Sg { eni: ix, dir };
    match dir {
        Direction::Ingress => cx.drop(
            DropReason::SgIngress,
            "no rule of the receiving ENI's security groups allows it",
        ),
        Direction::Egress => cx.drop(
            DropReason::SgEgress,
            "no rule of the sending ENI's security groups allows it",
        ),
    }
}

/// Whether a packet that matches a tracked flow's key really opens a new one: a SYN
/// after the old TCP connection closed (Linux does the same), or an echo *request* from
/// the side that only answered so far: neither may ride on the old flow's state.
fn starts_over(hit: &Hit, dir: Direction, pkt: &Packet) -> bool {
    match pkt.transport {
        Transport::Tcp { flags, .. } => {
            flags & tcp_flags::SYN != 0
                && flags & tcp_flags::ACK == 0
                && matches!(hit.state(), FlowState::TcpClosing | FlowState::TcpClosed)
        }
        Transport::Icmp { ty, .. } => matches!(ty, 8 | 128) && dir != hit.initiator(),
        _ => false,
    }
}

/// R-SG-UNTRACKED: a TCP or UDP flow keeps no state when a rule admits it from (or to)
/// the whole address space, 0.0.0.0/0 or ::/0, whatever its ports, and the other
/// direction has a rule allowing every port of the protocol to the whole address space
/// (AWS, "Security group connection tracking", EC2 User Guide: "If a security group rule
/// permits TCP or UDP flows for all traffic (0.0.0.0/0 or ::/0) and there is a
/// corresponding rule in the other direction that permits all response traffic
/// (0.0.0.0/0 or ::/0) for all ports (0-65535), then those flows of traffic are not
/// tracked"; its example: inbound TCP 80 from 0.0.0.0/0 with all outbound open is not
/// tracked, SSH from one /32 is). Flows through a NAT gateway, an egress-only gateway or
/// an interface endpoint are always tracked (the route or the receiving ENI decides, so
/// look them up on the way out).
///
/// The flow is one thing whichever way its packet goes: a reply of an untracked flow
/// (which left no state) is untracked too, so both orientations are asked.
fn untracked(snap: &Snapshot, eni: &Eni, dir: Direction, pkt: &Packet) -> bool {
    let v6 = pkt.is_ipv6();
    let other = match dir {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    };
    let open = |d| eni.sg_open & Untracked::open(pkt.proto, v6, d) != 0;
    let from_anywhere = |d, reply: bool| {
        eni.security_groups.iter().any(|&g| {
            snap.security_group(g).rules(d).iter().any(|r| {
                r.peer.is_everything(v6)
                    && if reply {
                        r.proto.matches_reply(pkt)
                    } else {
                        r.proto.matches(pkt)
                    }
            })
        })
    };
    let opened_here = open(other) && from_anywhere(dir, false);
    let reply_of_untracked = open(dir) && from_anywhere(other, true);
    if !opened_here && !reply_of_untracked {
        return false;
    }
    if dir == Direction::Egress {
        let to_endpoint = snap
            .eni_by_addr(eni.vpc, pkt.dst)
            .is_some_and(|e| matches!(snap.eni(e).kind, EniKind::InterfaceEndpoint(_)));
        if to_endpoint {
            return false;
        }
        let table = snap.route_table(snap.subnet(eni.subnet).route_table);
        if let Some((_, r)) = table.lookup(pkt.dst) {
            if matches!(
                r.target,
                Target::NatGateway(_) | Target::EgressOnlyInternetGateway(_)
            ) {
                return false;
            }
        }
    }
    true
}

/// R-SG-ALLOW: the first rule, over the ENI's groups in order, that allows the packet.
/// Returns the group and the rule's position in its direction's list.
#[inline]
pub fn matching_rule(
    snap: &Snapshot,
    eni: &Eni,
    dir: Direction,
    pkt: &Packet,
) -> Option<(SgIx, u16)> {
    let addr = remote(pkt, dir);
    for &g in &eni.security_groups {
        let sg = snap.security_group(g);
        for (i, r) in sg.rules(dir).iter().enumerate() {
            if r.proto.matches(pkt) && peer_matches(snap, &r.peer, addr) {
                return Some((g, i as u16));
            }
        }
    }
    None
}

#[inline]
fn peer_matches(snap: &Snapshot, peer: &SgPeer, addr: IpAddr) -> bool {
    match *peer {
        SgPeer::Cidr(net) => net_contains(&net, addr),
        // R-SG-REF: the members' private addresses, never their public ones.
        SgPeer::Group(g) => snap.sg_has_member(g, addr),
        // R-SG-PL.
        SgPeer::PrefixList(s) => snap.topo.services[s.ix()]
            .cidrs
            .iter()
            .any(|c| net_contains(c, addr)),
    }
}
