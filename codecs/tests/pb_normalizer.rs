//! Property-style round trips of `PbNormalizer` (DESIGN §2: conversion is
//! lossless for every field PB carries — and PB carries them all).
//!
//! A small deterministic generator (xorshift) makes thousands of values
//! with edge cases mixed in (empty and non-ASCII strings, 0/±max numbers,
//! empty and multi-element lists, arbitrary bytes), so failures reproduce.

use imgate_codecs::pb::{commands, proto, PbFrame, PbNormalizer, PbRequest, PbServerMessage};
use imgate_core::model::{Conversation, Message, MessagePayload};
use imgate_core::pipeline::Draft;
use prost::Message as _;

struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn i32(&mut self) -> i32 {
        match self.next() % 6 {
            0 => 0,
            1 => i32::MAX,
            2 => i32::MIN,
            3 => -1,
            _ => self.next() as i32,
        }
    }

    fn i64(&mut self) -> i64 {
        match self.next() % 5 {
            0 => 0,
            1 => i64::MAX,
            2 => i64::MIN,
            _ => self.next() as i64,
        }
    }

    fn u64(&mut self) -> u64 {
        match self.next() % 4 {
            0 => 0,
            1 => u64::MAX,
            _ => self.next(),
        }
    }

    fn string(&mut self) -> String {
        const PIECES: [&str; 10] = [
            "",
            "a",
            "bob",
            " ",
            "世界",
            "🌍",
            "\"q\"",
            "\0",
            "é",
            "{\"k\":1}",
        ];
        (0..self.next() % 5)
            .map(|_| PIECES[(self.next() % PIECES.len() as u64) as usize])
            .collect()
    }

    fn strings(&mut self) -> Vec<String> {
        (0..self.next() % 4).map(|_| self.string()).collect()
    }

    fn bytes(&mut self) -> Vec<u8> {
        (0..self.next() % 12).map(|_| self.next() as u8).collect()
    }

    fn payload(&mut self) -> MessagePayload {
        MessagePayload {
            content_type: self.i32(),
            searchable_content: self.string(),
            push_content: self.string(),
            content: self.string(),
            data: self.bytes(),
            media_type: self.i32(),
            remote_media_url: self.string(),
            persist_flag: self.i32(),
            expire_duration: self.i32(),
            mentioned_type: self.i32(),
            mentioned_targets: self.strings(),
            extra: self.string(),
            push_data: self.string(),
        }
    }

    fn conversation(&mut self) -> Conversation {
        Conversation {
            kind: self.i32(),
            target: self.string(),
            line: self.i32(),
        }
    }

    fn message(&mut self) -> Message {
        Message {
            message_id: self.u64(),
            sender: self.string(),
            conversation: self.conversation(),
            payload: self.payload(),
            server_ts: self.i64(),
            client_msg_id: self.string(),
            to_users: self.strings(),
        }
    }

    fn draft(&mut self) -> Draft {
        Draft {
            sender: self.string(),
            conversation: self.conversation(),
            payload: self.payload(),
            client_msg_id: self.string(),
            to_users: self.strings(),
        }
    }
}

const ROUNDS: usize = 3_000;

#[test]
fn core_message_survives_proto_and_the_wire() {
    let mut g = Gen(0x2545_f491_4f6c_dd1d);
    for _ in 0..ROUNDS {
        let m = g.message();
        let pb = PbNormalizer::message_from_core(&m);
        assert_eq!(PbNormalizer::message_to_core(pb.clone()), m);

        // Through bytes, inside a Deliver push frame.
        let frame = PbFrame::push(commands::DELIVER, &PbNormalizer::deliver(&m));
        let PbServerMessage::Deliver(d) = PbServerMessage::decode(&frame).unwrap() else {
            panic!("not a Deliver");
        };
        assert_eq!(d.message.as_ref(), Some(&pb));
        assert_eq!(PbNormalizer::message_to_core(d.message.unwrap()), m);
    }
}

#[test]
fn core_payload_and_conversation_round_trip() {
    let mut g = Gen(0x1234_5678_9abc_def1);
    for _ in 0..ROUNDS {
        let p = g.payload();
        let pb = PbNormalizer::payload_from_core(&p);
        let wire = proto::MessagePayload::decode(pb.encode_to_vec().as_slice()).unwrap();
        assert_eq!(PbNormalizer::payload_to_core(wire), p);

        let c = g.conversation();
        let pb = PbNormalizer::conversation_from_core(&c);
        assert_eq!(pb.r#type, c.kind);
        assert_eq!(PbNormalizer::conversation_to_core(pb), c);
    }
}

#[test]
fn proto_values_round_trip_through_core() {
    // proto → core → proto is the identity too (message fields present).
    let mut g = Gen(0x0fed_cba9_8765_4321);
    for _ in 0..ROUNDS {
        let pb = PbNormalizer::message_from_core(&g.message());
        let back = PbNormalizer::message_from_core(&PbNormalizer::message_to_core(pb.clone()));
        assert_eq!(back, pb);
    }
}

#[test]
fn send_request_becomes_a_draft_with_the_session_sender() {
    let mut g = Gen(0xdead_beef_cafe_f00d);
    for _ in 0..ROUNDS {
        let draft = g.draft();
        let req = PbNormalizer::send_request_from_draft(&draft);
        let frame = PbRequest::Send(req).to_frame(1);
        let PbRequest::Send(decoded) = PbRequest::decode(&frame).unwrap() else {
            panic!("not a Send");
        };
        assert_eq!(
            PbNormalizer::send_request_to_draft(decoded, draft.sender.clone()),
            draft
        );
    }
}

#[test]
fn field_mapping_is_by_meaning_not_position() {
    // Distinct values per field, so a swapped assignment cannot pass.
    let p = MessagePayload {
        content_type: 1,
        searchable_content: "searchable".into(),
        push_content: "push".into(),
        content: "content".into(),
        data: vec![5],
        media_type: 6,
        remote_media_url: "url".into(),
        persist_flag: 8,
        expire_duration: 9,
        mentioned_type: 10,
        mentioned_targets: vec!["m".into()],
        extra: "extra".into(),
        push_data: "push_data".into(),
    };
    let pb = PbNormalizer::payload_from_core(&p);
    assert_eq!(
        pb,
        proto::MessagePayload {
            r#type: 1,
            searchable_content: "searchable".into(),
            push_content: "push".into(),
            content: "content".into(),
            data: vec![5],
            media_type: 6,
            remote_media_url: "url".into(),
            persist_flag: 8,
            expire_duration: 9,
            mentioned_type: 10,
            mentioned_target: vec!["m".into()],
            extra: "extra".into(),
            push_data: "push_data".into(),
        }
    );
}
