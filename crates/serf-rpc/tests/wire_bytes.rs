//! Byte-level guard of the typed RPC messages: each one, encoded, is
//! byte for byte what the hand-written encoder of commit b8cdd01 wrote
//! (the golden strings were captured from that code with these same
//! values), and those bytes decode back to the same message. Then the
//! lenient reading: strings as bin, any integer width, missing fields,
//! unknown keys, values of the wrong kind.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serf_proto::coordinate::Coordinate;
use serf_proto::model::{
    Event, IncomingQuery, KeyResponse, Member, MemberEventKind, MemberStatus, QueryParams,
    QueryReply,
};
use serf_rpc::codec;
use serf_rpc::msg::{self, EventRecord};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Encodes to exactly `golden`, and `golden` decodes back to `value`.
fn check<T>(name: &str, golden: &str, value: &T)
where
    T: Serialize + DeserializeOwned + Default + PartialEq + Debug,
{
    let want = unhex(golden);
    assert_eq!(codec::to_vec(value), want, "{name}: encoding differs");
    assert_eq!(
        &codec::decode::<T>(&want).unwrap(),
        value,
        "{name}: decoding"
    );
}

fn check_record(name: &str, golden: &str, rec: &EventRecord) {
    let want = unhex(golden);
    assert_eq!(codec::to_vec(rec), want, "{name}: encoding differs");
    assert_eq!(
        &EventRecord::decode(&want).unwrap(),
        rec,
        "{name}: decoding"
    );
}

fn members() -> Vec<Member> {
    vec![
        Member {
            name: "web1".into(),
            addr: "10.0.0.2".parse().unwrap(),
            port: 7946,
            tags: vec![("role".into(), "web".into()), ("zone".into(), "z1".into())],
            status: MemberStatus::Alive,
            protocol: [1, 5, 2],
            delegate: [2, 5, 4],
        },
        Member {
            name: "db".into(),
            addr: "2001:db8::7".parse().unwrap(),
            port: 65000,
            tags: vec![],
            status: MemberStatus::Failed,
            protocol: [1, 5, 5],
            delegate: [2, 5, 5],
        },
    ]
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn headers_match_the_old_bytes() {
    let req = |command: &str, seq| msg::RequestHeader {
        command: s(command),
        seq,
    };
    check(
        "header_req_small",
        "82a7436f6d6d616e64a968616e647368616b65a353657101",
        &req("handshake", 1),
    );
    check(
        "header_req_big",
        "82a7436f6d6d616e64b06d656d626572732d66696c7465726564a3536571ce00011170",
        &req("members-filtered", 70000),
    );
    let resp = |seq, error: &str| msg::ResponseHeader {
        seq,
        error: s(error),
    };
    check("header_resp_ok", "82a353657107a54572726f72a0", &resp(7, ""));
    check(
        "header_resp_err",
        concat!(
            "82a3536571cd012ca54572726f72bc496e76616c69642061757468656e7469636174696f6e20746f",
            "6b656e",
        ),
        &resp(300, "Invalid authentication token"),
    );
}

#[test]
fn requests_match_the_old_bytes() {
    check(
        "handshake",
        "81a756657273696f6e01",
        &msg::HandshakeRequest { version: 1 },
    );
    check(
        "auth",
        "81a7417574684b6579a6733363726574",
        &msg::AuthRequest {
            auth_key: s("s3cret"),
        },
    );
    check(
        "event",
        "83a44e616d65a66465706c6f79a75061796c6f6164c40676312e3200ffa8436f616c65736365c3",
        &msg::EventRequest {
            name: s("deploy"),
            payload: b"v1.2\x00\xff".to_vec(),
            coalesce: true,
        },
    );
    check(
        "force_leave",
        "82a44e6f6465a477656231a55072756e65c2",
        &msg::ForceLeaveRequest {
            node: s("web1"),
            prune: false,
        },
    );
    check(
        "join",
        "82a84578697374696e6792ad31302e302e302e313a37393436a26832a65265706c6179c3",
        &msg::JoinRequest {
            existing: vec![s("10.0.0.1:7946"), s("h2")],
            replay: true,
        },
    );
    check(
        "members_filtered",
        concat!(
            "83a45461677382a4726f6c65a57765622e2aa26463a27a31a6537461747573a5616c697665a44e61",
            "6d65a0",
        ),
        &msg::MembersFilteredRequest {
            tags: vec![(s("role"), s("web.*")), (s("dc"), s("z1"))],
            status: s("alive"),
            name: s(""),
        },
    );
    check(
        "tags",
        "82a45461677381a4726f6c65a26c62aa44656c6574655461677391a36f6c64",
        &msg::TagsRequest {
            tags: vec![(s("role"), s("lb"))],
            delete_tags: vec![s("old")],
        },
    );
    check(
        "stream",
        "81a454797065b76d656d6265722d6a6f696e2c757365723a6465706c6f79",
        &msg::StreamRequest {
            filter: s("member-join,user:deploy"),
        },
    );
    check(
        "monitor",
        "81a84c6f674c6576656ca54445425547",
        &msg::MonitorRequest {
            log_level: s("DEBUG"),
        },
    );
    check("stop", "81a453746f7003", &msg::StopRequest { stop: 3 });
    let params = QueryParams {
        name: s("ping"),
        payload: b"hi".to_vec(),
        filter_nodes: vec![s("a"), s("b")],
        filter_tags: [(s("role"), s("web")), (s("dc"), s("z1"))].into(),
        request_ack: true,
        relay_factor: 2,
        timeout: Duration::from_millis(1500),
    };
    let query = msg::QueryRequest::from(&params);
    check(
        "query",
        concat!(
            "87ab46696c7465724e6f64657392a161a162aa46696c7465725461677382a26463a27a31a4726f6c",
            "65a3776562aa5265717565737441636bc3ab52656c6179466163746f7202a754696d656f7574ce59",
            "682f00a44e616d65a470696e67a75061796c6f6164c4026869",
        ),
        &query,
    );
    let back = QueryParams::from(query);
    assert_eq!(
        (back.name, back.payload, back.filter_nodes, back.filter_tags),
        (
            params.name,
            params.payload,
            params.filter_nodes,
            params.filter_tags
        )
    );
    assert_eq!(
        (back.request_ack, back.relay_factor, back.timeout),
        (params.request_ack, params.relay_factor, params.timeout)
    );
    check(
        "query_empty",
        concat!(
            "87ab46696c7465724e6f64657390aa46696c7465725461677380aa5265717565737441636bc2ab52",
            "656c6179466163746f7200a754696d656f757400a44e616d65a0a75061796c6f6164c400",
        ),
        &msg::QueryRequest::default(),
    );
    check(
        "respond",
        "82a24944cf00000002dfdc1c35a75061796c6f6164c404706f6e67",
        &msg::RespondRequest {
            id: 12345678901,
            payload: b"pong".to_vec(),
        },
    );
    check(
        "key",
        concat!(
            "81a34b6579d92c54396a6e63676c396d624c75732b62615454613771376e50535572587762446932",
            "646862747169723337733d",
        ),
        &msg::KeyRequest {
            key: s("T9jncgl9mbLus+baTTa7q7nPSUrXwbDi2dhbtqir37s="),
        },
    );
    check(
        "get_coordinate",
        "81a44e6f6465a477656231",
        &msg::CoordinateRequest { node: s("web1") },
    );
}

#[test]
fn responses_match_the_old_bytes() {
    check("join_resp", "81a34e756d02", &msg::JoinResponse { num: 2 });
    let m = members();
    let body = msg::MembersResponse::new(&m);
    check(
        "members_resp",
        concat!(
            "81a74d656d62657273928ba44e616d65a477656231a441646472c4040a000002a4506f7274cd1f0a",
            "a45461677382a4726f6c65a3776562a47a6f6e65a27a31a6537461747573a5616c697665ab50726f",
            "746f636f6c4d696e01ab50726f746f636f6c4d617805ab50726f746f636f6c43757202ab44656c65",
            "676174654d696e02ab44656c65676174654d617805ab44656c6567617465437572048ba44e616d65",
            "a26462a441646472c41020010db8000000000000000000000007a4506f7274cdfde8a45461677380",
            "a6537461747573a66661696c6564ab50726f746f636f6c4d696e01ab50726f746f636f6c4d617805",
            "ab50726f746f636f6c43757205ab44656c65676174654d696e02ab44656c65676174654d617805ab",
            "44656c656761746543757205",
        ),
        &body,
    );
    assert_eq!(body.into_model(), m);
    check(
        "members_resp_empty",
        "81a74d656d6265727390",
        &msg::MembersResponse::default(),
    );
    let kr = KeyResponse {
        num_nodes: 3,
        num_resp: 2,
        num_err: 1,
        messages: [(s("db"), s("key not found"))].into(),
        keys: [(s("k1="), 3), (s("k2="), 1)].into(),
    };
    check(
        "key_resp",
        concat!(
            "85a84d6573736167657381a26462ad6b6579206e6f7420666f756e64a84e756d4e6f64657303a64e",
            "756d45727201a74e756d5265737002a44b657973c0",
        ),
        &msg::KeyResponse::new(&kr, false),
    );
    let listed = msg::KeyResponse::new(&kr, true);
    check(
        "list_keys_resp",
        concat!(
            "85a84d6573736167657381a26462ad6b6579206e6f7420666f756e64a84e756d4e6f64657303a64e",
            "756d45727201a74e756d5265737002a44b65797382a36b313d03a36b323d01",
        ),
        &listed,
    );
    assert_eq!(KeyResponse::from(listed), kr);
    check(
        "key_resp_default",
        concat!(
            "85a84d6573736167657380a84e756d4e6f64657300a64e756d45727200a74e756d5265737000a44b",
            "657973c0",
        ),
        &msg::KeyResponse::new(&KeyResponse::default(), false),
    );
    let stats = msg::StatsResponse {
        sections: [
            (s("agent"), [(s("name"), s("n1"))].into()),
            (
                s("serf"),
                [(s("failed"), s("0")), (s("members"), s("3"))].into(),
            ),
        ]
        .into(),
    };
    check(
        "stats_resp",
        concat!(
            "82a56167656e7481a46e616d65a26e31a47365726682a66661696c6564a130a76d656d62657273a1",
            "33",
        ),
        &stats,
    );
    let c = Coordinate {
        vec: vec![0.1, -0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5],
        error: 0.5,
        adjustment: -0.001,
        height: 1.0e-5,
    };
    let resp = msg::CoordinateResponse {
        coord: Some((&c).into()),
        ok: true,
    };
    check(
        "coord_resp",
        concat!(
            "82a5436f6f726484a356656398cb3fb999999999999acbbfc999999999999acb0000000000000000",
            "cb0000000000000000cb0000000000000000cb0000000000000000cb0000000000000000cb3ff800",
            "0000000000a54572726f72cb3fe0000000000000aa41646a7573746d656e74cbbf50624dd2f1a9fc",
            "a6486569676874cb3ee4f8b588e368f1a24f6bc3",
        ),
        &resp,
    );
    assert_eq!(Coordinate::from(resp.coord.unwrap()), c);
    check(
        "coord_resp_none",
        concat!(
            "82a5436f6f726484a3566563c0a54572726f72cb0000000000000000aa41646a7573746d656e74cb",
            "0000000000000000a6486569676874cb0000000000000000a24f6bc2",
        ),
        &msg::CoordinateResponse::unknown(),
    );
}

#[test]
fn records_match_the_old_bytes() {
    let member = Event::Member {
        kind: MemberEventKind::Join,
        members: members(),
    };
    check_record(
        "rec_member",
        concat!(
            "82a54576656e74ab6d656d6265722d6a6f696ea74d656d62657273928ba44e616d65a477656231a4",
            "41646472c4040a000002a4506f7274cd1f0aa45461677382a4726f6c65a3776562a47a6f6e65a27a",
            "31a6537461747573a5616c697665ab50726f746f636f6c4d696e01ab50726f746f636f6c4d617805",
            "ab50726f746f636f6c43757202ab44656c65676174654d696e02ab44656c65676174654d617805ab",
            "44656c6567617465437572048ba44e616d65a26462a441646472c41020010db80000000000000000",
            "00000007a4506f7274cdfde8a45461677380a6537461747573a66661696c6564ab50726f746f636f",
            "6c4d696e01ab50726f746f636f6c4d617805ab50726f746f636f6c43757205ab44656c6567617465",
            "4d696e02ab44656c65676174654d617805ab44656c656761746543757205",
        ),
        &(&member).into(),
    );
    let user = Event::User {
        ltime: 7,
        name: s("deploy"),
        payload: b"v2".to_vec(),
        coalesce: false,
    };
    check_record(
        "rec_user",
        concat!(
            "85a54576656e74a475736572a54c54696d6507a44e616d65a66465706c6f79a75061796c6f6164c4",
            "027632a8436f616c65736365c2",
        ),
        &(&user).into(),
    );
    let query = Event::Query(IncomingQuery {
        id: 42,
        ltime: 300,
        name: s("uptime"),
        payload: vec![],
    });
    check_record(
        "rec_query",
        concat!(
            "85a54576656e74a57175657279a249442aa54c54696d65cd012ca44e616d65a6757074696d65a750",
            "61796c6f6164c400",
        ),
        &(&query).into(),
    );
    for (name, golden, reply) in [
        (
            "rec_ack",
            "83a454797065a361636ba446726f6da26e31a75061796c6f6164c0",
            QueryReply::Ack { from: s("n1") },
        ),
        (
            "rec_response",
            concat!(
                "83a454797065a8726573706f6e7365a446726f6da26e32a75061796c6f6164c40975702033206461",
                "7973",
            ),
            QueryReply::Response {
                from: s("n2"),
                payload: b"up 3 days".to_vec(),
            },
        ),
        (
            "rec_done",
            "83a454797065a4646f6e65a446726f6da0a75061796c6f6164c0",
            QueryReply::Done,
        ),
    ] {
        let rec = msg::QueryRecord::from(&reply);
        check(name, golden, &rec);
        assert_eq!(rec.into_reply(), Some(reply));
    }
    check(
        "rec_log",
        concat!(
            "81a34c6f67d924323032362f31312f32342031363a32353a3036205b494e464f5d206167656e743a",
            "206869",
        ),
        &msg::LogRecord {
            log: s("2026/11/24 16:25:06 [INFO] agent: hi"),
        },
    );
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

fn bytes_of(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

fn bin(s: &str) -> Value {
    Value::Binary(s.as_bytes().to_vec())
}

#[test]
fn strings_may_come_as_bin_and_integers_in_any_width() {
    // A bin key, a bin value, a negative Seq, an unknown key.
    let v = Value::Map(vec![
        (bin("Seq"), Value::from(-3i64)),
        ("Extra".into(), Value::Array(vec![Value::Nil, map(vec![])])),
        ("Command".into(), bin("members")),
    ]);
    let h: msg::RequestHeader = codec::decode(&bytes_of(&v)).unwrap();
    assert_eq!(
        h,
        msg::RequestHeader {
            command: s("members"),
            seq: 0
        },
        "a negative count reads as 0"
    );
    let wide = map(vec![("Seq", Value::from(u64::MAX)), ("Error", bin("x"))]);
    let h: msg::ResponseHeader = codec::decode(&bytes_of(&wide)).unwrap();
    assert_eq!((h.seq, h.error.as_str()), (u64::MAX, "x"));
    let m = map(vec![
        ("Name", bin("n")),
        ("Addr", Value::from("\x7f\x00\x00\x01")),
        ("Port", Value::from(70000u64)),
        ("Tags", map(vec![("a", bin("1")), ("b", Value::from(2))])),
        ("ProtocolMax", Value::from(300)),
        ("DelegateCur", Value::F64(4.0)),
    ]);
    let body = map(vec![("Members", Value::Array(vec![m, Value::Nil]))]);
    let got: msg::MembersResponse = codec::decode(&bytes_of(&body)).unwrap();
    let want = msg::Member {
        name: s("n"),
        addr: vec![127, 0, 0, 1],
        port: u16::MAX,
        tags: vec![(s("a"), s("1"))],
        protocol_max: u8::MAX,
        ..Default::default()
    };
    assert_eq!(got.members, vec![want, msg::Member::default()]);
    let member = Member::from(got.members[0].clone());
    assert_eq!(
        member.addr,
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(member.status, MemberStatus::None);
}

#[test]
fn missing_or_mistyped_fields_read_as_zero_values() {
    let got: msg::QueryRequest = codec::decode(&bytes_of(&map(vec![
        ("FilterNodes", Value::from("not a list")),
        ("Timeout", Value::from(u64::MAX)),
        ("RequestAck", Value::from(1)),
        ("Payload", Value::Nil),
    ])))
    .unwrap();
    assert_eq!(
        got,
        msg::QueryRequest {
            timeout: i64::MAX,
            ..Default::default()
        }
    );
    // A body that is not a map at all.
    let got: msg::EventRequest = codec::decode(&bytes_of(&Value::from(5))).unwrap();
    assert_eq!(got, msg::EventRequest::default());
    // Keys: nil stays None, a map with a bad count reads it as 0.
    let keys = map(vec![("Keys", map(vec![("k", Value::from("x"))]))]);
    let got: msg::KeyResponse = codec::decode(&bytes_of(&keys)).unwrap();
    assert_eq!(got.keys, Some(BTreeMap::from([(s("k"), 0)])));
    let got: msg::KeyResponse = codec::decode(&bytes_of(&map(vec![]))).unwrap();
    assert_eq!(got.keys, None);
    // Stats values that are not strings are shown.
    let stats = map(vec![
        (
            "agent",
            map(vec![("n", Value::from(3)), ("b", Value::from(true))]),
        ),
        ("bad", Value::from(1)),
    ]);
    let got: msg::StatsResponse = codec::decode(&bytes_of(&stats)).unwrap();
    assert_eq!(got.sections["agent"]["n"], "3");
    assert_eq!(got.sections["agent"]["b"], "true");
    assert!(got.sections["bad"].is_empty());
}

#[test]
fn records_of_unknown_kinds_and_bad_coordinates_are_errors() {
    let unknown = map(vec![("Event", Value::from("member-boom"))]);
    assert!(EventRecord::decode(&bytes_of(&unknown)).is_err());
    assert!(EventRecord::decode(&bytes_of(&map(vec![("Name", Value::from("x"))]))).is_err());
    // The tag as bin, the rest missing.
    let rec = EventRecord::decode(&bytes_of(&map(vec![("Event", bin("user"))]))).unwrap();
    assert_eq!(rec, EventRecord::User(Default::default()));
    let bad = map(vec![(
        "Coord",
        map(vec![("Vec", Value::Array(vec![Value::from("x")]))]),
    )]);
    assert!(codec::decode::<msg::CoordinateResponse>(&bytes_of(&bad)).is_err());
    // Integers are numbers too, nil is 0.
    let ok = map(vec![
        (
            "Coord",
            map(vec![
                ("Vec", Value::Array(vec![Value::from(1), Value::F32(0.5)])),
                ("Height", Value::Nil),
            ]),
        ),
        ("Ok", Value::from(true)),
    ]);
    let got: msg::CoordinateResponse = codec::decode(&bytes_of(&ok)).unwrap();
    assert_eq!(got.coord.unwrap().vec, Some(vec![1.0, 0.5]));
}
