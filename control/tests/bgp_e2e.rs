//! The AWS side's BGP speaker against the real daemon a site runs (BIRD 2), with the
//! configuration vpcd writes for it: two namespaces joined by a veth pair carrying a
//! tunnel's inside /30, the speaker's socket in one, BIRD in the other. The session must
//! come up with AWS's timers, each side must learn what the other advertises (and BIRD
//! must install it in the site's kernel), and an administrative shutdown on either side
//! must withdraw the routes, which come back when the session does.

mod common;

use common::until as wait_for;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use control::bgp::customer_config::{bird, protocol_name, CustomerGateway, CustomerTunnel};
use control::bgp::session::{Config, State};
use control::bgp::speaker::{Speaker, Status};
use control::netns;

const AWS_ASN: u32 = 64512;
const CGW_ASN: u32 = 65000;

/// Two namespaces, BIRD in one; everything is removed on drop, BIRD killed by its PID.
struct Pair {
    aws: String,
    cgw: String,
    dir: std::path::PathBuf,
    bird: Option<Child>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        if let Some(mut b) = self.bird.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
        let _ = netns::delete(&[self.aws.clone(), self.cgw.clone()]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pair {
    fn birdc(&self, args: &[&str]) -> String {
        let sock = self.dir.join("bird.ctl");
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&sock)
            .args(args)
            .output()
            .expect("run birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn in_cgw(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.cgw])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    fn kernel_route(&self, prefix: &str) -> String {
        let out = self.in_cgw(&["ip", "-4", "route", "show", prefix]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn status_until(sp: &Speaker, what: &str, secs: u64, f: impl Fn(&Status) -> bool) -> Status {
    wait_for(what, secs, || f(&sp.status()));
    sp.status()
}

#[test]
fn the_aws_side_peers_with_bird_learns_the_site_and_withdraws_on_shutdown() {
    if !common::e2e("bgp_e2e") {
        return;
    }
    let prefix = common::unique_prefix("bgp");
    let mut pair = Pair {
        aws: format!("{prefix}aws"),
        cgw: format!("{prefix}cgw"),
        dir: std::env::temp_dir().join(format!("{prefix}bird")),
        bird: None,
    };
    std::fs::create_dir_all(&pair.dir).unwrap();
    netns::add(&pair.aws).unwrap();
    netns::add(&pair.cgw).unwrap();
    netns::ip(
        &[
            "link", "add", "t1", "netns", &pair.aws, "type", "veth", "peer", "name", "t1", "netns",
            &pair.cgw,
        ],
        None,
    )
    .unwrap();
    for (ns, addr) in [
        (&pair.aws, "169.254.10.1/30"),
        (&pair.cgw, "169.254.10.2/30"),
    ] {
        let batch = format!("addr add {addr} dev t1\nlink set t1 up\nlink set lo up\n");
        netns::ip(&["-n", ns, "-batch", "-"], Some(&batch)).unwrap();
    }

    // The AWS end: listening before BIRD starts, as the VGW is there before the site.
    let listener = netns::run_in(&pair.aws, || TcpListener::bind("169.254.10.1:179")).unwrap();
    let (tx, _changes) = mpsc::channel();
    let mut speaker = Speaker::spawn(
        "vpn-hq tunnel 1".into(),
        listener,
        Ipv4Addr::new(169, 254, 10, 2),
        Config::aws(AWS_ASN, CGW_ASN, Ipv4Addr::new(169, 254, 10, 1)),
        tx,
    )
    .unwrap();
    speaker.advertise(BTreeMap::from([("10.0.0.0/16".parse().unwrap(), vec![])]));

    // The site: BIRD with the configuration vpcd writes.
    let proto = protocol_name("vpn-hq", "tunnel", 1);
    let cgw = CustomerGateway {
        id: "cgw-hq".into(),
        router_id: Ipv4Addr::new(203, 0, 113, 50),
        asn: CGW_ASN,
        advertise: vec![
            "192.168.0.0/16".parse().unwrap(),
            "172.16.8.0/24".parse().unwrap(),
        ],
        tunnels: vec![CustomerTunnel {
            name: proto.clone(),
            description: "vpn-hq tunnel 1".into(),
            local: Ipv4Addr::new(169, 254, 10, 2),
            neighbor: Ipv4Addr::new(169, 254, 10, 1),
            neighbor_asn: AWS_ASN,
            local_asn: None,
            local_pref: None,
        }],
    };
    let conf = pair.dir.join("bird.conf");
    std::fs::write(&conf, bird(&cgw)).unwrap();
    let started = Instant::now();
    pair.bird = Some(
        Command::new("ip")
            .args(["netns", "exec", &pair.cgw, "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(pair.dir.join("bird.ctl"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bird (scripts/install-deps.sh installs bird2)"),
    );

    let st = status_until(&speaker, "session established with both routes", 20, |s| {
        s.state == State::Established && s.routes.len() == 2
    });
    let up_in = started.elapsed();
    let r = &st.routes[&"192.168.0.0/16".parse().unwrap()];
    assert_eq!(r.asns, vec![CGW_ASN]);
    assert_eq!(r.next_hop, Ipv4Addr::new(169, 254, 10, 2));
    assert!(st.routes.contains_key(&"172.16.8.0/24".parse().unwrap()));
    eprintln!("bgp_e2e: BIRD to Established in {up_in:?}");

    // BIRD sees the session with AWS's hold time and installs the VPC's block.
    let show = pair.birdc(&["show", "protocols", "all", &proto]);
    assert!(show.contains("Established"), "{show}");
    // BIRD shows each timer as `left/negotiated`: 30 s hold, 10 s keepalive (AWS's).
    let timer = |name: &str| {
        show.lines()
            .find(|l| l.trim_start().starts_with(name))
            .map(|l| l.trim().to_string())
            .unwrap_or_default()
    };
    assert!(timer("Hold timer").ends_with("/30"), "{show}");
    assert!(timer("Keepalive timer").ends_with("/10"), "{show}");
    wait_for("10.0.0.0/16 in the site's kernel", 10, || {
        pair.kernel_route("10.0.0.0/16")
            .contains("via 169.254.10.1")
    });
    let route = pair.birdc(&["show", "route", "10.0.0.0/16", "all"]);
    assert!(route.contains("BGP.as_path: 64512"), "{route}");

    // The site shuts its session: a Cease, and both sides drop what they learned.
    pair.birdc(&["disable", &proto]);
    let st = status_until(&speaker, "session down after BIRD's disable", 10, |s| {
        s.state == State::Idle && s.routes.is_empty()
    });
    let why = st.last_down.unwrap_or_default();
    assert!(why.contains("NOTIFICATION 6/"), "{why}");
    wait_for("10.0.0.0/16 gone from the site's kernel", 10, || {
        pair.kernel_route("10.0.0.0/16").is_empty()
    });

    // And back.
    pair.birdc(&["enable", &proto]);
    status_until(&speaker, "session back after enable", 20, |s| {
        s.state == State::Established && s.routes.len() == 2
    });
    wait_for("10.0.0.0/16 back in the site's kernel", 10, || {
        !pair.kernel_route("10.0.0.0/16").is_empty()
    });

    // The AWS side shuts down (the lab stopping, or a tunnel-down fault): BIRD withdraws.
    speaker.shutdown();
    wait_for("BIRD sees the session go", 10, || {
        !pair
            .birdc(&["show", "protocols", &proto])
            .contains("Established")
    });
    wait_for("10.0.0.0/16 gone again", 10, || {
        pair.kernel_route("10.0.0.0/16").is_empty()
    });
    drop(pair);
    assert!(common::namespaces_with(&prefix).is_empty());
}
