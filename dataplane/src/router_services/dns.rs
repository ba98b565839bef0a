//! The Amazon DNS resolver over UDP (R-ADDR-DNS), with hickory-proto reading and writing
//! the messages: a malformed query gets FORMERR when its id can be read, else nothing.
//! TCP (for answers over 512 bytes) needs the router's TCP stack, which is not built:
//! answers are small here, and a truncated one says so (TC).

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::names::{resolve, Answer, Ask};
use crate::packet::{proto, Packet, Transport};
use crate::snapshot::{EniIx, Snapshot};

/// How long answers may be cached, as Route 53 Resolver answers for VPC names.
const TTL: u32 = 60;
/// The classic UDP limit without EDNS.
const UDP_MAX: usize = 512;

/// Answers a UDP query to port 53 from `eni`, written over `buf`.
pub fn answer_udp(snap: &Snapshot, eni: EniIx, pkt: &Packet, buf: &mut [u8]) -> Option<usize> {
    let Transport::Udp { src_port, dst_port } = pkt.transport else {
        return None;
    };
    if pkt.proto != proto::UDP || dst_port != 53 {
        return None;
    }
    let payload_at = usize::from(pkt.l4_offset) + 8;
    let query = buf.get(payload_at..pkt.len as usize)?;
    let limit = edns_limit(query);
    let response = respond_to(snap, eni, query, limit)?;
    let mut w = &mut buf[..];
    match (pkt.src, pkt.dst) {
        (IpAddr::V4(client), IpAddr::V4(server)) => {
            let b = etherparse::PacketBuilder::ipv4(server.octets(), client.octets(), 64)
                .udp(53, src_port);
            let n = b.size(response.len());
            b.write(&mut w, &response).ok().map(|_| n)
        }
        (IpAddr::V6(client), IpAddr::V6(server)) => {
            let b = etherparse::PacketBuilder::ipv6(server.octets(), client.octets(), 64)
                .udp(53, src_port);
            let n = b.size(response.len());
            b.write(&mut w, &response).ok().map(|_| n)
        }
        _ => None,
    }
}

/// The largest answer the client takes (EDNS), at least 512 bytes.
fn edns_limit(query: &[u8]) -> usize {
    Message::from_vec(query)
        .ok()
        .and_then(|m| m.edns.map(|e| usize::from(e.max_payload())))
        .unwrap_or(UDP_MAX)
        .max(UDP_MAX)
}

/// The response message to `query` asked by ENI `eni`: as [`respond`] from its VPC, with
/// DNS64 where its subnet enables it.
pub fn respond_to(snap: &Snapshot, eni: EniIx, query: &[u8], limit: usize) -> Option<Vec<u8>> {
    let e = snap.eni(eni);
    respond_with(snap, e.vpc, snap.subnet(e.subnet).dns64, query, limit)
}

/// The response message to `query` asked from `vpc`, encoded; `None` when not even the
/// id can be read (too short to be DNS).
pub fn respond(
    snap: &Snapshot,
    vpc: crate::snapshot::VpcIx,
    query: &[u8],
    limit: usize,
) -> Option<Vec<u8>> {
    respond_with(snap, vpc, false, query, limit)
}

/// [`respond`], with DNS64 (RFC 6147) when `dns64`: an AAAA question for a name that has
/// A records and no AAAA ones is answered with their addresses in 64:ff9b::/96, which
/// the NAT gateway translates (NAT64; AWS, "DNS64 and NAT64").
fn respond_with(
    snap: &Snapshot,
    vpc: crate::snapshot::VpcIx,
    dns64: bool,
    query: &[u8],
    limit: usize,
) -> Option<Vec<u8>> {
    let q = match Message::from_vec(query) {
        Ok(q) => q,
        Err(_) => {
            let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
    };
    let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    if q.metadata.message_type != MessageType::Query || q.metadata.op_code != OpCode::Query {
        r.metadata.response_code = ResponseCode::NotImp;
        return r.to_vec().ok();
    }
    let mut code = ResponseCode::NoError;
    for question in &q.queries {
        r.add_query(question.clone());
        let name = question.name().to_ascii().to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        let ask = match question.query_type() {
            RecordType::A => Ask::A,
            RecordType::AAAA => Ask::Aaaa,
            RecordType::PTR => Ask::Ptr,
            _ => Ask::Other,
        };
        let mut answer = resolve(snap, vpc, name, ask);
        if dns64 && ask == Ask::Aaaa && matches!(answer, Answer::NoData) {
            if let Answer::Addresses(v4) = resolve(snap, vpc, name, Ask::A) {
                answer = Answer::Addresses(
                    v4.into_iter()
                        .filter_map(|a| match a {
                            IpAddr::V4(a) => Some(IpAddr::V6(crate::nat64::synthesized(a))),
                            IpAddr::V6(_) => None,
                        })
                        .collect(),
                );
            }
        }
        match answer {
            Answer::Addresses(addrs) => {
                for a in addrs {
                    let data = match a {
                        IpAddr::V4(v4) => RData::A(A(v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                    };
                    r.add_answer(Record::from_rdata(question.name().clone(), TTL, data));
                }
            }
            Answer::Name(target) => {
                if let Ok(n) = Name::from_ascii(format!("{target}.")) {
                    r.add_answer(Record::from_rdata(
                        question.name().clone(),
                        TTL,
                        RData::PTR(PTR(n)),
                    ));
                }
            }
            Answer::NoData => {}
            Answer::NxDomain => code = ResponseCode::NXDomain,
        }
    }
    r.metadata.response_code = code;
    let bytes = r.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    // Too long for UDP: the question with TC set, so the client knows.
    let mut t = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
    t.metadata.truncation = true;
    t.metadata.response_code = code;
    for question in &q.queries {
        t.add_query(question.clone());
    }
    t.to_vec().ok()
}
