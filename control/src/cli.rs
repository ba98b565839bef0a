//! The `vpcd` command line (lab.md), as clap types. It lives in the library so that the
//! docs test and `vpcd completions` see the same definition the binary parses.
//!
//! `--prefix` and `--control` pick the running lab. lab.md calls them global options:
//! they are still taken before the command (`vpcd --prefix t1 status`), and each command
//! they change takes them after it too, but they are not offered where they do nothing
//! (`check`, `flowlogs`, `graph` without `--live`).

use std::path::PathBuf;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::lab;

#[derive(Parser)]
#[command(
    name = "vpcd",
    version,
    about = "AWS VPC networking with real packets on one Linux machine"
)]
pub struct Cli {
    /// Prefixes every namespace name, so that several labs (and parallel tests) can run at
    /// once; the commands that talk to a running lab take it too.
    #[arg(long)]
    pub prefix: Option<String>,
    /// The control socket of the running router (default: /run/vpcd/ctl-PREFIX.sock).
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// What the running router reports on stderr: error, warn, or info (applies, SIGHUP,
    /// faults that end).
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
}

/// Which running lab a command talks to.
#[derive(Args, Clone, Default)]
pub struct Target {
    /// The prefix the lab was started with (`vpcd up --prefix P`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// The control socket of the running router (default: /run/vpcd/ctl-PREFIX.sock).
    #[arg(long)]
    pub control: Option<PathBuf>,
}

impl Cli {
    /// The prefix in force: given after the command, else before it, else none.
    pub fn prefix(&self, target: &Target) -> String {
        target
            .prefix
            .clone()
            .or_else(|| self.prefix.clone())
            .unwrap_or_default()
    }

    /// The control socket in force.
    pub fn control(&self, target: &Target) -> PathBuf {
        target
            .control
            .clone()
            .or_else(|| self.control.clone())
            .unwrap_or_else(|| crate::control_socket::default_path(&self.prefix(target)))
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Validate a lab file: print every error (file:line:col, object path, what is wrong,
    /// how to fix it); exit 1 if there is any.
    Check {
        /// The lab file.
        lab: PathBuf,
        /// JSON output (docs/commands.md has the shape).
        #[arg(long)]
        json: bool,
    },
    /// Build the lab (one network namespace per instance and outside host) and route its
    /// packets until SIGINT or SIGTERM. Needs root.
    Up {
        /// The lab file; without one, the built-in default lab (public and private subnet,
        /// NAT gateway, IGW, EIGW, one internet host).
        lab: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
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
        #[command(flatten)]
        target: Target,
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
        action: Option<crate::flow_log_reader::Action>,
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
        #[command(flatten)]
        target: Target,
        /// The instance or outside host that sends.
        #[arg(long)]
        from: String,
        /// The destination: an address, or an instance / host id.
        #[arg(long)]
        to: String,
        /// tcp, udp, icmp, icmpv6 or a protocol number (0-255).
        #[arg(long, default_value = "icmp", value_parser = ProtoParser)]
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
        #[command(flatten)]
        target: Target,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// A picture of the lab: VPCs, subnets by zone, instances, gateways, peering,
    /// endpoints, route tables; as Graphviz dot, Mermaid, or SVG (drawn by Graphviz's
    /// `dot`). No root.
    Graph {
        /// The lab file (not with --live).
        lab: Option<PathBuf>,
        /// Draw the running lab (same --prefix), with what is stopped or failed by a fault
        /// in red.
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        target: Target,
        /// dot, mermaid or svg.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Failures on command, with the AWS Fault Injection Service's action names, on the
    /// running router (same --prefix).
    Fault {
        #[command(subcommand)]
        command: FaultCommand,
    },
    /// The running router: lab, generation, namespaces, flow table.
    Status {
        #[command(flatten)]
        target: Target,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// The running router's counters: packets and bytes per port, drops by reason and
    /// cause, flow table occupancy.
    Stats {
        #[command(flatten)]
        target: Target,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Stop the vpcd running with --prefix, or remove the namespaces a killed one left.
    Down {
        /// The prefix the lab was started with.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// A lab file from a real design: `vpcd import terraform PLAN.json|STATE.json` (the
    /// JSON of `terraform show -json`). Prints the lab (or writes it with -o) and, on
    /// stderr, what was not imported and why. No root.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
    /// A customer gateway's configuration for VPN connection VPN, as AWS's "download
    /// configuration" gives it (tunnel addresses, ASNs, BGP timers, MTU/MSS): of a lab
    /// file (`vpcd vpn-config LAB.yaml VPN`, no root) or of the running lab (`vpcd
    /// vpn-config VPN`, same --prefix).
    VpnConfig {
        /// A lab file, or the VPN connection id of the running lab.
        first: String,
        /// With a lab file: the VPN connection id.
        vpn: Option<String>,
        /// bird (what the lab's site router runs), frr or strongswan.
        #[arg(long, value_enum, default_value_t = crate::vpn_config::Format::Bird)]
        format: crate::vpn_config::Format,
        #[command(flatten)]
        target: Target,
    },
    /// Print a completion script for bash, zsh or fish (e.g. `vpcd completions bash >
    /// /etc/bash_completion.d/vpcd`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Where `vpcd import` reads a design from.
#[derive(Subcommand, Debug)]
pub enum ImportFrom {
    /// The JSON of `terraform show -json` (a plan or a state).
    Terraform {
        /// The JSON file.
        file: PathBuf,
        /// Write the lab here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// `vpcd graph --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Svg,
}

#[derive(Subcommand)]
pub enum FaultCommand {
    /// The active faults, with their start and end.
    List {
        #[command(flatten)]
        target: Target,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Starts a fault; prints its id (f-1, ...).
    Start {
        /// The FIS action name.
        #[arg(value_parser = fault_actions())]
        action: String,
        /// What it acts on: an instance, subnet or NAT gateway id, or a zone name.
        target: String,
        #[command(flatten)]
        router: Target,
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
        #[command(flatten)]
        target: Target,
        /// Every active fault.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

/// The FIS action names `vpcd fault start` takes, each with what it acts on (shown by
/// `--help` and offered by completions).
fn fault_actions() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        crate::faults::ACTIONS
            .iter()
            .map(|(name, what)| PossibleValue::new(*name).help(*what)),
    )
}

/// `--proto`: a protocol name or number, checked by the trace's own parser; the names are
/// offered by `--help` and completions.
#[derive(Clone)]
struct ProtoParser;

impl TypedValueParser for ProtoParser {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let text = value.to_str().unwrap_or("");
        match crate::trace::protocol(text) {
            Ok(_) => Ok(text.to_string()),
            Err(_) => {
                let mut e = clap::Error::new(clap::error::ErrorKind::InvalidValue).with_cmd(cmd);
                e.insert(
                    clap::error::ContextKind::InvalidArg,
                    clap::error::ContextValue::String(
                        arg.map_or("--proto".into(), |a| a.to_string()),
                    ),
                );
                e.insert(
                    clap::error::ContextKind::InvalidValue,
                    clap::error::ContextValue::String(text.to_string()),
                );
                e.insert(
                    clap::error::ContextKind::ValidValue,
                    clap::error::ContextValue::Strings(
                        ["tcp", "udp", "icmp", "icmpv6", "0-255"]
                            .map(String::from)
                            .to_vec(),
                    ),
                );
                Err(e)
            }
        }
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            ["tcp", "udp", "icmp", "icmpv6"]
                .into_iter()
                .map(PossibleValue::new),
        ))
    }
}
