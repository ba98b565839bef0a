//! Parsers for the lab file's value types: ids, addresses, prefixes, ports, protocols.
//! Each returns what is wrong and how to fix it, in words a person acts on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ip_network::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::yaml::Parsed;

fn err<T>(message: impl Into<String>, fix: impl Into<String>) -> Parsed<T> {
    Err((message.into(), fix.into()))
}

/// `[a-z0-9][a-z0-9-]{0,30}` (config.md: ids).
pub fn id(s: &str) -> Parsed<String> {
    let ok = !s.is_empty()
        && s.len() <= 31
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        err(
            format!("`{s}` is not a valid id"),
            "use 1 to 31 characters of a-z, 0-9 and '-', starting with a letter or digit",
        )
    }
}

pub fn text(s: &str) -> Parsed<String> {
    Ok(s.to_string())
}

/// A security group's or rule's description: AWS takes up to 255 characters.
pub fn description(s: &str) -> Parsed<String> {
    let n = s.chars().count();
    if n > 255 {
        return err(
            format!("the description has {n} characters; AWS allows at most 255"),
            "shorten it to 255 characters",
        );
    }
    Ok(s.to_string())
}

pub fn boolean(s: &str) -> Parsed<bool> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => err(
            format!("`{s}` is not true or false"),
            "write `true` or `false`",
        ),
    }
}

pub fn uint(s: &str) -> Parsed<u64> {
    s.parse().or_else(|_| {
        err(
            format!("`{s}` is not a whole number"),
            "write a number such as 60",
        )
    })
}

pub fn ipv4(s: &str) -> Parsed<Ipv4Addr> {
    Ipv4Addr::from_str(s).or_else(|_| {
        err(
            format!("`{s}` is not an IPv4 address"),
            "write it as 10.0.1.10",
        )
    })
}

pub fn ipv6(s: &str) -> Parsed<Ipv6Addr> {
    Ipv6Addr::from_str(s).or_else(|_| {
        err(
            format!("`{s}` is not an IPv6 address"),
            "write it as 2001:db8:10:1::10",
        )
    })
}

pub fn cidr4(s: &str) -> Parsed<Ipv4Network> {
    match net(s)? {
        IpNetwork::V4(n) => Ok(n),
        IpNetwork::V6(_) => err(
            format!("`{s}` is an IPv6 prefix where an IPv4 one is needed"),
            "write an IPv4 CIDR such as 10.0.0.0/16",
        ),
    }
}

pub fn cidr6(s: &str) -> Parsed<Ipv6Network> {
    match net(s)? {
        IpNetwork::V6(n) => Ok(n),
        IpNetwork::V4(_) => err(
            format!("`{s}` is an IPv4 prefix where an IPv6 one is needed"),
            "write an IPv6 CIDR such as 2001:db8:10::/56",
        ),
    }
}

/// An IPv4 or IPv6 prefix; host bits must be zero, and the error says which prefix was meant.
pub fn net(s: &str) -> Parsed<IpNetwork> {
    let Some((addr, len)) = s.split_once('/') else {
        return err(
            format!("`{s}` is not a CIDR block"),
            format!("add the prefix length, e.g. `{s}/32`"),
        );
    };
    let Ok(addr) = IpAddr::from_str(addr) else {
        return err(
            format!("`{s}` does not start with an IP address"),
            "write a CIDR such as 10.0.0.0/16 or 2001:db8::/56",
        );
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let Some(len) = len.parse::<u8>().ok().filter(|l| *l <= max) else {
        return err(
            format!("`{s}` has a bad prefix length"),
            format!("use a length from 0 to {max}"),
        );
    };
    match IpNetwork::new(addr, len) {
        Ok(n) => Ok(n),
        Err(_) => {
            let truncated = IpNetwork::new_truncate(addr, len)
                .map(|n| n.to_string())
                .unwrap_or_default();
            err(
                format!("`{s}` has host bits set"),
                format!("did you mean `{truncated}`?"),
            )
        }
    }
}

/// A port or an inclusive range: `443`, `1024-65535`.
pub fn port_range(s: &str) -> Parsed<(u16, u16)> {
    let bad = || {
        err(
            format!("`{s}` is not a port or port range"),
            "write a port such as 443 or a range such as 1024-65535",
        )
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s, s),
    };
    let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) else {
        return bad();
    };
    if a > b {
        return err(
            format!("the range `{s}` is backwards"),
            format!("write it as {b}-{a}"),
        );
    }
    Ok((a, b))
}

/// A protocol as config.md spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    All,
    Number(u8),
}

impl Protocol {
    pub const TCP: Protocol = Protocol::Number(6);
    pub const UDP: Protocol = Protocol::Number(17);
    pub const ICMP: Protocol = Protocol::Number(1);
    pub const ICMPV6: Protocol = Protocol::Number(58);

    /// True for TCP and UDP, the protocols that have ports.
    pub fn has_ports(self) -> bool {
        self == Protocol::TCP || self == Protocol::UDP
    }

    pub fn is_icmp(self) -> bool {
        self == Protocol::ICMP || self == Protocol::ICMPV6
    }
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, `all` (or AWS's `-1`), or a protocol number.
pub fn protocol(s: &str) -> Parsed<Protocol> {
    match s.to_ascii_lowercase().as_str() {
        "all" | "-1" => Ok(Protocol::All),
        "tcp" => Ok(Protocol::TCP),
        "udp" => Ok(Protocol::UDP),
        "icmp" => Ok(Protocol::ICMP),
        "icmpv6" => Ok(Protocol::ICMPV6),
        n => match n.parse::<u8>() {
            Ok(n) => Ok(Protocol::Number(n)),
            Err(_) => err(
                format!("`{s}` is not a protocol"),
                "use tcp, udp, icmp, icmpv6, all, or a protocol number from 0 to 255",
            ),
        },
    }
}

/// An ICMP type or code: -1 (any) or 0 to 255.
pub fn icmp_value(s: &str) -> Parsed<Option<u8>> {
    match s.parse::<i16>() {
        Ok(-1) => Ok(None),
        Ok(v @ 0..=255) => Ok(Some(v as u8)),
        _ => err(
            format!("`{s}` is not an ICMP type or code"),
            "use -1 (any) or a number from 0 to 255",
        ),
    }
}

/// A choice among fixed words.
pub fn one_of<'a>(choices: &'a [&'a str]) -> impl Fn(&str) -> Parsed<String> + 'a {
    move |s: &str| {
        if choices.contains(&s) {
            Ok(s.to_string())
        } else {
            let fix = match crate::diag::closest(s, choices) {
                Some(c) => format!("did you mean `{c}`? (one of: {})", choices.join(", ")),
                None => format!("use one of: {}", choices.join(", ")),
            };
            err(format!("`{s}` is not allowed here"), fix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_with_host_bits_suggest_the_network() {
        let e = net("10.0.1.5/24").unwrap_err();
        assert!(e.1.contains("10.0.1.0/24"), "{e:?}");
        assert!(net("10.0.1.0/24").is_ok());
        assert!(net("2001:db8:10::/56").is_ok());
        assert!(net("10.0.1.0").is_err());
        assert!(net("10.0.1.0/33").is_err());
    }

    #[test]
    fn ports_and_protocols() {
        assert_eq!(port_range("443"), Ok((443, 443)));
        assert_eq!(port_range("1024-65535"), Ok((1024, 65535)));
        assert!(port_range("70000").is_err());
        assert!(port_range("90-80").is_err());
        assert_eq!(protocol("TCP"), Ok(Protocol::TCP));
        assert_eq!(protocol("-1"), Ok(Protocol::All));
        assert_eq!(protocol("50"), Ok(Protocol::Number(50)));
        assert!(protocol("tcpp").is_err());
        assert_eq!(icmp_value("-1"), Ok(None));
    }

    #[test]
    fn ids() {
        assert!(id("vpc-lab").is_ok());
        assert!(id("Vpc").is_err());
        assert!(id("-x").is_err());
        assert!(id(&"a".repeat(32)).is_err());
    }
}
