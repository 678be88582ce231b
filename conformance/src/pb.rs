//! A blocking PB client over a real TCP socket, for the conformance tests.
//! It frames with the project's codec (the wire format is the contract; the
//! tests check the bytes the server sends decode as the contract says).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use imgate_codecs::pb::{proto, PbFrame, PbFramer, PbRequest, PbServerMessage};
use tokio_util::codec::{Decoder, Encoder};

use crate::tls::Conn;
use crate::WAIT;

/// A frame from the server with its seq.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub seq: u16,
    pub msg: PbServerMessage,
}

pub struct PbClient {
    stream: Conn,
    buf: BytesMut,
    framer: PbFramer,
    seq: u16,
    /// Pushes that arrived while waiting for a response.
    queued: VecDeque<Incoming>,
    closed: bool,
}

impl PbClient {
    pub fn connect(addr: &str) -> PbClient {
        let stream = TcpStream::connect(addr).expect("connect to the PB listener");
        stream.set_nodelay(true).ok();
        Self::over(Conn::Plain(stream))
    }

    /// Connect with TLS (the listener's certificate is the test one).
    pub fn connect_tls(addr: &str) -> PbClient {
        Self::over(Conn::connect_tls(addr).expect("TLS connection to the PB listener"))
    }

    fn over(stream: Conn) -> PbClient {
        PbClient {
            stream,
            buf: BytesMut::new(),
            framer: PbFramer::new(16 * 1024 * 1024),
            seq: 0,
            queued: VecDeque::new(),
            closed: false,
        }
    }

    /// Connect and log in; panics unless the login succeeds.
    pub fn login_ok(addr: &str, user: &str, token: &str, device: &str, platform: i32) -> PbClient {
        let mut c = PbClient::connect(addr);
        let r = c.login(user, token, device, platform);
        assert_eq!(r.code, 0, "PB login of {user}/{device} failed");
        c
    }

    fn next_seq(&mut self) -> u16 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    pub fn write_frame(&mut self, frame: PbFrame) {
        let mut out = BytesMut::new();
        self.framer.encode(frame, &mut out).expect("encode frame");
        self.write_raw(&out);
    }

    /// Send a request; returns its seq.
    pub fn request(&mut self, req: PbRequest) -> u16 {
        let seq = self.next_seq();
        self.write_frame(req.to_frame(seq));
        seq
    }

    /// The next frame from the server within `within`, or None (timeout or
    /// closed; see [`PbClient::is_closed`]).
    pub fn recv(&mut self, within: Duration) -> Option<Incoming> {
        if let Some(q) = self.queued.pop_front() {
            return Some(q);
        }
        self.read_frame(within)
    }

    fn read_frame(&mut self, within: Duration) -> Option<Incoming> {
        let deadline = Instant::now() + within;
        loop {
            match self.framer.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    let msg = PbServerMessage::decode(&frame)
                        .expect("server frame decodes per the contract");
                    return Some(Incoming {
                        seq: frame.seq,
                        msg,
                    });
                }
                Ok(None) => {}
                Err(e) => panic!("server sent an undecodable frame: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.closed {
                return None;
            }
            self.stream
                .tcp()
                .set_read_timeout(Some(left.min(Duration::from_millis(500))))
                .ok();
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.closed = true,
            }
        }
    }

    /// Wait for the response with `seq`, queueing pushes that come first.
    pub fn response(&mut self, seq: u16) -> PbServerMessage {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let inc = self
                .read_frame(left)
                .unwrap_or_else(|| panic!("no response to seq {seq} (closed: {})", self.closed));
            if inc.seq == seq && !matches!(inc.msg, PbServerMessage::Deliver(_)) {
                return inc.msg;
            }
            self.queued.push_back(inc);
        }
    }

    /// True once the server closed the connection (after draining frames).
    pub fn wait_closed(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Some(inc) = self.read_frame(left) {
                self.queued.push_back(inc);
            }
        }
        true
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn login(
        &mut self,
        user: &str,
        token: &str,
        device: &str,
        platform: i32,
    ) -> proto::LoginResponse {
        let seq = self.request(PbRequest::Login(proto::LoginRequest {
            user_id: user.into(),
            token: token.into(),
            client_id: device.into(),
            platform,
        }));
        match self.response(seq) {
            PbServerMessage::LoginResponse(r) => r,
            other => panic!("expected LoginResponse, got {other:?}"),
        }
    }

    pub fn send(&mut self, req: proto::SendRequest) -> proto::SendResponse {
        let seq = self.request(PbRequest::Send(req));
        match self.response(seq) {
            PbServerMessage::SendResponse(r) => r,
            other => panic!("expected SendResponse, got {other:?}"),
        }
    }

    pub fn send_text(&mut self, to: &str, text: &str, client_msg_id: &str) -> proto::SendResponse {
        self.send(text_request(0, to, text, client_msg_id))
    }

    /// A text message into group `group`.
    pub fn send_group_text(
        &mut self,
        group: &str,
        text: &str,
        client_msg_id: &str,
    ) -> proto::SendResponse {
        self.send(text_request(1, group, text, client_msg_id))
    }

    /// The next Deliver push within `within`.
    pub fn next_deliver(&mut self, within: Duration) -> Option<proto::Message> {
        let deadline = Instant::now() + within;
        if let Some(pos) = self
            .queued
            .iter()
            .position(|i| matches!(i.msg, PbServerMessage::Deliver(_)))
        {
            if let Some(Incoming {
                msg: PbServerMessage::Deliver(d),
                ..
            }) = self.queued.remove(pos)
            {
                return d.message;
            }
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let inc = self.read_frame(left)?;
            match inc.msg {
                PbServerMessage::Deliver(d) => {
                    assert_eq!(inc.seq, 0, "pushes use seq 0");
                    return d.message;
                }
                _ => self.queued.push_back(inc),
            }
        }
    }

    pub fn ack(&mut self, message_id: u64) {
        self.request(PbRequest::DeliverAck(proto::DeliverAck { message_id }));
    }

    pub fn sync(&mut self, since: u64, limit: i32) -> proto::SyncResponse {
        let seq = self.request(PbRequest::Sync(proto::SyncRequest { since, limit }));
        match self.response(seq) {
            PbServerMessage::SyncResponse(r) => r,
            other => panic!("expected SyncResponse, got {other:?}"),
        }
    }

    pub fn heartbeat(&mut self) -> bool {
        let seq = self.request(PbRequest::Heartbeat);
        matches!(self.response(seq), PbServerMessage::Heartbeat)
    }

    pub fn recall(&mut self, message_id: u64) -> i32 {
        let seq = self.request(PbRequest::Recall(proto::RecallRequest { message_id }));
        match self.response(seq) {
            PbServerMessage::RecallResponse(r) => r.code,
            other => panic!("expected RecallResponse, got {other:?}"),
        }
    }
}

/// An ordinary text message (persist flag 3) to `target`, a user
/// (`conversation_type` 0) or a group (1).
pub fn text_request(
    conversation_type: i32,
    target: &str,
    text: &str,
    client_msg_id: &str,
) -> proto::SendRequest {
    proto::SendRequest {
        client_msg_id: client_msg_id.into(),
        conversation: Some(proto::Conversation {
            r#type: conversation_type,
            target: target.into(),
            line: 0,
        }),
        payload: Some(proto::MessagePayload {
            r#type: 1,
            searchable_content: text.into(),
            // 3: an ordinary message (0, the proto3 default, is live only).
            persist_flag: 3,
            ..Default::default()
        }),
        to_users: vec![],
    }
}
