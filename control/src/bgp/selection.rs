//! Which path a virtual private gateway uses for a site's prefix when several VPN
//! tunnels and Direct Connect VIFs offer it (R-VPN-PRIORITY, R-VPN-TUNNELS, R-DX-PRIVATE).
//!
//! AWS's order for the same prefix ("Route tables and VPN route priority", AWS Site-to-Site
//! VPN User Guide, <https://docs.aws.amazon.com/vpn/latest/s2svpn/VPNRoutingTypes.html>):
//! Direct Connect BGP routes, then a VPN's static routes, then routes a VPN learned by BGP;
//! between BGP routes the shortest AS_PATH, then, when the first AS of the paths is the
//! same, the lowest MED. What is still tied goes over one path, which the VGW keeps while
//! it lasts: AWS picks it at random, vpcd picks the first (tunnel 1 before tunnel 2) so a
//! lab behaves the same every run. A VGW does no ECMP (R-VPN-TUNNELS).

use std::cmp::Ordering;

/// Where a route to a site was learned, in R-VPN-PRIORITY's order (first wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    DirectConnect,
    StaticVpn,
    BgpVpn,
}

impl Origin {
    /// As `vpcd routes` shows where a propagated route came from.
    pub fn name(self) -> &'static str {
        match self {
            Origin::DirectConnect => "Direct Connect BGP",
            Origin::StaticVpn => "VPN static",
            Origin::BgpVpn => "VPN BGP",
        }
    }
}

/// One way to a prefix: `via` names the tunnel or VIF (ordered: tunnel 1 before 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<V> {
    pub via: V,
    pub origin: Origin,
    /// AS numbers of the path, the neighbour's first; empty for static routes.
    pub asns: Vec<u32>,
    /// RFC 4271 §9.1.2.2's length (an AS_SET counts one); 0 for static routes.
    pub as_path_len: usize,
    /// MULTI_EXIT_DISC; absent counts as 0, the lowest.
    pub med: u32,
}

/// `Less` when `a` is preferred over `b`; `Equal` when AWS sees no difference.
pub fn prefer<V>(a: &Candidate<V>, b: &Candidate<V>) -> Ordering {
    a.origin
        .cmp(&b.origin)
        .then_with(|| match a.origin {
            Origin::StaticVpn => Ordering::Equal,
            Origin::DirectConnect | Origin::BgpVpn => a.as_path_len.cmp(&b.as_path_len),
        })
        .then_with(|| {
            // MED compares only paths from the same neighbouring AS (RFC 4271 §9.1.2.2 c,
            // and AWS's rule above).
            if a.origin != Origin::StaticVpn && a.asns.first() == b.asns.first() {
                a.med.cmp(&b.med)
            } else {
                Ordering::Equal
            }
        })
}

/// The path the VGW uses: the preferred one; among equally preferred ones the one in use
/// (`current`) if it is still offered, else the first by `via`.
pub fn best<'c, V: Ord>(
    candidates: &'c [Candidate<V>],
    current: Option<&V>,
) -> Option<&'c Candidate<V>> {
    let top = candidates
        .iter()
        .min_by(|a, b| prefer(a, b).then_with(|| a.via.cmp(&b.via)))?;
    let tied = candidates
        .iter()
        .filter(|c| prefer(c, top) == Ordering::Equal);
    match current {
        Some(cur) => {
            let mut tied = tied;
            tied.find(|c| &c.via == cur).or(Some(top))
        }
        None => Some(top),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bgp(via: u8, asns: &[u32], med: u32) -> Candidate<u8> {
        Candidate {
            via,
            origin: Origin::BgpVpn,
            asns: asns.to_vec(),
            as_path_len: asns.len(),
            med,
        }
    }

    fn fixed(via: u8, origin: Origin) -> Candidate<u8> {
        Candidate {
            via,
            origin,
            asns: if origin == Origin::StaticVpn {
                vec![]
            } else {
                vec![65000]
            },
            as_path_len: usize::from(origin != Origin::StaticVpn),
            med: 0,
        }
    }

    #[test]
    fn r_vpn_priority_direct_connect_then_static_then_bgp() {
        let c = [
            bgp(1, &[65000], 0),
            fixed(2, Origin::StaticVpn),
            fixed(3, Origin::DirectConnect),
        ];
        assert_eq!(best(&c, None).map(|c| c.via), Some(3));
        assert_eq!(best(&c[..2], None).map(|c| c.via), Some(2));
        // A DX route wins even with a longer path than the VPN's.
        let mut dx = fixed(3, Origin::DirectConnect);
        dx.asns = vec![65000, 65000, 65000];
        dx.as_path_len = 3;
        assert_eq!(
            best(&[bgp(1, &[65000], 0), dx], None).map(|c| c.via),
            Some(3)
        );
    }

    #[test]
    fn r_vpn_priority_shortest_as_path_then_lowest_med_from_the_same_neighbour() {
        // Prepending on tunnel 1 steers traffic to tunnel 2.
        let c = [bgp(1, &[65000, 65000, 65000], 0), bgp(2, &[65000], 50)];
        assert_eq!(best(&c, None).map(|c| c.via), Some(2));
        // Equal paths: the lower MED wins.
        let c = [bgp(1, &[65000], 200), bgp(2, &[65000], 100)];
        assert_eq!(best(&c, None).map(|c| c.via), Some(2));
        // A missing MED is 0, the lowest.
        let c = [bgp(1, &[65000], 100), bgp(2, &[65000], 0)];
        assert_eq!(best(&c, None).map(|c| c.via), Some(2));
        // MEDs from different neighbouring ASes are not compared: a tie, the first.
        let c = [bgp(1, &[65001], 200), bgp(2, &[65000], 100)];
        assert_eq!(best(&c, None).map(|c| c.via), Some(1));
    }

    #[test]
    fn r_vpn_tunnels_a_tie_keeps_the_tunnel_in_use_until_it_goes() {
        let c = [bgp(1, &[65000], 0), bgp(2, &[65000], 0)];
        assert_eq!(best(&c, None).map(|c| c.via), Some(1));
        assert_eq!(best(&c, Some(&2)).map(|c| c.via), Some(2));
        // Tunnel 2 gone: tunnel 1 takes over; back again, tunnel 1 keeps it.
        assert_eq!(best(&c[..1], Some(&2)).map(|c| c.via), Some(1));
        assert_eq!(best(&c, Some(&1)).map(|c| c.via), Some(1));
        // A better path moves traffic whatever is in use.
        let c = [bgp(1, &[65000, 65000], 0), bgp(2, &[65000], 0)];
        assert_eq!(best(&c, Some(&1)).map(|c| c.via), Some(2));
        // Static routes over both tunnels: one of them, kept.
        let c = [fixed(1, Origin::StaticVpn), fixed(2, Origin::StaticVpn)];
        assert_eq!(best(&c, Some(&2)).map(|c| c.via), Some(2));
        assert_eq!(best::<u8>(&[], Some(&2)), None);
    }
}
