//! `vpcd flowlogs FILE`: reads flow-log records in any format and shows the matching ones,
//! then a table per flow (the records of one interface, 5-tuple and action summed; each
//! direction is a flow of its own),
//! which beats grep for "what talked to what, and what was refused", then what the file
//! says about lost records (`SKIPDATA`) and quiet windows (`NODATA`).
//!
//! The format comes from the file's header line (vpcd writes one at the top of each file,
//! as AWS does in S3), from `--format`, or is AWS's default (version 2) for headerless
//! lines of its 14 fields. Several headers may follow each other in one file (a lab
//! restarted with another format): each applies to the lines after it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dataplane::flow_log::{DEFAULT_FORMAT, FIELDS};

/// Which records an action filter keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Action {
    Accept,
    Reject,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Accept => "ACCEPT",
            Action::Reject => "REJECT",
        }
    }
}

/// What to keep.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Source or destination address (as recorded, or the packet's own).
    pub addr: Option<String>,
    /// Source or destination port.
    pub port: Option<u16>,
    /// ACCEPT or REJECT.
    pub action: Option<Action>,
    /// `eni-ID` or just the instance id.
    pub eni: Option<String>,
}

/// One record, by field name; fields the format lacks read `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    fields: BTreeMap<&'static str, String>,
}

impl Record {
    /// A field's value, `-` when the format does not have it.
    pub fn get(&self, field: &str) -> &str {
        self.fields.get(field).map_or("-", String::as_str)
    }

    fn number(&self, field: &str) -> u64 {
        self.get(field).parse().unwrap_or(0)
    }
}

/// Reads a format: `default`, field names (`srcaddr dstaddr`) or AWS's `${srcaddr}`
/// form. `Err` names the first word that is not a field.
pub fn parse_format(text: &str) -> Result<Vec<&'static str>, String> {
    if text.trim() == "default" {
        return Ok(DEFAULT_FORMAT.to_vec());
    }
    text.split_whitespace()
        .map(|w| {
            let name = w.trim_start_matches("${").trim_end_matches('}');
            FIELDS
                .iter()
                .find(|f| **f == name)
                .copied()
                .ok_or_else(|| format!("`{w}` is not a flow-log field"))
        })
        .collect()
}

/// A header line: every word a field name.
fn header(line: &str) -> Option<Vec<&'static str>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.is_empty() || words.iter().any(|w| !FIELDS.contains(w)) {
        return None;
    }
    parse_format(line).ok()
}

/// Parses a record line of `format`; `None` if its field count differs.
pub fn parse(line: &str, format: &[&'static str]) -> Option<Record> {
    let values: Vec<&str> = line.split_whitespace().collect();
    if values.len() != format.len() {
        return None;
    }
    Some(Record {
        fields: format
            .iter()
            .zip(values)
            .map(|(f, v)| (*f, v.to_string()))
            .collect(),
    })
}

impl Filter {
    pub fn keeps(&self, r: &Record) -> bool {
        let addrs = ["srcaddr", "dstaddr", "pkt-srcaddr", "pkt-dstaddr"];
        self.addr
            .as_ref()
            .is_none_or(|a| addrs.iter().any(|f| r.get(f) == a))
            && self.port.is_none_or(|p| {
                let p = p.to_string();
                r.get("srcport") == p || r.get("dstport") == p
            })
            && self.action.is_none_or(|a| r.get("action") == a.word())
            && self.eni.as_ref().is_none_or(|e| {
                let eni = r.get("interface-id");
                eni == e || eni.strip_prefix("eni-") == Some(e)
            })
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

/// The report: matching lines, the per-flow table, then the status records. `format`
/// (from `--format`) reads lines before any header.
pub fn report(text: &str, filter: &Filter, format: Option<Vec<&'static str>>) -> String {
    let mut out = String::new();
    let mut flows: BTreeMap<FlowId, (u64, u64, usize)> = BTreeMap::new();
    let mut shown = 0;
    let mut unreadable = 0;
    // (interface, status) → (windows, first start, last end).
    let mut statuses: BTreeMap<(String, String), (usize, String, String)> = BTreeMap::new();
    let mut current = format;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(h) = header(line) {
            current = Some(h);
            continue;
        }
        let r = match &current {
            Some(f) => parse(line, f),
            // No header and no --format: AWS's default format, if it is one.
            None => parse(line, DEFAULT_FORMAT).filter(|r| r.get("version") == "2"),
        };
        let Some(r) = r else {
            unreadable += 1;
            continue;
        };
        let status = r.get("log-status");
        if status != "OK" && status != "-" {
            if filter.eni.is_none() || filter.keeps(&r) {
                let e = statuses
                    .entry((r.get("interface-id").to_string(), status.to_string()))
                    .or_insert_with(|| (0, r.get("start").to_string(), String::new()));
                e.0 += 1;
                e.2 = r.get("end").to_string();
            }
            continue;
        }
        if !filter.keeps(&r) {
            continue;
        }
        let _ = writeln!(out, "{line}");
        shown += 1;
        let e = flows
            .entry((
                r.get("interface-id").to_string(),
                r.get("srcaddr").to_string(),
                r.get("srcport").to_string(),
                r.get("dstaddr").to_string(),
                r.get("dstport").to_string(),
                proto_name(r.get("protocol")),
                r.get("action").to_string(),
            ))
            .or_default();
        e.0 += r.number("packets");
        e.1 += r.number("bytes");
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
    for ((eni, status), (n, first, last)) in &statuses {
        let what = match status.as_str() {
            "SKIPDATA" => "records were lost (vpcd's aggregate table or writer was full)",
            "NODATA" => "no traffic in the window",
            _ => "",
        };
        let _ = writeln!(
            out,
            "{status} {eni}: {n} window(s) from {first} to {last}: {what}"
        );
    }
    if unreadable > 0 {
        let _ = writeln!(
            out,
            "{unreadable} line(s) not read: no header line says their format (give it with --format)"
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

    fn filter(action: Option<Action>, eni: Option<&str>, port: Option<u16>) -> Filter {
        Filter {
            action,
            eni: eni.map(String::from),
            port,
            addr: None,
        }
    }

    #[test]
    fn filters_and_sums_per_flow() {
        let all = report(LOG, &Filter::default(), None);
        assert!(all.contains("3 record(s), 3 flow(s)"), "{all}");
        assert!(
            all.contains("SKIPDATA eni-web-1: 1 window(s) from 1700000000 to 1700000000"),
            "{all}"
        );
        let rejected = report(LOG, &filter(Some(Action::Reject), None, None), None);
        assert!(rejected.contains("1 record(s)"), "{rejected}");
        assert!(rejected.contains("203.0.113.66:5000"));
        let web = report(LOG, &filter(None, Some("web-1"), Some(5201)), None);
        assert!(web.contains("1 record(s)"), "{web}");
        assert_eq!(parse("garbage", DEFAULT_FORMAT), None);
    }

    #[test]
    fn custom_formats_are_read_from_the_header_or_the_option() {
        let log = "srcaddr dstaddr dstport action tcp-flags log-status\n\
                   10.0.1.10 10.0.2.10 5201 ACCEPT 3 OK\n\
                   10.0.2.10 10.0.1.10 40000 REJECT 18 OK\n";
        let r = report(log, &Filter::default(), None);
        assert!(r.contains("2 record(s), 2 flow(s)"), "{r}");
        let rejected = report(log, &filter(Some(Action::Reject), None, None), None);
        assert!(rejected.contains("1 record(s)"), "{rejected}");
        let body = log.split_once('\n').unwrap().1;
        let without = report(body, &Filter::default(), None);
        assert!(without.contains("0 record(s)"), "{without}");
        assert!(without.contains("2 line(s) not read"), "{without}");
        let given =
            parse_format("${srcaddr} ${dstaddr} ${dstport} ${action} ${tcp-flags} ${log-status}");
        let with = report(body, &Filter::default(), Some(given.unwrap()));
        assert!(with.contains("2 record(s)"), "{with}");
        assert!(parse_format("${srcaddr} ${nope}").is_err());
    }
}
