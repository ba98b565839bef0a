//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Address rewriting (IGW 1:1 NAT, NAT gateway) changes a few 16-bit words of a packet;
//! updating the checksum from the old and new words costs a handful of additions, where a
//! recomputation would read the whole payload.

/// Adds `data` as big-endian 16-bit words into a 32-bit one's-complement accumulator.
#[inline]
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so that very long inputs cannot overflow the accumulator.
        if acc & 0x8000_0000 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// The pseudo-header sum (RFC 793, RFC 768, RFC 8200 §8.1) of a transport segment of
/// `l4_len` bytes and protocol `proto`, the addresses read from the IP header at the start
/// of `packet` (IPv4 without options or IPv6: the caller checked the version).
#[inline]
pub fn pseudo_header(packet: &[u8], proto: u8, l4_len: usize) -> u32 {
    let addrs = if packet[0] >> 4 == 6 {
        &packet[8..40]
    } else {
        &packet[12..20]
    };
    let len = l4_len as u32;
    sum(0, addrs) + u32::from(proto) + (len >> 16) + (len & 0xffff)
}

/// Folds a 32-bit accumulator into 16 bits (not complemented).
#[inline]
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum of `data`: the complement of the folded sum.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// True when an IPv4 header (with its checksum field in place) sums to all ones.
#[inline]
pub fn ipv4_header_ok(header: &[u8]) -> bool {
    fold(sum(0, header)) == 0xffff
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word changed from `old` to `new`.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!check) + u32::from(!old) + u32::from(new);
    !fold(acc)
}

/// The new checksum after a 32-bit value (an IPv4 address) changed.
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let c = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn incremental_update_matches_recomputation() {
        let mut data = [
            0x45u8, 0, 0, 28, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 10, 0, 1, 10, 203, 0, 113, 10,
        ];
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(ipv4_header_ok(&data));
        let old = u32::from_be_bytes([10, 0, 1, 10]);
        let new = u32::from_be_bytes([198, 51, 100, 10]);
        data[12..16].copy_from_slice(&new.to_be_bytes());
        let updated = update32(c, old, new);
        data[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(updated, checksum(&data));
    }
}
