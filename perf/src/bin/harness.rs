//! The end-to-end performance harness (performance.md): the references and vpcd's own
//! paths measured side by side in one run, on this machine, with the same tools.
//!
//! - `kernel_router`: namespaces A – R – B over veth, R forwarding (`ip_forward=1`);
//! - `kernel_ct_nat`: the same with an nftables ruleset in R: conntrack
//!   `ct state established,related accept`, a few filter rules, masquerade;
//! - `tun_floor`: two namespaces whose `eth0` are TUN devices opened with vpcd's flags
//!   (`IFF_VNET_HDR` and the same offloads), joined by this program's minimal copy loop
//!   (read → write, header passed through, no parsing);
//! - `tun_floor_plain`: the same loop without offloads (one packet per syscall);
//! - `vpcd`: the default lab, web-1 → app-1 across subnets (SGs, NACLs, conntrack and a
//!   flow log on), and app-1 → inet-1 through the NAT gateway and the IGW; then web-1 →
//!   app-1 again with `--no-offload`, and with `--udp-gro` (a flow's datagrams written
//!   to the receiving TUN as UDP GSO super-packets; opt-in, see `vpcd up --help`).
//!
//! Each path runs iperf3 TCP 1 and 4 streams, UDP 64-byte datagrams at full rate, 1000
//! pings 2 ms apart (latency as an hdrhistogram: min, avg, p50, p99, p99.9), and TCP
//! connections per second (two clients connect, read the server's one byte, close; the
//! server closes first, so no client port waits in TIME_WAIT). One table is printed and saved under `perf/results/`:
//! TCP and connection ratios to `tun_floor` (the same offloads as vpcd), UDP ratios to
//! `tun_floor_plain` (performance.md's targets). Namespaces are named `vh<pid>-…`,
//! removed on exit and on failure; only processes this program started are stopped.
//!
//! Then `vpcd up` of the default lab and of a 50-instance one is timed to `ready`.
//!
//! Needs root: `sudo target/release/harness [VPCD [TEST...]]` (or `scripts/perf.sh`);
//! naming tests (`tcp`, `udp`, `ping`, `cps`, `up`) runs only those.

use std::fmt::Write as _;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::netns;
use dataplane::io::tun::{Offloads, TunQueue};
use dataplane::io::Queue;
use dataplane::offload::Offload;
use hdrhistogram::Histogram;

/// Seconds per iperf3 run.
const SECS: &str = "5";

/// The tests named after the vpcd path on the command line (`tcp`, `udp`, `ping`, `cps`,
/// `up`); all of them when none is named.
static ONLY: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn wanted(test: &str) -> bool {
    ONLY.get()
        .is_none_or(|o| o.is_empty() || o.iter().any(|t| t == test))
}

/// Namespaces made by this run; removed on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: &str) {
        netns::add(name).unwrap_or_else(|e| panic!("{e}"));
        self.0.push(name.to_string());
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = netns::delete(&self.0);
    }
}

/// A process this run started; stopped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: a signal to a child this program started and has not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ip_batch(ns: &str, cmds: &str) {
    netns::ip(&["-n", ns, "-batch", "-"], Some(cmds)).unwrap_or_else(|e| panic!("{ns}: {e}"));
}

fn exec(ns: &str, args: &[&str]) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ip netns exec");
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn spawn(ns: &str, args: &[&str]) -> Proc {
    Proc(
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in a namespace"),
    )
}

/// What one path measured.
#[derive(Default, Clone)]
struct Figures {
    tcp1: f64,
    tcp4: f64,
    udp_pps: f64,
    udp_loss: f64,
    /// Round trip in ms: min, mean, p50, p99, p99.9.
    ping: Option<[f64; 5]>,
    /// TCP connections per second (connect, one byte, close).
    cps: f64,
    /// Flows the connection test left in the path's connection tracking (none for the
    /// stateless references).
    held: Option<u64>,
}

/// Seconds of the connections-per-second test.
const CPS_SECS: u64 = 3;
/// Port of the connections-per-second server (the one every path's rules admit).
const CPS_PORT: u16 = 5201;

/// Connections per second from namespace `client` to `addr`, served from `server_ns`.
fn connections_per_second(client: &str, server_ns: &str, addr: &str) -> f64 {
    use std::io::Write;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    // A socket belongs to the namespace it was created in: bind there, serve from here.
    let listener = netns::run_in(server_ns, || TcpListener::bind(("0.0.0.0", CPS_PORT)))
        .unwrap_or_else(|e| panic!("cps server in {server_ns}: {e}"));
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut pfd = libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: one valid pollfd for the call.
                if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
                    continue;
                }
                if let Ok((mut s, _)) = listener.accept() {
                    let _ = s.write_all(b"x");
                }
            }
        })
    };
    let to: SocketAddr = format!("{addr}:{CPS_PORT}").parse().expect("address");
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let client = client.to_string();
            std::thread::spawn(move || {
                netns::run_in(&client, || {
                    let deadline = Instant::now() + Duration::from_secs(CPS_SECS);
                    let mut done = 0u64;
                    let mut byte = [0u8; 8];
                    while Instant::now() < deadline {
                        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(1))
                        else {
                            continue;
                        };
                        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                        // The byte, then the server's FIN.
                        let mut got = 0;
                        while let Ok(n) = s.read(&mut byte) {
                            if n == 0 {
                                break;
                            }
                            got += n;
                        }
                        if got == 1 {
                            done += 1;
                        }
                    }
                    Ok(done)
                })
                .unwrap_or(0)
            })
        })
        .collect();
    let total: u64 = clients.into_iter().map(|c| c.join().unwrap_or(0)).sum();
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    total as f64 / CPS_SECS as f64
}

/// Bits per second of the iperf3 receiver line (TCP), or (pps, loss %) for UDP.
fn receiver(report: &str) -> Option<(f64, Option<(f64, f64)>)> {
    let line = report.lines().rev().find(|l| l.contains("receiver"))?;
    let w: Vec<&str> = line.split_whitespace().collect();
    let i = w.iter().position(|x| x.ends_with("bits/sec"))?;
    let mult = match w[i] {
        "Gbits/sec" => 1e9,
        "Mbits/sec" => 1e6,
        "Kbits/sec" => 1e3,
        _ => 1.0,
    };
    let bps = w[i - 1].parse::<f64>().ok()? * mult;
    // UDP: ".. 0.011 ms  847817/1377400 (62%)  receiver"
    let udp = w
        .iter()
        .find(|x| x.contains('/') && !x.contains("sec"))
        .and_then(|x| {
            let (lost, total) = x.split_once('/')?;
            let (lost, total): (f64, f64) = (lost.parse().ok()?, total.parse().ok()?);
            let secs: f64 = SECS.parse().ok()?;
            Some((
                (total - lost) / secs,
                if total > 0.0 {
                    100.0 * lost / total
                } else {
                    0.0
                },
            ))
        });
    Some((bps, udp))
}

/// Runs the tests from `client` to `server_ns` at `addr`; `held` counts the flows the
/// path tracks (after the connection test).
fn measure(
    name: &str,
    client: &str,
    server_ns: &str,
    addr: &str,
    held: &dyn Fn() -> Option<u64>,
) -> Figures {
    let server = spawn(server_ns, &["iperf3", "-s"]);
    std::thread::sleep(Duration::from_millis(300));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "iperf3",
            "-c",
            addr,
            "-t",
            SECS,
            "--connect-timeout",
            "3000",
        ];
        args.extend(extra);
        exec(client, &args)
    };
    let mut f = Figures::default();
    if wanted("tcp") {
        let r = run(&[]);
        f.tcp1 = receiver(&r).map_or(0.0, |x| x.0);
        let r = run(&["-P", "4"]);
        f.tcp4 = receiver(&r).map_or(0.0, |x| x.0);
    }
    if wanted("udp") {
        let r = run(&["-u", "-l", "64", "-b", "0"]);
        if let Some((_, Some((pps, loss)))) = receiver(&r) {
            f.udp_pps = pps;
            f.udp_loss = loss;
        }
    }
    if !wanted("ping") {
        drop(server);
        if wanted("cps") {
            f.held = connections_held(client, server_ns, addr, &mut f.cps, held);
        }
        eprintln!("harness: {name} measured");
        return f;
    }
    let p_full = exec(
        client,
        &["ping", "-c", "1000", "-i", "0.002", "-W", "1", addr],
    );
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram");
    for line in p_full.lines() {
        if let Some(t) = line.split("time=").nth(1) {
            if let Ok(ms) = t.split_whitespace().next().unwrap_or("").parse::<f64>() {
                let _ = h.record((ms * 1000.0) as u64);
            }
        }
    }
    if !h.is_empty() {
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
        f.ping = Some([
            h.min() as f64 / 1000.0,
            h.mean() / 1000.0,
            q(0.5),
            q(0.99),
            q(0.999),
        ]);
    }
    // The iperf3 server gives its port to the connection test.
    drop(server);
    if wanted("cps") {
        f.held = connections_held(client, server_ns, addr, &mut f.cps, held);
    }
    eprintln!("harness: {name} measured");
    f
}

/// Runs the connection test (its rate into `cps`) and returns how many tracked flows it
/// left in the path's table (the table's growth: earlier tests' flows are not counted).
fn connections_held(
    client: &str,
    server_ns: &str,
    addr: &str,
    cps: &mut f64,
    held: &dyn Fn() -> Option<u64>,
) -> Option<u64> {
    let before = held();
    *cps = connections_per_second(client, server_ns, addr);
    Some(held()?.saturating_sub(before?))
}

/// The kernel's tracked connections in namespace `ns`.
fn kernel_flows(ns: &str) -> Option<u64> {
    exec(ns, &["cat", "/proc/sys/net/netfilter/nf_conntrack_count"])
        .trim()
        .parse()
        .ok()
}

/// vpcd's tracked flows (SG flows, NAT translations, EIGW flows) from `vpcd status`.
fn vpcd_flows(vpcd: &str, prefix: &str) -> Option<u64> {
    let out = Command::new(vpcd)
        .args(["--prefix", prefix, "status"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "… slots: 12 tracked SG flows, 3 NAT translations, 0 EIGW flows"
    let tail = text.lines().find_map(|l| l.split_once("slots: "))?.1;
    tail.split(", ")
        .map(|part| part.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A – R – B over veth, R forwarding; with `nat`, an nftables conntrack + masquerade
/// ruleset in R.
fn kernel(ns: &mut Namespaces, tag: &str, nat: bool) -> (String, String) {
    let (a, r, b) = (format!("{tag}-a"), format!("{tag}-r"), format!("{tag}-b"));
    for n in [&a, &r, &b] {
        ns.add(n);
    }
    ip_batch(
        &a,
        &format!("link set lo up\nlink add eth0 type veth peer name ra netns {r}\n"),
    );
    ip_batch(
        &b,
        &format!("link set lo up\nlink add eth0 type veth peer name rb netns {r}\n"),
    );
    ip_batch(
        &a,
        "addr add 10.97.1.2/24 dev eth0\nlink set eth0 up\nroute add default via 10.97.1.1\n",
    );
    ip_batch(
        &b,
        "addr add 10.97.2.2/24 dev eth0\nlink set eth0 up\nroute add default via 10.97.2.1\n",
    );
    ip_batch(
        &r,
        "link set lo up\naddr add 10.97.1.1/24 dev ra\naddr add 10.97.2.1/24 dev rb\nlink set ra up\nlink set rb up\n",
    );
    exec(&r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    if nat {
        let rules = "table inet vh {
 chain forwarding {
  type filter hook forward priority 0; policy drop;
  ct state established,related accept
  ip protocol icmp accept
  tcp dport 5201 accept
  udp dport 5201 accept
 }
 chain masq {
  type nat hook postrouting priority 100;
  oifname \"rb\" masquerade
 }
}
";
        let mut child = Command::new("ip")
            .args(["netns", "exec", &r, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft ruleset");
    }
    (a, b)
}

/// Two namespaces joined through TUN devices by a copy loop with vpcd's shape: vpcd's TUN
/// flags, with or without its offloads (the virtio-net header passed through as read),
/// and as many threads as vpcd has workers, each owning one queue of both devices and
/// copying whatever is ready on either (multi-queue, run to completion; no parsing).
fn tun_floor(
    ns: &mut Namespaces,
    tag: &str,
    offloads: Offloads,
    stop: &Arc<AtomicBool>,
) -> (String, String, Vec<std::thread::JoinHandle<()>>) {
    let (a, b) = (format!("{tag}-a"), format!("{tag}-b"));
    ns.add(&a);
    ns.add(&b);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let open = |n: &str| {
        netns::run_in(n, || {
            (0..workers)
                .map(|_| TunQueue::open("eth0", offloads))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .expect("tun queues")
    };
    let (qa, qb) = (open(&a), open(&b));
    ip_batch(&a, "link set lo up\nlink set eth0 mtu 1500 up\naddr add 10.96.0.1/32 dev eth0\nroute add 10.96.0.2/32 dev eth0\n");
    ip_batch(&b, "link set lo up\nlink set eth0 mtu 1500 up\naddr add 10.96.0.2/32 dev eth0\nroute add 10.96.0.1/32 dev eth0\n");
    let mut threads = Vec::new();
    for pair in qa.into_iter().zip(qb) {
        let stop = Arc::clone(stop);
        threads.push(std::thread::spawn(move || {
            let q = [pair.0, pair.1];
            let mut buf = vec![0u8; dataplane::io::BUFFER_SIZE];
            let mut meta = Offload::NONE;
            let mut pfd = [0, 1].map(|i| libc::pollfd {
                fd: q[i].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: two valid pollfds for the call.
                if unsafe { libc::poll(pfd.as_mut_ptr(), 2, 100) } <= 0 {
                    continue;
                }
                for i in 0..2 {
                    if pfd[i].revents & libc::POLLIN == 0 {
                        continue;
                    }
                    // At most a batch per device per round, as vpcd's workers read.
                    for _ in 0..dataplane::io::BATCH {
                        let Ok(n) = q[i].recv(&mut buf, &mut meta) else {
                            break;
                        };
                        let _ = q[1 - i].send(&buf[..n], &meta);
                    }
                }
            }
        }));
    }
    (a, b, threads)
}

/// Runs `vpcd up` (with `extra` options) on the default lab with a VPC-wide flow log at
/// MTU 1500 like the references, and measures instance → instance and private
/// instance → NAT gateway → IGW → internet host; with `only`, instance → instance
/// alone, under that name.
fn vpcd_paths(
    vpcd: &str,
    tag: &str,
    extra: &[&str],
    only: Option<&'static str>,
) -> Vec<(&'static str, Figures)> {
    let dir = std::env::temp_dir().join(format!("{tag}-lab"));
    let _ = std::fs::create_dir_all(&dir);
    let lab = dir.join("lab.yaml");
    let text = control::DEFAULT_LAB.replace(
        "    instances:\n",
        "    flow_logs:\n      - { id: fl, resource: vpc-lab, traffic_type: ALL, max_aggregation_interval: 60, destination: flow.log }\n    instances:\n",
    );
    std::fs::write(&lab, text).expect("write the lab");
    let prefix = format!("{tag}-");
    let mut args = vec!["--mtu", "1500"];
    args.extend(extra);
    let (router, _) = start_vpcd(vpcd, &prefix, &args, &lab);
    let (web, app, inet) = (
        format!("{prefix}web-1"),
        format!("{prefix}app-1"),
        format!("{prefix}inet-1"),
    );
    let held = || vpcd_flows(vpcd, &prefix);
    let mut results = Vec::new();
    if let Some(name) = only {
        results.push((name, measure(name, &web, &app, "10.0.2.10", &held)));
    } else {
        results.push((
            "vpcd instance→instance",
            measure("vpcd local", &web, &app, "10.0.2.10", &held),
        ));
        results.push((
            "vpcd NAT→IGW→internet",
            measure("vpcd nat", &app, &inet, "203.0.113.10", &held),
        ));
    }
    drop(router);
    let _ = std::fs::remove_dir_all(&dir);
    results
}

/// Through hybrid paths (issue 18): from the head office's host over a Direct Connect
/// virtual interface, then (the VIF disconnected by a fault) over a BGP VPN tunnel, to
/// the VPC's instance, in `configs/dx-vpn-backup.yaml` with every stage on.
fn vpcd_hybrid_paths(vpcd: &str, tag: &str) -> Vec<(&'static str, Figures)> {
    let dir = std::env::temp_dir().join(format!("{tag}-lab"));
    let _ = std::fs::create_dir_all(&dir);
    let lab = dir.join("lab.yaml");
    let text = include_str!("../../../configs/dx-vpn-backup.yaml").replace(
        "          - { protocol: icmp, source: 192.168.0.0/16 }\n          - { protocol: tcp, port_range: 5201, source: 192.168.0.0/16 }",
        "          - { protocol: all, source: 192.168.0.0/16 }",
    );
    std::fs::write(&lab, text).expect("write the lab");
    let prefix = format!("{tag}-");
    let (router, _) = start_vpcd(vpcd, &prefix, &["--mtu", "1500"], &lab);
    let (corp, app) = (format!("{prefix}corp-1"), format!("{prefix}app-1"));
    let held = || vpcd_flows(vpcd, &prefix);
    let mut results = vec![(
        "vpcd site→DX VIF→instance",
        measure("vpcd dx", &corp, &app, "10.0.2.10", &held),
    )];
    let fault = Command::new(vpcd)
        .args([
            "fault",
            "start",
            "aws:directconnect:virtual-interface-disconnect",
            "dxvif-hq",
            "--prefix",
            &prefix,
        ])
        .output();
    assert!(
        fault.is_ok_and(|o| o.status.success()),
        "harness: the VIF fault did not start"
    );
    // The site's BIRD moves to the VPN's routes once the VIF's session is gone.
    std::thread::sleep(Duration::from_secs(2));
    results.push((
        "vpcd site→VPN tunnel→instance",
        measure("vpcd vpn", &corp, &app, "10.0.2.10", &held),
    ));
    drop(router);
    let _ = std::fs::remove_dir_all(&dir);
    results
}

/// Starts `vpcd up` on `lab` and waits for `ready`: the router (stopped on drop) and the
/// time from start to ready.
fn start_vpcd(vpcd: &str, prefix: &str, extra: &[&str], lab: &Path) -> (Proc, Duration) {
    let start = Instant::now();
    let mut child = Command::new(vpcd)
        .args(["up", "--prefix", prefix])
        .args(extra)
        .arg(lab)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {vpcd}: {e} (build it: cargo build --release)"));
    let mut out = child.stdout.take().unwrap();
    let router = Proc(child);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("\nready") {
        let n = out.read(&mut buf).unwrap_or(0);
        if n == 0 {
            panic!("vpcd exited before ready:\n{seen}");
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let ready = start.elapsed();
    // Keep reading (and dropping) what it prints, so a full pipe never blocks it.
    std::thread::spawn(move || while out.read(&mut buf).is_ok_and(|n| n > 0) {});
    (router, ready)
}

/// The default lab with its instances replaced by `n` instances, half in each subnet.
fn lab_with_instances(n: usize) -> String {
    let text = control::DEFAULT_LAB;
    let (head, tail) = text.split_once("    instances:\n").expect("instances");
    let (_, tail) = tail.split_once("internet:").expect("internet");
    let mut lab = format!("{head}    instances:\n");
    for i in 0..n {
        let (subnet, net) = if i % 2 == 0 {
            ("public-a", 1)
        } else {
            ("private-a", 2)
        };
        let host = 10 + i / 2;
        let _ = writeln!(
            lab,
            "      - {{ id: i-{i}, subnet: {subnet}, private_ip: 10.0.{net}.{host}, ipv6_address: \"2001:db8:10:{net}::{host:x}\" }}"
        );
    }
    lab + "internet:" + tail
}

/// Time from `vpcd up` to `ready` (every namespace's stack answered) for the default lab
/// and a 50-instance one (performance.md: ≤ 2 s and ≤ 10 s); the median of three each.
fn up_times(vpcd: &str, tag: &str) -> [(usize, Duration); 2] {
    let dir = std::env::temp_dir().join(format!("{tag}-labs"));
    let _ = std::fs::create_dir_all(&dir);
    let labs = [
        (3, control::DEFAULT_LAB.to_string()),
        (51, lab_with_instances(50)),
    ];
    let times = labs.map(|(namespaces, text)| {
        let lab = dir.join(format!("lab-{namespaces}.yaml"));
        std::fs::write(&lab, text).expect("write the lab");
        let mut runs: Vec<Duration> = (0..3)
            .map(|_| start_vpcd(vpcd, &format!("{tag}-"), &[], &lab).1)
            .collect();
        runs.sort();
        (namespaces, runs[1])
    });
    let _ = std::fs::remove_dir_all(&dir);
    times
}

/// The first line `program flag` prints (its version).
fn version(program: &str, flag: &str) -> String {
    Command::new(program)
        .arg(flag)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Every path (references and vpcd) through the tests wanted.
fn measure_paths(vpcd: &str, tag: &str) -> Vec<(&'static str, Figures)> {
    let mut results: Vec<(&'static str, Figures)> = Vec::new();

    {
        let mut ns = Namespaces(Vec::new());
        let (a, b) = kernel(&mut ns, &format!("{tag}k"), false);
        results.push((
            "kernel_router",
            measure("kernel_router", &a, &b, "10.97.2.2", &|| None),
        ));
    }
    {
        let mut ns = Namespaces(Vec::new());
        let (a, b) = kernel(&mut ns, &format!("{tag}n"), true);
        let held = || kernel_flows(&format!("{tag}n-r"));
        results.push((
            "kernel_ct_nat",
            measure("kernel_ct_nat", &a, &b, "10.97.2.2", &held),
        ));
    }
    for (name, offloads, t) in [
        ("tun_floor", Offloads::On, "t"),
        ("tun_floor_plain", Offloads::Off, "p"),
    ] {
        let mut ns = Namespaces(Vec::new());
        let stop = Arc::new(AtomicBool::new(false));
        let (a, b, threads) = tun_floor(&mut ns, &format!("{tag}{t}"), offloads, &stop);
        results.push((name, measure(name, &a, &b, "10.96.0.2", &|| None)));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
    }
    results.extend(vpcd_paths(vpcd, &format!("{tag}v"), &[], None));
    results.extend(vpcd_hybrid_paths(vpcd, &format!("{tag}h")));
    for (t, option, name) in [
        ("w", "--no-offload", "vpcd instance→instance, --no-offload"),
        ("g", "--udp-gro", "vpcd instance→instance, --udp-gro"),
    ] {
        results.extend(vpcd_paths(
            vpcd,
            &format!("{tag}{t}"),
            &[option],
            Some(name),
        ));
    }
    results
}

fn main() {
    // SAFETY: geteuid has no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "harness: needs root (network namespaces): sudo {}",
            std::env::args().next().unwrap_or_default()
        );
        std::process::exit(2);
    }
    let tag = format!("vh{}", std::process::id());
    let vpcd = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/vpcd".to_string());
    let _ = ONLY.set(std::env::args().skip(2).collect());
    let results = if ["tcp", "udp", "ping", "cps"].iter().any(|t| wanted(t)) {
        measure_paths(&vpcd, &tag)
    } else {
        Vec::new()
    };
    let up = wanted("up").then(|| up_times(&vpcd, &format!("{tag}u")));

    let find = |name: &str| {
        results
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f.clone())
            .unwrap_or_default()
    };
    let (floor, plain) = (find("tun_floor"), find("tun_floor_plain"));
    let mut table = String::new();
    let kernel = String::from_utf8_lossy(
        &Command::new("uname")
            .arg("-r")
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .trim()
    .to_string();
    let _ = writeln!(
        table,
        "# vpcd perf harness: {} cores, kernel {kernel}, {}, {}, MTU 1500, {SECS} s runs; TCP and cps ratios to tun_floor (offloads), UDP ratio to tun_floor_plain",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        version(&vpcd, "--version"),
        version("iperf3", "--version"),
    );
    let _ = writeln!(
        table,
        "path\ttcp1_gbps\ttcp1_ratio\ttcp4_gbps\ttcp4_ratio\tudp64_kpps\tudp64_loss_pct\tudp64_ratio\tping_min_ms\tping_avg_ms\tping_p50_ms\tping_p99_ms\tping_p999_ms\tconn_per_s\tcps_ratio\tflows_held"
    );
    for (name, f) in &results {
        let ratio = |x: f64, y: f64| if y > 0.0 { x / y } else { 0.0 };
        let [min, avg, p50, p99, p999] = f.ping.unwrap_or_default();
        let _ = writeln!(
            table,
            "{name}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\t{:.0}\t{:.1}\t{:.2}\t{min:.3}\t{avg:.3}\t{p50:.3}\t{p99:.3}\t{p999:.3}\t{:.0}\t{:.2}\t{}",
            f.tcp1 / 1e9,
            ratio(f.tcp1, floor.tcp1),
            f.tcp4 / 1e9,
            ratio(f.tcp4, floor.tcp4),
            f.udp_pps / 1e3,
            f.udp_loss,
            ratio(f.udp_pps, plain.udp_pps),
            f.cps,
            ratio(f.cps, floor.cps),
            f.held.map_or("-".to_string(), |n| n.to_string()),
        );
    }
    if let Some(up) = up {
        let _ = write!(table, "# vpcd up to ready (median of 3):");
        for (namespaces, t) in up {
            let _ = write!(table, " {namespaces} namespaces {} ms;", t.as_millis());
        }
        let _ = writeln!(
            table,
            " targets: default lab (3) ≤ 2 s, 50 instances ≤ 10 s"
        );
    }
    print!("{table}");
    let dir = std::path::Path::new("perf/results");
    let _ = std::fs::create_dir_all(dir);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = dir.join(format!("harness-{stamp}.tsv"));
    if std::fs::write(&path, &table).is_ok() {
        eprintln!("harness: saved {}", path.display());
    }
}
