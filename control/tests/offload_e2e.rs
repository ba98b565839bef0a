//! End to end, the offload fast path (issue 11) with the real Linux stack: TCP
//! super-packets cross the NAT gateway and the IGW (IPv4) and the egress-only gateway
//! (IPv6) whole; tcpdump on the receiving host shows every checksum right (complete, or
//! partial holding exactly the pseudo-header sum of the translated addresses, which the
//! receiving kernel accepts as the device's promise); counters are in real segments; and
//! with `--no-offload` every packet is an ordinary one with a complete checksum; with
//! `--udp-gro` small datagrams arrive merged and every one reaches the socket.
//! Needs root (see `common::e2e`).

mod common;

use std::net::IpAddr;

use common::{e2e, iperf, received_bytes, unique_prefix, LabRun};

/// What tcpdump showed: TCP records, how many carried a partial checksum, the largest IP
/// packet.
#[derive(Debug, Default)]
struct Audit {
    records: usize,
    partial: usize,
    largest: usize,
}

/// The folded pseudo-header sum a partial checksum field holds.
fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, l4_len: usize) -> u16 {
    let mut words: Vec<u32> = Vec::new();
    for a in [src, dst] {
        let o: Vec<u8> = match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        words.extend(
            o.chunks(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))),
        );
    }
    let mut acc: u32 = words.iter().sum::<u32>()
        + u32::from(proto)
        + (l4_len as u32 >> 16)
        + (l4_len as u32 & 0xffff);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn number_after(s: &str, key: &str) -> Option<usize> {
    let rest = &s[s.find(key)? + key.len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Reads `tcpdump -n -vv` output and checks every TCP checksum in it.
fn audit(dump: &str) -> Audit {
    // tcpdump -vv puts an IPv4 record on two lines; the second one is indented.
    let mut records: Vec<String> = Vec::new();
    for line in dump.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(last) = records.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            records.push(line.to_string());
        }
    }
    let mut a = Audit::default();
    for r in records.iter().filter(|r| r.contains("cksum 0x")) {
        let (ip_len, l4_len) = if r.contains(" IP6 ") {
            let p = number_after(r, "payload length:").expect("IPv6 payload length");
            (40 + p, p)
        } else {
            let l = number_after(r, "proto TCP (6), length").expect("IPv4 length");
            (l, l - 20)
        };
        a.largest = a.largest.max(ip_len);
        let (left, right) = r.split_once(" > ").expect("addresses");
        let src = left.rsplit(' ').next().unwrap().rsplit_once('.').unwrap().0;
        let dst = &right[..right.find(": ").unwrap()];
        let dst = dst.rsplit_once('.').unwrap().0;
        let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let shown = r[r.find("cksum 0x").unwrap() + 8..]
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        let shown = u16::from_str_radix(&shown, 16).unwrap();
        if r.contains("(incorrect") {
            assert_eq!(
                shown,
                pseudo(src, dst, 6, l4_len),
                "a wrong checksum, and not the partial sum of the translated header: {r}"
            );
            a.partial += 1;
        } else {
            assert!(r.contains("(correct)"), "unread checksum: {r}");
        }
        a.records += 1;
    }
    a
}

/// Captures `count` TCP packets of port 5201 arriving at inet-1 while `from` sends to
/// `to` for two seconds.
fn capture(lab: &LabRun, from: &str, to: &str, filter: &str, count: &str) -> (String, String) {
    let dump = lab.spawn(
        "inet-1",
        &[
            "timeout", "20", "tcpdump", "-n", "-vv", "-i", "eth0", "-c", count, filter,
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(800));
    let server = lab.spawn("inet-1", &["iperf3", "-s", "-1"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let report = iperf(lab, from, to, &["-t", "2"]);
    drop(server);
    (report, dump.output(25))
}

/// (tx packets, tx bytes) of `port` in vpcd's stop summary.
fn tx_of(summary: &str, port: &str) -> (f64, f64) {
    let line = summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(port))
        .unwrap_or_else(|| panic!("no counters for {port}:\n{summary}"));
    let w: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    (w[2], w[3])
}

#[test]
fn super_packets_cross_nat_igw_and_eigw_whole_with_right_checksums() {
    if !e2e("super_packets_cross_nat_igw_and_eigw_whole_with_right_checksums") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("of"), &[]);

    // IPv4: app-1 → NAT gateway → IGW → inet-1.
    let (report, dump) = capture(&lab, "app-1", "203.0.113.10", "tcp port 5201", "400");
    assert!(received_bytes(&report) > 1e8, "{report}");
    let a = audit(&dump);
    assert!(a.records >= 100, "{a:?}\n{dump}");
    assert!(a.partial > 0, "offloaded packets arrive partial: {a:?}");
    assert!(
        a.largest > 1500,
        "super-packets arrive whole (not cut to the 1500-byte path): {a:?}"
    );

    // IPv6: app-1 → EIGW → inet-1.
    let (report, dump) = capture(
        &lab,
        "app-1",
        "2001:db8:ffff::10",
        "ip6 and tcp port 5201",
        "400",
    );
    assert!(received_bytes(&report) > 1e8, "{report}");
    let a = audit(&dump);
    assert!(
        a.records >= 100 && a.partial > 0 && a.largest > 1500,
        "{a:?}"
    );

    // Counters are in segments: what inet-1 was sent averages at most the path MTU.
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    let (packets, bytes) = tx_of(&stopped.stdout, "inet-1");
    assert!(
        packets > 0.0 && bytes / packets <= 1500.0,
        "{}",
        stopped.stdout
    );
}

#[test]
fn without_offloads_every_packet_is_whole_and_complete() {
    if !e2e("without_offloads_every_packet_is_whole_and_complete") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("nf"), &["--no-offload"]);
    let (report, dump) = capture(&lab, "app-1", "203.0.113.10", "tcp port 5201", "300");
    assert!(received_bytes(&report) > 1e7, "{report}");
    let a = audit(&dump);
    assert!(a.records >= 100, "{a:?}\n{dump}");
    assert_eq!(a.partial, 0, "no partial checksums without offloads");
    assert!(a.largest <= 1500, "{a:?}");
}

/// `(lost, total)` from the receiver line of an iperf3 UDP report (`… 3/19531 (0.015%)`).
fn udp_loss(report: &str) -> (u64, u64) {
    let line = report
        .lines()
        .rev()
        .find(|l| l.contains("receiver"))
        .unwrap_or_else(|| panic!("no receiver line in:\n{report}"));
    let pair = line
        .split_whitespace()
        .find_map(|w| w.split_once('/').filter(|(a, _)| a.parse::<u64>().is_ok()))
        .unwrap_or_else(|| panic!("no lost/total in {line:?}"));
    (pair.0.parse().unwrap(), pair.1.parse().unwrap())
}

/// Checks every UDP checksum in `tcpdump -n -vv` output (IPv4): complete and right, or
/// partial holding exactly the pseudo-header sum of the merged length, which the
/// receiving kernel completes for each datagram it cuts. Returns (records, the largest IP
/// length).
fn audit_udp(dump: &str) -> (usize, usize) {
    let (mut records, mut largest) = (0, 0);
    let mut ip_len = None;
    for line in dump.lines() {
        if !line.starts_with(char::is_whitespace) {
            ip_len = line
                .contains("proto UDP")
                .then(|| number_after(line, "length"))
                .flatten();
            continue;
        }
        let Some(len) = ip_len.take() else { continue };
        records += 1;
        largest = largest.max(len);
        let r = line.trim();
        let (src, rest) = r.split_once(" > ").expect("addresses");
        let dst = rest.split_once(": ").expect("ports").0;
        let addr = |a: &str| a.rsplit_once('.').unwrap().0.parse::<IpAddr>().unwrap();
        if let Some(at) = r.find("bad udp cksum 0x") {
            let shown = r[at + 16..].split(' ').next().unwrap();
            assert_eq!(
                u16::from_str_radix(shown, 16).unwrap(),
                pseudo(addr(src), addr(dst), 17, len - 20),
                "a wrong UDP checksum, and not the partial sum of the merged length: {r}"
            );
        } else {
            assert!(r.contains("udp sum ok"), "unread checksum: {r}");
        }
    }
    (records, largest)
}

/// Whether the running kernel takes UDP GSO writes on a TUN (USO, Linux 6.2).
fn kernel_has_uso() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|x| x.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 2)
}

/// A counter of the `Udp:` lines of `/proc/net/snmp` inside `id`'s namespace.
fn udp_counter(lab: &LabRun, id: &str, name: &str) -> u64 {
    let out = lab.exec(id, &["cat", "/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no {name} in {names}"));
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

#[test]
fn with_udp_gro_small_datagrams_arrive_merged_and_every_one_reaches_the_socket() {
    if !e2e("with_udp_gro_small_datagrams_arrive_merged_and_every_one_reaches_the_socket") {
        return;
    }
    let lab = LabRun::up(None, &unique_prefix("ug"), &["--udp-gro"]);
    let merging = !lab.map[0].contains("UDP coalescing unavailable");
    // Only a kernel older than USO may leave the merge unchecked.
    assert_eq!(merging, kernel_has_uso(), "{}", lab.map[0]);
    if !merging {
        eprintln!("this kernel takes no USO writes: only checking that datagrams pass");
    }
    let dump = lab.spawn(
        "app-1",
        &[
            "timeout",
            "20",
            "tcpdump",
            "-n",
            "-vv",
            "-i",
            "eth0",
            "-c",
            "300",
            "udp port 5201",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(800));
    let server = lab.spawn("app-1", &["iperf3", "-s", "-1"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    // iperf3 paces in bursts (one per millisecond), which arrive in one batch.
    let report = iperf(
        &lab,
        "web-1",
        "10.0.2.10",
        &["-u", "-l", "64", "-b", "5M", "-t", "2"],
    );
    drop(server);
    let dump = dump.output(25);

    // tcpdump sees the super-packets before the kernel cuts them (IP length > 20 + 8 +
    // 64), each with the partial checksum of its whole length.
    let (records, largest) = audit_udp(&dump);
    assert!(records >= 100, "tcpdump saw {records} datagrams:\n{dump}");
    assert!(
        largest > 92 || !merging,
        "no merged datagrams (largest {largest}):\n{dump}"
    );

    // The receiving kernel cut them and the socket got (nearly) every one. The other
    // tests of this file flood TCP on the same cores meanwhile, so a few may overflow
    // the receiving socket's buffer: that is contention, not a datagram lost in the cut.
    let (lost, total) = udp_loss(&report);
    assert!(total > 5_000, "{report}");
    assert!(lost * 20 <= total, "lost {lost} of {total}:\n{report}");
    assert_eq!(udp_counter(&lab, "app-1", "InCsumErrors"), 0);
    assert!(udp_counter(&lab, "app-1", "InDatagrams") >= total - lost);
}
