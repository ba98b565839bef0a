//! The running router's shared state, as the control thread, the metrics server and the
//! main thread see it: the published snapshot, the flow table, the workers' published
//! counters, and the configuration generations. Nothing here is touched per packet.
//!
//! Apply (lab.md, issue 9): parse, validate with the same errors as `check`, compile as
//! the next generation with stable numbers ([`Generations`]), and swap the snapshot in
//! with one atomic store; workers see it from their next batch. Tracked flows, NAT
//! translations and EIGW state live in the flow table, keyed by stable zones, so they
//! carry over (R-SG-CHANGE); rules apply to new flows at once, NACLs and routes to the next
//! packet (R-NACL-CHANGE).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use dataplane::conntrack::Conntrack;
use dataplane::io::event_loop;
use dataplane::{DropReason, Snapshot, SnapshotCell, Stats};

use crate::control_socket::{Handler, Reply, Status};
use crate::generations::Generations;
use crate::lab::{self, Lab, Namespace};
use dataplane::io::event_loop::{QueueChange, Wakeup};
use dataplane::io::tun::TunQueue;
use std::sync::atomic::{AtomicU64, Ordering};

/// A published copy of one worker's counters.
pub type PublishedStats = Arc<ArcSwap<Stats>>;

pub struct Router {
    /// How the lab is named in reports (its file, or the built-in default).
    pub title: String,
    /// The lab file, re-read on SIGHUP; `None` for the built-in lab.
    pub path: Option<PathBuf>,
    pub prefix: String,
    pub cell: Arc<SnapshotCell>,
    pub conntrack: Arc<Conntrack>,
    pub workers: Vec<PublishedStats>,
    pub namespaces: Mutex<Vec<Namespace>>,
    /// The lab builder, for applies that add or remove namespaces; taken back at stop.
    pub lab: Mutex<Option<Lab>>,
    links: Mutex<Vec<WorkerLink>>,
    pub started: SystemTime,
    /// The numbering of snapshots; its lock is also the publishing lock (apply and faults
    /// take it first, so a snapshot always holds the faults of the moment it is made).
    pub(crate) gens: Mutex<Generations>,
    last_apply: Mutex<Option<SystemTime>>,
    /// Replaced snapshots, dropped a second later by [`Router::reap`]: by then no worker
    /// holds them, so the (possibly large) free happens here, not on the packet path.
    retired: Mutex<Vec<(std::time::Instant, Arc<Snapshot>)>>,
    /// The lab as last applied: what a fault change recompiles.
    pub(crate) model: Mutex<crate::model::Lab>,
    /// The active faults (`vpcd fault`), and the next fault number.
    pub(crate) faults: Mutex<(Vec<crate::faults::Fault>, u32)>,
    /// Namespaces whose eth0 a fault took down.
    pub(crate) links_down: Mutex<Vec<String>>,
    /// Flow-log lines the writer could not write (its file would not open, a write
    /// failed).
    pub flow_log_unwritten: Arc<AtomicU64>,
    /// The VPN tunnels' BGP speakers and what they decided (hybrid.md).
    pub(crate) vpn: Mutex<Option<crate::vpn_runtime::VpnRuntime>>,
}

impl Router {
    // Each argument is one piece of the running router; a builder would add nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        title: String,
        path: Option<PathBuf>,
        prefix: String,
        cell: Arc<SnapshotCell>,
        conntrack: Arc<Conntrack>,
        workers: Vec<PublishedStats>,
        lab: Lab,
        links: Vec<WorkerLink>,
        gens: Generations,
        model: crate::model::Lab,
    ) -> Router {
        Router {
            title,
            path,
            prefix,
            cell,
            conntrack,
            workers,
            namespaces: Mutex::new(lab.namespaces.clone()),
            lab: Mutex::new(Some(lab)),
            links: Mutex::new(links),
            started: SystemTime::now(),
            gens: Mutex::new(gens),
            last_apply: Mutex::new(None),
            retired: Mutex::new(Vec::new()),
            model: Mutex::new(model),
            faults: Mutex::new((Vec::new(), 1)),
            links_down: Mutex::new(Vec::new()),
            flow_log_unwritten: Arc::new(AtomicU64::new(0)),
            vpn: Mutex::new(None),
        }
    }

    /// The sum of the workers' last published counters.
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for w in &self.workers {
            total.merge(&w.load());
        }
        total
    }

    /// Applies a lab text (reported under `file`). `Ok`: the generation now running.
    /// `Err`: why not, with every error `check` would print; the running lab is unchanged.
    pub fn apply(&self, text: &str, file: &str) -> Result<u64, String> {
        let lab = crate::check_text(text).map_err(|diags| {
            format!(
                "{}; the running lab is unchanged",
                crate::diag::render(file, &diags)
            )
        })?;
        if let Some(why) = crate::vpn::changed_layout(&lock(&self.model), &lab) {
            return Err(format!(
                "{file}: {why}: changing the VPN part of a running lab is not built yet; restart the lab. The running lab is unchanged"
            ));
        }
        let mut gens = lock(&self.gens);
        // What BGP learned holds across an apply.
        let mut lab = lab;
        lab.vpn_state = self.vpn_state();
        let mut snap = gens
            .candidate(&lab)
            .map_err(|e| format!("{file}: {e}; the running lab is unchanged"))?;
        // The active faults hold across an apply.
        crate::faults::overlay(&mut snap, &lock(&self.faults).0);
        let plan = lab::plan(&snap, &self.prefix);
        let current = lock(&self.namespaces).clone();
        let changed: Vec<&str> = plan
            .iter()
            .filter(|n| current.iter().any(|c| c.id == n.id && c != *n))
            .map(|n| n.id.as_str())
            .collect();
        if !changed.is_empty() {
            return Err(format!(
                "{file}: {} would change address, subnet or port ({}): readdressing a running instance is not supported; \
                 remove it in one apply and add it back in the next, or restart the lab. The running lab is unchanged",
                changed.join(", "),
                namespace_diff(&current, &plan)
            ));
        }
        let added: Vec<Namespace> = plan
            .iter()
            .filter(|n| !current.iter().any(|c| c.id == n.id))
            .cloned()
            .collect();
        let removed: Vec<Namespace> = current
            .iter()
            .filter(|c| !plan.iter().any(|n| n.id == c.id))
            .cloned()
            .collect();
        // New namespaces first, so the snapshot that routes to them finds their queues.
        if !added.is_empty() {
            let mut guard = lock(&self.lab);
            let lab = guard.as_mut().ok_or("the lab is stopping")?;
            let queues = lab.add(&added).map_err(|e| {
                format!("{file}: adding namespaces: {e}; the running lab is unchanged")
            })?;
            let mut links = lock(&self.links);
            for (port, per_worker) in queues {
                for (link, q) in links.iter_mut().zip(per_worker) {
                    link.send(QueueChange::Add(port, q));
                }
            }
            wait_for_workers(&mut links);
        }
        self.publish(&mut gens, snap);
        self.vpn_published(&self.cell.load());
        *lock(&self.model) = lab.clone();
        // The added instances' start-up, now that their routes are published.
        if !added.is_empty() {
            let ids: Vec<String> = added.iter().map(|n| n.id.clone()).collect();
            if let Some(builder) = lock(&self.lab).as_mut() {
                for o in builder.start_up(&crate::startup::of(&lab, Some(&ids))) {
                    log::info!("apply: {}", o.line());
                }
            }
        }
        let down = crate::faults::stopped_instances(&self.cell.load());
        self.sync_links(&down);
        *lock(&self.last_apply) = Some(SystemTime::now());
        // Removed namespaces last: workers close their queues, then the namespaces go.
        if !removed.is_empty() {
            let mut links = lock(&self.links);
            for n in &removed {
                for link in links.iter_mut() {
                    link.send(QueueChange::Remove(n.port));
                }
            }
            wait_for_workers(&mut links);
            let ids: Vec<String> = removed.iter().map(|n| n.id.clone()).collect();
            let removal = match lock(&self.lab).as_mut() {
                Some(lab) => lab.remove(&ids).map_err(|e| e.to_string()),
                None => Ok(()),
            };
            *lock(&self.namespaces) = plan;
            if let Err(e) = removal {
                return Err(format!(
                    "{file}: applied as generation {}, but removing namespaces failed: {e}",
                    gens.generation()
                ));
            }
            return Ok(gens.generation());
        }
        *lock(&self.namespaces) = plan;
        Ok(gens.generation())
    }

    /// Publishes `snap`, the candidate `gens` made: one atomic store; the replaced
    /// snapshot is freed a second later ([`Router::reap`]).
    pub(crate) fn publish(&self, gens: &mut Generations, snap: Snapshot) {
        let old = self.cell.swap(Arc::new(snap));
        gens.commit();
        lock(&self.retired).push((std::time::Instant::now(), old));
        self.reap();
    }

    /// Drops replaced snapshots that no worker can hold any more (a batch lasts
    /// microseconds; one second is plenty). Called after each apply and by the main loop.
    pub fn reap(&self) {
        let mut r = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|(at, _)| at.elapsed() < Duration::from_secs(1));
    }

    pub fn generation(&self) -> u64 {
        self.cell.load().generation
    }

    pub fn last_apply(&self) -> Option<SystemTime> {
        *self.last_apply.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `vpcd status --json`, and what `vpcd status` prints.
    pub fn status_report(&self) -> crate::json::Status {
        let snap = self.cell.load();
        let now = SystemTime::now();
        let down = lock(&self.links_down).clone();
        crate::json::Status {
            lab: self.title.clone(),
            region: snap.topo.region.to_string(),
            pid: std::process::id(),
            uptime_seconds: now
                .duration_since(self.started)
                .unwrap_or_default()
                .as_secs(),
            generation: snap.generation,
            last_apply_seconds_ago: self
                .last_apply()
                .map(|t| now.duration_since(t).unwrap_or_default().as_secs()),
            workers: self.workers.len(),
            flow_table: self.flow_table(),
            namespaces: lock(&self.namespaces)
                .iter()
                .map(|ns| crate::json::Namespace {
                    id: ns.id.clone(),
                    namespace: ns.name.clone(),
                    addresses: ns.addrs.iter().map(|(a, l)| format!("{a}/{l}")).collect(),
                    stopped: down.contains(&ns.id),
                })
                .collect(),
            faults: crate::json::faults(&lock(&self.faults).0),
            vpn_tunnels: self.vpn_status(&snap),
        }
    }

    /// The flow table's occupancy now.
    fn flow_table(&self) -> crate::json::FlowTable {
        let [sg, nat, eigw] = self.conntrack.occupancy_by_kind(event_loop::now());
        crate::json::FlowTable {
            capacity: self.conntrack.capacity(),
            // A NAT translation holds two slots (one per direction).
            used: sg + nat * 2 + eigw,
            tracked_sg_flows: sg,
            nat_translations: nat,
            eigw_flows: eigw,
        }
    }

    /// `vpcd status`.
    pub fn status(&self) -> String {
        let r = self.status_report();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "vpcd: lab {} ({}), pid {}, up {}s, generation {}{}",
            r.lab,
            r.region,
            r.pid,
            r.uptime_seconds,
            r.generation,
            match r.last_apply_seconds_ago {
                Some(t) => format!(", last apply {t}s ago"),
                None => String::new(),
            }
        );
        let f = &r.flow_table;
        let _ = writeln!(
            s,
            "workers {}, flow table {} of {} slots: {} tracked SG flows, {} NAT translations, {} EIGW flows",
            r.workers, f.used, f.capacity, f.tracked_sg_flows, f.nat_translations, f.eigw_flows
        );
        for ns in &r.namespaces {
            let state = if ns.stopped {
                "  (stopped by a fault)"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  {:<12} ns {:<20} {}{state}",
                ns.id,
                ns.namespace,
                ns.addresses.join(" ")
            );
        }
        if !r.vpn_tunnels.is_empty() {
            let _ = writeln!(s, "VPN tunnels:");
            for t in &r.vpn_tunnels {
                let bgp = t
                    .bgp_state
                    .as_ref()
                    .map_or(String::new(), |b| format!(", BGP {b}"));
                let why = t
                    .reason
                    .as_ref()
                    .map_or(String::new(), |w| format!(" ({w})"));
                let refused = if t.refused_routes > 0 {
                    format!(", {} refused", t.refused_routes)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    s,
                    "  {:<14} {}{why}  outside {} <-> {}  inside {} <-> {}  {}{bgp}, {} route(s) accepted{refused}",
                    t.tunnel,
                    t.status,
                    t.outside_ip,
                    t.customer_gateway_ip,
                    t.inside_aws,
                    t.inside_customer,
                    t.routing,
                    t.accepted_routes
                );
            }
        }
        let faults = lock(&self.faults).0.clone();
        if !faults.is_empty() {
            let _ = writeln!(s, "faults:");
            for f in &faults {
                let _ = writeln!(s, "  {}", f.describe());
            }
        }
        s
    }

    /// `vpcd stats --json`.
    pub fn stats_report(&self) -> crate::json::StatsReport {
        let mut r = crate::json::StatsReport::new(&self.stats(), &self.cell.load());
        r.flow_table = Some(self.flow_table());
        r.flow_log_lines_unwritten = self.flow_log_unwritten.load(Ordering::Relaxed);
        r
    }

    /// `vpcd stats`.
    pub fn stats_text(&self) -> String {
        let snap = self.cell.load();
        let now = event_loop::now();
        let [sg, nat, eigw] = self.conntrack.occupancy_by_kind(now);
        let mut s = summary(&self.stats(), &snap, "vpcd:");
        let _ = writeln!(
            s,
            "  generation {}, flow table: {sg} SG flows, {nat} NAT translations, {eigw} EIGW flows, {} slots",
            snap.generation,
            self.conntrack.capacity()
        );
        let unwritten = self.flow_log_unwritten.load(Ordering::Relaxed);
        if unwritten > 0 {
            let _ = writeln!(
                s,
                "  flow-log lines not written: {unwritten} (the file would not open or a write failed; see the router's stderr)"
            );
        }
        s
    }
}

/// Locks a mutex of the control path; a panic elsewhere does not stop the router's
/// reports.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The control thread's end of one worker's queue-change channel.
pub struct WorkerLink {
    pub tx: std::sync::mpsc::Sender<QueueChange<TunQueue>>,
    pub wake: Arc<Wakeup>,
    pub done: Arc<AtomicU64>,
    pub sent: u64,
}

impl WorkerLink {
    fn send(&mut self, change: QueueChange<TunQueue>) {
        if self.tx.send(change).is_ok() {
            self.sent += 1;
        }
    }
}

/// Wakes every worker and waits (up to 5 s) until each has carried out what it was sent.
fn wait_for_workers(links: &mut [WorkerLink]) {
    for l in links.iter() {
        l.wake.raise();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while links
        .iter()
        .any(|l| l.done.load(Ordering::Acquire) < l.sent)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn namespace_diff(old: &[Namespace], new: &[Namespace]) -> String {
    let mut parts = Vec::new();
    for n in new {
        match old.iter().find(|o| o.id == n.id) {
            None => parts.push(format!("adds {}", n.id)),
            Some(o) if o != n => parts.push(format!("changes {}", n.id)),
            Some(_) => {}
        }
    }
    for o in old {
        if !new.iter().any(|n| n.id == o.id) {
            parts.push(format!("removes {}", o.id));
        }
    }
    parts.join(", ")
}

impl Handler for Router {
    fn handle(&self, command: &str, body: &str) -> Reply {
        // `--json` anywhere after a report's name asks for its JSON form (json.rs).
        let json = command.split(' ').skip(1).any(|w| w == "--json");
        let plain: String;
        let command = if json {
            plain = command
                .split(' ')
                .filter(|w| *w != "--json")
                .collect::<Vec<_>>()
                .join(" ");
            plain.as_str()
        } else {
            command
        };
        let mut words = command.splitn(2, ' ');
        match words.next().unwrap_or("") {
            "status" if json => (Status::Ok, crate::json::to_string(&self.status_report())),
            "status" => (Status::Ok, self.status()),
            "stats" if json => (Status::Ok, crate::json::to_string(&self.stats_report())),
            "stats" => (Status::Ok, self.stats_text()),
            "apply" => {
                let file = crate::yaml::shown(words.next().unwrap_or("(apply)"));
                let applied = self.apply(body, file);
                give_back_memory();
                match applied {
                    Ok(g) => {
                        log::info!("apply: {file}: applied, generation {g}");
                        (Status::Ok, format!("{file}: applied, generation {g}\n"))
                    }
                    Err(e) => (Status::Refused, e),
                }
            }
            "trace" => self.trace(words.next().unwrap_or("")),
            // The running lab's picture, faults in red (`vpcd graph --live`).
            "graph" => {
                let g = crate::graph::Graph::of(&self.cell.load());
                match words.next().map(str::trim) {
                    Some("dot") => (Status::Ok, g.dot()),
                    Some("mermaid") => (Status::Ok, g.mermaid()),
                    _ => (Status::Bad, "graph needs: dot | mermaid".into()),
                }
            }
            "fault" => self.fault(words.next().unwrap_or(""), json),
            "vpn-config" => {
                let args: Vec<&str> = words.next().unwrap_or("").split_whitespace().collect();
                let format = match args.get(1).copied() {
                    Some("bird") | None => crate::vpn_config::Format::Bird,
                    Some("frr") => crate::vpn_config::Format::Frr,
                    Some("strongswan") => crate::vpn_config::Format::Strongswan,
                    Some(f) => {
                        return (
                            Status::Bad,
                            format!(
                                "format `{}`: bird, frr or strongswan",
                                crate::yaml::shown(f)
                            ),
                        )
                    }
                };
                let model = lock(&self.model).clone();
                let snap = self.cell.load();
                match crate::vpn_config::render(&model, &snap, args.first().unwrap_or(&""), format)
                {
                    Ok(t) => (Status::Ok, t),
                    Err(e) => (Status::Bad, e),
                }
            }
            "routes" => {
                let only = words.next().map(str::trim).filter(|t| !t.is_empty());
                let snap = self.cell.load();
                let routes = if json {
                    crate::json::routes(&snap, only).map(|r| crate::json::to_string(&r))
                } else {
                    crate::routes::render(&snap, only)
                };
                match routes {
                    Ok(t) => (Status::Ok, t),
                    Err(e) => (Status::Bad, e),
                }
            }
            other => (
                Status::Bad,
                format!("unknown command `{}`", crate::yaml::shown(other)),
            ),
        }
    }
}

/// Returns the memory an apply freed to the system. Checking a large lab (the largest
/// file vpcd takes peaks at some hundreds of MB) leaves glibc holding the freed pages,
/// so a refused apply used to keep the router at 1.3 GB (issue 22).
fn give_back_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers and only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Router {
    /// `trace FROM TO PROTO PORT SRC_PORT SIZE TTL [json]`: reachable is `ok`, not
    /// reachable `no` (both a result, on stdout), a probe it cannot run `bad`.
    fn trace(&self, args: &str) -> Reply {
        let (probe, json) = match crate::trace::Probe::from_request(args) {
            Ok(p) => p,
            Err(e) => return (Status::Bad, e),
        };
        let snap = self.cell.load();
        let mut t = match crate::trace::trace_live(&snap, &probe, Some(&self.conntrack)) {
            Ok(t) => t,
            Err(e) => return (Status::Bad, e),
        };
        // The faults that shape what the trace saw (faults.md: "instance stopped by fault
        // f-3").
        for f in &lock(&self.faults).0 {
            t.live.push(format!(
                "fault {} is active: {} {}",
                f.name(),
                f.action.name(),
                f.target
            ));
        }
        let text = if json {
            crate::trace::to_json(&t) + "\n"
        } else {
            crate::trace::to_text(&t)
        };
        let status = if t.reachable() {
            Status::Ok
        } else {
            Status::No
        };
        (status, text)
    }
}

/// The counters as a person reads them: totals, drops by reason and by precise cause
/// (which ENI's security groups, which NACL rule), then one line per port. `head` starts
/// the first line (`vpcd: stopped;` at the end of a run).
pub fn summary(stats: &Stats, snap: &Snapshot, head: &str) -> String {
    let t = &snap.topo;
    let mut s = String::new();
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .filter(|r| stats.dropped(**r) > 0)
        .map(|r| format!("{r} {}", stats.dropped(*r)))
        .collect();
    let _ = writeln!(
        s,
        "{head} forwarded {}, answered {}, to the router {}, dropped {}{}",
        stats.forwarded,
        stats.replies,
        stats.local,
        stats.dropped_total(),
        if drops.is_empty() {
            String::new()
        } else {
            format!(" ({})", drops.join(", "))
        }
    );
    let sg: Vec<String> = stats
        .sg_drops
        .iter()
        .zip(&t.enis)
        .flat_map(|(c, eni)| {
            [("inbound", c[0]), ("outbound", c[1])]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(move |(dir, n)| format!("{} {dir} {n}", eni.id))
        })
        .collect();
    if !sg.is_empty() {
        let _ = writeln!(s, "  dropped by security groups: {}", sg.join(", "));
    }
    let nacl: Vec<String> = stats
        .nacl_drops
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .filter_map(|(i, n)| {
            t.network_acls
                .iter()
                .find_map(|a| a.counter_name(i as u32))
                .map(|name| format!("{name}: {n}"))
        })
        .collect();
    if !nacl.is_empty() {
        let _ = writeln!(s, "  dropped by network ACLs: {}", nacl.join(", "));
    }
    if stats.rx_errors > 0 {
        let _ = writeln!(s, "  read errors: {}", stats.rx_errors);
    }
    if stats.mirrored + stats.mirror_refused + stats.mirror_captured + stats.mirror_lost > 0 {
        let _ = writeln!(
            s,
            "  traffic mirroring: {} sent to targets, {} refused by the target's groups, {} captured to files, {} lost",
            stats.mirrored, stats.mirror_refused, stats.mirror_captured, stats.mirror_lost
        );
    }
    if stats.flow_log_lost > 0 {
        let _ = writeln!(
            s,
            "  flow-log records lost: {} (their windows say SKIPDATA)",
            stats.flow_log_lost
        );
    }
    let services: Vec<String> = stats
        .services
        .named()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    if !services.is_empty() {
        let _ = writeln!(s, "  router services: {}", services.join(", "));
    }
    let width = t
        .ports
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        s,
        "  {:width$}  {:>10} {:>12} {:>10} {:>12} {:>9}",
        "port", "rx packets", "rx bytes", "tx packets", "tx bytes", "tx errors"
    );
    for (i, port) in t.ports.iter().enumerate() {
        if port.name.is_empty() {
            continue;
        }
        let c = stats.ports.get(i).copied().unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:width$}  {:>10} {:>12} {:>10} {:>12} {:>9}",
            port.name, c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes, c.tx_errors
        );
    }
    s
}

/// Seconds since the Unix epoch, for metrics.
pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}
