//! Byte-for-byte goldens of every message and envelope this crate writes:
//! the bytes the hand-written encoders emitted at commit b8cdd01, before
//! the messages were typed (`golden_b8cdd01.txt`). Each is encoded again
//! from the same value and must match, and decodes back to that value.

use super::*;
use crate::model::{Member, MemberStatus};

fn golden(name: &str) -> Vec<u8> {
    let line = include_str!("golden_b8cdd01.txt")
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no golden {name}"));
    let hex = line.split(' ').nth(1).expect("name hex");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Deterministic bytes of every value (non-UTF-8 included).
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn text() -> Vec<u8> {
    b"the quick brown fox jumps over the lazy dog; ".repeat(8)
}

/// Encodes like the golden, and the golden decodes to the message.
fn check(name: &str, m: Message) {
    assert_eq!(m.encode(), golden(name), "{name}: encoding");
    assert_eq!(Message::decode(&golden(name)), Ok(m), "{name}: decoding");
}

fn check_serf(name: &str, m: SerfMessage) {
    assert_eq!(m.encode(), golden(name), "{name}: encoding");
    assert_eq!(
        SerfMessage::decode(&golden(name)),
        Ok(m),
        "{name}: decoding"
    );
}

fn nodes() -> Vec<PushNodeState> {
    let node = |name: &str, addr: [u8; 4], port| PushNodeState {
        name: name.into(),
        addr: addr.to_vec(),
        port,
        ..Default::default()
    };
    vec![
        PushNodeState {
            meta: encode_tags(&[("role".into(), "x".into())]),
            incarnation: 3,
            state: NodeState::Alive,
            vsn: vec![1, 5, 2, 2, 5, 5],
            ..node("a", [127, 0, 0, 1], 7946)
        },
        PushNodeState {
            incarnation: 1 << 31,
            state: NodeState::Left,
            vsn: vec![1, 5, 2, 2, 5, 4],
            ..node("b", [10, 1, 2, 3], 7947)
        },
        PushNodeState {
            meta: b"web".to_vec(),
            state: NodeState::Suspect,
            vsn: vec![0; 6],
            ..node("c", [10, 1, 2, 4], 7948)
        },
        PushNodeState {
            incarnation: 9,
            state: NodeState::Dead,
            vsn: vec![1, 5, 2, 2, 5, 5],
            ..node("d", [10, 1, 2, 5], 7949)
        },
    ]
}

#[test]
fn memberlist_messages_are_written_as_before() {
    let ping = Ping {
        seq_no: 7,
        node: "node-a".into(),
        source_addr: vec![192, 168, 1, 2],
        source_port: 7946,
        source_node: "node-b".into(),
    };
    check("ping_full", Message::Ping(ping));
    check("ping_min", Message::Ping(Ping::default()));
    let mut v6 = vec![0xfe, 0x80];
    v6.extend_from_slice(&[0; 13]);
    v6.push(1);
    let indirect = IndirectPing {
        seq_no: 1 << 20,
        target: vec![10, 0, 0, 1],
        port: 7946,
        node: "x".into(),
        nack: true,
        source_addr: v6,
        source_port: 65535,
        source_node: "src".into(),
    };
    check("indirect_full", Message::IndirectPing(indirect));
    let indirect = IndirectPing {
        seq_no: 3,
        ..Default::default()
    };
    check("indirect_min", Message::IndirectPing(indirect));
    let ack = Ack {
        seq_no: u32::MAX,
        payload: bytes(40, 200),
    };
    check("ack", Message::Ack(ack));
    let ack = Ack {
        seq_no: 128,
        payload: vec![],
    };
    check("ack_empty", Message::Ack(ack));
    check("nack", Message::Nack(Nack { seq_no: 300 }));
    let accuse = |incarnation, node: &str, from: &str| Accuse {
        incarnation,
        node: node.into(),
        from: from.into(),
    };
    check("suspect", Message::Suspect(accuse(70000, "n1", "n2")));
    check("dead", Message::Dead(accuse(0, "n1", "n1")));
    let alive = Alive {
        incarnation: 5,
        node: "sb".into(),
        addr: vec![172, 20, 0, 3],
        port: 17947,
        meta: encode_tags(&[
            ("role".into(), "backend".into()),
            ("zone".into(), "z1".into()),
        ]),
        vsn: vec![1, 5, 2, 2, 5, 5],
    };
    check("alive", Message::Alive(alive));
    // A raw of 300 bytes (str16) and a name of 40 (str8).
    let alive = Alive {
        incarnation: 1,
        node: "m".repeat(40),
        addr: vec![127, 0, 0, 1],
        port: 1,
        meta: bytes(300, 255),
        vsn: vec![],
    };
    check("alive_big_meta", Message::Alive(alive));
    check("user", Message::User(vec![3, 0x84, 1, 2]));
    check("err", Message::Err("remote error: something broke".into()));
    let pp = PushPull {
        join: true,
        nodes: nodes(),
        user_state: vec![2, 0x80, 0xff],
    };
    check("push_pull", Message::PushPull(pp));
    let pp = PushPull {
        join: false,
        nodes: vec![],
        user_state: vec![],
    };
    check("push_pull_empty", Message::PushPull(pp));
}

#[test]
fn envelopes_are_written_as_before() {
    let parts = vec![
        Message::Nack(Nack { seq_no: 1 }).encode(),
        Message::User(vec![9; 3]).encode(),
    ];
    let want = vec![Message::Nack(Nack { seq_no: 1 }), Message::User(vec![9; 3])];
    let compound = make_compound(&parts);
    assert_eq!(compound, golden("compound"));
    assert_eq!(decode_packet(&[], &compound), Ok((want.clone(), 0)));

    assert_eq!(compress_msg(&text()), golden("compress"));
    let c = golden("compress");
    assert_eq!(decompress_body(&c[1..]), Ok((text(), c.len() - 1)));
    assert_eq!(lzw_compress(&text()), golden("lzw"));
    assert_eq!(lzw_decompress(&golden("lzw")), Ok(text()));

    let nack2 = Message::Nack(Nack { seq_no: 2 });
    assert_eq!(add_crc(&nack2.encode()), golden("crc"));
    assert_eq!(decode_packet(&[], &golden("crc")), Ok((vec![nack2], 0)));

    // Name, key, nonce, plaintext, additional data.
    type Case<'a> = (&'a str, Vec<u8>, [u8; 12], &'a [u8], &'a [u8]);
    let cases: [Case; 3] = [
        ("encrypt128", vec![7; 16], [5; 12], b"hello memberlist", b""),
        ("encrypt192_aad", vec![8; 24], [6; 12], b"hello", b"aad"),
        ("encrypt256", vec![9; 32], [1; 12], &[4; 100], b""),
    ];
    for (name, key, nonce, plain, aad) in cases {
        assert_eq!(encrypt_payload(&key, nonce, plain, aad), Some(golden(name)));
        let keys = [vec![0; 16], key];
        assert_eq!(
            decrypt_payload(&keys, &golden(name), aad),
            Ok(plain.to_vec())
        );
    }

    let keyed = Envelope {
        keys: vec![vec![7; 16]],
        compress: true,
    };
    let plain = Envelope::default();
    let pkt = encode_packet(&keyed, &compound, true, [3; 12]);
    assert_eq!(pkt, golden("packet_all"));
    assert_eq!(decode_packet(&keyed.keys, &pkt), Ok((want, 0)));
    assert_eq!(
        encode_packet(&plain, &parts[0], false, [3; 12]),
        golden("packet_plain")
    );
    assert_eq!(
        encode_packet(&plain, &parts[0], true, [3; 12]),
        golden("packet_crc")
    );

    // Labels: none is written; an empty one is dropped, any other refused.
    let mut labelled = vec![mtype::HAS_LABEL, 0];
    labelled.extend_from_slice(&parts[0]);
    assert_eq!(strip_label(&labelled), Ok((&[][..], &parts[0][..])));
    assert_eq!(decode_packet(&[], &labelled).map(|(m, _)| m.len()), Ok(1));
    let mut named = vec![mtype::HAS_LABEL, 3, b'l', b'a', b'b'];
    named.extend_from_slice(&parts[0]);
    assert_eq!(strip_label(&named), Ok((&b"lab"[..], &parts[0][..])));
    assert_eq!(decode_packet(&[], &named), Err(WireError::Field("label")));
    assert_eq!(strip_label(&named[..4]), Err(WireError::Truncated));
}

#[test]
fn streams_are_written_as_before() {
    let nack = Message::Nack(Nack { seq_no: 1 }).encode();
    let compressed = Envelope {
        keys: vec![],
        compress: true,
    };
    let keyed = Envelope {
        keys: vec![vec![1; 32]],
        compress: false,
    };
    let both = Envelope {
        keys: vec![vec![7; 16]],
        compress: true,
    };
    let cases = [
        ("stream_plain", Envelope::default(), nack.clone(), [3; 12]),
        ("stream_compress", compressed, text(), [3; 12]),
        ("stream_keyed", keyed, nack, [4; 12]),
        ("stream_all", both, text(), [4; 12]),
    ];
    for (name, env, msg, nonce) in cases {
        assert_eq!(encode_stream(&env, &msg, nonce), golden(name), "{name}");
    }
    // What streams carry decodes back.
    let user = user_stream_msg(&[1, 2, 3, 4]);
    assert_eq!(user, golden("user_stream"));
    let n = user.len();
    assert_eq!(
        parse_stream(&[], &user),
        Ok(Some((Message::User(vec![1, 2, 3, 4]), n)))
    );
    let pp = golden("push_pull");
    let (m, used) = parse_stream(&[], &pp).unwrap().unwrap();
    assert_eq!(used, pp.len());
    assert_eq!(m, Message::decode(&pp).unwrap());
    let err = golden("err");
    let want = Message::Err("remote error: something broke".into());
    assert_eq!(parse_stream(&[], &err), Ok(Some((want, err.len()))));
}

#[test]
fn serf_messages_are_written_as_before() {
    let leave = |ltime, node: &str, prune| {
        SerfMessage::Leave(Leave {
            ltime,
            node: node.into(),
            prune,
        })
    };
    check_serf("s_leave", leave(5, "a", true));
    check_serf("s_leave_noprune", leave(0, "", false));
    let join = |ltime, node: &str| {
        SerfMessage::Join(Join {
            ltime,
            node: node.into(),
        })
    };
    check_serf("s_join", join(1 << 40, "b"));
    let event = UserEvent {
        ltime: 2,
        name: "deploy".into(),
        payload: b"v1 payload".to_vec(),
        cc: true,
    };
    check_serf("s_user_event", SerfMessage::UserEvent(event));
    // A payload of 70,000 bytes (str32), checked by its head and length.
    let event = SerfMessage::UserEvent(UserEvent {
        ltime: 70000,
        name: "e".into(),
        payload: bytes(70000, 1),
        cc: false,
    });
    let b = event.encode();
    let head = "0384a24343c2a54c54696d65ce00011170a44e616d65a165a75061796c6f6164db00011170";
    let hex: String = b[..head.len() / 2]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    assert_eq!((hex.as_str(), b.len()), (head, 70037));
    assert_eq!(SerfMessage::decode(&b), Ok(event));

    let nodes = QueryFilter::Nodes(vec!["node-a".into(), "node-b".into()]);
    let tag = QueryFilter::Tag {
        tag: "role".into(),
        expr: "^web$".into(),
    };
    for (name, f) in [("filter_nodes", &nodes), ("filter_tag", &tag)] {
        assert_eq!(f.encode(), golden(name), "{name}");
        assert_eq!(QueryFilter::decode(&golden(name)).as_ref(), Ok(f), "{name}");
    }
    let query = Query {
        ltime: 3,
        id: 99,
        addr: vec![127, 0, 0, 1],
        port: 7946,
        source_node: "a".into(),
        filters: vec![nodes.encode(), tag.encode()],
        flags: QUERY_FLAG_ACK | QUERY_FLAG_NO_BROADCAST,
        relay_factor: 2,
        timeout: 5_000_000_000,
        name: "q".into(),
        payload: vec![],
    };
    check_serf("s_query", SerfMessage::Query(query));
    // No filters (nil), a negative timeout, a raw of 33 bytes (str8).
    let query = Query {
        ltime: 300,
        timeout: -1,
        name: "_serf_ping".into(),
        payload: bytes(33, 0),
        ..Default::default()
    };
    check_serf("s_query_nofilter", SerfMessage::Query(query));
    let resp = QueryResponse {
        ltime: 3,
        id: 99,
        from: "b".into(),
        flags: QUERY_FLAG_ACK,
        payload: b"ok".to_vec(),
    };
    check_serf("s_query_response", SerfMessage::QueryResponse(resp));
    let rec = |name: &str, payload: &[u8]| UserEventRec {
        name: name.into(),
        payload: payload.to_vec(),
    };
    let pp = SerfPushPull {
        ltime: 4,
        status_ltimes: vec![("b".into(), 2), ("a".into(), 300)],
        left_members: vec!["z".into(), "y".into()],
        event_ltime: 3,
        events: vec![
            UserEvents {
                ltime: 2,
                events: vec![rec("deploy", b"p"), rec("x", b"")],
            },
            UserEvents {
                ltime: 3,
                events: vec![],
            },
        ],
        query_ltime: 1,
    };
    check_serf("s_push_pull", SerfMessage::PushPull(pp));
    check_serf(
        "s_push_pull_empty",
        SerfMessage::PushPull(SerfPushPull::default()),
    );
    let relay = Relay {
        dest_addr: vec![10, 0, 0, 9],
        dest_port: 7946,
        dest_name: "far".into(),
        inner: join(1, "b").encode(),
    };
    check_serf("s_relay", SerfMessage::Relay(relay));
    check_serf("s_other", SerfMessage::Other(stype::KEY_REQUEST));
}

#[test]
fn serf_payloads_are_written_as_before() {
    let tags: Vec<(String, String)> = vec![
        ("role".into(), "backend".into()),
        ("zone".into(), "z1".into()),
        ("long".into(), "v".repeat(40)),
    ];
    assert_eq!(encode_tags(&tags), golden("tags"));
    assert_eq!(decode_tags(&golden("tags")), Ok(tags));
    assert_eq!(encode_tags(&[]), golden("tags_empty"));
    assert_eq!(decode_tags(&golden("tags_empty")), Ok(vec![]));

    let m = Member {
        name: "s1".into(),
        addr: "192.168.42.11".parse().unwrap(),
        port: 7946,
        tags: vec![("role".into(), "backend".into())],
        status: MemberStatus::Alive,
        protocol: [1, 5, 2],
        delegate: [2, 5, 4],
    };
    let m6 = Member {
        name: "s2".into(),
        addr: "fd00::5".parse().unwrap(),
        port: 1,
        tags: vec![],
        status: MemberStatus::Failed,
        protocol: [0, 0, 0],
        delegate: [0, 0, 0],
    };
    for (name, m) in [("conflict", Some(&m)), ("conflict_v6", Some(&m6))] {
        assert_eq!(encode_conflict_response(m), golden(name), "{name}");
        let m = m.unwrap();
        let back = decode_conflict_response(&golden(name));
        assert_eq!(back, Ok(Some((m.addr, m.port))), "{name}");
    }
    assert_eq!(encode_conflict_response(None), golden("conflict_none"));
    assert_eq!(decode_conflict_response(&golden("conflict_none")), Ok(None));

    let key = [0x11u8; 16];
    let key32: Vec<u8> = (0..32).collect();
    assert_eq!(encode_key_request(&key), golden("key_request"));
    assert_eq!(encode_key_request(&key32), golden("key_request_32"));
    assert_eq!(
        decode_key_request(&golden("key_request")),
        Some(key.to_vec())
    );
    assert_eq!(decode_key_request(&golden("key_request_32")), Some(key32));
    let listed = KeyResponse {
        result: true,
        message: String::new(),
        keys: vec!["a2V5MQ==".into(), "a2V5Mg==".into()],
        primary_key: "a2V5MQ==".into(),
    };
    let failed = KeyResponse {
        result: false,
        message: "no such key".into(),
        keys: vec![],
        primary_key: String::new(),
    };
    for (name, r) in [("key_response", listed), ("key_response_err", failed)] {
        assert_eq!(r.encode(), golden(name), "{name}");
        assert_eq!(decode_key_response(&golden(name)), Some(r), "{name}");
    }
}
