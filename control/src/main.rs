//! `vpcd`: the command line (lab.md).

use dataplane::io::tun::Offloads;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use control::lab;

#[derive(Parser)]
#[command(
    name = "vpcd",
    version,
    about = "AWS VPC networking with real packets on one Linux machine"
)]
struct Cli {
    /// Prefixes every namespace name, so that several labs (and parallel tests) can run
    /// at once.
    #[arg(long, global = true, default_value = "")]
    prefix: String,
    /// The control socket of the running router (default: /run/vpcd/ctl-PREFIX.sock).
    #[arg(long, global = true)]
    control: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a lab file: print every error (file:line:col, object path, what is wrong,
    /// how to fix it); exit 1 if there is any.
    Check {
        /// The lab file.
        lab: PathBuf,
    },
    /// Build the lab (one network namespace per instance and outside host) and route its
    /// packets until SIGINT or SIGTERM. Needs root.
    Up {
        /// The lab file; without one, the built-in default lab (public and private subnet,
        /// NAT gateway, IGW, EIGW, one internet host).
        lab: Option<PathBuf>,
        /// The MTU of every `eth0` (AWS: 9001 inside a VPC).
        #[arg(long, default_value_t = lab::DEFAULT_MTU)]
        mtu: u32,
        /// Worker threads (each owns one queue of every TUN device); default: the number
        /// of cores, at most 4.
        #[arg(long)]
        workers: Option<usize>,
        /// Slots of the connection-tracking table (bounded: new flows beyond it are
        /// dropped and counted as TABLE_FULL).
        #[arg(long, default_value_t = dataplane::conntrack::DEFAULT_CAPACITY)]
        conntrack_max: usize,
        /// Serve Prometheus metrics on this loopback address (e.g. 127.0.0.1:9108).
        #[arg(long)]
        metrics: Option<String>,
        /// Open the TUN devices without offloads: one packet per read and write, complete
        /// checksums (slower; for comparison and for debugging the fast path).
        #[arg(long)]
        no_offload: bool,
        /// Write consecutive datagrams of one UDP flow as one UDP GSO super-packet (as a
        /// NIC's UDP GRO would): far fewer syscalls for small-datagram floods, but tcpdump
        /// (and netfilter) in the receiving namespace then see merged datagrams, which an
        /// AWS instance does not. For throughput benchmarks; needs offloads and kernel 6.2+
        /// (USO).
        #[arg(long, conflicts_with = "no_offload")]
        udp_gro: bool,
    },
    /// Send a changed lab file to the running router: validated like `check`, compiled and
    /// swapped in without dropping established flows; refused (and nothing changes) if it
    /// has errors.
    Apply {
        /// The lab file.
        lab: PathBuf,
    },
    /// Read a flow-log file (any format: its header line, --format, or AWS's default):
    /// matching records, a table per flow, lost (SKIPDATA) and quiet (NODATA) windows.
    Flowlogs {
        /// The flow-log file.
        file: PathBuf,
        /// Only records with this source or destination address.
        #[arg(long)]
        addr: Option<String>,
        /// Only records with this source or destination port.
        #[arg(long)]
        port: Option<u16>,
        /// Only ACCEPT or REJECT records.
        #[arg(long, value_enum, ignore_case = true)]
        action: Option<control::flow_log_reader::Action>,
        /// Only records of this interface (eni-ID or the instance id).
        #[arg(long)]
        eni: Option<String>,
        /// The format of lines before any header line: `default`, or the flow log's
        /// `log_format` (`${srcaddr} ${dstaddr} ...`).
        #[arg(long)]
        format: Option<String>,
    },
    /// Explain, without root or packets, what the VPC does to a packet and its reply, hop
    /// by hop, with the same pipeline the router runs. Exit 0 reachable, 1 not, 2 bad input.
    Trace {
        /// The lab file (not with --live).
        lab: Option<PathBuf>,
        /// Ask the running router (same --prefix): its live configuration, and whether its
        /// connection tracking holds this flow.
        #[arg(long)]
        live: bool,
        /// The instance or outside host that sends.
        #[arg(long)]
        from: String,
        /// The destination: an address, or an instance / host id.
        #[arg(long)]
        to: String,
        /// tcp, udp, icmp, icmpv6 or a protocol number.
        #[arg(long, default_value = "icmp")]
        proto: String,
        /// Destination port (tcp, udp).
        #[arg(long, default_value_t = 443)]
        port: u16,
        /// Source port (tcp, udp): an ephemeral one by default.
        #[arg(long, default_value_t = 40000)]
        src_port: u16,
        /// The packet's size in bytes (path MTU questions).
        #[arg(long, default_value_t = 0)]
        size: u16,
        /// The TTL it starts with (1: does the router answer as a traceroute hop?).
        #[arg(long, default_value_t = 64)]
        ttl: u8,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Route tables as the console shows them (destination, target, origin, state): of a
    /// lab file (`vpcd routes LAB.yaml [TABLE]`, no root), or of the running router (`vpcd
    /// routes [TABLE]`, same --prefix).
    Routes {
        /// A lab file, or a route table id of the running lab.
        first: Option<String>,
        /// With a lab file: only this route table.
        table: Option<String>,
    },
    /// Failures on command, with the AWS Fault Injection Service's action names, on the
    /// running router (same --prefix).
    Fault {
        #[command(subcommand)]
        command: FaultCommand,
    },
    /// The running router: lab, generation, namespaces, flow table.
    Status,
    /// The running router's counters: packets and bytes per port, drops by reason and
    /// cause, flow table occupancy.
    Stats,
    /// Stop the vpcd running with --prefix, or remove the namespaces a killed one left.
    Down,
}

#[derive(Subcommand)]
enum FaultCommand {
    /// The active faults, with their start and end.
    List,
    /// Starts a fault; prints its id (f-1, ...). ACTION: aws:ec2:stop-instances (an
    /// instance), aws:network:disrupt-connectivity (a subnet, with --scope),
    /// aws:ec2:nat-gateway-failure (a NAT gateway), aws:az:power-interruption (a zone).
    Start {
        /// The FIS action name.
        action: String,
        /// What it acts on: an instance, subnet or NAT gateway id, or a zone name.
        target: String,
        /// Ends the fault by itself after this long (30s, 5m, 1h).
        #[arg(long)]
        duration: Option<String>,
        /// For aws:network:disrupt-connectivity: all (default), availability-zone,
        /// prefix-list:PL-ID, s3 or dynamodb.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Ends a fault (f-3), or every one with --all: the lab is as before it.
    Stop {
        /// The fault id.
        id: Option<String>,
        /// Every active fault.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Check { lab } => check(lab),
        Command::Up {
            lab,
            mtu,
            workers,
            conntrack_max,
            metrics,
            no_offload,
            udp_gro,
        } => {
            let control = control_path(&cli.control, &cli.prefix);
            up(
                lab.as_deref(),
                &cli.prefix,
                control,
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
            )
        }
        Command::Down => down(&cli.prefix),
        Command::Apply { lab } => {
            let file = lab.display().to_string();
            match read(lab) {
                // Checked here first: a file with errors never reaches the router.
                Ok(text) => match control::check_text(&text) {
                    Ok(lab) => {
                        eprint!("{}", control::diag::render_warnings(&file, &lab.warnings));
                        remote(&cli, &format!("apply {file}"), &text)
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
        Command::Routes { first, table } => match first.as_deref() {
            Some(f) if Path::new(f).is_file() => {
                let file = Path::new(f);
                let text = match read(file) {
                    Ok(t) => t,
                    Err(code) => return code,
                };
                let snap = match load(&text, f) {
                    Ok((_, snap)) => snap,
                    Err(code) => return code,
                };
                match control::routes::render(&snap, table.as_deref()) {
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
            Some(_) if table.is_some() => {
                eprintln!(
                    "vpcd routes: {} is not a lab file",
                    first.as_deref().unwrap_or("")
                );
                ExitCode::from(2)
            }
            _ => remote(
                &cli,
                &format!("routes {}", first.as_deref().unwrap_or("")),
                "",
            ),
        },
        Command::Fault { command } => match command {
            FaultCommand::List => remote(&cli, "fault list", ""),
            FaultCommand::Start {
                action,
                target,
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
                    &format!(
                        "fault start {action} {target} {} {}",
                        word(scope),
                        word(duration)
                    ),
                    "",
                )
            }
            FaultCommand::Stop { id, all } => match (id, all) {
                (_, true) => remote(&cli, "fault stop --all", ""),
                (Some(id), false) => remote(&cli, &format!("fault stop {id}"), ""),
                (None, false) => {
                    eprintln!("vpcd fault stop: give a fault id (f-1) or --all");
                    ExitCode::from(2)
                }
            },
        },
        Command::Status => remote(&cli, "status", ""),
        Command::Stats => remote(&cli, "stats", ""),
    }
}

/// Reads, validates and compiles a lab, printing every error as `check` does.
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

fn check(path: &Path) -> ExitCode {
    let file = path.display().to_string();
    let text = match read(path) {
        Ok(t) => t,
        Err(code) => return code,
    };
    match load(&text, &file) {
        Ok((lab, snap)) => {
            eprint!("{}", control::diag::render_warnings(&file, &lab.warnings));
            let t = &snap.topo;
            println!(
                "{file}: ok ({} VPC(s), {} subnet(s), {} route table(s), {} instance(s), {} outside host(s))",
                lab.vpcs.len(),
                t.subnets.len(),
                t.route_tables.len(),
                t.enis.iter().filter(|e| e.port.is_some()).count(),
                t.hosts.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
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

fn control_path(control: &Option<PathBuf>, prefix: &str) -> PathBuf {
    control
        .clone()
        .unwrap_or_else(|| control::control_socket::default_path(prefix))
}

/// A request to the running router over its control socket. A result (`ok`, or a trace
/// that is not reachable) goes to stdout, a refusal or a bad request to stderr; exit 0, 1
/// (not reachable, refused) or 2 (bad request, no router).
fn remote(cli: &Cli, command: &str, body: &str) -> ExitCode {
    use control::control_socket::Status;
    let path = control_path(&cli.control, &cli.prefix);
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
