//! `vpcd flowlogs FILE`: reads flow-log lines in the default format (version 2) and shows
//! the matching records, then a table per flow (both directions' records of one 5-tuple
//! and action summed), which beats grep for "what talked to what, and what was refused".

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What to keep.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Source or destination address.
    pub addr: Option<String>,
    /// Source or destination port.
    pub port: Option<u16>,
    /// ACCEPT or REJECT.
    pub action: Option<String>,
    /// `eni-ID` or just the instance id.
    pub eni: Option<String>,
}

/// One default-format record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub eni: String,
    pub src: String,
    pub dst: String,
    pub sport: String,
    pub dport: String,
    pub proto: String,
    pub packets: u64,
    pub bytes: u64,
    pub action: String,
    pub status: String,
}

/// Parses a default-format line; `None` for anything else (custom formats, blank lines).
pub fn parse(line: &str) -> Option<Record> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 14 || f[0] != "2" {
        return None;
    }
    Some(Record {
        eni: f[2].to_string(),
        src: f[3].to_string(),
        dst: f[4].to_string(),
        sport: f[5].to_string(),
        dport: f[6].to_string(),
        proto: f[7].to_string(),
        packets: f[8].parse().unwrap_or(0),
        bytes: f[9].parse().unwrap_or(0),
        action: f[12].to_string(),
        status: f[13].to_string(),
    })
}

impl Filter {
    pub fn keeps(&self, r: &Record) -> bool {
        self.addr
            .as_ref()
            .is_none_or(|a| &r.src == a || &r.dst == a)
            && self
                .port
                .is_none_or(|p| r.sport == p.to_string() || r.dport == p.to_string())
            && self
                .action
                .as_ref()
                .is_none_or(|a| r.action.eq_ignore_ascii_case(a))
            && self
                .eni
                .as_ref()
                .is_none_or(|e| r.eni == *e || r.eni == format!("eni-{e}"))
    }
}

/// The protocol column's name (`6` → `tcp`), or the column as it is (`-`).
fn proto_name(p: &str) -> String {
    match p.parse::<u8>() {
        Ok(n) => dataplane::packet::proto_name(n).into_owned(),
        Err(_) => p.to_string(),
    }
}

/// A flow of the table: interface, source, source port, destination, destination port,
/// protocol, action.
type FlowId = (String, String, String, String, String, String, String);

/// The report: matching lines, then the per-flow table.
pub fn report(text: &str, filter: &Filter) -> String {
    let mut out = String::new();
    let mut flows: BTreeMap<FlowId, (u64, u64, usize)> = BTreeMap::new();
    let mut shown = 0;
    for line in text.lines() {
        let Some(r) = parse(line) else { continue };
        if r.status != "OK" || !filter.keeps(&r) {
            continue;
        }
        let _ = writeln!(out, "{line}");
        shown += 1;
        let e = flows
            .entry((
                r.eni.clone(),
                r.src.clone(),
                r.sport.clone(),
                r.dst.clone(),
                r.dport.clone(),
                proto_name(&r.proto),
                r.action.clone(),
            ))
            .or_default();
        e.0 += r.packets;
        e.1 += r.bytes;
        e.2 += 1;
    }
    let _ = writeln!(out, "\n{shown} record(s), {} flow(s)", flows.len());
    let _ = writeln!(
        out,
        "{:<14} {:<40} {:<40} {:<6} {:>9} {:>12} {:>7}  action",
        "interface", "source", "destination", "proto", "packets", "bytes", "records"
    );
    for ((eni, src, sport, dst, dport, proto, action), (packets, bytes, n)) in flows {
        let _ = writeln!(
            out,
            "{eni:<14} {:<40} {:<40} {proto:<6} {packets:>9} {bytes:>12} {n:>7}  {action}",
            format!("{src}:{sport}"),
            format!("{dst}:{dport}")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2 123456789012 eni-web-1 10.0.1.10 10.0.2.10 40000 5201 6 10 1000 1700000000 1700000005 ACCEPT OK
2 123456789012 eni-app-1 10.0.2.10 10.0.1.10 5201 40000 6 8 800 1700000000 1700000005 ACCEPT OK
2 123456789012 eni-web-1 203.0.113.66 10.0.1.10 5000 22 6 1 60 1700000000 1700000000 REJECT OK
2 123456789012 eni-web-1 - - - - - - - 1700000000 1700000000 - SKIPDATA
";

    #[test]
    fn filters_and_sums_per_flow() {
        let all = report(LOG, &Filter::default());
        assert!(all.contains("3 record(s), 3 flow(s)"), "{all}");
        let rejected = report(
            LOG,
            &Filter {
                action: Some("reject".into()),
                ..Filter::default()
            },
        );
        assert!(rejected.contains("1 record(s)"), "{rejected}");
        assert!(rejected.contains("203.0.113.66:5000"));
        let web = report(
            LOG,
            &Filter {
                eni: Some("web-1".into()),
                port: Some(5201),
                ..Filter::default()
            },
        );
        assert!(web.contains("1 record(s)"), "{web}");
        assert_eq!(parse("garbage"), None);
    }
}
