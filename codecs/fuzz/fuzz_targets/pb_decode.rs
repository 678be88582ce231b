//! Fuzz target `pb_decode`: arbitrary bytes through the whole PB inbound
//! path — framer (fed in chunks, as a socket would), typed decode in both
//! directions, normalizer — and back out through the encoder.
//!
//! Properties checked beyond "no panic": the framer consumes only whole
//! frames, a decoded frame re-encodes to the bytes it came from (with the
//! service id normalized to the command's high byte), and a decoded
//! message round-trips through the core model.
#![no_main]

use bytes::BytesMut;
use imgate_codecs::pb::{PbFramer, PbNormalizer, PbRequest, PbServerMessage};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a chunk size, so partial-frame paths run too; a
    // small limit makes FrameTooLarge reachable.
    let (chunk, rest) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c % 64) + 1, rest),
        None => return,
    };
    let mut framer = PbFramer::new(64 * 1024);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match framer.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let consumed = before.len() - buf.len();
                    assert_eq!(consumed, frame.wire_len());
                    let mut out = BytesMut::new();
                    framer.encode(frame.clone(), &mut out).expect("re-encode");
                    let mut original = before[..consumed].to_vec();
                    original[8..10].copy_from_slice(&(frame.command >> 8).to_be_bytes());
                    assert_eq!(&out[..], &original[..]);
                    check_typed(&frame);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before.len(), "a partial frame is not consumed");
                    break;
                }
                Err(e) => {
                    assert!(!e.can_continue());
                    let _ = e.code();
                    return;
                }
            }
        }
    }
    // The bytes as one body of every command as well.
    for command in imgate_codecs::pb::commands::ALL
        .into_iter()
        .chain([0, 0xffff])
    {
        let frame =
            imgate_codecs::pb::PbFrame::new(command, 1, bytes::Bytes::copy_from_slice(rest));
        check_typed(&frame);
    }
});

fn check_typed(frame: &imgate_codecs::pb::PbFrame) {
    match PbRequest::decode(frame) {
        Ok(PbRequest::Send(req)) => {
            let draft = PbNormalizer::send_request_to_draft(req, "fuzz");
            let again = PbNormalizer::send_request_from_draft(&draft);
            assert_eq!(PbNormalizer::send_request_to_draft(again, "fuzz"), draft);
        }
        Ok(other) => assert_eq!(
            PbRequest::decode(&other.to_frame(frame.seq)).ok(),
            Some(other)
        ),
        Err(e) => {
            assert!(e.can_continue());
            let _ = e.code();
        }
    }
    match PbServerMessage::decode(frame) {
        Ok(PbServerMessage::Deliver(d)) => {
            if let Some(m) = d.message {
                let core = PbNormalizer::message_to_core(m);
                let back = PbNormalizer::message_from_core(&core);
                assert_eq!(PbNormalizer::message_to_core(back), core);
            }
        }
        Ok(PbServerMessage::SyncResponse(s)) => {
            for m in s.messages {
                let core = PbNormalizer::message_to_core(m);
                assert_eq!(
                    PbNormalizer::message_to_core(PbNormalizer::message_from_core(&core)),
                    core
                );
            }
        }
        Ok(other) => {
            assert_eq!(
                PbServerMessage::decode(&other.to_frame(frame.seq)).ok(),
                Some(other)
            )
        }
        Err(e) => assert!(e.can_continue()),
    }
}
