//! vpcd's dataplane: the AWS VPC packet pipeline as a library.
//!
//! Bytes in, [`Verdict`] out. The pipeline holds no device, thread or clock: the caller
//! (a TUN worker, a test, a benchmark, `vpcd trace`) passes the packet, the port it came
//! in on, the current [`Snapshot`] and the time. See [`pipeline`] for the order of checks.

pub mod acl;
pub mod checksum;
pub mod conntrack;
pub mod eni;
pub mod flow_log;
pub mod gateways;
pub mod icmp_error;
pub mod interface_endpoint;
pub mod io;
pub mod nat;
pub mod nat64;
pub mod nat_gateway;
pub mod network_acl;
pub mod observer;
pub mod offload;
pub mod packet;
pub mod pipeline;
pub mod reason;
pub mod region;
pub mod route;
pub mod router_services;
pub mod security_group;
pub mod snapshot;
pub mod stats;
#[cfg(test)]
mod test_rng;
pub mod traffic_mirror;
pub mod vpn;

pub use observer::{NoObserver, Observer, Recorder, Step};
pub use packet::Packet;
pub use pipeline::{Pipeline, Verdict};
pub use reason::DropReason;
pub use snapshot::{PortId, Snapshot, SnapshotCell, Topology};
pub use stats::Stats;

/// A point in time: nanoseconds since the Unix epoch. The pipeline never reads a clock;
/// the caller passes the time, so tests are deterministic and flow logs get wall time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_secs(s: u64) -> Timestamp {
        Timestamp(s * 1_000_000_000)
    }

    pub const fn secs(self) -> u64 {
        self.0 / 1_000_000_000
    }
}
