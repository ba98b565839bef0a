//! VPC Traffic Mirroring end to end (issue 24) on configs/traffic-mirror.yaml: web-1's
//! traffic reaches ids-1 in VXLAN and Linux's own VXLAN interface there (made by ids-1's
//! user_data) takes it apart into the very packets web-1 exchanged; app-1's traffic is
//! captured to a pcapng file that tcpdump reads, where the packet app-1's group refused
//! carries the drop reason. Needs root (see `common::e2e`).

mod common;

use common::{e2e, unique_prefix, LabRun};

#[test]
fn copies_decapsulate_at_the_target_and_the_capture_says_why_a_packet_died() {
    if !e2e("copies_decapsulate_at_the_target_and_the_capture_says_why_a_packet_died") {
        return;
    }
    // The lab in a directory of its own: the capture file lands next to it.
    let dir = std::env::temp_dir().join(format!("vpcd-tm-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lab.yaml");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/traffic-mirror.yaml"
        ),
        &file,
    )
    .unwrap();
    let lab = LabRun::up(Some(file.to_str().unwrap()), &unique_prefix("tm"), &[]);

    // ids-1 sees web-1's ping, both ways, as packets of vxlan0.
    let dump = lab.spawn(
        "ids-1",
        &["tcpdump", "-nnl", "-i", "vxlan0", "-c", "4", "icmp"],
    );
    std::thread::sleep(std::time::Duration::from_millis(1000));
    lab.ping("web-1", "203.0.113.10", &[]);
    let seen = dump.output(10);
    assert!(
        seen.contains("IP 10.0.1.10 > 203.0.113.10: ICMP echo request"),
        "{seen}"
    );
    assert!(
        seen.contains("IP 203.0.113.10 > 10.0.1.10: ICMP echo reply"),
        "the reply as it reached web-1's ENI (translated back by the IGW): {seen}"
    );

    // app-1: a ping passes, TCP 8080 is refused by its group.
    lab.ping("web-1", "10.0.2.10", &[]);
    let refused = lab.exec(
        "web-1",
        &["curl", "-s", "-m", "1", "http://10.0.2.10:8080/"],
    );
    assert!(!refused.status.success());

    // The counters add up with the copies in them.
    std::thread::sleep(std::time::Duration::from_millis(400));
    let o = common::vpcd_with_deadline(&["stats", "--json", "--prefix", &lab.prefix], 20);
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = |k: &str| stats[k].as_u64().unwrap();
    let m = |k: &str| stats["traffic_mirror"][k].as_u64().unwrap();
    assert!(m("mirrored") >= 6 && m("captured") >= 7, "{stats}");
    assert_eq!(m("refused") + m("lost"), 0, "{stats}");
    assert_eq!(
        n("sent"),
        n("forwarded") + n("answered") + m("mirrored"),
        "{stats}"
    );
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    assert!(
        stopped.stdout.contains("traffic mirroring:"),
        "{}",
        stopped.stdout
    );

    // The capture: every packet of app-1, the refused SYN with its reason.
    let capture = dir.join("captures/app-1.pcapng");
    let mut reader = pcap_file::pcapng::PcapNgReader::new(std::fs::File::open(&capture).unwrap())
        .expect("a pcapng file");
    let (mut echo, mut refused_syn) = (0, 0);
    while let Some(block) = reader.next_block() {
        if let pcap_file::pcapng::Block::EnhancedPacket(epb) = block.unwrap() {
            let options = format!("{:?}", epb.options);
            let p = etherparse::SlicedPacket::from_ethernet(&epb.data).unwrap();
            match &p.transport {
                Some(etherparse::TransportSlice::Icmpv4(_)) => {
                    assert!(!options.contains("dropped"), "{options}");
                    echo += 1;
                }
                Some(etherparse::TransportSlice::Tcp(t)) if t.destination_port() == 8080 => {
                    assert!(
                        options.contains("vpcd dropped this packet: SG_INGRESS"),
                        "{options}"
                    );
                    refused_syn += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!(echo, 6, "three requests and three replies");
    assert!(refused_syn >= 1);
    let out = std::process::Command::new("tcpdump")
        .arg("-nr")
        .arg(&capture)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("10.0.1.10 > 10.0.2.10: ICMP echo request"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
