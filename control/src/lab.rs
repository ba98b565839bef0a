//! The lab builder (lab.md): one network namespace per instance and per outside host, each
//! with a TUN device named `eth0` whose queues vpcd holds, its addresses, default routes
//! and the lab MTU. Nothing is added to the namespace vpcd runs in.
//!
//! Order of work, so that every failure leaves nothing behind: take the prefix (state
//! file lock), refuse names that exist, record the names, create the namespaces, open the
//! TUN queues inside each, configure them, and ask each namespace for an echo reply.
//! [`Lab`]'s `Drop` removes what was created, on success and on every error path.

use dataplane::offload::Offload;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use dataplane::io::tun::{Offloads, TunQueue};
use dataplane::io::Queue;
use dataplane::snapshot::{Attachment, HostKind};
use dataplane::{PortId, Snapshot};

use crate::netns::{self, NetnsError};
use crate::runstate::{Lease, StateError};

/// The interface name inside every namespace (lab.md).
pub const DEVICE: &str = "eth0";

/// Workers, and so queues per TUN device (the kernel allows 256 queues; each worker also
/// holds one fd per port).
pub const MAX_WORKERS: usize = 64;

/// AWS's MTU inside a VPC (lab.md): jumbo frames.
pub const DEFAULT_MTU: u32 = 9001;

/// How the lab is built.
#[derive(Clone, Debug)]
pub struct Options {
    /// Prefixes every namespace name (`--prefix`).
    pub prefix: String,
    pub mtu: u32,
    /// Worker threads, and so TUN queues per device.
    pub workers: usize,
    /// Slots of the connection-tracking table shared by the workers.
    pub conntrack_max: usize,
    /// TUN offloads (GSO super-packets, partial checksums): on unless `--no-offload`.
    pub offloads: Offloads,
    /// `--udp-gro`: consecutive datagrams of one flow leave as one UDP GSO write.
    pub udp_gro: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("vpcd up builds network namespaces and needs root (CAP_NET_ADMIN); run it with sudo")]
    NotRoot,
    #[error("--prefix {0:?} may contain only letters, digits, `.`, `_` and `-`")]
    BadPrefix(String),
    #[error("--mtu {0} is out of range: use 1280 (the IPv6 minimum) to 65535")]
    BadMtu(u32),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "namespace {0} already exists and vpcd did not create it; choose another --prefix or remove it (ip netns del {0})"
    )]
    Exists(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("--workers {0} is out of range: use 1 to {max}", max = MAX_WORKERS)]
    BadWorkers(usize),
    #[error("no echo reply within {secs} s from namespace(s): {names}")]
    NoAnswer { secs: u64, names: String },
}

/// One namespace of the lab: what is attached to one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub port: PortId,
    /// The instance or host id.
    pub id: String,
    /// The namespace name: prefix + id.
    pub name: String,
    /// Addresses on `eth0`, with their prefix lengths.
    pub addrs: Vec<(IpAddr, u8)>,
    /// The IPv4 default gateway: the subnet router for an instance, none (a device route)
    /// for an outside host.
    pub gateway_v4: Option<Ipv4Addr>,
    /// Outside hosts sit on networks of 1500 bytes (the internet, a VPN; R-IGW-MTU): their
    /// TCP then offers an MSS of 1460, as real servers do, whatever the lab's MTU.
    pub mtu_cap: Option<u32>,
    /// The resolver and search domain of an instance (the VPC's Amazon DNS, R-ADDR-DNS),
    /// written to `/etc/netns/NAME/resolv.conf`, which `ip netns exec` shows as
    /// `/etc/resolv.conf` inside the namespace.
    pub resolver: Option<(IpAddr, String)>,
}

impl Namespace {
    /// The address the readiness probe asks: the first IPv4, else the first IPv6.
    fn probe_target(&self) -> Option<IpAddr> {
        let v4 = self.addrs.iter().find(|(a, _)| a.is_ipv4());
        v4.or(self.addrs.first()).map(|(a, _)| *a)
    }

    /// The `ip -batch` lines that configure the namespace. Instances get their subnet's
    /// prefix length and the subnet router as IPv4 gateway, as on an EC2 instance; the
    /// instance does not know its public IP (the IGW translates, R-IGW-NAT).
    fn config(&self, mtu: u32) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "link set lo up");
        let mtu = self.mtu_cap.map_or(mtu, |cap| cap.min(mtu));
        let _ = writeln!(s, "link set {DEVICE} mtu {mtu} up");
        for (a, len) in &self.addrs {
            let nodad = if a.is_ipv6() { " nodad" } else { "" };
            let _ = writeln!(s, "addr add {a}/{len} dev {DEVICE}{nodad}");
        }
        if self.addrs.iter().any(|(a, _)| a.is_ipv4()) {
            match self.gateway_v4 {
                Some(gw) => {
                    let _ = writeln!(s, "route add 0.0.0.0/0 via {gw} dev {DEVICE}");
                }
                None => {
                    let _ = writeln!(s, "route add 0.0.0.0/0 dev {DEVICE}");
                }
            }
        }
        if self.addrs.iter().any(|(a, _)| a.is_ipv6()) {
            let _ = writeln!(s, "route add ::/0 dev {DEVICE}");
        }
        s
    }
}

/// The namespaces of a lab, in port order.
pub fn plan(snap: &Snapshot, prefix: &str) -> Vec<Namespace> {
    let t = &snap.topo;
    t.ports
        .iter()
        .enumerate()
        .filter(|(_, port)| port.attachment != Attachment::Detached)
        .map(|(i, port)| {
            let mut addrs = Vec::new();
            let mut gateway_v4 = None;
            let mut mtu_cap = None;
            let mut resolver = None;
            match port.attachment {
                Attachment::Eni(e) => {
                    let eni = snap.eni(e);
                    let subnet = snap.subnet(eni.subnet);
                    let len4 = subnet.cidr_v4.map_or(32, |c| c.netmask());
                    addrs.extend(eni.private_v4.iter().map(|a| (IpAddr::V4(*a), len4)));
                    let len6 = subnet.cidr_v6.map_or(128, |c| c.netmask());
                    addrs.extend(eni.ipv6.iter().map(|a| (IpAddr::V6(*a), len6)));
                    gateway_v4 = subnet.router_v4();
                    let vpc = snap.vpc(eni.vpc);
                    if vpc.enable_dns_support {
                        // An IPv6-only instance asks the resolver at fd00:ec2::253 (AWS:
                        // the Amazon DNS server's IPv6 address, for Nitro instances).
                        let server = if eni.private_v4.is_empty() {
                            Some(IpAddr::V6(dataplane::snapshot::DNS_V6))
                        } else {
                            vpc.dns_v4().map(IpAddr::V4)
                        };
                        resolver = server.map(|d| {
                            (
                                d,
                                dataplane::router_services::names::private_domain(&t.region),
                            )
                        });
                    }
                }
                Attachment::Detached => {}
                Attachment::Host(h) => {
                    let host = &t.hosts[h.ix()];
                    addrs.extend(host.ipv4.map(|a| (IpAddr::V4(a), 32)));
                    addrs.extend(host.ipv6.map(|a| (IpAddr::V6(a), 128)));
                    mtu_cap = Some(u32::from(match host.kind {
                        // A Direct Connect virtual interface's end: its own MTU (jumbo
                        // frames with `mtu: 9001`, R-DX-PRIVATE).
                        HostKind::VpnEndpoint(tun) if snap.vpn_tunnel(tun).direct_connect => {
                            snap.vpn_tunnel(tun).mtu
                        }
                        _ => dataplane::icmp_error::INTERNET_MTU,
                    }));
                }
            }
            Namespace {
                port: PortId(i as u32),
                id: port.name.to_string(),
                name: format!("{prefix}{}", port.name),
                addrs,
                gateway_v4,
                mtu_cap,
                resolver,
            }
        })
        .collect()
}

/// A built lab. Dropping it removes its namespaces and releases the prefix; drop it after
/// the workers have stopped.
#[derive(Debug)]
pub struct Lab {
    pub namespaces: Vec<Namespace>,
    lease: Option<Lease>,
    created: Vec<String>,
    /// Processes the instances' start-up left running: stopped at teardown.
    started: Vec<crate::startup::Proc>,
    opts: Options,
}

/// TUN queues: `[worker][port]`, so each worker owns one queue of every port (`None`
/// for port numbers no namespace uses).
pub type WorkerQueues = Vec<Vec<Option<TunQueue>>>;

fn valid_prefix(p: &str) -> bool {
    p.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Lab {
    /// Builds the lab of `snap` and waits until every namespace answers a ping.
    pub fn build(snap: &Snapshot, opts: &Options) -> Result<(Lab, WorkerQueues), LabError> {
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(LabError::NotRoot);
        }
        if !valid_prefix(&opts.prefix) {
            return Err(LabError::BadPrefix(opts.prefix.clone()));
        }
        if !(1280..=65535).contains(&opts.mtu) {
            return Err(LabError::BadMtu(opts.mtu));
        }
        if !(1..=MAX_WORKERS).contains(&opts.workers) {
            return Err(LabError::BadWorkers(opts.workers));
        }
        // From here on, dropping `lab` (on any error) removes what was created and releases
        // the prefix.
        let mut lab = Lab {
            namespaces: Vec::new(),
            lease: Some(Lease::acquire(&opts.prefix)?),
            created: Vec::new(),
            started: Vec::new(),
            opts: opts.clone(),
        };
        let added = lab.add(&plan(snap, &opts.prefix))?;
        // Transpose to [worker][port], with holes for port numbers no namespace uses.
        let ports = added.iter().map(|(p, _)| p.ix() + 1).max().unwrap_or(0);
        let mut per_worker: WorkerQueues = (0..opts.workers)
            .map(|_| (0..ports).map(|_| None).collect())
            .collect();
        for (port, queues) in added {
            for (w, q) in queues.into_iter().enumerate() {
                per_worker[w][port.ix()] = Some(q);
            }
        }
        Ok((lab, per_worker))
    }

    /// Adds namespaces to the lab (at `vpcd up`, and when an apply adds instances or
    /// hosts): records them, creates them, opens one TUN queue per worker in each,
    /// configures them and waits for each to answer. Returns the queues by port.
    pub fn add(&mut self, new: &[Namespace]) -> Result<Vec<(PortId, Vec<TunQueue>)>, LabError> {
        if let Some(ns) = new.iter().find(|n| netns::exists(&n.name)) {
            return Err(LabError::Exists(ns.name.clone()));
        }
        let before = self.created.clone();
        let added = self.try_add(new);
        if added.is_err() {
            // Undo this call: its namespaces go, the record is as before (a failed apply
            // must leave the lab as it was, and the same instance addable again).
            let ours: Vec<String> = self
                .created
                .iter()
                .filter(|c| !before.contains(c))
                .cloned()
                .collect();
            let _ = netns::delete(&ours);
            self.created = before;
            if let Some(lease) = self.lease.as_mut() {
                let _ = lease.record(&self.created, &self.started);
            }
        }
        added
    }

    fn try_add(&mut self, new: &[Namespace]) -> Result<Vec<(PortId, Vec<TunQueue>)>, LabError> {
        let mut names: Vec<String> = self.created.clone();
        names.extend(new.iter().map(|n| n.name.clone()));
        if let Some(lease) = self.lease.as_mut() {
            lease.record(&names, &self.started)?;
        }
        // One at a time, recording each: teardown removes exactly what this run made, never
        // a namespace another lab created in the meantime under the same name.
        for ns in new {
            netns::add(&ns.name)?;
            self.created.push(ns.name.clone());
        }
        let workers = self.opts.workers;
        let offloads = self.opts.offloads;
        let mut by_port: Vec<Vec<TunQueue>> = Vec::with_capacity(new.len());
        for ns in new {
            let queues = netns::run_in(&ns.name, || {
                // No duplicate-address detection, router solicitations or router
                // advertisements: addresses are usable at once, and the instance does not
                // send what AWS's router would ignore anyway.
                for (key, value) in [
                    ("accept_dad", "0"),
                    ("router_solicitations", "0"),
                    ("accept_ra", "0"),
                ] {
                    netns::set_sysctl(&format!("net/ipv6/conf/default/{key}"), value)?;
                }
                (0..workers)
                    .map(|_| {
                        TunQueue::open(DEVICE, offloads).map_err(|e| {
                            std::io::Error::new(e.kind(), format!("opening TUN {DEVICE}: {e}"))
                        })
                    })
                    .collect()
            })?;
            by_port.push(queues);
        }
        for ns in new {
            netns::ip(
                &["-n", &ns.name, "-batch", "-"],
                Some(&ns.config(self.opts.mtu)),
            )?;
            if let Some((server, search)) = &ns.resolver {
                netns::write_resolv_conf(&ns.name, *server, search).map_err(|source| {
                    NetnsError::Inside {
                        name: ns.name.clone(),
                        source,
                    }
                })?;
            }
        }
        probe(new, &by_port, Duration::from_secs(10))?;
        self.namespaces.extend(new.iter().cloned());
        Ok(new.iter().map(|n| n.port).zip(by_port).collect())
    }

    /// Creates namespaces that hold no port of vpcd (a site's hosts, behind its router),
    /// recorded like the others so that teardown and `vpcd down` remove them.
    pub fn add_plain(&mut self, names: &[String]) -> Result<(), LabError> {
        if let Some(n) = names.iter().find(|n| netns::exists(n)) {
            return Err(LabError::Exists(n.clone()));
        }
        let mut all = self.created.clone();
        all.extend(names.iter().cloned());
        if let Some(lease) = self.lease.as_mut() {
            lease.record(&all, &self.started)?;
        }
        for n in names {
            netns::add(n)?;
            self.created.push(n.clone());
        }
        Ok(())
    }

    /// Records processes the lab started (a site's BGP daemon): stopped at teardown, and
    /// by `vpcd down` after a crash.
    pub fn adopt(&mut self, procs: &[crate::startup::Proc]) {
        self.started.extend(procs.iter().copied());
        if let Some(lease) = self.lease.as_mut() {
            let _ = lease.record(&self.created, &self.started);
        }
    }

    pub fn prefix(&self) -> &str {
        &self.opts.prefix
    }

    /// Takes instance `id`'s eth0 down (a fault stopped it: its stack sees the link go,
    /// as a stopped instance's would) or brings it back up with its addresses and routes
    /// (Linux drops routes, and IPv6 addresses, with the link).
    pub fn set_link(&self, id: &str, up: bool) -> Result<(), LabError> {
        let Some(ns) = self.namespaces.iter().find(|n| n.id == id) else {
            return Ok(());
        };
        if up {
            // `-force`: an address or route still there is not an error.
            netns::ip(
                &["-n", &ns.name, "-force", "-batch", "-"],
                Some(&ns.config(self.opts.mtu)),
            )?;
        } else {
            netns::ip(&["-n", &ns.name, "link", "set", DEVICE, "down"], None)?;
        }
        Ok(())
    }

    /// Removes namespaces an apply no longer wants (their queues must be closed first, or
    /// the namespace lives on, nameless, until they are).
    pub fn remove(&mut self, ids: &[String]) -> Result<(), LabError> {
        let names: Vec<String> = self
            .namespaces
            .iter()
            .filter(|n| ids.contains(&n.id))
            .map(|n| n.name.clone())
            .collect();
        netns::delete(&names)?;
        self.created.retain(|c| !names.contains(c));
        self.namespaces.retain(|n| !ids.contains(&n.id));
        if let Some(lease) = self.lease.as_mut() {
            lease.record(&self.created, &self.started)?;
        }
        Ok(())
    }

    /// Runs the start-up of instances (their `image`, then their `user_data`, both from
    /// the lab file): `(id, image, script)`. Records what they leave running.
    pub fn start_up(
        &mut self,
        instances: &[(String, Option<crate::model::Image>, Option<String>)],
    ) -> Vec<crate::startup::Outcome> {
        let mut out = Vec::new();
        for (id, image, script) in instances {
            let Some(ns) = self.namespaces.iter().find(|n| &n.id == id) else {
                continue;
            };
            let mut o = crate::startup::Outcome {
                id: id.clone(),
                exit: None,
                log: None,
                procs: Vec::new(),
                error: None,
            };
            if let Some(image) = image {
                if let Err(e) = crate::startup::set_up_image(ns, *image) {
                    o.error = Some(e.to_string());
                }
            }
            if let (None, Some(script)) = (&o.error, script) {
                o = crate::startup::run_user_data(&self.opts.prefix, ns, script);
            }
            self.started.extend(o.procs.iter().copied());
            out.push(o);
        }
        if let Some(lease) = self.lease.as_mut() {
            let _ = lease.record(&self.created, &self.started);
        }
        out
    }

    /// Removes the namespaces and releases the prefix; errors are reported, not fatal.
    pub fn teardown(&mut self) -> Result<(), LabError> {
        crate::startup::stop(&std::mem::take(&mut self.started));
        // The start-up scripts and logs of its instances, and their directory if empty.
        let names: Vec<String> = self.namespaces.iter().map(|n| n.name.clone()).collect();
        crate::startup::remove_files(&self.opts.prefix, &names);
        let result = netns::delete(&self.created);
        if result.is_ok() {
            self.created.clear();
            if let Some(lease) = self.lease.take() {
                lease.release();
            }
        }
        // On failure the state file stays, listing the namespaces: `vpcd down` finishes.
        result.map_err(LabError::from)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            log::error!("teardown: {e}");
        }
    }
}

/// The probe's own addresses: link-local, so the namespace routes its reply out of `eth0`
/// (its default route) and the reply never matches anything in the lab.
const PROBE_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
const PROBE_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const PROBE_ID: u16 = 0x7670;

fn echo_request(to: IpAddr, seq: u16) -> Vec<u8> {
    let payload = b"vpcd ready probe";
    let mut out = Vec::new();
    let written = match to {
        IpAddr::V4(d) => etherparse::PacketBuilder::ipv4(PROBE_V4.octets(), d.octets(), 64)
            .icmpv4_echo_request(PROBE_ID, seq)
            .write(&mut out, payload),
        IpAddr::V6(d) => etherparse::PacketBuilder::ipv6(PROBE_V6.octets(), d.octets(), 64)
            .icmpv6_echo_request(PROBE_ID, seq)
            .write(&mut out, payload),
    };
    written.expect("writing a small packet to a Vec cannot fail");
    out
}

/// The sequence number if `pkt` is a reply to one of our probes.
fn probe_reply(pkt: &[u8]) -> Option<u16> {
    use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ip(pkt).ok()?;
    let to_probe = match p.net? {
        NetSlice::Ipv4(ip) => ip.header().destination_addr() == PROBE_V4,
        NetSlice::Ipv6(ip) => ip.header().destination_addr() == PROBE_V6,
        NetSlice::Arp(_) => false,
    };
    let echo = match p.transport? {
        TransportSlice::Icmpv4(i) => match i.icmp_type() {
            Icmpv4Type::EchoReply(e) => Some(e),
            _ => None,
        },
        TransportSlice::Icmpv6(i) => match i.icmp_type() {
            Icmpv6Type::EchoReply(e) => Some(e),
            _ => None,
        },
        _ => None,
    }?;
    (to_probe && echo.id == PROBE_ID).then_some(echo.seq)
}

/// Sends each namespace an echo request through its TUN device and waits for every reply:
/// "ready" means each namespace's own stack answers on `eth0`. Unanswered requests are
/// repeated; anything else read meanwhile (the lab is not forwarding yet) is discarded.
fn probe(
    namespaces: &[Namespace],
    ports: &[Vec<TunQueue>],
    timeout: Duration,
) -> Result<(), LabError> {
    let mut pending: Vec<bool> = namespaces
        .iter()
        .map(|n| n.probe_target().is_some())
        .collect();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    for (i, queues) in ports.iter().enumerate() {
        for q in queues {
            fds.push(libc::pollfd {
                fd: q.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            owner.push(i);
        }
    }
    let start = Instant::now();
    let mut last_send: Option<Instant> = None;
    let mut buf = vec![0u8; dataplane::io::BUFFER_SIZE];
    while pending.iter().any(|p| *p) {
        if start.elapsed() > timeout {
            let names: Vec<&str> = namespaces
                .iter()
                .zip(&pending)
                .filter(|(_, p)| **p)
                .map(|(n, _)| n.name.as_str())
                .collect();
            return Err(LabError::NoAnswer {
                secs: timeout.as_secs(),
                names: names.join(", "),
            });
        }
        if last_send.is_none_or(|t| t.elapsed() > Duration::from_millis(200)) {
            for (i, ns) in namespaces.iter().enumerate() {
                if let (true, Some(to)) = (pending[i], ns.probe_target()) {
                    // A failed write is retried with the next round.
                    let _ = ports[i][0].send(&echo_request(to, i as u16), &Offload::NONE);
                }
            }
            last_send = Some(Instant::now());
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        if n <= 0 {
            continue;
        }
        for (k, pfd) in fds.iter().enumerate() {
            if pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            let i = owner[k];
            let q = ports[i]
                .iter()
                .find(|q| q.as_raw_fd() == pfd.fd)
                .expect("fd of a queue");
            let mut meta = Offload::NONE;
            while let Ok(len) = q.recv(&mut buf, &mut meta) {
                if probe_reply(&buf[..len]) == Some(i as u16) {
                    pending[i] = false;
                }
            }
        }
    }
    Ok(())
}

/// The short map of the lab that `vpcd up` prints before `ready`.
pub fn describe(snap: &Snapshot, namespaces: &[Namespace]) -> String {
    let t = &snap.topo;
    let ns_of = |port: Option<PortId>| {
        port.and_then(|p| namespaces.iter().find(|n| n.port == p))
            .map_or(String::new(), |n| format!("  ns {}", n.name))
    };
    let mut s = String::new();
    for (vi, vpc) in t.vpcs.iter().enumerate() {
        let mut blocks: Vec<String> = vpc.cidrs_v4.iter().map(|c| c.to_string()).collect();
        blocks.extend(vpc.cidr_v6.map(|c| c.to_string()));
        let mut gws: Vec<&str> = Vec::new();
        gws.extend(vpc.internet_gateway.as_deref());
        gws.extend(vpc.egress_only_internet_gateway.as_deref());
        gws.extend(vpc.virtual_private_gateway.as_deref());
        let _ = writeln!(s, "{} {}  [{}]", vpc.id, blocks.join(" "), gws.join(" "));
        for (si, sub) in t.subnets.iter().enumerate() {
            if sub.vpc.ix() != vi {
                continue;
            }
            let blocks: Vec<String> = sub
                .cidr_v4
                .map(|c| c.to_string())
                .into_iter()
                .chain(sub.cidr_v6.map(|c| c.to_string()))
                .collect();
            let _ = writeln!(
                s,
                "  {} {}  ({})",
                sub.id,
                blocks.join(" "),
                t.route_tables[sub.route_table.ix()].id
            );
            for eni in t.enis.iter().filter(|e| e.subnet.ix() == si) {
                let mut addrs: Vec<String> = eni.private_v4.iter().map(|a| a.to_string()).collect();
                addrs.extend(eni.ipv6.iter().map(|a| a.to_string()));
                let public = eni
                    .public_v4
                    .map_or(String::new(), |a| format!("  public {a}"));
                let what = match eni.kind {
                    dataplane::snapshot::EniKind::NatGateway(_) => "  (NAT gateway, inside vpcd)",
                    dataplane::snapshot::EniKind::InterfaceEndpoint(_) => {
                        "  (interface endpoint, inside vpcd)"
                    }
                    dataplane::snapshot::EniKind::Instance => "",
                };
                let _ = writeln!(
                    s,
                    "    {} {}{public}{what}{}",
                    eni.id,
                    addrs.join(" "),
                    ns_of(eni.port)
                );
            }
        }
    }
    for (kind, label) in [
        (0, "internet".to_string()),
        (1, "services".to_string()),
        (2, "on-premises".to_string()),
    ] {
        let hosts: Vec<_> = t
            .hosts
            .iter()
            .filter(|h| {
                matches!(
                    (kind, h.kind),
                    (0, HostKind::Internet) | (1, HostKind::Service(_)) | (2, HostKind::OnPremises)
                )
            })
            .collect();
        if hosts.is_empty() {
            continue;
        }
        let _ = writeln!(s, "{label}");
        for h in hosts {
            let mut addrs: Vec<String> = h.ipv4.iter().map(|a| a.to_string()).collect();
            addrs.extend(h.ipv6.iter().map(|a| a.to_string()));
            let svc = match h.kind {
                HostKind::Service(sv) => format!("  ({})", t.services[sv.ix()].name),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "  {} {}{svc}{}",
                h.id,
                addrs.join(" "),
                ns_of(Some(h.port))
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_snapshot() -> Snapshot {
        crate::load_text(crate::DEFAULT_LAB, 1)
            .expect("default lab")
            .1
    }

    #[test]
    fn the_default_lab_plans_one_namespace_per_instance_and_host() {
        let snap = default_snapshot();
        let plan = plan(&snap, "t-");
        let names: Vec<&str> = plan.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["t-web-1", "t-app-1", "t-inet-1"]);
        let web = &plan[0];
        assert_eq!(
            web.addrs,
            [
                ("10.0.1.10".parse().unwrap(), 24),
                ("2001:db8:10:1::10".parse().unwrap(), 64)
            ]
        );
        assert_eq!(web.gateway_v4, Some(Ipv4Addr::new(10, 0, 1, 1)));
        let inet = &plan[2];
        assert_eq!(inet.gateway_v4, None);
        assert_eq!(inet.addrs[0], ("203.0.113.10".parse().unwrap(), 32));
    }

    #[test]
    fn an_instance_is_configured_like_an_ec2_instance() {
        let snap = default_snapshot();
        let cfg = plan(&snap, "")[0].config(9001);
        assert_eq!(
            cfg,
            "link set lo up\n\
             link set eth0 mtu 9001 up\n\
             addr add 10.0.1.10/24 dev eth0\n\
             addr add 2001:db8:10:1::10/64 dev eth0 nodad\n\
             route add 0.0.0.0/0 via 10.0.1.1 dev eth0\n\
             route add ::/0 dev eth0\n"
        );
    }

    #[test]
    fn probes_are_echo_requests_and_only_their_replies_count() {
        let req = echo_request("10.0.1.10".parse().unwrap(), 3);
        // The request itself is not a reply.
        assert_eq!(probe_reply(&req), None);
        let reply = etherparse::PacketBuilder::ipv4([10, 0, 1, 10], PROBE_V4.octets(), 64)
            .icmpv4_echo_reply(PROBE_ID, 3);
        let mut buf = Vec::new();
        reply.write(&mut buf, b"x").unwrap();
        assert_eq!(probe_reply(&buf), Some(3));
        let other = etherparse::PacketBuilder::ipv4([10, 0, 1, 10], [10, 0, 1, 1], 64)
            .icmpv4_echo_reply(PROBE_ID, 3);
        let mut buf = Vec::new();
        other.write(&mut buf, b"x").unwrap();
        assert_eq!(probe_reply(&buf), None);
        let v6 = etherparse::PacketBuilder::ipv6(
            "2001:db8:ffff::10".parse::<Ipv6Addr>().unwrap().octets(),
            PROBE_V6.octets(),
            64,
        )
        .icmpv6_echo_reply(PROBE_ID, 9);
        let mut buf = Vec::new();
        v6.write(&mut buf, b"x").unwrap();
        assert_eq!(probe_reply(&buf), Some(9));
    }

    #[test]
    fn the_map_names_every_namespace() {
        let snap = default_snapshot();
        let map = describe(&snap, &plan(&snap, "t-"));
        for want in [
            "vpc-lab 10.0.0.0/16 2001:db8:10::/56",
            "web-1 10.0.1.10 2001:db8:10:1::10  public 198.51.100.10  ns t-web-1",
            "nat-a 10.0.1.5",
            "inet-1 203.0.113.10 2001:db8:ffff::10  ns t-inet-1",
        ] {
            assert!(map.contains(want), "{want:?} not in\n{map}");
        }
    }

    #[test]
    fn prefixes_are_plain_names() {
        assert!(valid_prefix("t1-"));
        assert!(valid_prefix(""));
        assert!(!valid_prefix("a/b"));
        assert!(!valid_prefix("a b"));
    }
}
