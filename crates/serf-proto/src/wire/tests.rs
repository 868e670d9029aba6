//! The wire format's behaviour: serf 0.9.4's captured packets decode,
//! messages round-trip through every envelope, stream framing finds message
//! ends incrementally, limits hold, hostile bytes never panic.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A compound of two alive messages sent by serf 0.9.4 (node sa to sb),
/// captured on loopback: CRC envelope, compound, alive with tag meta.
const GOLDEN_ALIVES: &str = "0cbeb9bee40702005100440486a441646472a47f000001ab496e6361726e6174696f6e01a44d657461b7ff82a4726f6c65a76261636b656e64a47a6f6e65a27a31a44e6f6465a27362a4506f7274cd461ba356736ea60105020205050486a441646472a47f000001ab496e6361726e6174696f6e01a44d657461aaff81a4726f6c65a26c62a44e6f6465a27361a4506f7274cd461aa356736ea6010502020505";

fn golden(name: &str) -> Vec<u8> {
    let s = match name {
        "comp" => include_str!("golden_comp.hex"),
        "event" => include_str!("golden_event.hex"),
        "pp" => include_str!("golden_pp.hex"),
        _ => include_str!("golden_pp_resp.hex"),
    };
    hex(s.trim())
}

#[test]
fn golden_compressed_packet_from_serf() {
    let (msgs, dropped) = decode_packet(&[], &golden("comp")).unwrap();
    assert_eq!(dropped, 0);
    assert!(!msgs.is_empty(), "{msgs:?}");
}

#[test]
fn golden_user_event_from_serf() {
    let (msgs, _) = decode_packet(&[], &golden("event")).unwrap();
    let users: Vec<SerfMessage> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::User(b) => Some(SerfMessage::decode(b).unwrap()),
            _ => None,
        })
        .collect();
    assert!(
        users.iter().any(
            |m| matches!(m, SerfMessage::UserEvent(UserEvent { name, payload, .. })
            if name == "deploy" && payload == b"v1 payload")
        ),
        "{msgs:?}"
    );
}

#[test]
fn golden_push_pull_streams_from_serf() {
    // The responder echoes the initiator's Join flag.
    for (which, want_join) in [("pp", true), ("resp", true)] {
        let b = golden(which);
        let (m, used) = parse_stream(&[], &b).unwrap().unwrap();
        assert_eq!(used, b.len());
        let Message::PushPull(pp) = m else {
            panic!("{m:?}")
        };
        assert_eq!(pp.join, want_join);
        assert!(!pp.nodes.is_empty());
        let SerfMessage::PushPull(s) = SerfMessage::decode(&pp.user_state).unwrap() else {
            panic!()
        };
        assert!(!s.status_ltimes.is_empty());
    }
}

#[test]
fn golden_alive_compound_from_serf() {
    let (msgs, dropped) = decode_packet(&[], &hex(GOLDEN_ALIVES)).unwrap();
    assert_eq!(dropped, 0);
    assert_eq!(msgs.len(), 2);
    let Message::Alive(a) = &msgs[0] else {
        panic!("{msgs:?}")
    };
    assert_eq!(a.node, "sb");
    assert_eq!(a.addr, vec![127, 0, 0, 1]);
    assert_eq!(a.port, 17947);
    assert_eq!(a.vsn, vec![1, 5, 2, 2, 5, 5]);
    assert_eq!(
        decode_tags(&a.meta).unwrap(),
        vec![
            ("role".into(), "backend".into()),
            ("zone".into(), "z1".into())
        ]
    );
    // Our encoder writes the same bytes as go-msgpack for this message.
    let whole = hex(GOLDEN_ALIVES);
    let (parts, _) = split_compound(&whole[6..]).unwrap();
    assert_eq!(Message::Alive(a.clone()).encode(), parts[0]);
}

#[test]
fn compress_round_trip_and_go_compat() {
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let c = compress_msg(&data);
    let (out, used) = decompress_body(&c[1..]).unwrap();
    assert_eq!(out, data);
    assert_eq!(used, c.len() - 1);
}

#[test]
fn crc_mismatch_is_an_error() {
    let mut p = add_crc(&Message::Nack(Nack { seq_no: 3 }).encode());
    let last = p.len() - 1;
    p[last] ^= 1;
    assert_eq!(decode_packet(&[], &p).unwrap_err(), WireError::Crc);
}

#[test]
fn round_trips() {
    let msgs = vec![
        Message::Ping(Ping {
            seq_no: 7,
            node: "a".into(),
            source_addr: vec![127, 0, 0, 1],
            source_port: 7946,
            source_node: "b".into(),
        }),
        Message::IndirectPing(IndirectPing {
            seq_no: 1 << 20,
            target: vec![10, 0, 0, 1],
            port: 1,
            node: "x".into(),
            nack: true,
            ..Default::default()
        }),
        Message::Ack(Ack {
            seq_no: u32::MAX,
            payload: vec![1, 2, 3],
        }),
        Message::Suspect(Accuse {
            incarnation: 9,
            node: "n".into(),
            from: "m".into(),
        }),
        Message::Dead(Accuse {
            incarnation: 300,
            node: "n".into(),
            from: "n".into(),
        }),
        Message::User(vec![3, 4]),
    ];
    let env = Envelope {
        keys: vec![vec![7u8; 16]],
        compress: true,
    };
    let encoded: Vec<Vec<u8>> = msgs.iter().map(|m| m.encode()).collect();
    let pkt = encode_packet(&env, &make_compound(&encoded), true, [5; 12]);
    let (back, dropped) = decode_packet(&env.keys, &pkt).unwrap();
    assert_eq!(dropped, 0);
    assert_eq!(back, msgs);
    // Wrong key: refused.
    assert_eq!(
        decode_packet(&[vec![8u8; 16]], &pkt).unwrap_err(),
        WireError::Decrypt
    );
}

/// The framer finds the same message end as `parse_stream`, fed a
/// byte at a time (each call resuming), for every kind of stream
/// message, plain, compressed and encrypted.
#[test]
fn stream_frame_finds_message_ends_incrementally() {
    let pp = Message::PushPull(PushPull {
        join: false,
        nodes: (0..3)
            .map(|i| PushNodeState {
                name: format!("n{i}"),
                addr: vec![127, 0, 0, 1],
                port: 7946,
                meta: encode_tags(&[("role".into(), "x".into())]),
                incarnation: i,
                state: NodeState::Alive,
                vsn: vec![1, 5, 2, 2, 5, 5],
            })
            .collect(),
        user_state: vec![7; 300],
    });
    let ping = Message::Ping(Ping {
        seq_no: 3,
        node: "x".into(),
        ..Default::default()
    });
    let user = user_stream_msg(&[1, 2, 3, 4]);
    for keys in [vec![], vec![vec![1u8; 16]]] {
        for compress in [false, true] {
            let env = Envelope {
                keys: keys.clone(),
                compress,
            };
            for msg in [pp.encode(), ping.encode(), user.clone()] {
                let mut bytes = encode_stream(&env, &msg, [9; 12]);
                let whole = bytes.len();
                // Trailing bytes are not part of the frame.
                bytes.extend_from_slice(&[0xc1; 8]);
                let mut f = StreamFrame::new(MAX_BODY, !keys.is_empty());
                let mut found = None;
                for cut in 0..=bytes.len() {
                    if let Some(n) = f.advance(&bytes[..cut]).unwrap() {
                        found = Some((cut, n));
                        break;
                    }
                }
                assert_eq!(found, Some((whole, whole)), "compress {compress}");
                let (_, used) = parse_stream(&keys, &bytes[..whole]).unwrap().unwrap();
                assert_eq!(used, whole);
            }
        }
    }
}

/// Every length a frame announces is checked before its bytes come,
/// with an error naming the value; keying mismatches are refused from
/// the first byte.
#[test]
fn stream_frame_refuses_announced_lengths_over_the_limit() {
    let limit = 1024;
    let over = |head: &[u8]| {
        let e = StreamFrame::new(limit, false).advance(head).unwrap_err();
        assert!(matches!(e, WireError::OverLimit { .. }), "{e:?}");
        e.to_string()
    };
    let pp = |nodes: u64, ulen: u64| {
        PushPullHeader {
            join: false,
            nodes,
            user_state_len: ulen,
        }
        .encode()
    };
    assert!(over(&pp(0, 5000)).contains("5000"));
    assert!(over(&pp(5000, 0)).contains("5000"));
    assert!(over(&pp(600, 600)).contains("push-pull"));
    // A user message's header alone, announcing 4096 bytes.
    let mut user = user_stream_msg(&[0; 4096]);
    user.truncate(user.len() - 4096);
    assert!(over(&user).contains("4096"));
    // A msgpack string (header included), and an array announcing more
    // elements than fit.
    assert!(over(&[mtype::PING, 0xdb, 0, 1, 0, 0]).contains("65541"));
    assert!(over(&[mtype::PING, 0xdd, 0, 0, 16, 0]).contains("4096"));
    let mut f = StreamFrame::new(limit, true);
    assert!(
        over_keyed(&mut f, &[mtype::ENCRYPT, 0, 0, 0x10, 0]).contains("4096"),
        "encrypted frame length"
    );
    assert_eq!(
        StreamFrame::new(limit, true).advance(&[mtype::PUSH_PULL]),
        Err(WireError::NotEncrypted)
    );
    assert_eq!(
        StreamFrame::new(limit, false).advance(&[mtype::ENCRYPT]),
        Err(WireError::EncryptedButNoKeys)
    );
    assert_eq!(
        StreamFrame::new(limit, false).advance(&[mtype::COMPOUND]),
        Err(WireError::UnknownType(mtype::COMPOUND))
    );
    assert!(StreamFrame::new(limit, false)
        .advance(&[mtype::PING, 0xc1])
        .is_err());
}

fn over_keyed(f: &mut StreamFrame, head: &[u8]) -> String {
    f.advance(head).unwrap_err().to_string()
}

/// All compress envelopes of one datagram share one output budget:
/// an envelope expanding past it is refused with the limit named.
#[test]
fn a_datagram_decompresses_to_at_most_the_packet_limit() {
    let mut big = vec![mtype::USER];
    big.resize(MAX_PACKET_PLAIN + 1, b'x');
    let e = decode_packet(&[], &compress_msg(&big)).unwrap_err();
    assert!(e.to_string().contains(&MAX_PACKET_PLAIN.to_string()), "{e}");
    // Two halves in a compound: the first fits, the second is dropped.
    let mut half = vec![mtype::USER];
    half.resize(MAX_PACKET_PLAIN / 2 + 1, b'x');
    let c = compress_msg(&half);
    let (msgs, dropped) = decode_packet(&[], &make_compound(&[c.clone(), c])).unwrap();
    assert_eq!((msgs.len(), dropped), (1, 1));
    // A packet within the budget still decodes.
    let (msgs, _) = decode_packet(&[], &compress_msg(&half)).unwrap();
    assert_eq!(msgs, vec![Message::User(half[1..].to_vec())]);
}

#[test]
fn stream_push_pull_round_trip_incremental() {
    let pp = Message::PushPull(PushPull {
        join: true,
        nodes: vec![PushNodeState {
            name: "a".into(),
            addr: vec![127, 0, 0, 1],
            port: 7946,
            meta: encode_tags(&[("role".into(), "x".into())]),
            incarnation: 3,
            state: NodeState::Alive,
            vsn: vec![1, 5, 2, 2, 5, 5],
        }],
        user_state: SerfMessage::PushPull(SerfPushPull {
            ltime: 4,
            status_ltimes: vec![("a".into(), 2)],
            left_members: vec!["z".into()],
            event_ltime: 3,
            events: vec![UserEvents {
                ltime: 2,
                events: vec![UserEventRec {
                    name: "deploy".into(),
                    payload: b"p".to_vec(),
                }],
            }],
            query_ltime: 1,
        })
        .encode(),
    });
    for keys in [vec![], vec![vec![1u8; 32]]] {
        for compress in [false, true] {
            let env = Envelope {
                keys: keys.clone(),
                compress,
            };
            let bytes = encode_stream(&env, &pp.encode(), [9; 12]);
            for cut in 0..bytes.len() {
                assert_eq!(parse_stream(&keys, &bytes[..cut]), Ok(None), "cut {cut}");
            }
            let (m, used) = parse_stream(&keys, &bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(m, pp);
            let Message::PushPull(p) = m else {
                unreachable!()
            };
            let SerfMessage::PushPull(s) = SerfMessage::decode(&p.user_state).unwrap() else {
                panic!()
            };
            assert_eq!(s.events[0].events[0].name, "deploy");
        }
    }
}

#[test]
fn serf_messages_round_trip() {
    let ms = vec![
        SerfMessage::Leave(Leave {
            ltime: 5,
            node: "a".into(),
            prune: false,
        }),
        SerfMessage::Join(Join {
            ltime: 1 << 40,
            node: "b".into(),
        }),
        SerfMessage::UserEvent(UserEvent {
            ltime: 2,
            name: "deploy".into(),
            payload: b"v1".to_vec(),
            cc: true,
        }),
        SerfMessage::Query(Query {
            ltime: 3,
            id: 99,
            addr: vec![127, 0, 0, 1],
            port: 7946,
            source_node: "a".into(),
            filters: vec![vec![0, 1]],
            flags: QUERY_FLAG_ACK,
            relay_factor: 0,
            timeout: 5_000_000_000,
            name: "q".into(),
            payload: vec![],
        }),
        SerfMessage::QueryResponse(QueryResponse {
            ltime: 3,
            id: 99,
            from: "b".into(),
            flags: 0,
            payload: b"ok".to_vec(),
        }),
    ];
    for m in ms {
        assert_eq!(SerfMessage::decode(&m.encode()).unwrap(), m);
    }
}

#[test]
fn hostile_inputs_do_not_panic() {
    let mut seed = 0x1234_5678_9abc_def0u64;
    let golden = hex(GOLDEN_ALIVES);
    for i in 0..20000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut b = if i % 2 == 0 {
            golden.clone()
        } else {
            (0..(seed % 64) as usize)
                .map(|j| (seed >> (j % 8)) as u8)
                .collect()
        };
        if !b.is_empty() {
            let idx = (seed as usize / 3) % b.len();
            b[idx] = (seed >> 11) as u8;
            b.truncate((seed as usize / 7) % (b.len() + 1));
        }
        let _ = decode_packet(&[], &b);
        let _ = parse_stream(&[], &b);
        let _ = SerfMessage::decode(&b);
        let _ = decode_tags(&b);
    }
}

#[test]
fn conflict_responses_round_trip_and_reject_garbage() {
    let m = crate::model::Member {
        name: "s1".into(),
        addr: "192.168.42.11".parse().unwrap(),
        port: 7946,
        tags: vec![("role".into(), "backend".into())],
        status: crate::model::MemberStatus::Alive,
        protocol: [1, 5, 2],
        delegate: [2, 5, 4],
    };
    let b = encode_conflict_response(Some(&m));
    assert_eq!(b[0], stype::CONFLICT_RESPONSE);
    assert_eq!(
        decode_conflict_response(&b).unwrap(),
        Some((m.addr, m.port))
    );
    assert_eq!(
        decode_conflict_response(&encode_conflict_response(None)).unwrap(),
        None
    );
    assert!(decode_conflict_response(&[]).is_err());
    assert!(decode_conflict_response(&[5, 0xc0]).is_err());
    assert!(decode_conflict_response(&[6, 0x81, 0xa4, b'A', b'd', b'd', b'r', 0xa1, 1]).is_err());
}
