//! The JSON reports (`--json`, issue 24): their JSON Schemas in docs/schemas/ are the ones
//! the code generates (so the documented shapes are the real ones), and what the built
//! `vpcd` prints validates against them: `check`, `routes` and `trace` of lab files here,
//! and the running router's `status`, `stats`, `fault list` and `routes` end to end (with
//! its counters adding up, and its live picture showing a fault).
//!
//! After a deliberate change of a report, `VPCD_BLESS=1 cargo test --test json` rewrites
//! the schema files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The committed schema of a report.
fn schema(name: &str) -> serde_json::Value {
    let p = root().join(format!("docs/schemas/{name}.schema.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Parses `text` and validates it against the committed schema `name`.
fn assert_valid(name: &str, text: &str) -> serde_json::Value {
    let value: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"));
    let validator = jsonschema::validator_for(&schema(name)).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {}\n{text}", errors.join("\n"));
    value
}

fn vpcd(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vpcd"))
        .args(args)
        .output()
        .expect("run vpcd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every lab of configs/ and of the tests.
fn labs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["configs", "control/tests/labs"] {
        for e in std::fs::read_dir(root().join(dir)).expect("a lab directory") {
            let p = e.expect("an entry").path();
            if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_documented_schemas_are_the_generated_ones() {
    let bless = std::env::var("VPCD_BLESS").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, schema) in control::json::schemas() {
        let p = root().join(format!("docs/schemas/{name}.schema.json"));
        let text = serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n";
        if bless {
            std::fs::write(&p, &text).expect("write the schema");
        } else if std::fs::read_to_string(&p).ok().as_deref() != Some(text.as_str()) {
            stale.push(p.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date (run `VPCD_BLESS=1 cargo test --test json` after a deliberate change): {}",
        stale.join(", ")
    );
}

#[test]
fn check_json_validates_and_keeps_every_error_with_its_place() {
    let mut broken = 0;
    for lab in labs() {
        let file = lab.to_str().unwrap();
        let (code, out, _) = vpcd(&["check", "--json", file]);
        let v = assert_valid("check", &out);
        let ok = v["ok"].as_bool().unwrap();
        assert_eq!(code, Some(if ok { 0 } else { 1 }), "{file}: {out}");
        if !ok {
            broken += 1;
            let problems = v["problems"].as_array().unwrap();
            assert!(!problems.is_empty(), "{file}");
            assert_eq!(v["error_count"].as_u64().unwrap() as usize, problems.len());
            // The same errors as the text form, at the same places.
            let (_, _, text) = vpcd(&["check", file]);
            for p in problems {
                let place = format!(
                    "{file}:{}:{}: {}: {}",
                    p["line"],
                    p["col"],
                    p["path"].as_str().unwrap(),
                    p["message"].as_str().unwrap()
                );
                assert!(text.contains(&place), "{place} not in:\n{text}");
                assert!(!p["fix"].as_str().unwrap().is_empty(), "{p}");
            }
        } else {
            assert!(v["counts"]["instances"].as_u64().unwrap() > 0, "{file}");
        }
    }
    assert!(broken >= 1, "no broken lab among {:?}", labs());
}

#[test]
fn routes_and_trace_json_validate() {
    for lab in labs() {
        let file = lab.to_str().unwrap();
        let (code, out, err) = vpcd(&["routes", file, "--json"]);
        if code == Some(1) {
            continue; // the broken lab
        }
        assert_eq!(code, Some(0), "{file}: {err}");
        let v = assert_valid("routes", &out);
        for table in v.as_array().unwrap() {
            let routes = table["routes"].as_array().unwrap();
            assert!(
                routes.iter().any(|r| r["origin"] == "local"),
                "{file}: {table}"
            );
        }
    }
    let default = root().join("configs/default.yaml");
    let file = default.to_str().unwrap();
    let (code, out, _) = vpcd(&["trace", file, "--from", "web-1", "--to", "inet-1", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let v = assert_valid("trace", &out);
    assert_eq!(v["forward"]["delivered_to"], "inet-1");
    let (code, out, _) = vpcd(&[
        "trace",
        file,
        "--from",
        "inet-1",
        "--to",
        "10.0.2.10",
        "--proto",
        "tcp",
        "--port",
        "22",
        "--json",
    ]);
    assert_eq!(code, Some(1), "{out}");
    let v = assert_valid("trace", &out);
    assert!(v["forward"]["reason"].is_string(), "{out}");
    assert!(v["reply"].is_null(), "{out}");
}

#[test]
fn completions_are_scripts_their_shell_reads() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = vpcd(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}: {err}");
        for word in ["check", "trace", "fault", "proto", "prefix"] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
    // bash parses its script (bash is on every machine the tests run on).
    let (_, script, _) = vpcd(&["completions", "bash"]);
    let dir = std::env::temp_dir().join(format!("vpcd-completion-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vpcd.bash");
    std::fs::write(&file, &script).unwrap();
    let status = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .status()
        .expect("run bash");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "bash -n rejects the completion script");
    // And the values it completes: --proto offers the protocol names, fault start the
    // FIS actions.
    assert!(script.contains("tcp udp icmp icmpv6"), "{script}");
    assert!(script.contains("aws:ec2:stop-instances"));
}

#[test]
fn bad_values_are_refused_before_anything_runs() {
    let default = root().join("configs/default.yaml");
    let file = default.to_str().unwrap();
    let (code, _, err) = vpcd(&[
        "trace", file, "--from", "web-1", "--to", "inet-1", "--proto", "tcpp",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("tcp, udp, icmp, icmpv6, 0-255"), "{err}");
    let (code, _, _) = vpcd(&[
        "trace", file, "--from", "web-1", "--to", "inet-1", "--proto", "256",
    ]);
    assert_eq!(code, Some(2));
    let (code, _, _) = vpcd(&[
        "trace", file, "--from", "web-1", "--to", "inet-1", "--proto", "17", "--port", "53",
    ]);
    assert_ne!(code, Some(2), "a protocol number is taken");
    let (code, _, err) = vpcd(&["fault", "start", "aws:nothing", "app-1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("aws:ec2:stop-instances"), "{err}");
    // flowlogs --action: ACCEPT or REJECT (any case), refused before the file is read.
    let (code, _, err) = vpcd(&["flowlogs", file, "--action", "accepted"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("'accepted' for '--action"), "{err}");
    assert!(err.contains("ACCEPT, REJECT"), "{err}");
    // --prefix and --control only where they do something, and still before the command.
    let (code, _, err) = vpcd(&["check", file, "--prefix", "x"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = vpcd(&["--prefix", "json-test-none", "status"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("ctl-json-test-none.sock"), "{err}");
    let (code, _, err) = vpcd(&["status", "--prefix", "json-test-none"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("ctl-json-test-none.sock"), "{err}");
}

#[test]
fn live_reports_validate_and_their_counters_add_up() {
    if !common::e2e("live_reports_validate_and_their_counters_add_up") {
        return;
    }
    let lab = common::LabRun::up(
        None,
        &common::unique_prefix("js"),
        &["--metrics", "127.0.0.1:0"],
    );
    let ask = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--prefix", lab.prefix.as_str()]);
        let o = common::vpcd_with_deadline(&all, 20);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Forwarded, answered by the router (its ping; a too-big packet for the IGW's 1500),
    // dropped (the internet cannot reach a private address).
    lab.ping("web-1", "203.0.113.10", &[]);
    lab.ping("web-1", "10.0.1.1", &[]);
    let _ = lab.exec(
        "web-1",
        &[
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "3000",
            "203.0.113.10",
        ],
    );
    lab.ping_fails("inet-1", "10.0.2.10", &[]);
    // The workers publish their counters every 100 ms.
    std::thread::sleep(std::time::Duration::from_millis(400));

    let status = assert_valid("status", &ask(&["status", "--json"]));
    assert_eq!(status["generation"], 1);
    let names: Vec<&str> = status["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1", "app-1", "inet-1"], "{status}");

    let stats = assert_valid("stats", &ask(&["stats", "--json"]));
    let n = |k: &str| stats[k].as_u64().unwrap();
    assert!(
        n("forwarded") > 0 && n("answered") > 0 && n("dropped") > 0,
        "{stats}"
    );
    assert!(n("to_the_router") > 0, "{stats}");
    // Each packet read counted once; each packet written is forwarded or answered.
    assert_eq!(
        n("received"),
        n("forwarded") + n("to_the_router") + n("dropped"),
        "{stats}"
    );
    let mirrored = stats["traffic_mirror"]["mirrored"].as_u64().unwrap();
    assert_eq!(
        n("sent"),
        n("forwarded") + n("answered") + mirrored,
        "{stats}"
    );
    let by_reason: u64 = stats["dropped_by_reason"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_reason, n("dropped"), "{stats}");
    let ports: u64 = stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["rx_packets"].as_u64().unwrap())
        .sum();
    assert_eq!(ports, n("received"));

    // The metrics say the same, name everything the Grafana dashboard asks for, and add up.
    let metrics = common::scrape(&lab);
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum()
    };
    let verdict = |v: &str| value(&format!("vpcd_packets_total{{verdict=\"{v}\"}}"));
    assert_eq!(
        value("vpcd_port_rx_packets_total"),
        verdict("forwarded") + verdict("local") + verdict("dropped"),
        "{metrics}"
    );
    assert_eq!(
        value("vpcd_port_tx_packets_total"),
        verdict("forwarded")
            + verdict("answered")
            + value("vpcd_traffic_mirror_packets_total{result=\"sent\"}"),
        "{metrics}"
    );
    assert_eq!(value("vpcd_drops_total"), verdict("dropped"));
    for name in dashboard_metrics() {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "the dashboard asks for {name}, which the router does not export:\n{metrics}"
        );
    }

    let routes = assert_valid("routes", &ask(&["routes", "--json"]));
    assert_eq!(routes.as_array().unwrap().len(), 3);
    let one = assert_valid("routes", &ask(&["routes", "rtb-private", "--json"]));
    assert_eq!(one[0]["routes"][0]["target"], "nat-a", "{one}");

    // A fault: in the list, in status, and red in the live picture.
    assert_eq!(
        assert_valid("faults", &ask(&["fault", "list", "--json"])),
        serde_json::json!([])
    );
    ask(&[
        "fault",
        "start",
        "aws:ec2:stop-instances",
        "app-1",
        "--duration",
        "5m",
    ]);
    let faults = assert_valid("faults", &ask(&["fault", "list", "--json"]));
    assert_eq!(faults[0]["id"], "f-1", "{faults}");
    assert_eq!(faults[0]["target"], "app-1");
    assert!(faults[0]["ends_in"].as_u64().unwrap() > 200, "{faults}");
    let status = assert_valid("status", &ask(&["status", "--json"]));
    let app = &status["namespaces"][1];
    assert_eq!(
        (app["id"].as_str(), app["stopped"].as_bool()),
        (Some("app-1"), Some(true))
    );
    assert_eq!(status["faults"][0]["id"], "f-1");
    let dot = ask(&["graph", "--live"]);
    let line = dot
        .lines()
        .find(|l| l.contains("app-1\\n"))
        .unwrap_or_else(|| panic!("app-1 is not drawn:\n{dot}"));
    assert!(
        line.contains("stopped by f-1") && line.contains("color=red"),
        "{line}"
    );
    let mermaid = ask(&["graph", "--live", "--format", "mermaid"]);
    assert!(
        mermaid.contains("class ") && mermaid.contains("stopped by f-1"),
        "{mermaid}"
    );
    if Command::new("dot")
        .arg("-V")
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
    {
        let svg = ask(&["graph", "--live", "--format", "svg"]);
        assert!(
            svg.contains("<svg") && svg.contains("stopped by f&#45;1"),
            "{svg}"
        );
    }
    ask(&["fault", "stop", "f-1"]);
    assert_eq!(
        assert_valid("faults", &ask(&["fault", "list", "--json"])),
        serde_json::json!([])
    );
    let stopped = lab.stop();
    assert!(stopped.success, "{}", stopped.stderr);
    // The router said what happened, at the default --log-level info.
    assert!(
        stopped.stderr.contains("vpcd: fault started: f-1"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("vpcd: fault ended (stopped): f-1"),
        "{}",
        stopped.stderr
    );
}

/// The metric names the Grafana dashboard's queries use.
fn dashboard_metrics() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("docs/grafana-dashboard.json")).unwrap();
    let mut names: Vec<String> = text
        .match_indices("vpcd_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}
