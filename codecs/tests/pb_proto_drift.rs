//! Guards `src/pb/proto.rs` (hand-written prost structs) against drift from
//! `proto/imgate.proto` (the contract other languages generate from).
//!
//! There is no `protoc` on the build machines, so the structs are written
//! by hand; this test is what keeps them honest. It parses the `.proto`
//! with a deliberately small parser (it fails loudly on any syntax it does
//! not know, rather than skipping it) and checks the Rust side two
//! independent ways:
//!
//! 1. *Probes* derived from the `.proto`: for each field, a wire encoding
//!    of just that field number with a probe value of the field's type is
//!    decoded into the Rust struct, and the struct's `Debug` output must
//!    show exactly the field of that name changed, to the value that type
//!    decodes to (so `int32` vs `int64` vs `uint64` vs `bool`, `string` vs
//!    `bytes`, the nested message type and `repeated` are all checked).
//!    The Rust field names (from `Debug` of the default value) must be
//!    exactly the `.proto` field names, in order.
//! 2. *Full values* written by hand below: every field set, encoded; the
//!    set of (field number, wire type, occurrences) on the wire must equal
//!    what the `.proto` says.
//!
//! Renumbering a field in either file, renaming one, changing its type or
//! label, or adding/removing a field or message fails this test.

use std::collections::BTreeMap;

use imgate_codecs::pb::proto;
use prost::Message;

// ---------------------------------------------------------------------------
// The .proto side: a small parser for the subset imgate.proto uses.

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProtoField {
    repeated: bool,
    ty: String,
    name: String,
    number: u32,
}

#[derive(Debug, Clone)]
struct ProtoMessage {
    name: String,
    fields: Vec<ProtoField>,
}

fn tokenize(src: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for line in src.lines() {
        let code = line.split("//").next().unwrap_or("");
        let spaced = code
            .replace('{', " { ")
            .replace('}', " } ")
            .replace(';', " ; ")
            .replace('=', " = ");
        tokens.extend(spaced.split_whitespace().map(str::to_owned));
    }
    tokens
}

fn parse_proto(src: &str) -> (String, Vec<ProtoMessage>) {
    let tokens = tokenize(src);
    let mut it = tokens.iter().map(String::as_str).peekable();
    let mut package = String::new();
    let mut messages = Vec::new();
    let expect = |it: &mut dyn Iterator<Item = &str>, want: &str| {
        let got = it.next();
        assert_eq!(got, Some(want), "imgate.proto: expected `{want}`");
    };
    while let Some(tok) = it.next() {
        match tok {
            "syntax" => {
                expect(&mut it, "=");
                assert_eq!(it.next(), Some("\"proto3\""), "imgate.proto must be proto3");
                expect(&mut it, ";");
            }
            "package" => {
                package = it.next().expect("package name").to_owned();
                expect(&mut it, ";");
            }
            "message" => {
                let name = it.next().expect("message name").to_owned();
                expect(&mut it, "{");
                let mut fields = Vec::new();
                loop {
                    let mut tok = it.next().expect("unterminated message");
                    if tok == "}" {
                        break;
                    }
                    let repeated = tok == "repeated";
                    if repeated {
                        tok = it.next().expect("type after repeated");
                    }
                    assert!(
                        !matches!(
                            tok,
                            "message"
                                | "enum"
                                | "oneof"
                                | "map"
                                | "option"
                                | "reserved"
                                | "optional"
                        ),
                        "imgate.proto uses `{tok}` in {name}: extend tests/pb_proto_drift.rs"
                    );
                    let ty = tok.to_owned();
                    let field = it.next().expect("field name").to_owned();
                    expect(&mut it, "=");
                    let number = it
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("{name}.{field}: bad field number"));
                    expect(&mut it, ";");
                    fields.push(ProtoField {
                        repeated,
                        ty,
                        name: field,
                        number,
                    });
                }
                messages.push(ProtoMessage { name, fields });
            }
            other => panic!("imgate.proto: unexpected `{other}`: extend tests/pb_proto_drift.rs"),
        }
    }
    (package, messages)
}

fn load_proto() -> (String, Vec<ProtoMessage>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/imgate.proto");
    let src = std::fs::read_to_string(path).expect("read proto/imgate.proto");
    parse_proto(&src)
}

// ---------------------------------------------------------------------------
// The Rust side: every struct of `proto.rs`, with a value that sets every
// field (repeated fields get two elements, so `repeated` shows on the wire).

struct RustMessage {
    name: &'static str,
    default_debug: fn() -> String,
    decode_debug: fn(&[u8]) -> Result<String, prost::DecodeError>,
    full_encoded: fn() -> Vec<u8>,
}

macro_rules! rust_messages {
    ($($ty:ident => $full:expr),* $(,)?) => {
        vec![$(RustMessage {
            name: stringify!($ty),
            default_debug: || format!("{:?}", proto::$ty::default()),
            decode_debug: |b| proto::$ty::decode(b).map(|m| format!("{m:?}")),
            full_encoded: || {
                let full: proto::$ty = $full;
                full.encode_to_vec()
            },
        }),*]
    };
}

fn conv() -> proto::Conversation {
    proto::Conversation {
        r#type: 1,
        target: "g".into(),
        line: 2,
    }
}

fn payload() -> proto::MessagePayload {
    proto::MessagePayload {
        r#type: 1,
        searchable_content: "s".into(),
        push_content: "p".into(),
        content: "c".into(),
        data: vec![1],
        media_type: 2,
        remote_media_url: "u".into(),
        persist_flag: 3,
        expire_duration: 4,
        mentioned_type: 5,
        mentioned_target: vec!["a".into(), "b".into()],
        extra: "e".into(),
        push_data: "d".into(),
    }
}

fn message() -> proto::Message {
    proto::Message {
        message_id: 1,
        sender: "s".into(),
        conversation: Some(conv()),
        payload: Some(payload()),
        server_ts: 2,
        client_msg_id: "c".into(),
        to_users: vec!["a".into(), "b".into()],
    }
}

fn rust_messages() -> Vec<RustMessage> {
    rust_messages![
        Conversation => conv(),
        MessagePayload => payload(),
        Message => message(),
        LoginRequest => proto::LoginRequest { user_id: "u".into(), token: "t".into(), client_id: "c".into(), platform: 1 },
        LoginResponse => proto::LoginResponse { code: 1, server_time: 2, last_message_id: 3 },
        SendRequest => proto::SendRequest {
            client_msg_id: "c".into(),
            conversation: Some(conv()),
            payload: Some(payload()),
            to_users: vec!["a".into(), "b".into()],
        },
        SendResponse => proto::SendResponse { code: 1, message_id: 2, server_ts: 3, client_msg_id: "c".into() },
        Deliver => proto::Deliver { message: Some(message()) },
        DeliverAck => proto::DeliverAck { message_id: 1 },
        SyncRequest => proto::SyncRequest { since: 1, limit: 2 },
        SyncResponse => proto::SyncResponse { code: 1, messages: vec![message(), message()], has_more: true },
        RecallRequest => proto::RecallRequest { message_id: 1 },
        RecallResponse => proto::RecallResponse { code: 1 },
        ConversationsRequest => proto::ConversationsRequest { before: 1, limit: 2 },
        ConversationInfo => proto::ConversationInfo {
            conversation: Some(conv()),
            last_message: Some(message()),
            last_message_id: 1,
            read_upto: 2,
            unread: 3,
        },
        ConversationsResponse => proto::ConversationsResponse {
            code: 1,
            conversations: vec![proto::ConversationInfo::default(), proto::ConversationInfo::default()],
            has_more: true,
        },
        MarkReadRequest => proto::MarkReadRequest { conversation: Some(conv()), message_id: 1 },
        MarkReadResponse => proto::MarkReadResponse { code: 1, read_upto: 2, unread: 3 },
        Heartbeat => proto::Heartbeat {},
        Kick => proto::Kick { code: 1, reason: "r".into() },
        Error => proto::Error { code: 1, message: "m".into() },
    ]
}

// ---------------------------------------------------------------------------
// Wire helpers.

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

fn get_varint(b: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
    }
    panic!("varint too long");
}

/// (field number → (wire type, occurrences)) of a top-level encoding.
fn wire_fields(b: &[u8]) -> BTreeMap<u32, (u8, usize)> {
    let mut out: BTreeMap<u32, (u8, usize)> = BTreeMap::new();
    let mut at = 0;
    while at < b.len() {
        let key = get_varint(b, &mut at);
        let (number, wire_type) = ((key >> 3) as u32, (key & 7) as u8);
        match wire_type {
            0 => {
                get_varint(b, &mut at);
            }
            1 => at += 8,
            2 => at += get_varint(b, &mut at) as usize,
            5 => at += 4,
            w => panic!("unexpected wire type {w}"),
        }
        let e = out.entry(number).or_insert((wire_type, 0));
        assert_eq!(e.0, wire_type, "field {number} with two wire types");
        e.1 += 1;
    }
    out
}

fn is_scalar(ty: &str) -> bool {
    matches!(
        ty,
        "int32" | "int64" | "uint32" | "uint64" | "bool" | "string" | "bytes"
    )
}

fn wire_type_of(ty: &str) -> u8 {
    match ty {
        "int32" | "int64" | "uint32" | "uint64" | "bool" => 0,
        _ => 2, // string, bytes, messages
    }
}

/// Probes for one field: (wire bytes of one occurrence, how the Rust
/// `Debug` renders the decoded value, without `Some(..)`/`[..]`).
fn probes(ty: &str, defaults: &BTreeMap<&str, String>) -> Vec<(Vec<u8>, String)> {
    let varint = |v: u64| {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        b
    };
    let len_delim = |data: &[u8]| {
        let mut b = varint(data.len() as u64);
        b.extend_from_slice(data);
        b
    };
    // 2^64-1 tells signed from unsigned and 32 from 64 bits for unsigned;
    // 2^32+7 tells int32 (truncates to 7) from int64.
    const ALL_ONES: u64 = u64::MAX;
    const WIDE: u64 = (1 << 32) + 7;
    match ty {
        "int32" => vec![(varint(ALL_ONES), "-1".into()), (varint(WIDE), "7".into())],
        "int64" => vec![
            (varint(ALL_ONES), "-1".into()),
            (varint(WIDE), WIDE.to_string()),
        ],
        "uint32" => vec![
            (varint(ALL_ONES), u32::MAX.to_string()),
            (varint(WIDE), "7".into()),
        ],
        "uint64" => vec![(varint(ALL_ONES), u64::MAX.to_string())],
        "bool" => vec![(varint(1), "true".into())],
        "string" => vec![(len_delim(b"probe"), "\"probe\"".into())],
        "bytes" => vec![(len_delim(&[1, 2, 3]), "[1, 2, 3]".into())],
        message => {
            let default = defaults.get(message).unwrap_or_else(|| {
                panic!("field type `{message}` is neither a scalar nor a message")
            });
            vec![(len_delim(&[]), default.clone())]
        }
    }
}

// ---------------------------------------------------------------------------
// Debug output parsing: `Name { a: 1, b: Some(X { .. }), c: [..] }`.

fn debug_fields(debug: &str) -> (String, Vec<(String, String)>) {
    let Some((name, rest)) = debug.split_once(" { ") else {
        return (debug.to_owned(), Vec::new());
    };
    let inner = rest.strip_suffix(" }").expect("Debug ends with ` }`");
    let mut parts = Vec::new();
    let (mut depth, mut in_str, mut escaped, mut start) = (0i32, false, false, 0);
    let bytes = inner.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' | b'[' | b'(' => depth += 1,
            b'}' | b']' | b')' => depth -= 1,
            b',' if depth == 0 && bytes.get(i + 1) == Some(&b' ') => {
                parts.push(&inner[start..i]);
                start = i + 2;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    let fields = parts
        .into_iter()
        .map(|p| {
            let (k, v) = p.split_once(": ").expect("`name: value`");
            (k.trim_start_matches("r#").to_owned(), v.to_owned())
        })
        .collect();
    (name.to_owned(), fields)
}

// ---------------------------------------------------------------------------

#[test]
fn proto_file_is_the_design_package_with_every_command_body() {
    let (package, messages) = load_proto();
    assert_eq!(package, "imgate.v1");
    for cmd in imgate_codecs::pb::commands::ALL {
        let body = imgate_codecs::pb::commands::name(cmd).unwrap();
        assert!(
            messages.iter().any(|m| m.name == body),
            "command {cmd:#06x} has no message {body} in imgate.proto"
        );
    }
}

/// Checks one Rust struct against its `.proto` message; `defaults` maps
/// every message name to its Rust default's `Debug` (for nested types).
fn check_message(
    pm: &ProtoMessage,
    rm: &RustMessage,
    defaults: &BTreeMap<&str, String>,
) -> Result<(), String> {
    // Field names and order, from Debug of the default value.
    let (debug_name, default_fields) = debug_fields(&(rm.default_debug)());
    if debug_name != pm.name {
        return Err(format!(
            "Rust struct {debug_name} vs proto message {}",
            pm.name
        ));
    }
    let rust_field_names: Vec<&str> = default_fields.iter().map(|(k, _)| k.as_str()).collect();
    let proto_field_names: Vec<&str> = pm.fields.iter().map(|f| f.name.as_str()).collect();
    if rust_field_names != proto_field_names {
        return Err(format!(
            "{}: Rust fields {rust_field_names:?} vs proto fields {proto_field_names:?}",
            pm.name
        ));
    }

    // Each field number decodes into the field of that name, as its type
    // (two occurrences: a repeated field keeps both, a singular one the last).
    for field in &pm.fields {
        for (one, rendered) in probes(&field.ty, defaults) {
            let mut wire = Vec::new();
            for _ in 0..2 {
                put_key(&mut wire, field.number, wire_type_of(&field.ty));
                wire.extend_from_slice(&one);
            }
            let expected = match (field.repeated, is_scalar(&field.ty)) {
                (true, _) => format!("[{rendered}, {rendered}]"),
                (false, true) => rendered.clone(),
                (false, false) => format!("Some({rendered})"),
            };
            let label = format!(
                "{}.{} = {} ({}{})",
                pm.name,
                field.name,
                field.number,
                if field.repeated { "repeated " } else { "" },
                field.ty
            );
            let decoded = (rm.decode_debug)(&wire)
                .map_err(|e| format!("{label}: Rust cannot decode it: {e}"))?;
            let (_, got) = debug_fields(&decoded);
            for ((name, default), (_, value)) in default_fields.iter().zip(&got) {
                if *name == field.name && *value != expected {
                    return Err(format!(
                        "{label}: Rust decodes it as {value}, not {expected}"
                    ));
                }
                if *name != field.name && value != default {
                    return Err(format!("{label}: the value landed in Rust field `{name}`"));
                }
            }
        }
    }

    // A value with every Rust field set shows exactly the proto's numbers
    // and wire types on the wire.
    let expected: BTreeMap<u32, (u8, usize)> = pm
        .fields
        .iter()
        .map(|f| {
            (
                f.number,
                (wire_type_of(&f.ty), if f.repeated { 2 } else { 1 }),
            )
        })
        .collect();
    let got = wire_fields(&(rm.full_encoded)());
    if got != expected {
        return Err(format!(
            "{}: encoded (number: (wire type, count)) {got:?} vs proto {expected:?}",
            pm.name
        ));
    }
    Ok(())
}

fn check_all(messages: &[ProtoMessage], rust: &[RustMessage]) -> Result<(), String> {
    let proto_names: Vec<&str> = messages.iter().map(|m| m.name.as_str()).collect();
    let rust_names: Vec<&str> = rust.iter().map(|m| m.name).collect();
    if rust_names != proto_names {
        return Err(format!(
            "Rust messages {rust_names:?} vs proto {proto_names:?}"
        ));
    }
    let defaults: BTreeMap<&str, String> =
        rust.iter().map(|r| (r.name, (r.default_debug)())).collect();
    messages
        .iter()
        .zip(rust)
        .try_for_each(|(pm, rm)| check_message(pm, rm, &defaults))
}

#[test]
fn rust_structs_are_the_proto_messages() {
    let (_, messages) = load_proto();
    if let Err(e) = check_all(&messages, &rust_messages()) {
        panic!("proto.rs drifted from imgate.proto: {e}");
    }
}

#[test]
fn parser_reads_one_line_and_multi_line_layouts_alike() {
    let one =
        "syntax = \"proto3\"; package p; message A { int32 type = 1; repeated string t = 2; }";
    let multi = "syntax = \"proto3\";\npackage p;\n// c\nmessage A {\n  int32 type = 1; // x\n  repeated string t = 2;\n}\n";
    let (a, b) = (parse_proto(one), parse_proto(multi));
    assert_eq!(a.0, "p");
    assert_eq!(a.1[0].fields, b.1[0].fields);
    assert!(a.1[0].fields[1].repeated);
}

/// The checker itself fails on drift, in either file.
#[test]
fn checker_notices_a_renumbered_field_on_either_side() {
    let proto_src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/imgate.proto"))
            .unwrap();

    // The .proto renumbered: `Error.message` 2 → 3.
    let edited = proto_src.replace("string message = 2;", "string message = 3;");
    assert_ne!(edited, proto_src);
    let err = check_all(&parse_proto(&edited).1, &rust_messages()).unwrap_err();
    assert!(err.contains("Error.message = 3"), "{err}");

    // The .proto with an int32 turned into int64.
    let edited = proto_src.replace("int64 server_time = 2;", "int32 server_time = 2;");
    let err = check_all(&parse_proto(&edited).1, &rust_messages()).unwrap_err();
    assert!(err.contains("LoginResponse.server_time"), "{err}");

    // The Rust side renumbered: a stand-in `Error` with `message` at 3.
    #[derive(Clone, PartialEq, Message)]
    struct Error {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "3")]
        message: String,
    }
    let (_, messages) = parse_proto(&proto_src);
    let mut rust = rust_messages();
    let slot = rust.iter_mut().find(|r| r.name == "Error").unwrap();
    slot.default_debug = || format!("{:?}", Error::default());
    slot.decode_debug = |b| Error::decode(b).map(|m| format!("{m:?}"));
    let err = check_all(&messages, &rust).unwrap_err();
    assert!(err.contains("Error.message = 2"), "{err}");
}

/// The hand-written full-value wire check alone also catches renumbering.
#[test]
fn full_value_wire_check_notices_a_renumbered_field() {
    let (_, messages) = load_proto();
    #[derive(Clone, PartialEq, Message)]
    struct Kick {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "4")]
        reason: String,
    }
    let pm = messages.iter().find(|m| m.name == "Kick").unwrap();
    let full = Kick {
        code: 1,
        reason: "r".into(),
    }
    .encode_to_vec();
    let expected: BTreeMap<u32, (u8, usize)> = pm
        .fields
        .iter()
        .map(|f| (f.number, (wire_type_of(&f.ty), 1)))
        .collect();
    assert_ne!(wire_fields(&full), expected);
}
