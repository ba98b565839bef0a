//! `vpcd`: the command line (lab.md).

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
    },
    /// Stop the vpcd running with --prefix, or remove the namespaces a killed one left.
    Down,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { lab } => check(&lab),
        Command::Up {
            lab,
            mtu,
            workers,
            conntrack_max,
        } => up(lab.as_deref(), &cli.prefix, mtu, workers, conntrack_max),
        Command::Down => down(&cli.prefix),
    }
}

/// Reads, validates and compiles a lab, printing every error as `check` does.
fn load(text: &str, file: &str) -> Result<(control::Lab, dataplane::Snapshot), ExitCode> {
    match control::load_text(text, 1) {
        Ok(loaded) => Ok(loaded),
        Err(control::LoadError::Invalid(diags)) => {
            for d in &diags {
                eprintln!("{}", control::InFile { file, diag: d });
            }
            eprintln!("{file}: {} error(s)", diags.len());
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

fn up(
    path: Option<&Path>,
    prefix: &str,
    mtu: u32,
    workers: Option<usize>,
    conntrack_max: usize,
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
    let snap = match load(&text, &title) {
        Ok((_, snap)) => snap,
        Err(code) => return code,
    };
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4)
    });
    let opts = lab::Options {
        prefix: prefix.to_string(),
        mtu,
        workers,
        conntrack_max,
    };
    match control::runtime::up(snap, &title, &opts) {
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
