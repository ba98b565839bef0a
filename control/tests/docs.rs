//! The user documentation under `docs/` stays true to the code (issue 24):
//!
//! - every field the lab-file parser accepts is documented, as `field`, in the section of
//!   docs/lab-file.md whose heading names its object (`vpcs[].subnets[]`);
//! - every ```yaml block of docs/*.md that starts with `version: 1` is a whole lab and
//!   passes `control::check_text`. Smaller fragments (one object, a list of routes) are
//!   left unchecked: they are parts of a lab, not labs;
//! - every drop reason has its section in docs/drop-reasons.md, and every `NAME_LIKE_THIS`
//!   in README.md and docs/ is a drop reason (or one of the few other such names);
//! - every subcommand of the built `vpcd` has its section in docs/commands.md, every
//!   nested one (`vpcd fault start`) and every long option its help defines is mentioned
//!   there;
//! - README.md and docs/ point to no file outside the repository (`../shared`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Every markdown file under docs/, by name.
fn docs() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| {
            let name = format!("docs/{}", p.file_name().unwrap().to_string_lossy());
            let text = std::fs::read_to_string(&p).expect("a docs file");
            (name, text)
        })
        .collect();
    out.sort();
    out
}

/// The sections of a markdown text: (heading line, the lines up to the next heading).
/// Lines inside ``` fences are never headings (YAML comments start with `#`).
fn sections(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && line.starts_with('#') {
            out.push((line.to_string(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// The ```yaml blocks of a markdown text, with the line each starts on.
fn yaml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```yaml") => current = Some((i + 2, String::new())),
            Some(_) if fence.starts_with("```") => out.extend(current.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn every_accepted_field_is_documented_with_its_object() {
    let doc = read("docs/lab-file.md");
    let sections = sections(&doc);
    let mut missing = Vec::new();
    for (object, fields) in control::model::accepted_fields() {
        let name = format!("`{object}`");
        let Some((_, body)) = sections.iter().find(|(h, _)| h.contains(&name)) else {
            missing.push(format!("no heading of docs/lab-file.md names {name}"));
            continue;
        };
        for field in fields {
            if !body.contains(&format!("`{field}`")) {
                missing.push(format!("{object}: `{field}` is not in its section"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/lab-file.md:\n{}",
        missing.join("\n")
    );
}

#[test]
fn whole_labs_in_the_docs_pass_check() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (name, text) in docs() {
        for (line, block) in yaml_blocks(&text) {
            if !block.trim_start().starts_with("version: 1") {
                continue;
            }
            checked += 1;
            if let Err(diags) = control::check_text(&block) {
                // Each error at its line of the markdown file.
                for d in diags {
                    failures.push(format!(
                        "{name}:{}:{}: {}: {}; {}",
                        line + d.at.line.max(1) - 1,
                        d.at.col,
                        d.at.path,
                        d.message,
                        d.fix
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        checked >= 3,
        "only {checked} whole lab(s) found in docs/*.md"
    );
}

#[test]
fn every_drop_reason_is_explained() {
    let doc = read("docs/drop-reasons.md");
    let headings: Vec<String> = sections(&doc).into_iter().map(|(h, _)| h).collect();
    let missing: Vec<&str> = dataplane::DropReason::ALL
        .iter()
        .map(|r| r.as_str())
        .filter(|name| !headings.iter().any(|h| h == &format!("## {name}")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/drop-reasons.md has no `## NAME` section for: {}",
        missing.join(", ")
    );
}

/// The `UPPER_SNAKE` names of the docs that are not drop reasons: Linux's TUN flags.
const NOT_REASONS: &[&str] = &["IFF_MULTI_QUEUE", "IFF_VNET_HDR"];

#[test]
fn every_drop_reason_the_docs_name_exists() {
    let mut docs = docs();
    docs.push(("README.md".to_string(), read("README.md")));
    let mut unknown = Vec::new();
    for (file, text) in &docs {
        // Between backticks: every other piece of the text split at them.
        for name in text.split('`').skip(1).step_by(2) {
            let snake = name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.contains('_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if snake
                && dataplane::DropReason::from_name(name).is_none()
                && !NOT_REASONS.contains(&name)
            {
                unknown.push(format!("{file}: `{name}`"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not drop reasons (dataplane/src/reason.rs names them):\n{}",
        unknown.join("\n")
    );
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vpcd"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run vpcd --help");
    assert!(out.status.success(), "vpcd {args:?} --help failed");
    String::from_utf8(out.stdout).expect("help is text")
}

/// The subcommands a help text lists under `Commands:` (clap's own `help` aside).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// The long options a help text defines (`      --src-port <SRC_PORT>  ...`), not those
/// its descriptions mention.
fn long_options(help: &str) -> Vec<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| {
            let word = l.split_whitespace().find(|w| w.starts_with("--"))?;
            let name: String = word
                .chars()
                .take_while(|c| *c == '-' || c.is_ascii_alphanumeric())
                .collect();
            (name != "--help").then_some(name)
        })
        .collect()
}

#[test]
fn every_command_and_option_is_documented() {
    let doc = read("docs/commands.md");
    let headings: Vec<String> = sections(&doc).into_iter().map(|(h, _)| h).collect();
    let top = subcommands(&help(&[]));
    assert!(top.len() >= 9, "vpcd --help lists {top:?}");
    let mut missing = Vec::new();
    for c in top.iter().chain(std::iter::once(&"help".to_string())) {
        if !headings.iter().any(|h| h == &format!("## vpcd {c}")) {
            missing.push(format!("no `## vpcd {c}` section"));
        }
    }
    // Every command and nested command (`vpcd fault start`), and its options.
    let mut queue: Vec<Vec<String>> = top.iter().map(|c| vec![c.clone()]).collect();
    while let Some(path) = queue.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        for sub in subcommands(&text) {
            let mut p = path.clone();
            if !doc.contains(&format!("vpcd {} {sub}", args.join(" "))) {
                missing.push(format!("`vpcd {} {sub}` is not mentioned", args.join(" ")));
            }
            p.push(sub);
            queue.push(p);
        }
        for option in long_options(&text) {
            if !doc.contains(&option) {
                missing.push(format!("vpcd {} {option} is not mentioned", args.join(" ")));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/commands.md:\n{}",
        missing.join("\n")
    );
}

#[test]
fn no_pointer_leaves_the_repository() {
    let mut files = docs();
    files.push(("README.md".to_string(), read("README.md")));
    let offending: Vec<String> = files
        .iter()
        .flat_map(|(name, text)| {
            text.lines()
                .enumerate()
                .filter(|(_, l)| l.contains("../shared"))
                .map(move |(i, l)| format!("{name}:{}: {l}", i + 1))
        })
        .collect();
    assert!(
        offending.is_empty(),
        "point to docs/ instead:\n{}",
        offending.join("\n")
    );
}

#[test]
fn the_grafana_dashboard_reads_and_its_metrics_are_documented() {
    let text = read("docs/grafana-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let commands = read("docs/commands.md");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    let mut missing = Vec::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("each panel has queries");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("a PromQL expression");
            for (i, _) in expr.match_indices("vpcd_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !commands.contains(&format!("`{name}`")) {
                    missing.push(name);
                }
            }
        }
    }
    // That the router exports each of them is checked on a running lab (json.rs).
    assert!(missing.is_empty(), "not in docs/commands.md: {missing:?}");
}

#[test]
fn the_readme_shows_the_default_labs_picture_as_vpcd_draws_it() {
    let readme = read("README.md");
    let (_, snap) = control::load_text(&read("configs/default.yaml"), 1).expect("the default lab");
    let picture = control::graph::Graph::of(&snap).mermaid();
    assert!(
        readme.contains(&format!("```mermaid\n{picture}```")),
        "README.md's mermaid block is not `vpcd graph configs/default.yaml --format mermaid`:\n{picture}"
    );
}
