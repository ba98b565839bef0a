//! `vpcd up --metrics ADDR`: the router's counters in Prometheus text format, over HTTP on
//! a loopback address only (the lab stays invisible to the machine's network, lab.md).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use dataplane::io::event_loop;
use dataplane::DropReason;

use crate::control_socket::accept_until;
use crate::router::{unix_secs, Router};

/// Parses and checks a metrics address: loopback only.
pub fn parse_addr(addr: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = addr
        .parse()
        .map_err(|_| format!("--metrics {addr:?} is not an address:port such as 127.0.0.1:9108"))?;
    if !a.ip().is_loopback() {
        return Err(format!(
            "--metrics {addr}: metrics are served on loopback only (127.0.0.1 or [::1])"
        ));
    }
    Ok(a)
}

/// Serves `GET /metrics` (any path) until `stop` is set.
pub fn serve(
    addr: SocketAddr,
    router: Arc<Router>,
    stop: Arc<AtomicBool>,
) -> io::Result<(JoinHandle<()>, SocketAddr)> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    // The address bound (port 0 picks a free one): `up` prints it.
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("vpcd-metrics".into())
        .spawn(move || {
            accept_until(listener.as_raw_fd(), &stop, || {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                // A reader that stops reading must not hold the router at stop.
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf);
                let body = render(&router);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            })
        })
        .map(|h| (h, bound))
}

/// The metrics text.
pub fn render(router: &Router) -> String {
    let stats = router.stats();
    let snap = router.cell.load();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# HELP vpcd_packets_total Packets by what became of them. Each packet read is counted once: the ports' rx packets = forwarded + local + dropped. answered counts packets vpcd wrote itself (an ICMP error or reset in place of a drop, still counted under dropped; a DNS, metadata or ping answer): the ports' tx packets = forwarded + answered + traffic-mirror copies sent.\n# TYPE vpcd_packets_total counter"
    );
    let _ = writeln!(
        s,
        "vpcd_packets_total{{verdict=\"forwarded\"}} {}",
        stats.forwarded
    );
    let _ = writeln!(
        s,
        "vpcd_packets_total{{verdict=\"answered\"}} {}",
        stats.replies
    );
    let _ = writeln!(s, "vpcd_packets_total{{verdict=\"local\"}} {}", stats.local);
    let _ = writeln!(
        s,
        "vpcd_packets_total{{verdict=\"dropped\"}} {}",
        stats.dropped_total()
    );
    let _ = writeln!(
        s,
        "# HELP vpcd_drops_total Dropped packets by reason.\n# TYPE vpcd_drops_total counter"
    );
    for r in DropReason::ALL {
        let _ = writeln!(
            s,
            "vpcd_drops_total{{reason=\"{r}\"}} {}",
            stats.dropped(*r)
        );
    }
    let _ = writeln!(
        s,
        "# HELP vpcd_router_service_refused_total What the router's own services (DNS, instance metadata) refused or cut off, by reason.\n# TYPE vpcd_router_service_refused_total counter"
    );
    for (reason, n) in stats.services.named() {
        let _ = writeln!(
            s,
            "vpcd_router_service_refused_total{{reason=\"{reason}\"}} {n}"
        );
    }
    for (name, help) in [
        (
            "vpcd_port_rx_packets_total",
            "Packets received from a port.",
        ),
        ("vpcd_port_rx_bytes_total", "Bytes received from a port."),
        ("vpcd_port_tx_packets_total", "Packets sent to a port."),
        ("vpcd_port_tx_bytes_total", "Bytes sent to a port."),
        (
            "vpcd_port_tx_errors_total",
            "Packets whose write to a port failed.",
        ),
    ] {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
        for (i, port) in snap.topo.ports.iter().enumerate() {
            if port.name.is_empty() {
                continue;
            }
            let c = stats.ports.get(i).copied().unwrap_or_default();
            let v = match name {
                "vpcd_port_rx_packets_total" => c.rx_packets,
                "vpcd_port_rx_bytes_total" => c.rx_bytes,
                "vpcd_port_tx_packets_total" => c.tx_packets,
                "vpcd_port_tx_bytes_total" => c.tx_bytes,
                _ => c.tx_errors,
            };
            let _ = writeln!(s, "{name}{{port=\"{}\"}} {v}", port.name);
        }
    }
    let _ = writeln!(
        s,
        "# HELP vpcd_rx_errors_total Reads from a TUN device that failed.\n# TYPE vpcd_rx_errors_total counter\nvpcd_rx_errors_total {}",
        stats.rx_errors
    );
    let _ = writeln!(
        s,
        "# HELP vpcd_flow_log_records_lost_total Flow-log records lost: by the workers (aggregate map full, writer behind; their windows say SKIPDATA) or by the writer (file would not open, write failed).\n# TYPE vpcd_flow_log_records_lost_total counter\n\
         vpcd_flow_log_records_lost_total{{stage=\"worker\"}} {}\nvpcd_flow_log_records_lost_total{{stage=\"writer\"}} {}",
        stats.flow_log_lost,
        router.flow_log_unwritten.load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        s,
        "# HELP vpcd_traffic_mirror_packets_total Traffic-mirror copies: sent to instance targets in VXLAN (also in their ports' tx), refused (the target's groups or the NACLs on the way do not admit VXLAN from the source), captured to pcapng files, lost (the capture writer fell behind).\n# TYPE vpcd_traffic_mirror_packets_total counter\n\
         vpcd_traffic_mirror_packets_total{{result=\"sent\"}} {}\nvpcd_traffic_mirror_packets_total{{result=\"refused\"}} {}\n\
         vpcd_traffic_mirror_packets_total{{result=\"captured\"}} {}\nvpcd_traffic_mirror_packets_total{{result=\"lost\"}} {}",
        stats.mirrored, stats.mirror_refused, stats.mirror_captured, stats.mirror_lost
    );
    let [sg, nat, eigw] = router.conntrack.occupancy_by_kind(event_loop::now());
    let _ = writeln!(
        s,
        "# HELP vpcd_flows Live entries of the flow table by kind.\n# TYPE vpcd_flows gauge\n\
         vpcd_flows{{kind=\"security_group\"}} {sg}\nvpcd_flows{{kind=\"nat\"}} {nat}\nvpcd_flows{{kind=\"eigw\"}} {eigw}"
    );
    let _ = writeln!(
        s,
        "# HELP vpcd_flow_table_slots Slots of the flow table.\n# TYPE vpcd_flow_table_slots gauge\nvpcd_flow_table_slots {}",
        router.conntrack.capacity()
    );
    let _ = writeln!(
        s,
        "# HELP vpcd_config_generation The running configuration generation.\n# TYPE vpcd_config_generation gauge\nvpcd_config_generation {}",
        snap.generation
    );
    let faults = crate::router::lock(&router.faults).0.clone();
    let _ = writeln!(
        s,
        "# HELP vpcd_faults_active Faults injected with vpcd fault, by action.\n# TYPE vpcd_faults_active gauge"
    );
    for (action, _) in crate::faults::ACTIONS {
        let n = faults.iter().filter(|f| f.action.name() == *action).count();
        let _ = writeln!(s, "vpcd_faults_active{{action=\"{action}\"}} {n}");
    }
    // VPN tunnels and Direct Connect VIFs (R-VPN-STATUS): up or down, BGP state, routes.
    let tunnels = router.vpn_status(&snap);
    if !tunnels.is_empty() {
        let _ = writeln!(
            s,
            "# HELP vpcd_vpn_tunnel_up A VPN tunnel or Direct Connect virtual interface is up (1) or down (0).\n# TYPE vpcd_vpn_tunnel_up gauge"
        );
        for t in &tunnels {
            let _ = writeln!(
                s,
                "vpcd_vpn_tunnel_up{{tunnel=\"{}\"}} {}",
                t.tunnel,
                u8::from(t.status == "UP")
            );
        }
        let _ = writeln!(
            s,
            "# HELP vpcd_bgp_established The tunnel's BGP session is established (1) or not (0).\n# TYPE vpcd_bgp_established gauge"
        );
        for t in tunnels.iter().filter(|t| t.bgp_state.is_some()) {
            let up = t.bgp_state.as_deref() == Some("Established");
            let _ = writeln!(
                s,
                "vpcd_bgp_established{{tunnel=\"{}\"}} {}",
                t.tunnel,
                u8::from(up)
            );
        }
        let _ = writeln!(
            s,
            "# HELP vpcd_bgp_routes Routes from the customer gateway, accepted or refused over AWS's limit of 100.\n# TYPE vpcd_bgp_routes gauge"
        );
        for t in &tunnels {
            let _ = writeln!(
                s,
                "vpcd_bgp_routes{{tunnel=\"{}\",result=\"accepted\"}} {}",
                t.tunnel, t.accepted_routes
            );
            let _ = writeln!(
                s,
                "vpcd_bgp_routes{{tunnel=\"{}\",result=\"refused\"}} {}",
                t.tunnel, t.refused_routes
            );
        }
    }
    if let Some(t) = router.last_apply() {
        let _ = writeln!(
            s,
            "# HELP vpcd_last_apply_timestamp_seconds When the running configuration was applied.\n# TYPE vpcd_last_apply_timestamp_seconds gauge\nvpcd_last_apply_timestamp_seconds {}",
            unix_secs(t)
        );
    }
    s
}
