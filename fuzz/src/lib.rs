//! What vpcd's fuzz targets share: the labs they run over, compiled once per process, a
//! clock that only moves forward, and the checksum repair that lets mutated packets get
//! past the parser's IPv4 header check to the stages behind it.
//!
//! The targets live in `fuzz_targets/`; docs/fuzzing.md says how to run them.

use std::sync::OnceLock;

use dataplane::checksum;
use dataplane::packet::proto;
use dataplane::{Packet, Snapshot, Timestamp};

/// The built-in default lab with a VPC-wide flow log, so that every judged packet also goes
/// through flow-log aggregation (as control/tests/offload.rs sets it up).
pub fn default_lab() -> &'static Snapshot {
    static LAB: OnceLock<Snapshot> = OnceLock::new();
    LAB.get_or_init(|| {
        let text = control::DEFAULT_LAB.replace(
            "    instances:\n",
            "    flow_logs:\n      - { id: fl, resource: vpc-lab, traffic_type: ALL, max_aggregation_interval: 60, destination: flow.log }\n    instances:\n",
        );
        compile(&text, "the default lab with a flow log")
    })
}

/// The interface-endpoint lab (private DNS names of services), for the resolver's other
/// answers.
pub fn endpoints_lab() -> &'static Snapshot {
    static LAB: OnceLock<Snapshot> = OnceLock::new();
    LAB.get_or_init(|| {
        compile(
            include_str!("../../control/tests/labs/endpoints.yaml"),
            "control/tests/labs/endpoints.yaml",
        )
    })
}

fn compile(text: &str, what: &str) -> Snapshot {
    match control::load_text(text, 1) {
        Ok((_, snapshot)) => snapshot,
        Err(e) => panic!("{what} does not load: {e}"),
    }
}

/// The start of every run's clock: a fixed wall time, so runs are alike.
pub const EPOCH: Timestamp = Timestamp::from_secs(1_700_000_000);

/// How long one state's clock runs: a year of uptime, past which a target starts afresh
/// (time never goes back under one state; see [`Clock::advance`]).
pub const HORIZON: Timestamp = Timestamp::from_secs(1_700_000_000 + 365 * 86_400);

/// Time as a fuzz target sees it: it starts at [`EPOCH`] and moves forward by what each
/// input asks, so conntrack timeouts, NAT port reuse and flow-log windows all come due.
pub struct Clock(Timestamp);

impl Default for Clock {
    fn default() -> Self {
        Clock(EPOCH)
    }
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        self.0
    }

    /// Moves on by one step encoded in a byte: the low six bits count units, the high two
    /// pick the unit (a millisecond, a second, a minute, an hour), so one byte reaches
    /// from "the same instant" to "every flow has expired". `None` once the clock would
    /// pass [`HORIZON`]: the caller then starts a new state with a new clock, as a router
    /// that restarts (a clock that ran on for ever would overflow).
    pub fn advance(&mut self, step: u8) -> Option<Timestamp> {
        const UNIT_NS: [u64; 4] = [1_000_000, 1_000_000_000, 60_000_000_000, 3_600_000_000_000];
        let next = self.0 .0 + u64::from(step & 0x3f) * UNIT_NS[usize::from(step >> 6)];
        if next > HORIZON.0 {
            return None;
        }
        self.0 = Timestamp(next);
        Some(self.0)
    }
}

/// Rewrites the IPv4 header checksum and, for a whole TCP, UDP or ICMP(v6) packet, the
/// transport checksum, so that a mutated packet is judged on its contents instead of
/// being dropped as malformed (the fuzzer rarely guesses a 16-bit sum). Leaves anything
/// it cannot parse as it is.
pub fn fix_checksums(buf: &mut [u8]) {
    if buf.first().map(|b| b >> 4) == Some(4) {
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        if ihl >= 20 && buf.len() >= ihl {
            buf[10..12].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&buf[..ihl]);
            buf[10..12].copy_from_slice(&c.to_be_bytes());
        }
    }
    let Ok(pkt) = Packet::parse(buf) else {
        return;
    };
    if pkt.fragment != dataplane::packet::Fragment::None {
        return;
    }
    let l4 = usize::from(pkt.l4_offset);
    let end = (pkt.len as usize).min(buf.len());
    let at = match pkt.proto {
        proto::TCP => 16,
        proto::UDP => 6,
        proto::ICMP | proto::ICMPV6 => 2,
        _ => return,
    };
    if l4 + at + 2 > end {
        return;
    }
    buf[l4 + at..l4 + at + 2].copy_from_slice(&[0, 0]);
    // ICMPv4 has no pseudo-header; TCP, UDP and ICMPv6 do.
    let pseudo = if pkt.proto == proto::ICMP {
        0
    } else {
        checksum::pseudo_header(buf, pkt.proto, end - l4)
    };
    let mut c = !checksum::fold(checksum::sum(pseudo, &buf[l4..end]));
    if c == 0 && pkt.proto == proto::UDP {
        c = 0xffff;
    }
    buf[l4 + at..l4 + at + 2].copy_from_slice(&c.to_be_bytes());
}
