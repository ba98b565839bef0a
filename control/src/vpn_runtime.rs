//! The running lab's VPN (hybrid.md): one BGP speaker per tunnel of a BGP VPN, each the
//! AWS side of its tunnel, listening on the inside address in the tunnel end's namespace;
//! what the speakers learn and the `aws:vpn:tunnel-down` faults make the [`VpnState`]
//! every snapshot is compiled with, so learned routes reach the workers through the same
//! atomic swap as an apply (no lock on the packet path), and established flows survive.
//!
//! A watcher thread republishes when a session's state or routes change. After each
//! publication the speakers are brought in line: a faulted tunnel's speaker is shut
//! down (a Cease; it accepts nothing until the fault ends), and each speaker advertises
//! the VPC's blocks and, for CloudHub, what the VGW routes to its other sites, with
//! those sites' AS paths after AWS's ASN (R-VPN-CLOUDHUB).

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::route::Target;
use dataplane::Snapshot;
use ip_network::Ipv4Network;

use crate::bgp::session::{Config, State};
use crate::bgp::speaker::{Speaker, Status};
use crate::faults::Action;
use crate::router::{lock, Router};
use crate::vpn::{Learned, TunnelState, VpnState};
use crate::vpn_lab::TunnelPlan;

/// The VPN part of a running router.
pub struct VpnRuntime {
    pub plans: Vec<TunnelPlan>,
    /// One per plan: `None` for a static VPN's tunnel, or one a fault took down.
    speakers: Vec<Option<Speaker>>,
    changed: Sender<String>,
    /// Which tunnel each prefix used in the last snapshot (R-VPN-TUNNELS).
    in_use: BTreeMap<Ipv4Network, (String, u8)>,
}

fn key(p: &TunnelPlan) -> (String, u8) {
    (p.vpn.clone(), p.number)
}

/// Starts the speaker of one tunnel: the listening socket is made inside the tunnel
/// end's namespace.
fn speaker(p: &TunnelPlan, changed: &Sender<String>) -> std::io::Result<Speaker> {
    let addr = (p.inside_aws, 179);
    let listener = crate::netns::run_in(&p.namespace, move || TcpListener::bind(addr))
        .map_err(std::io::Error::other)?;
    let sp = Speaker::spawn(
        p.name(),
        listener,
        p.inside_customer,
        Config::aws(p.amazon_asn, p.customer_asn, p.inside_aws),
        changed.clone(),
    )?;
    sp.advertise(p.vpc_blocks.iter().map(|b| (*b, Vec::new())).collect());
    Ok(sp)
}

impl VpnRuntime {
    /// Starts a speaker for every tunnel of a BGP VPN; returns the runtime and where its
    /// changes are announced.
    pub fn start(plans: Vec<TunnelPlan>) -> std::io::Result<(VpnRuntime, Receiver<String>)> {
        let (tx, rx) = mpsc::channel();
        let mut speakers = Vec::new();
        for p in &plans {
            speakers.push(if p.bgp { Some(speaker(p, &tx)?) } else { None });
        }
        Ok((
            VpnRuntime {
                plans,
                speakers,
                changed: tx,
                in_use: BTreeMap::new(),
            },
            rx,
        ))
    }

    /// Each BGP tunnel's session status, by tunnel.
    pub fn statuses(&self) -> Vec<(&TunnelPlan, Option<Status>)> {
        self.plans
            .iter()
            .zip(&self.speakers)
            .map(|(p, s)| (p, s.as_ref().map(Speaker::status)))
            .collect()
    }

    /// The BGP tunnels not yet established, by name (`vpn-hq:1`).
    pub fn not_established(&self) -> Vec<String> {
        self.statuses()
            .into_iter()
            .filter(|(p, s)| p.bgp && s.as_ref().is_none_or(|s| s.state != State::Established))
            .map(|(p, _)| p.name())
            .collect()
    }

    pub fn shutdown(&mut self) {
        for s in self.speakers.iter_mut().flatten() {
            s.shutdown();
        }
    }
}

impl Router {
    /// The VPN state now: what each session learned, and which tunnels a fault took down.
    pub(crate) fn vpn_state(&self) -> VpnState {
        let mut state = VpnState::default();
        let faults: Vec<(String, u32)> = lock(&self.faults)
            .0
            .iter()
            .filter(|f| {
                matches!(
                    f.action,
                    Action::VpnTunnelDown | Action::VirtualInterfaceDisconnect
                )
            })
            .map(|f| (f.target.clone(), f.id))
            .collect();
        let guard = lock(&self.vpn);
        let Some(rt) = guard.as_ref() else {
            return state;
        };
        for (p, status) in rt.statuses() {
            let name = p.name();
            let fault = faults.iter().find(|(t, _)| *t == name).map(|(_, id)| *id);
            let mut t = TunnelState {
                fault,
                ..TunnelState::default()
            };
            if let Some(s) = status {
                t.established = s.state == State::Established;
                t.routes = s
                    .routes
                    .iter()
                    .map(|(prefix, path)| {
                        (
                            *prefix,
                            Learned {
                                asns: path.asns.clone(),
                                as_path_len: path.as_path_len,
                                med: path.med.unwrap_or(0),
                            },
                        )
                    })
                    .collect();
            }
            state.tunnels.insert(key(p), t);
        }
        state.in_use = rt.in_use.clone();
        state
    }

    /// After a snapshot is published: remember which tunnel each prefix uses, stop or
    /// start the speakers of faulted tunnels, and set what each speaker advertises.
    pub(crate) fn vpn_published(&self, snap: &Snapshot) {
        let faulted: BTreeSet<(String, u8)> = snap
            .topo
            .vpn_tunnels
            .iter()
            .filter(|t| t.fault != 0)
            .map(|t| (t.vpn.to_string(), t.number))
            .collect();
        let mut guard = lock(&self.vpn);
        let Some(rt) = guard.as_mut() else {
            return;
        };
        // Each VGW route: prefix → (the tunnel's connection, the path after AWS's ASN).
        let mut routed: Vec<(Ipv4Network, String, Vec<u32>)> = Vec::new();
        rt.in_use.clear();
        // Each session's routes, read once (a status is a copy of its routes).
        let statuses: BTreeMap<(String, u8), Status> = rt
            .plans
            .iter()
            .zip(&rt.speakers)
            .filter_map(|(p, s)| Some((key(p), s.as_ref()?.status())))
            .collect();
        let learned = |vpn: &str, n: u8, prefix: &Ipv4Network| -> Vec<u32> {
            statuses
                .get(&(vpn.to_string(), n))
                .and_then(|s| s.routes.get(prefix).map(|r| r.asns.clone()))
                .unwrap_or_default()
        };
        let mut in_use = BTreeMap::new();
        for table in &snap.topo.vgw_routes {
            for (net, route) in table.routes() {
                let (ip_network::IpNetwork::V4(prefix), Target::VpnTunnel(t)) = (net, route.target)
                else {
                    continue;
                };
                let tun = snap.vpn_tunnel(t);
                in_use.insert(prefix, (tun.vpn.to_string(), tun.number));
                let site = rt
                    .plans
                    .iter()
                    .find(|p| *p.vpn == *tun.vpn)
                    .map_or(String::new(), |p| p.site.clone());
                routed.push((prefix, site, learned(&tun.vpn, tun.number, &prefix)));
            }
        }
        rt.in_use = in_use;
        let changed = rt.changed.clone();
        for (i, p) in rt.plans.iter().enumerate() {
            if !p.bgp {
                continue;
            }
            let down = faulted.contains(&key(p));
            match (&mut rt.speakers[i], down) {
                (Some(s), true) => {
                    s.shutdown();
                    rt.speakers[i] = None;
                }
                (None, false) => match speaker(p, &changed) {
                    Ok(s) => rt.speakers[i] = Some(s),
                    Err(e) => log::error!("BGP {}:{}: {e}", p.vpn, p.number),
                },
                _ => {}
            }
            if let Some(s) = &rt.speakers[i] {
                // The VPC's blocks, and (CloudHub) the VGW's other sites.
                let mut adverts: BTreeMap<Ipv4Network, Vec<u32>> =
                    p.vpc_blocks.iter().map(|b| (*b, Vec::new())).collect();
                // Never a site's own prefixes back to it (over a VPN or its VIF).
                for (prefix, site, path) in &routed {
                    if *site != p.site {
                        adverts.insert(*prefix, path.clone());
                    }
                }
                s.advertise(adverts);
            }
        }
    }
}

/// Republishes when a BGP session's state or routes change; ends with `stop`.
pub fn watch(
    router: Arc<Router>,
    changes: Receiver<String>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("vpcd-vpn".into())
        .spawn(move || {
            let mut last = router.vpn_state();
            while !stop.load(Ordering::Relaxed) {
                match changes.recv_timeout(Duration::from_millis(200)) {
                    Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                while changes.try_recv().is_ok() {}
                let now = router.vpn_state();
                // in_use is ours, not a change of the network.
                let moved = now.tunnels != last.tunnels;
                if moved {
                    let mut gens = lock(&router.gens);
                    if let Err(e) = router.republish(&mut gens) {
                        log::error!("VPN: {e}");
                    }
                    drop(gens);
                    last = router.vpn_state();
                }
            }
        })
}

/// Waits until every BGP tunnel is established, or `limit`; returns those that are not.
pub fn wait_established(router: &Router, limit: Duration) -> Vec<String> {
    let end = Instant::now() + limit;
    loop {
        let missing = lock(&router.vpn)
            .as_ref()
            .map(VpnRuntime::not_established)
            .unwrap_or_default();
        if missing.is_empty() || Instant::now() >= end {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Router {
    /// Each tunnel as `vpcd status` shows it (R-VPN-STATUS): UP when it carries traffic
    /// (a static VPN's tunnel unless a fault took it down; a BGP one while its session is
    /// established), else DOWN with the reason.
    pub(crate) fn vpn_status(&self, snap: &Snapshot) -> Vec<crate::json::VpnTunnel> {
        let model = lock(&self.model);
        let guard = lock(&self.vpn);
        let Some(rt) = guard.as_ref() else {
            return Vec::new();
        };
        rt.statuses()
            .into_iter()
            .map(|(p, status)| {
                let fault = snap
                    .topo
                    .vpn_tunnels
                    .iter()
                    .find(|t| *t.vpn == *p.vpn && t.number == p.number)
                    .map_or(0, |t| t.fault);
                let statics = model
                    .vpn
                    .connections
                    .iter()
                    .find(|c| c.id.v == p.vpn)
                    .map_or(0, |c| c.routes.len());
                let (up, reason) = match (&status, fault) {
                    (_, f) if f != 0 => (
                        false,
                        Some(if p.direct_connect {
                            format!("aws:directconnect:virtual-interface-disconnect (fault f-{f})")
                        } else {
                            format!("aws:vpn:tunnel-down (fault f-{f})")
                        }),
                    ),
                    (None, _) => (true, None),
                    (Some(s), _) if s.state == State::Established => (true, None),
                    (Some(s), _) => (
                        false,
                        Some(match &s.last_down {
                            Some(why) => format!("BGP {}: {why}", s.state.name()),
                            None => {
                                format!("BGP {}: waiting for the customer gateway", s.state.name())
                            }
                        }),
                    ),
                };
                crate::json::VpnTunnel {
                    tunnel: p.name(),
                    status: if up { "UP" } else { "DOWN" }.into(),
                    reason,
                    outside_ip: if p.direct_connect {
                        "-".into()
                    } else {
                        p.outside.to_string()
                    },
                    customer_gateway_ip: if p.direct_connect {
                        "-".into()
                    } else {
                        p.customer_ip.to_string()
                    },
                    inside_aws: p.inside_aws.to_string(),
                    inside_customer: p.inside_customer.to_string(),
                    routing: match (p.direct_connect, p.bgp) {
                        (true, _) => format!("Direct Connect VLAN {}, MTU {}, bgp", p.vlan, p.mtu),
                        (false, true) => "bgp".into(),
                        (false, false) => "static".into(),
                    },
                    bgp_state: if p.bgp {
                        Some(
                            status
                                .as_ref()
                                .map_or("Idle", |s| s.state.name())
                                .to_string(),
                        )
                    } else {
                        None
                    },
                    accepted_routes: match &status {
                        Some(s) => s.routes.len(),
                        None if p.bgp => 0,
                        None => statics,
                    },
                    refused_routes: status.as_ref().map_or(0, |s| s.refused),
                }
            })
            .collect()
    }
}
