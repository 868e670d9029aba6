//! Conversions between the RPC messages ([`crate::msg`]) and the agent's
//! model (`serf_proto::model`): what the server builds its answers from and
//! what the client hands back to its callers.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serf_proto::coordinate::Coordinate;
use serf_proto::model::{self, MemberEventKind, MemberStatus, QueryParams, QueryReply};
use serf_proto::wire::{addr_bytes, bytes_addr};

use crate::msg::{
    Coord, CoordinateResponse, EventRecord, KeyResponse, Member, MembersResponse, QueryEventRecord,
    QueryRecord, QueryRequest, UserEventRecord,
};

impl From<&model::Member> for Member {
    fn from(m: &model::Member) -> Member {
        Member {
            name: m.name.clone(),
            addr: addr_bytes(m.addr),
            port: m.port,
            tags: m.tags.clone(),
            status: m.status.as_str().to_string(),
            protocol_min: m.protocol[0],
            protocol_max: m.protocol[1],
            protocol_cur: m.protocol[2],
            delegate_min: m.delegate[0],
            delegate_max: m.delegate[1],
            delegate_cur: m.delegate[2],
        }
    }
}

impl From<Member> for model::Member {
    /// An address that is not 4 or 16 bytes reads as 0.0.0.0, an unknown
    /// status as `none`.
    fn from(m: Member) -> model::Member {
        model::Member {
            name: m.name,
            addr: bytes_addr(&m.addr).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            port: m.port,
            tags: m.tags,
            status: match m.status.as_str() {
                "alive" => MemberStatus::Alive,
                "leaving" => MemberStatus::Leaving,
                "left" => MemberStatus::Left,
                "failed" => MemberStatus::Failed,
                _ => MemberStatus::None,
            },
            protocol: [m.protocol_min, m.protocol_max, m.protocol_cur],
            delegate: [m.delegate_min, m.delegate_max, m.delegate_cur],
        }
    }
}

impl MembersResponse {
    pub fn new<'a>(members: impl IntoIterator<Item = &'a model::Member>) -> MembersResponse {
        MembersResponse {
            members: members.into_iter().map(Member::from).collect(),
        }
    }

    pub fn into_model(self) -> Vec<model::Member> {
        self.members.into_iter().map(model::Member::from).collect()
    }
}

impl From<&QueryParams> for QueryRequest {
    fn from(p: &QueryParams) -> QueryRequest {
        QueryRequest {
            filter_nodes: p.filter_nodes.clone(),
            filter_tags: p.filter_tags.clone(),
            request_ack: p.request_ack,
            relay_factor: p.relay_factor,
            timeout: p.timeout.as_nanos().min(i64::MAX as u128) as i64,
            name: p.name.clone(),
            payload: p.payload.clone(),
        }
    }
}

impl From<QueryRequest> for QueryParams {
    /// A negative timeout is 0 (Serf's default).
    fn from(q: QueryRequest) -> QueryParams {
        QueryParams {
            name: q.name,
            payload: q.payload,
            filter_nodes: q.filter_nodes,
            filter_tags: q.filter_tags,
            request_ack: q.request_ack,
            relay_factor: q.relay_factor,
            timeout: Duration::from_nanos(q.timeout.max(0) as u64),
        }
    }
}

impl KeyResponse {
    /// `with_keys`: `list-keys` (the others send `Keys` as nil).
    pub fn new(r: &model::KeyResponse, with_keys: bool) -> KeyResponse {
        KeyResponse {
            messages: r.messages.clone(),
            num_nodes: r.num_nodes as u64,
            num_err: r.num_err as u64,
            num_resp: r.num_resp as u64,
            keys: with_keys.then(|| r.keys.iter().map(|(k, n)| (k.clone(), *n as u64)).collect()),
        }
    }
}

impl From<KeyResponse> for model::KeyResponse {
    fn from(r: KeyResponse) -> model::KeyResponse {
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        model::KeyResponse {
            num_nodes: count(r.num_nodes),
            num_resp: count(r.num_resp),
            num_err: count(r.num_err),
            messages: r.messages,
            keys: r
                .keys
                .unwrap_or_default()
                .into_iter()
                .map(|(k, n)| (k, count(n)))
                .collect(),
        }
    }
}

impl From<&Coordinate> for Coord {
    fn from(c: &Coordinate) -> Coord {
        Coord {
            vec: Some(c.vec.clone()),
            error: c.error,
            adjustment: c.adjustment,
            height: c.height,
        }
    }
}

impl From<Coord> for Coordinate {
    fn from(c: Coord) -> Coordinate {
        Coordinate {
            vec: c.vec.unwrap_or_default(),
            error: c.error,
            adjustment: c.adjustment,
            height: c.height,
        }
    }
}

impl CoordinateResponse {
    /// Serf's answer for a node it has no coordinate of: `Ok` false and
    /// Go's zero coordinate (a nil `Vec`).
    pub fn unknown() -> CoordinateResponse {
        CoordinateResponse {
            coord: Some(Coord::default()),
            ok: false,
        }
    }
}

impl From<&model::Event> for EventRecord {
    fn from(e: &model::Event) -> EventRecord {
        match e {
            model::Event::Member { kind, members } => {
                let body = MembersResponse::new(members);
                match kind {
                    MemberEventKind::Join => EventRecord::MemberJoin(body),
                    MemberEventKind::Leave => EventRecord::MemberLeave(body),
                    MemberEventKind::Failed => EventRecord::MemberFailed(body),
                    MemberEventKind::Update => EventRecord::MemberUpdate(body),
                    MemberEventKind::Reap => EventRecord::MemberReap(body),
                }
            }
            model::Event::User {
                ltime,
                name,
                payload,
                coalesce,
            } => EventRecord::User(UserEventRecord {
                ltime: *ltime,
                name: name.clone(),
                payload: payload.clone(),
                coalesce: *coalesce,
            }),
            model::Event::Query(q) => EventRecord::Query(QueryEventRecord {
                id: q.id,
                ltime: q.ltime,
                name: q.name.clone(),
                payload: q.payload.clone(),
            }),
        }
    }
}

impl From<&QueryReply> for QueryRecord {
    fn from(r: &QueryReply) -> QueryRecord {
        let (kind, from, payload) = match r {
            QueryReply::Ack { from } => ("ack", from.clone(), None),
            QueryReply::Response { from, payload } => {
                ("response", from.clone(), Some(payload.clone()))
            }
            QueryReply::Done => ("done", String::new(), None),
        };
        QueryRecord {
            kind: kind.to_string(),
            from,
            payload,
        }
    }
}

impl QueryRecord {
    /// The reply this record carries; `None` for an unknown `Type`.
    pub fn into_reply(self) -> Option<QueryReply> {
        match self.kind.as_str() {
            "ack" => Some(QueryReply::Ack { from: self.from }),
            "response" => Some(QueryReply::Response {
                from: self.from,
                payload: self.payload.unwrap_or_default(),
            }),
            "done" => Some(QueryReply::Done),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_addresses_read_as_ipv4() {
        let mut b = [0u8; 16];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(bytes_addr(&b), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(bytes_addr(&[1, 2, 3]), None);
    }
}
