//! `vpcd graph` (issue 24): every lab's picture is a graph Graphviz lays out (`dot -Tsvg`
//! parses it) and a well-formed Mermaid flowchart, naming every VPC, subnet, instance,
//! NAT gateway and route table; what is down (a blackhole route, a peering not active) is
//! red. The live picture of a running lab with a fault is in json.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The valid labs of configs/ and of the tests.
fn labs() -> Vec<(PathBuf, control::Lab, dataplane::Snapshot)> {
    let mut out = Vec::new();
    for dir in ["configs", "control/tests/labs"] {
        for e in std::fs::read_dir(root().join(dir)).expect("a lab directory") {
            let p = e.expect("an entry").path();
            if p.extension().is_none_or(|x| x != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            if let Ok((lab, snap)) = control::load_text(&text, 1) {
                out.push((p, lab, snap));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 10, "found {} labs", out.len());
    out
}

/// Whether Graphviz is here; under CI it must be (scripts/install-deps.sh installs it).
fn have_dot() -> bool {
    let found = Command::new("dot")
        .arg("-V")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "CI=true but Graphviz's `dot` is missing: run scripts/install-deps.sh"
        );
        eprintln!("skipping the Graphviz checks: `dot` is not installed (scripts/install-deps.sh installs it)");
    }
    found
}

/// The ids a picture must show.
fn ids(snap: &dataplane::Snapshot) -> Vec<String> {
    let t = &snap.topo;
    let mut ids: Vec<String> = t.vpcs.iter().map(|v| v.id.to_string()).collect();
    ids.extend(t.subnets.iter().map(|s| s.id.to_string()));
    // Instances by their id; NAT gateways and endpoints by theirs (not their ENIs').
    ids.extend(
        t.enis
            .iter()
            .filter(|e| e.kind == dataplane::snapshot::EniKind::Instance)
            .map(|e| e.id.to_string()),
    );
    ids.extend(t.interface_endpoints.iter().map(|e| e.id.to_string()));
    ids.extend(t.gateway_endpoints.iter().map(|e| e.id.to_string()));
    ids.extend(t.nat_gateways.iter().map(|n| n.id.to_string()));
    ids.extend(t.route_tables.iter().map(|r| r.id.to_string()));
    ids.extend(t.peerings.iter().map(|p| p.id.to_string()));
    ids.extend(t.hosts.iter().map(|h| h.id.to_string()));
    ids
}

#[test]
fn every_lab_draws_as_dot_that_graphviz_lays_out() {
    let dot = have_dot();
    for (path, _, snap) in labs() {
        let g = control::graph::Graph::of(&snap).dot();
        for id in ids(&snap) {
            assert!(
                g.contains(&id),
                "{}: {id} missing from\n{g}",
                path.display()
            );
        }
        if dot {
            let svg =
                control::graph::svg(&g).unwrap_or_else(|e| panic!("{}: {e}\n{g}", path.display()));
            let svg = String::from_utf8(svg).unwrap();
            assert!(svg.contains("<svg"), "{}", path.display());
            // Graphviz warns (on stderr, still exit 0) about an lhead it cannot honour.
        }
    }
}

#[test]
fn dot_has_no_warnings_from_graphviz() {
    if !have_dot() {
        return;
    }
    for (path, _, snap) in labs() {
        let g = control::graph::Graph::of(&snap).dot();
        let mut child = Command::new("dot")
            .arg("-Tsvg")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(g.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "{}: {err}\n{g}",
            path.display()
        );
    }
}

/// A Mermaid flowchart's structure: `subgraph`/`end` balanced, every edge between declared
/// nodes or subgraphs, every label quoted without a raw quote inside.
fn check_mermaid(text: &str) -> Result<(), String> {
    let mut lines = text.lines();
    if lines.next() != Some("flowchart LR") {
        return Err("does not start with `flowchart LR`".into());
    }
    let mut depth = 0i32;
    let mut declared = std::collections::HashSet::new();
    let mut edges = Vec::new();
    for line in lines {
        let l = line.trim();
        let id: String = l
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if let Some(rest) = l.strip_prefix("subgraph ") {
            depth += 1;
            let id: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            declared.insert(id);
        } else if l == "end" {
            depth -= 1;
            if depth < 0 {
                return Err("`end` without `subgraph`".into());
            }
        } else if l.starts_with("classDef ") || l.starts_with("class ") {
        } else if l.contains("-->") || l.contains("---") || l.contains("-.-") {
            let words: Vec<&str> = l.split_whitespace().collect();
            edges.push((words[0].to_string(), words[words.len() - 1].to_string()));
        } else if !id.is_empty() {
            declared.insert(id.clone());
        } else {
            return Err(format!("cannot read `{l}`"));
        }
        // Labels: `"..."` pairs only.
        if l.matches('"').count() % 2 != 0 {
            return Err(format!("unbalanced quotes: `{l}`"));
        }
    }
    if depth != 0 {
        return Err(format!("{depth} subgraph(s) not closed"));
    }
    for (a, b) in edges {
        for end in [a, b] {
            if !declared.contains(&end) {
                return Err(format!("an edge to undeclared `{end}`"));
            }
        }
    }
    Ok(())
}

#[test]
fn every_lab_draws_as_well_formed_mermaid() {
    for (path, _, snap) in labs() {
        let m = control::graph::Graph::of(&snap).mermaid();
        check_mermaid(&m).unwrap_or_else(|e| panic!("{}: {e}\n{m}", path.display()));
        for id in ids(&snap) {
            assert!(m.contains(&id), "{}: {id} missing", path.display());
        }
    }
}

#[test]
fn what_is_down_is_red() {
    // endpoints.yaml: pcx-a-d is not active, so the route to it is a blackhole.
    let text = std::fs::read_to_string(root().join("control/tests/labs/endpoints.yaml")).unwrap();
    let (_, snap) = control::load_text(&text, 1).unwrap();
    let g = control::graph::Graph::of(&snap);
    let dot = g.dot();
    let line = dot
        .lines()
        .find(|l| l.contains("pcx-a-d\\npeering connection"))
        .expect("the peering's node");
    assert!(
        line.contains("color=red") && line.contains("not active"),
        "{line}"
    );
    assert!(dot.contains("10.4.0.0/16 → pcx-a-d (blackhole)"), "{dot}");
    assert!(dot.contains("label=\"10.4.0.0/16\", color=red"), "{dot}");
    let m = g.mermaid();
    assert!(m.contains("class ") && m.contains(" down"), "{m}");
    assert!(m.contains("-.->|\"10.4.0.0/16\"|"), "{m}");
}

#[test]
fn the_command_writes_each_format() {
    let lab = root().join("configs/default.yaml");
    let dir = std::env::temp_dir().join(format!("vpcd-graph-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |format: &str, out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_vpcd"))
            .args(["graph", lab.to_str().unwrap(), "--format", format, "-o"])
            .arg(out)
            .output()
            .unwrap()
    };
    let dot = dir.join("lab.dot");
    assert!(run("dot", &dot).status.success());
    assert!(std::fs::read_to_string(&dot)
        .unwrap()
        .starts_with("digraph vpcd {"));
    let mermaid = dir.join("lab.mmd");
    assert!(run("mermaid", &mermaid).status.success());
    check_mermaid(&std::fs::read_to_string(&mermaid).unwrap()).unwrap();
    if have_dot() {
        let svg = dir.join("lab.svg");
        let o = run("svg", &svg);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(&svg).unwrap();
        // Graphviz writes `-` in text as `&#45;`.
        assert!(
            text.contains("<svg") && text.contains("web&#45;1"),
            "{text}"
        );
    }
    // No lab and no --live: a clear refusal.
    let o = Command::new(env!("CARGO_BIN_EXE_vpcd"))
        .args(["graph"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
