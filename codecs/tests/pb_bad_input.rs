//! Bad input never panics and always gives the right error (DESIGN §3.6):
//! garbage, impossible lengths, wrong version, unknown commands and bodies
//! that are not protobuf. Framing errors say the stream cannot continue;
//! body errors say it can, and each maps to its DESIGN §4 code.

use bytes::{BufMut, BytesMut};
use imgate_codecs::pb::{
    commands, PbCodecError, PbFrame, PbFramer, PbHeader, PbRequest, PbServerMessage, HEADER_LEN,
};
use imgate_core::ErrorCode;
use tokio_util::codec::{Decoder, Encoder};

fn header(length: u32, version: u16, command: u16) -> [u8; HEADER_LEN] {
    PbHeader {
        length,
        version,
        flags: 0,
        service: commands::service_of(command),
        command,
        seq: 9,
        reserved: 0,
    }
    .to_bytes()
}

fn decode(bytes: &[u8]) -> Result<Option<PbFrame>, PbCodecError> {
    PbFramer::default().decode(&mut BytesMut::from(bytes))
}

fn assert_fatal(err: &PbCodecError) {
    assert!(!err.can_continue(), "{err} must close the stream");
    assert_eq!(err.code(), ErrorCode::InvalidData, "{err}");
}

#[test]
fn garbage_is_a_framing_error() {
    let err = decode(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
    assert!(matches!(err, PbCodecError::FrameTooLarge { .. }), "{err}");
    assert_fatal(&err);
}

#[test]
fn length_zero_is_too_short() {
    let err = decode(&header(0, 1, commands::HEARTBEAT)).unwrap_err();
    assert!(
        matches!(err, PbCodecError::FrameTooShort { length: 0 }),
        "{err}"
    );
    assert_fatal(&err);
}

#[test]
fn length_fifteen_is_too_short_even_before_the_header_is_complete() {
    let err = decode(&15u32.to_be_bytes()).unwrap_err();
    assert!(
        matches!(err, PbCodecError::FrameTooShort { length: 15 }),
        "{err}"
    );
    assert_fatal(&err);
}

#[test]
fn length_two_to_the_31_is_refused_from_the_header_without_buffering() {
    let mut framer = PbFramer::default();
    let mut buf = BytesMut::from(&header(1 << 31, 1, commands::SEND_REQUEST)[..]);
    let capacity_before = buf.capacity();
    let err = framer.decode(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            PbCodecError::FrameTooLarge {
                length: 0x8000_0000,
                max: 1_048_576
            }
        ),
        "{err}"
    );
    assert_fatal(&err);
    assert_eq!(
        buf.capacity(),
        capacity_before,
        "nothing reserved for the body"
    );
}

#[test]
fn the_limit_is_configurable_and_inclusive() {
    let mut framer = PbFramer::new(32);
    let mut ok = BytesMut::from(&header(32, 1, commands::HEARTBEAT)[..]);
    ok.put_bytes(0, 16);
    assert!(framer.decode(&mut ok).unwrap().is_some());
    let err = framer
        .decode(&mut BytesMut::from(&header(33, 1, commands::HEARTBEAT)[..]))
        .unwrap_err();
    assert!(matches!(
        err,
        PbCodecError::FrameTooLarge {
            length: 33,
            max: 32
        }
    ));
}

#[test]
fn truncated_body_waits_for_more_bytes_then_decodes() {
    let mut framer = PbFramer::default();
    let whole = {
        let mut buf = BytesMut::new();
        framer
            .encode(
                PbFrame::error(3, ErrorCode::AuthFailure, "log in first"),
                &mut buf,
            )
            .unwrap();
        buf
    };
    let mut buf = BytesMut::from(&whole[..HEADER_LEN + 2]);
    assert_eq!(framer.decode(&mut buf).unwrap(), None);
    assert!(
        buf.capacity() >= whole.len(),
        "room reserved for the bounded rest"
    );
    buf.extend_from_slice(&whole[HEADER_LEN + 2..]);
    buf.extend_from_slice(&whole[..5]); // the start of a next frame
    let frame = framer.decode(&mut buf).unwrap().expect("whole frame now");
    assert_eq!(frame.command, commands::ERROR);
    assert_eq!(frame.seq, 3);
    assert_eq!(&buf[..], &whole[..5], "only one frame consumed");
    assert_eq!(framer.decode(&mut buf).unwrap(), None);
}

#[test]
fn wrong_version_is_a_framing_error() {
    for version in [0u16, 2, 0xffff] {
        let err = decode(&header(16, version, commands::HEARTBEAT)).unwrap_err();
        assert!(matches!(err, PbCodecError::UnsupportedVersion { version: v } if v == version));
        assert_fatal(&err);
    }
    // Known from the first 6 bytes already.
    let err = decode(&header(16, 2, commands::HEARTBEAT)[..6]).unwrap_err();
    assert!(matches!(
        err,
        PbCodecError::UnsupportedVersion { version: 2 }
    ));
}

#[test]
fn unknown_command_is_refused_with_254_and_the_stream_goes_on() {
    let mut buf = BytesMut::from(&header(16, 1, 0x0999)[..]);
    buf.extend_from_slice(&header(16, 1, commands::HEARTBEAT));
    let mut framer = PbFramer::default();
    let frame = framer.decode(&mut buf).unwrap().expect("framing is fine");
    let err = PbRequest::decode(&frame).unwrap_err();
    assert!(
        matches!(err, PbCodecError::UnknownCommand { command: 0x0999 }),
        "{err}"
    );
    assert!(err.can_continue());
    assert_eq!(err.code(), ErrorCode::NotImplemented);
    let next = framer.decode(&mut buf).unwrap().expect("next frame");
    assert_eq!(PbRequest::decode(&next).unwrap(), PbRequest::Heartbeat);
}

#[test]
fn invalid_protobuf_body_is_refused_with_code_2_and_the_stream_goes_on() {
    let bodies: [&[u8]; 5] = [
        b"\xff\xff\xff",                     // truncated varint key
        b"\x0a\x10abc",                      // length-delimited past the end
        b"\x0a\x02\xff\xfe",                 // user_id not UTF-8
        b"\x07",                             // wire type 7 does not exist
        b"\x22\x05\x00\x00\x00\x00\x00\x00", // LoginRequest field 4 with wrong wire type
    ];
    for body in bodies {
        let frame = PbFrame::new(
            commands::LOGIN_REQUEST,
            1,
            bytes::Bytes::copy_from_slice(body),
        );
        let err = PbRequest::decode(&frame).unwrap_err();
        assert!(
            matches!(
                err,
                PbCodecError::InvalidBody {
                    command: 0x0101,
                    ..
                }
            ),
            "{body:?}: {err}"
        );
        assert!(err.can_continue());
        assert_eq!(err.code(), ErrorCode::InvalidData);
        assert!(err.to_string().contains("LoginRequest"), "{err}");
    }
    let garbage_heartbeat =
        PbFrame::new(commands::HEARTBEAT, 1, bytes::Bytes::from_static(b"\xff"));
    assert!(matches!(
        PbServerMessage::decode(&garbage_heartbeat),
        Err(PbCodecError::InvalidBody {
            command: 0x0701,
            ..
        })
    ));
}

#[test]
fn an_error_becomes_an_im_error_with_its_code() {
    let err = decode(&header(3, 1, 0)).unwrap_err();
    let im: imgate_core::ImError = err.into();
    assert_eq!(im.code, ErrorCode::InvalidData);
    assert!(im.message.contains("shorter"), "{}", im.message);
}

/// A cheap in-test fuzz: deterministic pseudo-random byte streams, fed in
/// random chunk sizes, never panic, and whatever decodes re-encodes to the
/// same bytes.
#[test]
fn random_streams_never_panic_and_frames_re_encode_exactly() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..2_000 {
        let mut stream = Vec::new();
        // Mostly-valid frames with random bodies, sometimes corrupted.
        for _ in 0..(next() % 4) {
            let body: Vec<u8> = (0..next() % 40).map(|_| next() as u8).collect();
            let command = commands::ALL[(next() % 13) as usize];
            let mut h = header((HEADER_LEN + body.len()) as u32, 1, command);
            if next() % 8 == 0 {
                h[(next() % 16) as usize] = next() as u8;
            }
            stream.extend_from_slice(&h);
            stream.extend_from_slice(&body);
        }
        let mut framer = PbFramer::new(4096);
        let mut buf = BytesMut::new();
        let mut at = 0;
        'feed: while at < stream.len() {
            let take = ((next() % 24) as usize + 1).min(stream.len() - at);
            buf.extend_from_slice(&stream[at..at + take]);
            at += take;
            loop {
                let before = buf.clone();
                match framer.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        let _ = PbRequest::decode(&frame);
                        let _ = PbServerMessage::decode(&frame);
                        let mut out = BytesMut::new();
                        framer.encode(frame.clone(), &mut out).unwrap();
                        let consumed = before.len() - buf.len();
                        let mut original = before[..consumed].to_vec();
                        original[8..10]
                            .copy_from_slice(&commands::service_of(frame.command).to_be_bytes());
                        assert_eq!(&out[..], &original[..], "round {round}");
                    }
                    Ok(None) => break,
                    Err(e) => {
                        assert!(!e.can_continue(), "framer only reports framing errors");
                        break 'feed;
                    }
                }
            }
        }
    }
}
