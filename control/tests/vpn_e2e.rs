//! Site-to-site VPN end to end (hybrid.md), with the real daemon on the customer side:
//! `configs/vpn-bgp.yaml` comes up with BIRD in the site's router and both tunnels'
//! BGP sessions established; ping and TCP cross both ways; BIRD installed the VPC's
//! block; `vpcd status` shows the tunnels; a tunnel taken down (`aws:vpn:tunnel-down`)
//! moves traffic to the other within a second and withdraws its routes on both sides,
//! and comes back when the fault ends; a static VPN carries its routes over tunnel 1.

mod common;

use common::until as wait_for;

use std::time::{Duration, Instant};

use common::{iperf, received_bytes, unique_prefix, vpcd_with_deadline, LabRun};

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/vpn-bgp.yaml");

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn status(prefix: &str) -> String {
    text(&vpcd_with_deadline(&["status", "--prefix", prefix], 10))
}

fn birdc(lab: &LabRun, args: &[&str]) -> String {
    let sock = format!("/run/vpcd/{}/bird-hq.ctl", lab.prefix);
    let out = std::process::Command::new("birdc")
        .arg("-s")
        .arg(&sock)
        .args(args)
        .output()
        .expect("birdc");
    text(&out)
}

#[test]
fn a_bgp_vpn_carries_the_site_over_both_tunnels_and_fails_over() {
    if !common::e2e("vpn_e2e") {
        return;
    }
    let prefix = unique_prefix("vpn");
    let started = Instant::now();
    let lab = LabRun::up(Some(LAB), &prefix, &["--metrics", "127.0.0.1:0"]);
    let up_in = started.elapsed();
    eprintln!("vpn_e2e: vpcd up to ready (both tunnels established) in {up_in:?}");
    assert!(
        !lab.map.iter().any(|l| l.contains("not established")),
        "{}",
        lab.map.join("\n")
    );
    // Both sessions up on the site's router, and the VPC's block in its kernel.
    let protocols = birdc(&lab, &["show", "protocols"]);
    assert_eq!(protocols.matches("Established").count(), 2, "{protocols}");
    let route = text(&lab.exec("hq", &["ip", "-4", "route", "show", "10.0.0.0/16"]));
    assert!(route.contains("proto bird"), "{route}");
    let st = status(&prefix);
    assert!(st.contains("vpn-hq:1") && st.contains("vpn-hq:2"), "{st}");
    assert_eq!(st.matches(" UP ").count(), 2, "{st}");
    assert!(st.contains("BGP Established, 1 route(s) accepted"), "{st}");
    let metrics = common::scrape(&lab);
    for want in [
        "vpcd_vpn_tunnel_up{tunnel=\"vpn-hq:1\"} 1",
        "vpcd_bgp_established{tunnel=\"vpn-hq:2\"} 1",
        "vpcd_bgp_routes{tunnel=\"vpn-hq:1\",result=\"accepted\"} 1",
    ] {
        assert!(metrics.contains(want), "{want}:\n{metrics}");
    }

    // Both ways, ICMP and TCP.
    lab.ping("corp-1", "10.0.2.10", &[]);
    lab.ping("app-1", "192.168.1.10", &[]);
    let _server = lab.spawn("app-1", &["iperf3", "-s", "-1"]);
    let report = iperf(&lab, "corp-1", "10.0.2.10", &["-t", "2"]);
    assert!(received_bytes(&report) > 1e6, "{report}");

    // Tunnel 1 goes down at the AWS end while pings flow every 20 ms and a TCP stream
    // runs: the stream survives the route change (its tracked flow is untouched).
    let _stream_server = lab.spawn("app-1", &["iperf3", "-s", "-1"]);
    std::thread::sleep(Duration::from_millis(300));
    let stream = lab.spawn("corp-1", &["iperf3", "-c", "10.0.2.10", "-t", "4"]);
    let pinger = lab.spawn(
        "corp-1",
        &[
            "ping",
            "-n",
            "-i",
            "0.02",
            "-c",
            "150",
            "-W",
            "1",
            "10.0.2.10",
        ],
    );
    std::thread::sleep(Duration::from_millis(600));
    let fault = text(&vpcd_with_deadline(
        &[
            "fault",
            "start",
            "aws:vpn:tunnel-down",
            "vpn-hq:1",
            "--prefix",
            &prefix,
        ],
        10,
    ));
    assert!(fault.contains("f-1"), "{fault}");
    let pings = pinger.output(20);
    let streamed = stream.output(20);
    assert!(
        streamed.contains("receiver") && received_bytes(&streamed) > 1e6,
        "the TCP stream did not survive the failover:\n{streamed}"
    );
    let answered = pings.matches("bytes from").count();
    let lost = 150 - answered;
    eprintln!("vpn_e2e: tunnel 1 down: {lost} of 150 pings (20 ms apart) lost in the failover");
    assert!(lost <= 50, "failover lost {lost} pings:\n{pings}");
    // The site has withdrawn what came over tunnel 1, and routes over tunnel 2.
    wait_for("the site's route over tunnel 2", 10, || {
        text(&lab.exec("hq", &["ip", "-4", "route", "show", "10.0.0.0/16"]))
            .contains("169.254.10.5")
    });
    let st = status(&prefix);
    assert!(st.contains("aws:vpn:tunnel-down (fault f-1)"), "{st}");
    lab.ping("app-1", "192.168.1.10", &[]);

    // The fault ends: BIRD connects again within its retry time.
    vpcd_with_deadline(&["fault", "stop", "--all", "--prefix", &prefix], 10);
    wait_for("tunnel 1 established again", 20, || {
        birdc(&lab, &["show", "protocols"])
            .matches("Established")
            .count()
            == 2
    });
    lab.ping("corp-1", "10.0.2.10", &[]);
    // The site's prefix is a propagated route of rtb-private (R-VPN-PROPAGATE).
    let routes = text(&vpcd_with_deadline(
        &["routes", "rtb-private", "--prefix", &prefix],
        10,
    ));
    assert!(
        routes.contains("192.168.0.0/16") && routes.contains("propagated"),
        "{routes}"
    );

    // Both tunnels down: the route is withdrawn on both sides, and nothing gets through.
    for t in ["vpn-hq:1", "vpn-hq:2"] {
        vpcd_with_deadline(
            &[
                "fault",
                "start",
                "aws:vpn:tunnel-down",
                t,
                "--prefix",
                &prefix,
            ],
            10,
        );
    }
    wait_for("the site's route withdrawn", 10, || {
        !text(&lab.exec("hq", &["ip", "-4", "route", "show", "10.0.0.0/16"])).contains("proto bird")
    });
    let routes = text(&vpcd_with_deadline(
        &["routes", "rtb-private", "--prefix", &prefix],
        10,
    ));
    assert!(!routes.contains("192.168.0.0/16"), "{routes}");
    let out = lab.exec("app-1", &["ping", "-c", "1", "-W", "1", "192.168.1.10"]);
    assert!(!out.status.success(), "{}", text(&out));
    vpcd_with_deadline(&["fault", "stop", "--all", "--prefix", &prefix], 10);
    wait_for("both tunnels back", 20, || {
        birdc(&lab, &["show", "protocols"])
            .matches("Established")
            .count()
            == 2
    });
    wait_for("the site reaches the VPC again", 10, || {
        lab.exec("corp-1", &["ping", "-c", "1", "-W", "1", "10.0.2.10"])
            .status
            .success()
    });
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    assert!(common::namespaces_with(&prefix).is_empty());
    common::assert_clean(&prefix);
}

#[test]
fn a_static_vpn_carries_its_routes_and_the_site_routes_the_vpc_over_tunnel_1() {
    if !common::e2e("vpn_e2e") {
        return;
    }
    let text_lab = std::fs::read_to_string(LAB).unwrap().replace(
        "    customer_gateway: cgw-hq\n    tunnels:",
        "    customer_gateway: cgw-hq\n    static_routes_only: true\n    routes: [192.168.0.0/16]\n    tunnels:",
    );
    let dir = std::env::temp_dir().join(format!("{}vpn-static", unique_prefix("vs")));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vpn-static.yaml");
    std::fs::write(&file, text_lab).unwrap();
    let prefix = unique_prefix("vs");
    let lab = LabRun::up(Some(file.to_str().unwrap()), &prefix, &[]);
    // No BGP daemon for a static VPN.
    assert!(!std::path::Path::new(&format!("/run/vpcd/{prefix}/bird-hq.ctl")).exists());
    lab.ping("corp-1", "10.0.2.10", &[]);
    lab.ping("app-1", "192.168.1.10", &[]);
    let st = status(&prefix);
    assert!(st.contains("static, 1 route(s) accepted"), "{st}");
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    common::assert_clean(&prefix);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bird_accepts_the_configuration_vpcd_writes() {
    if !common::e2e("vpn_e2e") {
        return;
    }
    let out = vpcd_with_deadline(&["vpn-config", LAB, "vpn-hq"], 10);
    let dir = std::env::temp_dir().join(unique_prefix("birdconf"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("bird.conf");
    std::fs::write(&conf, &out.stdout).unwrap();
    // `bird -p`: parse the configuration and exit.
    let parsed = std::process::Command::new("bird")
        .arg("-p")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(parsed.status.success(), "{}", text(&parsed));
}

const CLOUDHUB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/vpn-cloudhub.yaml");

fn site_birdc(lab: &LabRun, site: &str, args: &[&str]) -> String {
    let sock = format!("/run/vpcd/{}/bird-{site}.ctl", lab.prefix);
    text(
        &std::process::Command::new("birdc")
            .arg("-s")
            .arg(&sock)
            .args(args)
            .output()
            .expect("birdc"),
    )
}

#[test]
fn r_vpn_cloudhub_sites_reach_each_other_through_the_vgw_unless_they_share_an_asn() {
    if !common::e2e("vpn_e2e") {
        return;
    }
    let prefix = unique_prefix("hub");
    let lab = LabRun::up(Some(CLOUDHUB), &prefix, &[]);
    // east learns hq's block from the VGW, with the VGW's ASN before hq's.
    wait_for("east learns hq's block", 10, || {
        site_birdc(&lab, "east", &["show", "route", "192.168.0.0/16", "all"])
            .contains("BGP.as_path: 64512 65000")
    });
    lab.ping("east-1", "192.168.1.10", &[]);
    lab.ping("west-1", "172.16.1.10", &[]);
    lab.ping("hq-1", "172.17.1.10", &[]);
    lab.ping("hq-1", "10.0.2.10", &[]);
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    common::assert_clean(&prefix);

    // west with hq's ASN: neither learns the other's block (BGP's own loop check), and
    // east still reaches both.
    let same = std::fs::read_to_string(CLOUDHUB)
        .unwrap()
        .replace("bgp_asn: 65002", "bgp_asn: 65000");
    let dir = std::env::temp_dir().join(unique_prefix("hubsame"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("same-asn.yaml");
    std::fs::write(&file, same).unwrap();
    let prefix = unique_prefix("hub");
    let lab = LabRun::up(Some(file.to_str().unwrap()), &prefix, &[]);
    wait_for("east learns both", 10, || {
        let r = site_birdc(&lab, "east", &["show", "route"]);
        r.contains("192.168.0.0/16") && r.contains("172.17.0.0/16")
    });
    let west = site_birdc(&lab, "west", &["show", "route"]);
    assert!(!west.contains("192.168.0.0/16"), "{west}");
    assert!(west.contains("172.16.0.0/16"), "{west}");
    let out = lab.exec("hq-1", &["ping", "-c", "2", "-W", "1", "172.17.1.10"]);
    assert!(!out.status.success(), "hq reached west:\n{}", text(&out));
    lab.ping("east-1", "172.17.1.10", &[]);
    lab.ping("east-1", "192.168.1.10", &[]);
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    common::assert_clean(&prefix);
    let _ = std::fs::remove_dir_all(&dir);
}

const DX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/dx-vpn-backup.yaml");

fn site_route(lab: &LabRun) -> String {
    text(&lab.exec("hq", &["ip", "-4", "route", "show", "10.0.0.0/16"]))
}

/// A ping of `size` bytes with DF set from app-1 to the site router's LAN address.
fn jumbo(lab: &LabRun, size: usize) -> bool {
    lab.exec(
        "app-1",
        &[
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            &(size - 28).to_string(),
            "192.168.0.1",
        ],
    )
    .status
    .success()
}

#[test]
fn r_dx_private_direct_connect_is_preferred_both_ways_with_the_vpn_as_backup() {
    if !common::e2e("vpn_e2e") {
        return;
    }
    let prefix = unique_prefix("dx");
    let lab = LabRun::up(Some(DX), &prefix, &[]);
    // Both sides send over the VIF: the VGW by R-VPN-PRIORITY, the site by its local
    // preference.
    wait_for("the site routes the VPC over the VIF", 10, || {
        site_route(&lab).contains("dev dx101")
    });
    lab.ping("corp-1", "10.0.2.10", &[]);
    lab.ping("app-1", "192.168.1.10", &[]);
    assert!(jumbo(&lab, 9000), "jumbo frames over the VIF");
    let _server = lab.spawn("app-1", &["iperf3", "-s", "-1"]);
    let report = iperf(&lab, "corp-1", "10.0.2.10", &["-t", "1"]);
    assert!(received_bytes(&report) > 1e6, "{report}");
    let st = status(&prefix);
    assert!(
        st.contains("dxvif-hq") && st.contains("Direct Connect VLAN 101, MTU 9001"),
        "{st}"
    );

    // The VIF disconnects: the VPN takes over both ways, at 1446 bytes.
    vpcd_with_deadline(
        &[
            "fault",
            "start",
            "aws:directconnect:virtual-interface-disconnect",
            "dxvif-hq",
            "--prefix",
            &prefix,
        ],
        10,
    );
    wait_for("the site routes the VPC over a tunnel", 10, || {
        site_route(&lab).contains("dev vx")
    });
    lab.ping("corp-1", "10.0.2.10", &[]);
    lab.ping("app-1", "192.168.1.10", &[]);
    assert!(
        !jumbo(&lab, 9000),
        "no jumbo frames over the VPN (R-VPN-MTU)"
    );
    assert!(jumbo(&lab, 1446), "1446 bytes cross the VPN");
    assert!(status(&prefix).contains("virtual-interface-disconnect (fault f-1)"));

    // And back when it returns.
    vpcd_with_deadline(&["fault", "stop", "--all", "--prefix", &prefix], 10);
    wait_for("the site routes the VPC over the VIF again", 20, || {
        site_route(&lab).contains("dev dx101")
    });
    assert!(jumbo(&lab, 9000), "jumbo frames over the VIF again");
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    common::assert_clean(&prefix);
}

#[test]
fn r_vgw_noeip_an_instances_public_ip_is_not_reachable_over_the_vpn() {
    if !common::e2e("vpn_e2e") {
        return;
    }
    let text_lab = std::fs::read_to_string(LAB)
        .unwrap()
        .replace(
            "    cidr_block: 10.0.0.0/16\n",
            "    cidr_block: 10.0.0.0/16\n    internet_gateway: igw-lab\n",
        )
        .replace(
            "private_ip: 10.0.2.10,",
            "private_ip: 10.0.2.10, public_ip: 198.51.100.20,",
        );
    let dir = std::env::temp_dir().join(unique_prefix("noeip"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vpn-eip.yaml");
    std::fs::write(&file, text_lab).unwrap();
    let prefix = unique_prefix("eip");
    let lab = LabRun::up(Some(file.to_str().unwrap()), &prefix, &[]);
    lab.ping("corp-1", "10.0.2.10", &[]);
    // The site sends to app-1's public IP into the tunnel: the VGW does not take it.
    let route = lab.exec(
        "hq",
        &[
            "ip",
            "route",
            "add",
            "198.51.100.20/32",
            "via",
            "169.254.10.1",
            "dev",
            "vx1",
        ],
    );
    assert!(route.status.success(), "{}", text(&route));
    let out = lab.exec("corp-1", &["ping", "-c", "2", "-W", "1", "198.51.100.20"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stats = text(&vpcd_with_deadline(&["stats", "--prefix", &prefix], 10));
    assert!(
        common::dropped(&stats, "VGW_NOT_TRANSITIVE") >= 2,
        "{stats}"
    );
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    common::assert_clean(&prefix);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_killed_vpn_lab_leaves_nothing_after_down() {
    if !common::e2e("vpn_e2e") {
        return;
    }
    let prefix = unique_prefix("vk");
    let lab = LabRun::up(Some(DX), &prefix, &[]);
    lab.ping("corp-1", "10.0.2.10", &[]);
    // SIGKILL: nothing of vpcd's own teardown runs.
    let left = lab.kill();
    let down = common::down(&left.0);
    assert!(down.status.success(), "{}", text(&down));
    // Site hosts, the DX-only router namespace and tunnel ends, BIRD and its files: gone.
    common::assert_clean(&left.0);
}
