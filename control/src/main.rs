//! `vpcd`: the command line (lab.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vpcd",
    version,
    about = "AWS VPC networking with real packets on one Linux machine"
)]
struct Cli {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { lab } => check(&lab),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let text = match control::read(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vpcd: {e}");
            return ExitCode::from(2);
        }
    };
    let file = path.display().to_string();
    match control::load_text(&text, 1) {
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
        Err(control::LoadError::Invalid(diags)) => {
            for d in &diags {
                eprintln!(
                    "{}",
                    control::InFile {
                        file: &file,
                        diag: d
                    }
                );
            }
            eprintln!("{file}: {} error(s)", diags.len());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("vpcd: {file}: {e}");
            ExitCode::from(2)
        }
    }
}
