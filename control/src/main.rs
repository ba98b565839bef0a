//! `vpcd`: the command line (lab.md).

use dataplane::io::tun::Offloads;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use control::cli::{Cli, Command, FaultCommand, GraphFormat, Target};
use control::lab;

fn main() -> ExitCode {
    let cli = Cli::parse();
    control::logging::init(cli.log_level);
    match &cli.command {
        Command::Check { lab, json } => check(lab, *json),
        Command::Up {
            lab,
            target,
            mtu,
            workers,
            conntrack_max,
            metrics,
            no_offload,
            udp_gro,
        } => up(
            lab.as_deref(),
            &cli.prefix(target),
            cli.control(target),
            *mtu,
            *workers,
            *conntrack_max,
            metrics.as_deref(),
            if *no_offload {
                Offloads::Off
            } else {
                Offloads::On
            },
            *udp_gro,
        ),
        Command::Down { prefix } => down(
            &prefix
                .clone()
                .or_else(|| cli.prefix.clone())
                .unwrap_or_default(),
        ),
        Command::Apply { lab, target } => {
            let file = lab.display().to_string();
            match read(lab) {
                // Checked here first: a file with errors never reaches the router.
                Ok(text) => match control::check_text(&text) {
                    Ok(lab) => {
                        eprint!("{}", control::diag::render_warnings(&file, &lab.warnings));
                        remote(&cli, target, &format!("apply {file}"), &text)
                    }
                    Err(diags) => {
                        eprintln!(
                            "{}; nothing was sent to the router: the running lab is unchanged",
                            control::diag::render(&file, &diags)
                        );
                        ExitCode::from(1)
                    }
                },
                Err(code) => code,
            }
        }
        Command::Flowlogs {
            file,
            addr,
            port,
            action,
            eni,
            format,
        } => {
            let format = match format
                .as_deref()
                .map(control::flow_log_reader::parse_format)
                .transpose()
            {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("vpcd flowlogs: --format: {e}");
                    return ExitCode::from(2);
                }
            };
            match read(file) {
                Ok(text) => {
                    let filter = control::flow_log_reader::Filter {
                        addr: addr.clone(),
                        port: *port,
                        action: *action,
                        eni: eni.clone(),
                    };
                    print!(
                        "{}",
                        control::flow_log_reader::report(&text, &filter, format)
                    );
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Command::Trace {
            lab,
            live,
            target,
            from,
            to,
            proto,
            port,
            src_port,
            size,
            ttl,
            json,
        } => match (lab, live) {
            (_, true) => remote(
                &cli,
                target,
                &format!(
                    "trace {from} {to} {proto} {port} {src_port} {size} {ttl}{}",
                    if *json { " json" } else { "" }
                ),
                "",
            ),
            (Some(lab), false) => {
                let probe = control::trace::Probe {
                    from: from.clone(),
                    to: to.clone(),
                    proto: proto.clone(),
                    port: *port,
                    src_port: *src_port,
                    size: *size,
                    ttl: *ttl,
                };
                trace(lab, &probe, *json)
            }
            (None, false) => {
                eprintln!("vpcd trace: give a lab file, or --live to ask the running router");
                ExitCode::from(2)
            }
        },
        Command::Routes {
            first,
            table,
            target,
            json,
        } => routes(&cli, target, first.as_deref(), table.as_deref(), *json),
        Command::Graph {
            lab,
            live,
            target,
            format,
            output,
        } => graph(
            &cli,
            target,
            lab.as_deref(),
            *live,
            *format,
            output.as_deref(),
        ),
        Command::Fault { command } => match command {
            FaultCommand::List { target, json } => remote(
                &cli,
                target,
                if *json {
                    "fault list --json"
                } else {
                    "fault list"
                },
                "",
            ),
            FaultCommand::Start {
                action,
                target,
                router,
                duration,
                scope,
            } => {
                let word = |w: &Option<String>| w.clone().unwrap_or_else(|| "-".into());
                let plain = |w: &str| !w.is_empty() && !w.chars().any(char::is_whitespace);
                if !plain(action) || !plain(target) {
                    eprintln!("vpcd fault start: ACTION and TARGET are single words");
                    return ExitCode::from(2);
                }
                remote(
                    &cli,
                    router,
                    &format!(
                        "fault start {action} {target} {} {}",
                        word(scope),
                        word(duration)
                    ),
                    "",
                )
            }
            FaultCommand::Stop { id, target, all } => match (id, all) {
                (_, true) => remote(&cli, target, "fault stop --all", ""),
                (Some(id), false) => remote(&cli, target, &format!("fault stop {id}"), ""),
                (None, false) => {
                    eprintln!("vpcd fault stop: give a fault id (f-1) or --all");
                    ExitCode::from(2)
                }
            },
        },
        Command::Status { target, json } => remote(
            &cli,
            target,
            if *json { "status --json" } else { "status" },
            "",
        ),
        Command::Stats { target, json } => remote(
            &cli,
            target,
            if *json { "stats --json" } else { "stats" },
            "",
        ),
        Command::Import {
            from: control::cli::ImportFrom::Terraform { file, output },
        } => import_terraform(file, output.as_deref()),
        Command::VpnConfig {
            first,
            vpn,
            format,
            target,
        } => vpn_config(&cli, target, first, vpn.as_deref(), *format),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "vpcd", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// `vpcd routes`: of a lab file (no root), or of the running router.
fn routes(
    cli: &Cli,
    target: &Target,
    first: Option<&str>,
    table: Option<&str>,
    json: bool,
) -> ExitCode {
    match first {
        Some(f) if Path::new(f).is_file() => {
            let text = match read(Path::new(f)) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let snap = match load(&text, f) {
                Ok((_, snap)) => snap,
                Err(code) => return code,
            };
            let shown = if json {
                control::json::routes(&snap, table).map(|r| control::json::to_string(&r) + "\n")
            } else {
                control::routes::render(&snap, table)
            };
            match shown {
                Ok(t) => {
                    print!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vpcd routes: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(f) if table.is_some() => {
            eprintln!("vpcd routes: {f} is not a lab file");
            ExitCode::from(2)
        }
        _ => remote(
            cli,
            target,
            &format!(
                "routes {}{}",
                first.unwrap_or(""),
                if json { " --json" } else { "" }
            ),
            "",
        ),
    }
}

/// `vpcd graph`: the lab file's picture, or the running lab's (`--live`, which asks the
/// router for its snapshot's picture in dot and converts it here).
fn graph(
    cli: &Cli,
    target: &Target,
    lab: Option<&Path>,
    live: bool,
    format: GraphFormat,
    output: Option<&Path>,
) -> ExitCode {
    use control::graph;
    let picture = match (lab, live) {
        (_, true) => {
            let path = cli.control(target);
            let command = match format {
                GraphFormat::Mermaid => "graph mermaid",
                GraphFormat::Dot | GraphFormat::Svg => "graph dot",
            };
            match control::control_socket::request(&path, command, "") {
                Ok((control::control_socket::Status::Ok, text)) => text,
                Ok((_, text)) => {
                    eprint!("{text}");
                    return ExitCode::from(2);
                }
                Err(e) => {
                    eprintln!("vpcd: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        (Some(lab), false) => {
            let file = lab.display().to_string();
            let text = match read(lab) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let snap = match load(&text, &file) {
                Ok((_, snap)) => snap,
                Err(code) => return code,
            };
            let g = graph::Graph::of(&snap);
            match format {
                GraphFormat::Mermaid => g.mermaid(),
                GraphFormat::Dot | GraphFormat::Svg => g.dot(),
            }
        }
        (None, false) => {
            eprintln!("vpcd graph: give a lab file, or --live to draw the running lab");
            return ExitCode::from(2);
        }
    };
    let bytes = if format == GraphFormat::Svg {
        match graph::svg(&picture) {
            Ok(svg) => svg,
            Err(e) => {
                eprintln!("vpcd graph: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        picture.into_bytes()
    };
    let written = match output {
        Some(path) => std::fs::write(path, &bytes).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(&bytes)
                .map_err(|e| e.to_string())
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpcd graph: {e}");
            ExitCode::from(2)
        }
    }
}

/// Reads, validates and compiles a lab, printing every error as `check` does.
fn import_terraform(file: &Path, output: Option<&Path>) -> ExitCode {
    let shown = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vpcd import: cannot read {shown}: {e}");
            return ExitCode::from(2);
        }
    };
    let imported = match control::import::terraform(&text, &shown) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("vpcd import: {e}");
            return ExitCode::from(2);
        }
    };
    match output {
        Some(out) => {
            if let Err(e) = std::fs::write(out, &imported.lab) {
                eprintln!("vpcd import: cannot write {}: {e}", out.display());
                return ExitCode::from(2);
            }
        }
        None => print!("{}", imported.lab),
    }
    for s in &imported.skipped {
        eprintln!("vpcd import: not imported: {s}");
    }
    // The lab must pass check; if it does not, say so (the design uses what vpcd refuses).
    if let Err(diags) = control::check_text(&imported.lab) {
        eprintln!(
            "vpcd import: the imported lab does not pass check:\n{}",
            control::diag::render("(imported)", &diags)
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn vpn_config(
    cli: &Cli,
    target: &Target,
    first: &str,
    vpn: Option<&str>,
    format: control::vpn_config::Format,
) -> ExitCode {
    use clap::ValueEnum;
    let name = format
        .to_possible_value()
        .map_or(String::new(), |v| v.get_name().to_string());
    let Some(vpn) = vpn else {
        return remote(cli, target, &format!("vpn-config {first} {name}"), "");
    };
    let text = match read(Path::new(first)) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let (lab, snap) = match load(&text, first) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match control::vpn_config::render(&lab, &snap, vpn, format) {
        Ok(t) => {
            print!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vpcd vpn-config: {e}");
            ExitCode::from(2)
        }
    }
}

fn load(text: &str, file: &str) -> Result<(control::Lab, dataplane::Snapshot), ExitCode> {
    match control::load_text(text, 1) {
        Ok(loaded) => Ok(loaded),
        Err(control::LoadError::Invalid(diags)) => {
            eprintln!("{}", control::diag::render(file, &diags));
            Err(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("vpcd: {file}: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn read(path: &Path) -> Result<String, ExitCode> {
    control::read(path).map_err(|e| {
        eprintln!("vpcd: {e}");
        ExitCode::from(2)
    })
}

fn check(path: &Path, json: bool) -> ExitCode {
    let file = path.display().to_string();
    let text = match read(path) {
        Ok(t) => t,
        Err(code) => return code,
    };
    if json {
        return check_json(&file, &text);
    }
    match load(&text, &file) {
        Ok((lab, snap)) => {
            eprint!("{}", control::diag::render_warnings(&file, &lab.warnings));
            let c = control::json::Counts::new(&lab, &snap);
            println!(
                "{file}: ok ({} VPC(s), {} subnet(s), {} route table(s), {} instance(s), {} outside host(s))",
                c.vpcs, c.subnets, c.route_tables, c.instances, c.outside_hosts
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `vpcd check --json`: the report on stdout whatever the verdict; exit 0 or 1 as `check`.
fn check_json(file: &str, text: &str) -> ExitCode {
    let report = match control::load_text(text, 1) {
        Ok((lab, snap)) => control::json::Check::new(
            file,
            &lab.warnings,
            Some(control::json::Counts::new(&lab, &snap)),
        ),
        Err(control::LoadError::Invalid(diags)) => control::json::Check::new(file, &diags, None),
        Err(e) => {
            eprintln!("vpcd: {file}: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{}", control::json::to_string(&report));
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn trace(path: &Path, probe: &control::trace::Probe, json: bool) -> ExitCode {
    let file = path.display().to_string();
    let text = match read(path) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let snap = match load(&text, &file) {
        Ok((_, snap)) => snap,
        Err(_) => return ExitCode::from(2),
    };
    match control::trace::trace(&snap, probe) {
        Ok(t) => {
            if json {
                println!("{}", control::trace::to_json(&t));
            } else {
                print!("{}", control::trace::to_text(&t));
            }
            if t.reachable() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("vpcd trace: {e}");
            ExitCode::from(2)
        }
    }
}

/// A request to the running router over its control socket. A result (`ok`, or a trace
/// that is not reachable) goes to stdout, a refusal or a bad request to stderr; exit 0, 1
/// (not reachable, refused) or 2 (bad request, no router).
fn remote(cli: &Cli, target: &Target, command: &str, body: &str) -> ExitCode {
    use control::control_socket::Status;
    let path = cli.control(target);
    match control::control_socket::request(&path, command, body) {
        Ok((status, text)) => {
            let text = if text.is_empty() || text.ends_with('\n') {
                text
            } else {
                text + "\n"
            };
            match status {
                Status::Ok | Status::No => print!("{text}"),
                Status::Refused | Status::Bad => eprint!("{text}"),
            }
            ExitCode::from(match status {
                Status::Ok => 0,
                Status::No | Status::Refused => 1,
                Status::Bad => 2,
            })
        }
        Err(e) => {
            eprintln!("vpcd: {e}");
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn up(
    path: Option<&Path>,
    prefix: &str,
    control: PathBuf,
    mtu: u32,
    workers: Option<usize>,
    conntrack_max: usize,
    metrics: Option<&str>,
    offloads: Offloads,
    udp_gro: bool,
) -> ExitCode {
    let (text, title) = match path {
        Some(p) => match read(p) {
            Ok(t) => (t, p.display().to_string()),
            Err(code) => return code,
        },
        None => (
            control::DEFAULT_LAB.to_string(),
            "(built-in default)".to_string(),
        ),
    };
    let lab = match control::check_text(&text) {
        Ok(lab) => {
            eprint!("{}", control::diag::render_warnings(&title, &lab.warnings));
            lab
        }
        Err(diags) => {
            eprintln!("{}", control::diag::render(&title, &diags));
            return ExitCode::from(1);
        }
    };
    let mut gens = control::generations::Generations::new();
    let snap = match gens.next(&lab) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vpcd: {title}: {e}");
            return ExitCode::from(2);
        }
    };
    let metrics = match metrics.map(control::metrics::parse_addr).transpose() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vpcd: {e}");
            return ExitCode::from(2);
        }
    };
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4)
    });
    let opts = control::runtime::UpOptions {
        lab: lab::Options {
            prefix: prefix.to_string(),
            mtu,
            workers,
            conntrack_max,
            offloads,
            udp_gro,
        },
        path: path.map(Path::to_path_buf),
        control,
        metrics,
    };
    match control::runtime::up(snap, gens, lab, &title, &opts) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpcd: {e}");
            ExitCode::from(1)
        }
    }
}

fn down(prefix: &str) -> ExitCode {
    match control::runstate::down(prefix, Duration::from_secs(30)) {
        Ok(d) => {
            if let Some(pid) = &d.stopped {
                println!("vpcd: stopped the vpcd with prefix {prefix:?} (pid {pid})");
            }
            if !d.removed.is_empty() {
                println!(
                    "vpcd: removed {} namespace(s) a killed run left: {}",
                    d.removed.len(),
                    d.removed.join(", ")
                );
            }
            if d.stopped.is_none() && d.removed.is_empty() {
                println!("vpcd: nothing to remove for prefix {prefix:?}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vpcd: {e}");
            ExitCode::from(1)
        }
    }
}
