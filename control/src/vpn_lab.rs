//! The lab builder's VPN part (hybrid.md), after every port's namespace is up:
//!
//! - each tunnel's AWS end (`PREFIX` + `VPN-tN`): a VXLAN device `vx0` to the customer
//!   gateway's public address carrying the inside /30 (MTU 1446, R-VPN-MTU); what vpcd
//!   sends it (a site's traffic) goes into the tunnel, what comes out of the tunnel goes
//!   back to vpcd, policy-routed by the interface it came in on;
//! - each site's router (`PREFIX` + site id): one VXLAN device per tunnel (MTU 1399 and
//!   TCP MSS clamped to 1379, as AWS's configurations set them), a veth pair to each of
//!   its hosts (namespaces of their own, with the router at the site block's first
//!   address as their gateway), static routes for static VPNs, and BIRD 2 for BGP ones.
//!
//! This kernel has no ESP/XFRM or GRE, so the tunnel is VXLAN over the simulated
//! internet, unencrypted (the README says so); both ends are ordinary kernel devices, so
//! an IPsec implementation in user space can replace them without touching vpcd.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use dataplane::Snapshot;
use ip_network::IpNetwork;

use crate::bgp::customer_config::{self, protocol_name, CustomerGateway, CustomerTunnel};
use crate::lab::{Lab, LabError};
use crate::model;
use crate::netns::{self, NetnsError};
use crate::vpn::{CUSTOMER_MSS, CUSTOMER_TUNNEL_MTU, TUNNEL_MTU};

/// The VXLAN port both ends use (IANA's).
const VXLAN_PORT: u16 = 4789;
/// The policy-routing table of a tunnel end for what comes out of the tunnel.
const FROM_TUNNEL_TABLE: u32 = 100;

/// One tunnel as the builder and the BGP speakers need it.
#[derive(Clone, Debug)]
pub struct TunnelPlan {
    pub vpn: String,
    pub number: u8,
    /// The namespace of the AWS end.
    pub namespace: String,
    pub outside: Ipv4Addr,
    pub customer_ip: Ipv4Addr,
    pub inside_aws: Ipv4Addr,
    pub inside_customer: Ipv4Addr,
    pub amazon_asn: u32,
    pub customer_asn: u32,
    pub bgp: bool,
    /// The VPC's IPv4 blocks: what the VGW advertises.
    pub vpc_blocks: Vec<ip_network::Ipv4Network>,
    pub vni: u32,
    /// A Direct Connect private virtual interface rather than a VPN tunnel: no outside
    /// addresses; a veth pair (the cross-connect) to the site's router.
    pub direct_connect: bool,
    /// The site whose router ends it.
    pub site: String,
    pub mtu: u16,
    pub vlan: u16,
}

impl TunnelPlan {
    /// As `vpcd status` and faults name it: `vpn-hq:1`, or the virtual interface's id.
    pub fn name(&self) -> String {
        if self.direct_connect {
            self.vpn.clone()
        } else {
            format!("{}:{}", self.vpn, self.number)
        }
    }
}

/// The tunnels of a compiled lab.
pub fn tunnels(model: &model::Lab, snap: &Snapshot, prefix: &str) -> Vec<TunnelPlan> {
    let t = &snap.topo;
    t.vpn_tunnels
        .iter()
        .enumerate()
        .filter_map(|(i, tun)| {
            let host = &t.hosts[tun.host.ix()];
            let amazon = |vgw: &str| {
                model
                    .vpn
                    .gateways
                    .iter()
                    .find(|g| g.id.v == vgw)
                    .map_or(crate::vpn::DEFAULT_AMAZON_ASN, |g| {
                        g.amazon_side_asn.v as u32
                    })
            };
            if tun.direct_connect {
                let v = model
                    .vpn
                    .virtual_interfaces
                    .iter()
                    .find(|v| *v.id.v == *tun.vpn)?;
                let con = model
                    .vpn
                    .dx_connections
                    .iter()
                    .find(|c| c.id.v == v.connection.v)?;
                return Some(TunnelPlan {
                    vpn: tun.vpn.to_string(),
                    number: 1,
                    namespace: format!("{prefix}{}", host.id),
                    outside: tun.inside_aws,
                    customer_ip: tun.inside_customer,
                    inside_aws: tun.inside_aws,
                    inside_customer: tun.inside_customer,
                    amazon_asn: amazon(&v.virtual_private_gateway.as_ref()?.v),
                    customer_asn: v.bgp_asn.v as u32,
                    bgp: true,
                    vpc_blocks: snap.vpc(tun.vpc).cidrs_v4.clone(),
                    vni: i as u32 + 1,
                    direct_connect: true,
                    site: con.site.v.clone(),
                    mtu: tun.mtu,
                    vlan: v.vlan.v as u16,
                });
            }
            let c = model.vpn.connections.iter().find(|c| *c.id.v == *tun.vpn)?;
            let cgw = model
                .vpn
                .customer_gateways
                .iter()
                .find(|g| g.id.v == c.customer_gateway.v)?;
            let vgw = c.virtual_private_gateway.as_ref()?;
            let amazon_asn = amazon(&vgw.v);
            Some(TunnelPlan {
                vpn: tun.vpn.to_string(),
                number: tun.number,
                namespace: format!("{prefix}{}", host.id),
                outside: host.ipv4?,
                customer_ip: cgw.ip_address.v,
                inside_aws: tun.inside_aws,
                inside_customer: tun.inside_customer,
                amazon_asn,
                customer_asn: cgw.bgp_asn.v as u32,
                bgp: !c.static_routes_only,
                vpc_blocks: snap.vpc(tun.vpc).cidrs_v4.clone(),
                vni: i as u32 + 1,
                direct_connect: false,
                site: cgw.site.v.clone(),
                mtu: tun.mtu,
                vlan: 0,
            })
        })
        .collect()
}

/// The site router's address on its LAN: the first address of the site block holding
/// `host` (the `check` keeps hosts off it).
pub fn site_gateway(site: &crate::vpn::Site, host: Ipv4Addr) -> Option<Ipv4Addr> {
    site.cidr_blocks.iter().find_map(|c| match c.v {
        IpNetwork::V4(n) if n.contains(host) => {
            Some(Ipv4Addr::from(u32::from(n.network_address()) + 1))
        }
        _ => None,
    })
}

fn inside<T>(name: &str, r: std::io::Result<T>) -> Result<T, LabError> {
    r.map_err(|source| {
        LabError::Netns(NetnsError::Inside {
            name: name.to_string(),
            source,
        })
    })
}

/// Forwarding on, reverse-path filtering off (a tunnel end takes packets from addresses
/// its routes lead elsewhere), in namespace `name`.
fn router_sysctls(name: &str, devices: &[&str]) -> Result<(), LabError> {
    let devices: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
    netns::run_in(name, move || {
        netns::set_sysctl("net/ipv4/ip_forward", "1")?;
        for d in ["all", "default"]
            .iter()
            .map(|d| d.to_string())
            .chain(devices.iter().cloned())
        {
            netns::set_sysctl(&format!("net/ipv4/conf/{d}/rp_filter"), "0")?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Builds the VPN part of the lab (see the module comment); starts the sites' BIRD.
/// `lab_dir`: where a customer gateway's own `config` is read from.
pub fn build(
    lab: &mut Lab,
    model: &model::Lab,
    snap: &Snapshot,
    lab_dir: &Path,
) -> Result<Vec<TunnelPlan>, LabError> {
    let prefix = lab.prefix().to_string();
    let plans = tunnels(model, snap, &prefix);
    for p in plans.iter().filter(|p| !p.direct_connect) {
        let mut b = String::new();
        let _ = writeln!(
            b,
            "link add vx0 type vxlan id {} local {} remote {} dstport {VXLAN_PORT}",
            p.vni, p.outside, p.customer_ip
        );
        let _ = writeln!(b, "addr add {}/30 dev vx0", p.inside_aws);
        let _ = writeln!(b, "link set vx0 mtu {TUNNEL_MTU} up");
        let _ = writeln!(b, "route add {}/32 dev eth0", p.customer_ip);
        let _ = writeln!(b, "route replace default via {} dev vx0", p.inside_customer);
        let _ = writeln!(
            b,
            "rule add iif vx0 lookup {FROM_TUNNEL_TABLE} priority 100"
        );
        let _ = writeln!(b, "route add default dev eth0 table {FROM_TUNNEL_TABLE}");
        netns::ip(&["-n", &p.namespace, "-batch", "-"], Some(&b))?;
        router_sysctls(&p.namespace, &["eth0", "vx0"])?;
    }
    for site in &model.vpn.sites {
        let cgw = model
            .vpn
            .customer_gateways
            .iter()
            .find(|g| g.site.v == site.id.v);
        build_site(lab, site, cgw, &plans, &prefix, lab_dir)?;
    }
    Ok(plans)
}

fn build_site(
    lab: &mut Lab,
    site: &crate::vpn::Site,
    cgw: Option<&crate::vpn::CustomerGateway>,
    plans: &[TunnelPlan],
    prefix: &str,
    lab_dir: &Path,
) -> Result<(), LabError> {
    let router = format!("{prefix}{}", site.id.v);
    let mine: Vec<&TunnelPlan> = plans.iter().filter(|p| p.site == site.id.v).collect();
    if mine.is_empty() && cgw.is_none() {
        return Ok(());
    }
    // A site on Direct Connect only has no port on the internet: its router is a
    // namespace of its own.
    if cgw.is_none() {
        lab.add_plain(std::slice::from_ref(&router))?;
        netns::ip(&["-n", &router, "link", "set", "lo", "up"], None)?;
    }
    let mut b = String::new();
    let mut devices = vec!["eth0".to_string()];
    // The cross-connects first (a veth pair per virtual interface; this kernel has no
    // 802.1Q, so the VLAN is in the interface's name only), then the VPN tunnels.
    for p in mine.iter().filter(|p| p.direct_connect) {
        let dev = format!("dx{}", p.vlan);
        let mtu = p.mtu.to_string();
        netns::ip(
            &[
                "link",
                "add",
                &dev,
                "netns",
                &router,
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                "dx0",
                "netns",
                &p.namespace,
                "mtu",
                &mtu,
            ],
            None,
        )?;
        let mut v = String::new();
        let _ = writeln!(v, "addr add {}/30 dev dx0", p.inside_aws);
        let _ = writeln!(v, "link set dx0 up");
        let _ = writeln!(v, "route replace default via {} dev dx0", p.inside_customer);
        let _ = writeln!(
            v,
            "rule add iif dx0 lookup {FROM_TUNNEL_TABLE} priority 100"
        );
        let _ = writeln!(v, "route add default dev eth0 table {FROM_TUNNEL_TABLE}");
        netns::ip(&["-n", &p.namespace, "-batch", "-"], Some(&v))?;
        router_sysctls(&p.namespace, &["eth0", "dx0"])?;
        let _ = writeln!(b, "addr add {}/30 dev {dev}", p.inside_customer);
        let _ = writeln!(b, "link set {dev} up");
        devices.push(dev);
    }
    for p in mine.iter().filter(|p| !p.direct_connect) {
        let dev = format!("vx{}", p.vni);
        let _ = writeln!(
            b,
            "link add {dev} type vxlan id {} local {} remote {} dstport {VXLAN_PORT}",
            p.vni, p.customer_ip, p.outside
        );
        let _ = writeln!(b, "addr add {}/30 dev {dev}", p.inside_customer);
        let _ = writeln!(b, "link set {dev} mtu {CUSTOMER_TUNNEL_MTU} up");
        if !p.bgp {
            // A static VPN: the VPC over tunnel 1, tunnel 2 as the backup.
            for block in &p.vpc_blocks {
                let _ = writeln!(
                    b,
                    "route add {block} via {} dev {dev} metric {}",
                    p.inside_aws,
                    100 * u32::from(p.number)
                );
            }
        }
        devices.push(dev);
    }
    // The hosts behind the router, each on its own veth pair.
    let names: Vec<String> = site
        .hosts
        .iter()
        .map(|h| format!("{prefix}{}", h.id.v))
        .collect();
    lab.add_plain(&names)?;
    for (j, h) in site.hosts.iter().enumerate() {
        let Some(addr) = h.ipv4.as_ref().map(|a| a.v) else {
            continue;
        };
        let Some(gw) = site_gateway(site, addr) else {
            continue;
        };
        let dev = format!("h{j}");
        netns::ip(
            &[
                "link", "add", &dev, "netns", &router, "type", "veth", "peer", "name", "eth0",
                "netns", &names[j],
            ],
            None,
        )?;
        let _ = writeln!(b, "addr add {gw}/32 dev {dev}");
        let _ = writeln!(b, "link set {dev} up");
        let _ = writeln!(b, "route add {addr}/32 dev {dev}");
        let host = format!(
            "link set lo up\nlink set eth0 up\naddr add {addr}/32 dev eth0\n\
             route add {gw}/32 dev eth0\nroute add default via {gw} dev eth0\n"
        );
        netns::ip(&["-n", &names[j], "-batch", "-"], Some(&host))?;
        devices.push(dev);
    }
    netns::ip(&["-n", &router, "-batch", "-"], Some(&b))?;
    if cgw.is_none() {
        devices.retain(|d| d != "eth0");
    }
    let devs: Vec<&str> = devices.iter().map(String::as_str).collect();
    router_sysctls(&router, &devs)?;
    // AWS's configurations clamp the MSS of TCP through the tunnel.
    let nft = format!(
        "table inet vpcd_mss {{\n  chain forward {{\n    type filter hook forward priority mangle; policy accept;\n    \
         oifname \"vx*\" tcp flags syn tcp option maxseg size set {CUSTOMER_MSS}\n    \
         iifname \"vx*\" tcp flags syn tcp option maxseg size set {CUSTOMER_MSS}\n  }}\n}}\n"
    );
    run_in_ns(&router, &["nft", "-f", "-"], Some(&nft))?;
    if mine.iter().any(|p| p.bgp) {
        start_bird(lab, site, cgw, &mine, &router, prefix, lab_dir)?;
    }
    Ok(())
}

fn run_in_ns(ns: &str, argv: &[&str], stdin: Option<&str>) -> Result<(), LabError> {
    use std::io::Write;
    let mut child = inside(
        ns,
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn(),
    )?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        let _ = w.write_all(text.as_bytes());
    }
    let out = inside(ns, child.wait_with_output())?;
    if !out.status.success() {
        return Err(LabError::Netns(NetnsError::Ip {
            args: format!("netns exec {ns} {}", argv.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }));
    }
    Ok(())
}

/// The files of a site's BIRD under `/run/vpcd/PREFIX/`.
pub fn bird_files(prefix: &str, site: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = crate::startup::dir(prefix);
    (
        dir.join(format!("bird-{site}.conf")),
        dir.join(format!("bird-{site}.ctl")),
    )
}

/// What vpcd writes for a site's router: one BGP session per tunnel of its BGP VPNs and
/// per Direct Connect virtual interface (with a higher local preference, so the site
/// sends over the VIF while it is up, and over the VPN when it is not).
pub fn customer_gateway(
    site: &crate::vpn::Site,
    cgw: Option<&crate::vpn::CustomerGateway>,
    tunnels: &[&TunnelPlan],
) -> CustomerGateway {
    let vif = tunnels.iter().find(|p| p.direct_connect);
    CustomerGateway {
        id: cgw.map_or_else(|| site.id.v.clone(), |c| c.id.v.clone()),
        router_id: cgw
            .map(|c| c.ip_address.v)
            .or(vif.map(|p| p.inside_customer))
            .unwrap_or(Ipv4Addr::new(192, 0, 2, 1)),
        asn: cgw.map_or_else(
            || vif.map_or(65000, |p| p.customer_asn),
            |c| c.bgp_asn.v as u32,
        ),
        advertise: site
            .cidr_blocks
            .iter()
            .filter_map(|c| match c.v {
                IpNetwork::V4(n) => Some(n),
                IpNetwork::V6(_) => None,
            })
            .collect(),
        tunnels: tunnels
            .iter()
            .filter(|p| p.bgp)
            .map(|p| CustomerTunnel {
                name: if p.direct_connect {
                    protocol_name(&p.vpn, "vif", 1)
                } else {
                    protocol_name(&p.vpn, "tunnel", usize::from(p.number))
                },
                description: if p.direct_connect {
                    format!("Direct Connect {}", p.vpn)
                } else {
                    format!("{} tunnel {}", p.vpn, p.number)
                },
                local: p.inside_customer,
                neighbor: p.inside_aws,
                neighbor_asn: p.amazon_asn,
                local_asn: Some(p.customer_asn),
                local_pref: p.direct_connect.then_some(200),
            })
            .collect(),
    }
}

#[allow(clippy::too_many_arguments)]
fn start_bird(
    lab: &mut Lab,
    site: &crate::vpn::Site,
    cgw: Option<&crate::vpn::CustomerGateway>,
    tunnels: &[&TunnelPlan],
    router: &str,
    prefix: &str,
    lab_dir: &Path,
) -> Result<(), LabError> {
    let (conf, ctl) = bird_files(prefix, &site.id.v);
    let dir = crate::startup::dir(prefix);
    inside(router, std::fs::create_dir_all(&dir))?;
    let text = match cgw.and_then(|c| c.config.as_ref()) {
        Some(own) => inside(router, std::fs::read_to_string(lab_dir.join(&own.v)))?,
        None => customer_config::bird(&customer_gateway(site, cgw, tunnels)),
    };
    inside(router, std::fs::write(&conf, text))?;
    let log = inside(
        router,
        std::fs::File::create(dir.join(format!("bird-{}.log", site.id.v))),
    )?;
    let err = inside(router, log.try_clone())?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", router, "bird", "-f", "-c"])
        .arg(&conf)
        .arg("-s")
        .arg(&ctl)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's memory: BIRD
    // dies with vpcd, as `vpcd down` would stop it after a crash anyway.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            Ok(())
        });
    }
    let installed = Command::new("bird")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !installed {
        return Err(LabError::Netns(NetnsError::Inside {
            name: router.to_string(),
            source: std::io::Error::other(
                "BIRD 2 (`bird`) is not installed; run scripts/install-deps.sh",
            ),
        }));
    }
    let child = inside(router, cmd.spawn())?;
    let pid = child.id() as i32;
    // Not waited for: BIRD runs until the lab stops it (by PID and start time, so a
    // reused PID is never signalled).
    drop(child);
    if let Some(start) = crate::startup::start_time(pid) {
        lab.adopt(&[crate::startup::Proc { pid, start }]);
    }
    Ok(())
}

/// The VPN part of the map `vpcd up` prints: each connection's tunnels with their
/// outside and inside addresses, each site's hosts behind its router.
pub fn describe(model: &model::Lab, plans: &[TunnelPlan], prefix: &str) -> String {
    let mut s = String::new();
    for c in &model.vpn.connections {
        let Some(cgw) = model
            .vpn
            .customer_gateways
            .iter()
            .find(|g| g.id.v == c.customer_gateway.v)
        else {
            continue;
        };
        let _ = writeln!(
            s,
            "VPN {} ({}, {}) to {} ({}, AS {})",
            c.id.v,
            c.virtual_private_gateway
                .as_ref()
                .map_or("-", |g| g.v.as_str()),
            if c.static_routes_only {
                "static"
            } else {
                "BGP"
            },
            cgw.id.v,
            cgw.ip_address.v,
            cgw.bgp_asn.v
        );
        for p in plans
            .iter()
            .filter(|p| p.vpn == c.id.v && !p.direct_connect)
        {
            let _ = writeln!(
                s,
                "  tunnel {} {} <-> {}  inside {} <-> {}  ns {}",
                p.number, p.outside, p.customer_ip, p.inside_aws, p.inside_customer, p.namespace
            );
        }
    }
    for v in &model.vpn.virtual_interfaces {
        for p in plans.iter().filter(|p| p.direct_connect && p.vpn == v.id.v) {
            let _ = writeln!(
                s,
                "Direct Connect {} (private, VLAN {}, MTU {}, AS {}) to site {}  inside {} <-> {}  ns {}",
                p.vpn, p.vlan, p.mtu, p.customer_asn, p.site, p.inside_aws, p.inside_customer, p.namespace
            );
        }
    }
    for site in &model.vpn.sites {
        let blocks: Vec<String> = site.cidr_blocks.iter().map(|c| c.v.to_string()).collect();
        let on_internet = model
            .vpn
            .customer_gateways
            .iter()
            .any(|c| c.site.v == site.id.v);
        if on_internet {
            let _ = writeln!(
                s,
                "site {} {}  (its router is {} on the internet)",
                site.id.v,
                blocks.join(" "),
                site.id.v
            );
        } else {
            let _ = writeln!(
                s,
                "site {} {}  router  ns {prefix}{}",
                site.id.v,
                blocks.join(" "),
                site.id.v
            );
        }
        for h in &site.hosts {
            let Some(a) = h.ipv4.as_ref().map(|a| a.v) else {
                continue;
            };
            let gw = site_gateway(site, a).map_or(String::new(), |g| format!(" via {g}"));
            let _ = writeln!(s, "  {} {a}{gw}  ns {prefix}{}", h.id.v, h.id.v);
        }
    }
    s
}
