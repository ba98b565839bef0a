//! Why a packet was dropped: one enum, named after AWS Reachability Analyzer's explanation
//! codes (semantics.md §13). Counters, flow logs and `vpcd trace` all use these names, so
//! a person reads the same word everywhere.

use std::fmt;

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// The one reason a packet was dropped (semantics.md §13). Every drop increments
        /// exactly one of these.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// How many reasons there are: the size of a per-reason counter array.
            pub const COUNT: usize = Self::ALL.len();

            /// The stable, upper-case name used by counters, traces and logs.
            pub const fn as_str(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// Parses a name as printed by [`DropReason::as_str`].
            pub fn from_name(name: &str) -> Option<DropReason> {
                match name { $($name => Some(DropReason::$variant),)* _ => None }
            }
        }
    };
}

drop_reasons! {
    /// No route in the subnet's route table matches the destination (R-RT-NOROUTE).
    NoRoute = "NO_ROUTE",
    /// The matching route is a blackhole (R-RT-BLACKHOLE).
    RouteBlackhole = "ROUTE_BLACKHOLE",
    /// No security group rule of the receiving ENI allows the packet (R-SG-ALLOW).
    SgIngress = "SG_INGRESS",
    /// No security group rule of the sending ENI allows the packet (R-SG-ALLOW).
    SgEgress = "SG_EGRESS",
    /// The destination subnet's network ACL denied the packet (R-NACL-ORDER).
    NaclIngress = "NACL_INGRESS",
    /// The source subnet's network ACL denied the packet (R-NACL-ORDER).
    NaclEgress = "NACL_EGRESS",
    /// The packet's source (sending) or destination (receiving) is not the ENI's own
    /// address while source/destination check is on (R-ADDR-SRCDST).
    EniSourceDestCheck = "ENI_SOURCE_DEST_CHECK",
    /// IPv4 through an IGW from an ENI without a public IP, or to an unmapped public IP
    /// (R-IGW-NOPUBLIC).
    IgwNoPublicIp = "IGW_NO_PUBLIC_IP",
    /// Traffic from outside that is not a reply to an outbound flow of the EIGW (R-EIGW).
    EigwInbound = "EIGW_INBOUND",
    /// A protocol the NAT gateway does not translate (R-NAT-SNAT).
    NatUnsupportedProtocol = "NAT_UNSUPPORTED_PROTOCOL",
    /// The NAT gateway has no free port for this destination (R-NAT-LIMIT).
    NatPortExhausted = "NAT_PORT_EXHAUSTED",
    /// A connection opened from outside towards a NAT gateway (R-NAT-INBOUND).
    NatInbound = "NAT_INBOUND",
    /// A packet that would use a peering as a transit (R-PCX-EDGE).
    PcxNotTransitive = "PCX_NOT_TRANSITIVE",
    /// The peering connection is not active (R-PCX-ACTIVE).
    PcxInactive = "PCX_INACTIVE",
    /// The gateway endpoint's policy does not allow this destination (R-GWE-POLICY).
    EndpointPolicy = "ENDPOINT_POLICY",
    /// An endpoint does not carry this protocol (R-IFE-ENI).
    EndpointProtocol = "ENDPOINT_PROTOCOL",
    /// The TTL / hop limit ran out at a hop that decrements it.
    TtlExpired = "TTL_EXPIRED",
    /// Larger than the path MTU and not allowed to be fragmented (R-IGW-MTU).
    MtuExceeded = "MTU_EXCEEDED",
    /// Not a well-formed IPv4/IPv6 packet (truncated, bad version, bad checksum, bad lengths).
    Malformed = "MALFORMED",
    /// An IP fragment where fragments are not carried (R-NAT-FRAG).
    Fragment = "FRAGMENT",
    /// A bounded table (connection tracking, NAT translations) is full: a new flow is
    /// dropped. (A full flow-log table drops no packet: its ENI's window says SKIPDATA.)
    TableFull = "TABLE_FULL",
    /// vpcd extension: the destination lies in a local route, but no interface in the VPC
    /// holds that address. AWS drops such packets silently; this names it, so that a ping
    /// to an unused address is not mistaken for a routing mistake.
    UnassignedAddress = "UNASSIGNED_ADDRESS",
    /// A fault injected with `vpcd fault` (AWS Fault Injection Service actions): a stopped
    /// instance or zone, a subnet whose connectivity is disrupted.
    FaultDisrupted = "FAULT_DISRUPTED",
    /// The virtual private gateway has no route to the destination: not a prefix a VPN
    /// learned by BGP or has as a static route (R-VPN-SCOPE).
    VgwNoRoute = "VGW_NO_ROUTE",
    /// Traffic from a site that would go on through the VPC to anything but the VPC's own
    /// addresses or another site: the internet, a NAT gateway, a peering (R-VPN-NONAT).
    VgwNotTransitive = "VGW_NOT_TRANSITIVE",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert!(seen.insert(r.as_str()), "duplicate name {}", r.as_str());
            assert_eq!(DropReason::from_name(r.as_str()), Some(*r));
            assert_eq!(
                *r as usize,
                DropReason::ALL.iter().position(|x| x == r).unwrap()
            );
        }
        assert_eq!(DropReason::from_name("nope"), None);
    }
}
