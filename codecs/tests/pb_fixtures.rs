//! Golden fixtures: one whole PB frame per command of DESIGN §5.2, in
//! `fixtures/pb/<command>.bin`, with a `.txt` beside it describing the
//! header and decoded body for humans (and other-language implementers).
//!
//! Each fixture is checked both ways: decoding the file gives the expected
//! typed value, and encoding the expected value gives the file's bytes. A
//! change to the wire format therefore fails here until the fixtures are
//! deliberately regenerated:
//!
//! ```text
//! IMGATE_REGEN_FIXTURES=1 cargo test -p imgate-codecs --test pb_fixtures
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;

use bytes::BytesMut;
use imgate_codecs::pb::{commands, proto, PbFrame, PbFramer, PbRequest, PbServerMessage};
use tokio_util::codec::{Decoder, Encoder};

/// The expected content of one fixture.
#[derive(Debug, Clone)]
enum Expected {
    Request(PbRequest),
    Server(PbServerMessage),
}

impl Expected {
    fn command(&self) -> u16 {
        match self {
            Expected::Request(r) => r.command(),
            Expected::Server(s) => s.command(),
        }
    }

    fn to_frame(&self, seq: u16) -> PbFrame {
        match self {
            Expected::Request(r) => r.to_frame(seq),
            Expected::Server(s) => s.to_frame(seq),
        }
    }
}

fn conversation() -> proto::Conversation {
    proto::Conversation {
        r#type: 1,
        target: "group-42".into(),
        line: 3,
    }
}

fn payload() -> proto::MessagePayload {
    proto::MessagePayload {
        r#type: 3,
        searchable_content: "héllo, 世界 🌍".into(),
        push_content: "[image]".into(),
        content: "{\"w\":640,\"h\":480}".into(),
        data: vec![0x00, 0x01, 0x7f, 0x80, 0xff],
        media_type: 2,
        remote_media_url: "https://media.example/a/b.png".into(),
        persist_flag: 3,
        expire_duration: 86_400,
        mentioned_type: 1,
        mentioned_target: vec!["bob".into(), "carol".into()],
        extra: "{\"k\":\"v\"}".into(),
        push_data: "pd".into(),
    }
}

fn message() -> proto::Message {
    proto::Message {
        message_id: 0x0123_4567_89ab_cdef,
        sender: "alice".into(),
        conversation: Some(conversation()),
        payload: Some(payload()),
        server_ts: 1_717_171_717_171,
        client_msg_id: "c-0001".into(),
        to_users: vec!["bob".into()],
    }
}

/// (file stem, seq, expected value): every command of the contract.
fn cases() -> Vec<(&'static str, u16, Expected)> {
    use Expected::{Request, Server};
    vec![
        (
            "login_request",
            1,
            Request(PbRequest::Login(proto::LoginRequest {
                user_id: "alice".into(),
                token: "tok.abc.def".into(),
                client_id: "alice-phone".into(),
                platform: 2,
            })),
        ),
        (
            "login_response",
            1,
            Server(PbServerMessage::LoginResponse(proto::LoginResponse {
                code: 0,
                server_time: 1_717_171_717_000,
                last_message_id: 987_654_321,
            })),
        ),
        (
            "kick",
            0,
            Server(PbServerMessage::Kick(proto::Kick {
                code: 7,
                reason: "logged in on another device".into(),
            })),
        ),
        (
            "send_request",
            2,
            Request(PbRequest::Send(proto::SendRequest {
                client_msg_id: "c-0001".into(),
                conversation: Some(conversation()),
                payload: Some(payload()),
                to_users: vec!["bob".into(), "dave".into()],
            })),
        ),
        (
            "send_response",
            2,
            Server(PbServerMessage::SendResponse(proto::SendResponse {
                code: 0,
                message_id: 0x0123_4567_89ab_cdef,
                server_ts: 1_717_171_717_171,
                client_msg_id: "c-0001".into(),
            })),
        ),
        (
            "deliver",
            0,
            Server(PbServerMessage::Deliver(proto::Deliver {
                message: Some(message()),
            })),
        ),
        (
            "deliver_ack",
            3,
            Request(PbRequest::DeliverAck(proto::DeliverAck {
                message_id: 0x0123_4567_89ab_cdef,
            })),
        ),
        (
            "sync_request",
            4,
            Request(PbRequest::Sync(proto::SyncRequest {
                since: 1_000,
                limit: 100,
            })),
        ),
        (
            "sync_response",
            4,
            Server(PbServerMessage::SyncResponse(proto::SyncResponse {
                code: 0,
                messages: vec![
                    message(),
                    proto::Message {
                        message_id: 0x0123_4567_89ab_cdf0,
                        sender: "bob".into(),
                        conversation: Some(proto::Conversation {
                            r#type: 0,
                            target: "alice".into(),
                            line: 0,
                        }),
                        payload: Some(proto::MessagePayload {
                            r#type: 1,
                            searchable_content: "hi".into(),
                            persist_flag: 3,
                            ..Default::default()
                        }),
                        server_ts: 1_717_171_718_000,
                        client_msg_id: String::new(),
                        to_users: vec![],
                    },
                ],
                has_more: true,
            })),
        ),
        (
            "recall_request",
            5,
            Request(PbRequest::Recall(proto::RecallRequest {
                message_id: 0x0123_4567_89ab_cdef,
            })),
        ),
        (
            "recall_response",
            5,
            Server(PbServerMessage::RecallResponse(proto::RecallResponse {
                code: 248,
            })),
        ),
        (
            "conversations_request",
            8,
            Request(PbRequest::Conversations(proto::ConversationsRequest {
                before: 0x0123_4567_89ab_cdf0,
                limit: 20,
            })),
        ),
        (
            "conversations_response",
            8,
            Server(PbServerMessage::ConversationsResponse(
                proto::ConversationsResponse {
                    code: 0,
                    conversations: vec![
                        proto::ConversationInfo {
                            conversation: Some(conversation()),
                            last_message: Some(message()),
                            last_message_id: 0x0123_4567_89ab_cdef,
                            read_upto: 0x0123_4567_89ab_cd00,
                            unread: 4,
                        },
                        proto::ConversationInfo {
                            conversation: Some(proto::Conversation {
                                r#type: 0,
                                target: "bob".into(),
                                line: 0,
                            }),
                            last_message: None,
                            last_message_id: 0x0123_4567_89ab_0000,
                            read_upto: 0x0123_4567_89ab_0000,
                            unread: 0,
                        },
                    ],
                    has_more: true,
                },
            )),
        ),
        (
            "mark_read_request",
            9,
            Request(PbRequest::MarkRead(proto::MarkReadRequest {
                conversation: Some(conversation()),
                message_id: 0x0123_4567_89ab_cdef,
            })),
        ),
        (
            "mark_read_response",
            9,
            Server(PbServerMessage::MarkReadResponse(proto::MarkReadResponse {
                code: 0,
                read_upto: 0x0123_4567_89ab_cdef,
                unread: 0,
            })),
        ),
        ("heartbeat", 6, Request(PbRequest::Heartbeat)),
        (
            "error",
            7,
            Server(PbServerMessage::Error(proto::Error {
                code: 244,
                message: "log in first".into(),
            })),
        ),
    ]
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/pb")
}

fn encode(frame: PbFrame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    PbFramer::default().encode(frame, &mut buf).expect("encode");
    buf.to_vec()
}

/// The human-readable description written next to each `.bin`.
fn describe(stem: &str, bytes: &[u8], frame: &PbFrame, expected: &Expected) -> String {
    let mut out = String::new();
    let name = commands::name(frame.command).unwrap_or("?");
    let _ = writeln!(
        out,
        "# PB golden fixture {stem}.bin: one whole frame, command {:#06x} ({name}).",
        frame.command
    );
    let _ = writeln!(
        out,
        "# Generated by codecs/tests/pb_fixtures.rs; regenerate with"
    );
    let _ = writeln!(
        out,
        "# IMGATE_REGEN_FIXTURES=1 cargo test -p imgate-codecs --test pb_fixtures"
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "header (16 bytes, big-endian):");
    let _ = writeln!(out, "  length   = {}", bytes.len());
    let _ = writeln!(out, "  version  = 1");
    let _ = writeln!(out, "  flags    = {}", frame.flags);
    let _ = writeln!(out, "  service  = {:#06x}", frame.service);
    let _ = writeln!(out, "  command  = {:#06x}", frame.command);
    let _ = writeln!(out, "  seq      = {}", frame.seq);
    let _ = writeln!(out, "  reserved = {}", frame.reserved);
    let _ = writeln!(out, "body: {} bytes of imgate.v1.{name}", frame.body.len());
    let _ = writeln!(out);
    let _ = writeln!(out, "decoded:");
    match expected {
        Expected::Request(r) => writeln!(out, "{r:#?} (client -> server)"),
        Expected::Server(s) => writeln!(out, "{s:#?} (server -> client)"),
    }
    .expect("write to String");
    let _ = writeln!(out);
    let _ = writeln!(out, "hex:");
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(out, "  {:04x}: {}", i * 16, hex.join(" "));
    }
    out
}

#[test]
fn every_command_has_a_fixture() {
    let mut covered: Vec<u16> = cases().iter().map(|(_, _, e)| e.command()).collect();
    covered.sort_unstable();
    let mut all = commands::ALL.to_vec();
    all.sort_unstable();
    assert_eq!(covered, all);
}

#[test]
fn fixtures_decode_to_expected_and_expected_encodes_to_fixtures() {
    let regen = std::env::var_os("IMGATE_REGEN_FIXTURES").is_some_and(|v| v == "1");
    let dir = fixture_dir();
    if regen {
        std::fs::create_dir_all(&dir).expect("create fixtures/pb");
    }
    for (stem, seq, expected) in cases() {
        let frame = expected.to_frame(seq);
        let encoded = encode(frame.clone());
        let description = describe(stem, &encoded, &frame, &expected);
        let bin_path = dir.join(format!("{stem}.bin"));
        let txt_path = dir.join(format!("{stem}.txt"));
        if regen {
            std::fs::write(&bin_path, &encoded).expect("write .bin");
            std::fs::write(&txt_path, &description).expect("write .txt");
            continue;
        }

        let golden = std::fs::read(&bin_path).unwrap_or_else(|e| {
            panic!("{}: {e} (regenerate, see module docs)", bin_path.display())
        });
        assert_eq!(
            encoded, golden,
            "{stem}: encoding changed; regenerate deliberately if intended"
        );

        let mut buf = BytesMut::from(golden.as_slice());
        let decoded = PbFramer::default()
            .decode(&mut buf)
            .expect("decode")
            .expect("a whole frame");
        assert!(buf.is_empty(), "{stem}: fixture has trailing bytes");
        assert_eq!(decoded, frame, "{stem}: header or body differs");
        match &expected {
            Expected::Request(r) => {
                assert_eq!(
                    &PbRequest::decode(&decoded).expect("typed decode"),
                    r,
                    "{stem}"
                )
            }
            Expected::Server(s) => {
                assert_eq!(
                    &PbServerMessage::decode(&decoded).expect("typed decode"),
                    s,
                    "{stem}"
                )
            }
        }
        // The heartbeat is both directions: it reads as either.
        if decoded.command == commands::HEARTBEAT {
            assert_eq!(
                PbServerMessage::decode(&decoded).unwrap(),
                PbServerMessage::Heartbeat
            );
        }

        let txt = std::fs::read_to_string(&txt_path).expect("read .txt");
        assert_eq!(txt, description, "{stem}.txt is stale; regenerate");
    }
}

#[test]
fn every_strict_prefix_of_a_fixture_needs_more_bytes() {
    for (stem, _, _) in cases() {
        let Ok(golden) = std::fs::read(fixture_dir().join(format!("{stem}.bin"))) else {
            continue; // reported by the test above
        };
        let mut framer = PbFramer::default();
        for cut in 0..golden.len() {
            let mut buf = BytesMut::from(&golden[..cut]);
            assert_eq!(
                framer.decode(&mut buf).expect("no error on a prefix"),
                None,
                "{stem}[..{cut}]"
            );
            assert_eq!(buf.len(), cut, "a partial frame is not consumed");
        }
    }
}
