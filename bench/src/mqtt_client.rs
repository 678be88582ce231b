//! A minimal MQTT client over imgate's own codec, shared by the MQTT load
//! generators: connect with a login, subscribe, a QoS 1 publisher with a
//! window of unacknowledged PUBLISHes, and a receiver loop that PUBACKs
//! every delivery. Every wait is bounded.

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use imgate_codecs::mqtt::{
    Connect, Disconnect, MqttFramer, Packet, Properties, Property, PubResp, PubRespKind, Publish,
    QoS, SubOptions, Subscribe, SubscribeFilter, Version, DEFAULT_MAX_PACKET,
};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use crate::window::{InFlight, SendCounts};

pub type Conn = Framed<TcpStream, MqttFramer>;

/// Bounded wait for a CONNACK, SUBACK or the next PUBACK.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Keep-alive announced in CONNECT: longer than any run, so no PINGREQ is
/// needed (the server still sees a live TCP connection).
const KEEP_ALIVE_SECS: u16 = 600;
/// MQTT 5 session expiry of a persistent subscriber.
const PERSISTENT_SESSION_SECS: u32 = 300;

/// Who a connection logs in as (anonymous when both are `None`).
#[derive(Debug, Clone)]
pub struct Login {
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_id: String,
}

pub fn version_of(level: u8) -> Version {
    if level == 5 {
        Version::V5
    } else {
        Version::V4
    }
}

/// The next packet, within [`REPLY_TIMEOUT`].
pub async fn next_packet(conn: &mut Conn, what: &str) -> anyhow::Result<Packet> {
    match tokio::time::timeout(REPLY_TIMEOUT, conn.next()).await {
        Err(_) => bail!("no {what} within {REPLY_TIMEOUT:?}"),
        Ok(None) => bail!("connection closed while waiting for {what}"),
        Ok(Some(Err(e))) => bail!("bad packet while waiting for {what}: {e}"),
        Ok(Some(Ok(p))) => Ok(p),
    }
}

/// TCP connect, CONNECT, and a successful CONNACK.
pub async fn connect(
    addr: &str,
    version: Version,
    login: &Login,
    persistent: bool,
) -> anyhow::Result<Conn> {
    let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr}: timed out"))?
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut conn = Framed::new(
        stream,
        MqttFramer::with_version(DEFAULT_MAX_PACKET, version),
    );
    conn.send(Packet::Connect(Connect {
        version,
        client_id: login.client_id.clone(),
        clean_start: !persistent,
        keep_alive: KEEP_ALIVE_SECS,
        username: login.username.clone(),
        password: login.password.clone().map(Bytes::from),
        will: None,
        properties: if persistent && version == Version::V5 {
            Properties(vec![Property::SessionExpiryInterval(
                PERSISTENT_SESSION_SECS,
            )])
        } else {
            Properties::default()
        },
    }))
    .await?;
    match next_packet(&mut conn, "CONNACK").await? {
        Packet::ConnAck(a) if a.code == 0 => Ok(conn),
        Packet::ConnAck(a) => bail!(
            "CONNACK code {:#04x} for {:?}/{}",
            a.code,
            login.username,
            login.client_id
        ),
        other => bail!("expected CONNACK, got {}", other.type_name()),
    }
}

/// SUBSCRIBE to one filter and check the SUBACK granted it.
pub async fn subscribe(conn: &mut Conn, filter: &str, qos: QoS) -> anyhow::Result<()> {
    conn.send(Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter {
            filter: filter.to_owned(),
            options: SubOptions {
                qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
        }],
        properties: Properties::default(),
    }))
    .await?;
    match next_packet(conn, "SUBACK").await? {
        Packet::SubAck(a) if a.reasons.first().is_some_and(|r| *r < 0x80) => Ok(()),
        Packet::SubAck(a) => bail!("SUBACK for {filter} refused: {:?}", a.reasons),
        other => bail!("expected SUBACK, got {}", other.type_name()),
    }
}

/// Send DISCONNECT, ignoring errors (the run is over either way).
pub async fn disconnect(conn: &mut Conn) {
    let _ = conn.send(Packet::Disconnect(Disconnect::default())).await;
}

/// A publisher that keeps at most `window` QoS 1 PUBLISHes unacknowledged,
/// so the broker sees a pipelined session rather than one message per
/// round trip. QoS 0 publishes are written without waiting.
pub struct WindowedPublisher {
    conn: Conn,
    /// Packet ids sent, not yet acknowledged.
    in_flight: InFlight,
    unflushed: bool,
    /// Refusals are PUBACKs with a failure reason code (MQTT 5), e.g. a
    /// pipeline refusal; `last_ack` is when the last PUBACK arrived.
    pub counts: SendCounts<u8>,
}

impl WindowedPublisher {
    pub fn new(conn: Conn, window: usize) -> WindowedPublisher {
        WindowedPublisher {
            conn,
            in_flight: InFlight::new(window),
            unflushed: false,
            counts: SendCounts::default(),
        }
    }

    /// Queue one PUBLISH; at QoS 1 wait for window room first (flushing
    /// what is queued and reading acknowledgements).
    pub async fn publish(
        &mut self,
        topic: &str,
        qos: QoS,
        properties: Properties,
        payload: Bytes,
    ) -> anyhow::Result<()> {
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            while self.in_flight.is_full() {
                self.flush().await?;
                self.read_acks(true).await?;
            }
            self.in_flight.take()
        };
        self.conn
            .feed(Packet::Publish(Publish {
                dup: false,
                qos,
                retain: false,
                topic: topic.to_owned(),
                pkid,
                properties,
                payload,
            }))
            .await?;
        self.unflushed = true;
        self.counts.sent += 1;
        Ok(())
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if self.unflushed {
            self.conn.flush().await?;
            self.unflushed = false;
        }
        Ok(())
    }

    /// Read acknowledgements until `deadline` (paced senders: the next
    /// message's intended send time), flushing first.
    pub async fn acks_until(&mut self, deadline: Instant) -> anyhow::Result<()> {
        self.flush().await?;
        if deadline <= Instant::now() {
            // Late: send at once, reading only what is already here.
            return self.read_acks(false).await;
        }
        loop {
            if self.in_flight.is_empty() {
                tokio::time::sleep_until(deadline).await;
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                p = self.conn.next() => self.on_packet(p)?,
            }
        }
    }

    /// Flush and wait (bounded per acknowledgement) until nothing is in flight.
    pub async fn finish(&mut self) -> anyhow::Result<()> {
        self.flush().await?;
        while !self.in_flight.is_empty() {
            self.read_acks(true).await?;
        }
        Ok(())
    }

    pub async fn disconnect(&mut self) {
        disconnect(&mut self.conn).await;
    }

    /// With `block`, at least one packet (bounded wait), then whatever else
    /// is already buffered.
    async fn read_acks(&mut self, block: bool) -> anyhow::Result<()> {
        if block {
            let p = next_packet(&mut self.conn, "PUBACK").await?;
            self.on_packet(Some(Ok(p)))?;
        }
        while let Some(p) = self.conn.next().now_or_never() {
            self.on_packet(p)?;
        }
        Ok(())
    }

    fn on_packet(
        &mut self,
        p: Option<Result<Packet, imgate_codecs::mqtt::MqttCodecError>>,
    ) -> anyhow::Result<()> {
        match p {
            None => bail!("connection closed"),
            Some(Err(e)) => bail!("bad packet: {e}"),
            Some(Ok(Packet::PubResp(a))) if a.kind == PubRespKind::PubAck => {
                if !self.in_flight.release(a.pkid) {
                    bail!("PUBACK for unknown packet id {}", a.pkid);
                }
                self.counts.last_ack = Some(Instant::now());
                if a.reason >= 0x80 {
                    self.counts.refuse(a.reason);
                } else {
                    self.counts.acked += 1;
                }
                Ok(())
            }
            Some(Ok(Packet::PingResp)) => Ok(()),
            // A result on im/ack/<client> or a copy of our own message:
            // not what this publisher measures.
            Some(Ok(Packet::Publish(_))) => Ok(()),
            Some(Ok(Packet::Disconnect(d))) => bail!("server DISCONNECT reason {:#04x}", d.reason),
            Some(Ok(other)) => bail!("unexpected {} on a publisher", other.type_name()),
        }
    }
}

/// Why a receiver loop ended.
pub enum ReceiveEnd {
    /// `on_publish` said it has everything it expects.
    Done,
    /// The stop signal (the run's wait after the last send ran out).
    Stopped,
}

/// Read deliveries until `on_publish` returns true or `stop` fires,
/// PUBACKing every QoS 1 delivery (batched: one flush per read burst).
pub async fn receive(
    conn: &mut Conn,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    mut on_publish: impl FnMut(&Publish) -> bool,
) -> anyhow::Result<ReceiveEnd> {
    loop {
        let first = tokio::select! {
            p = conn.next() => p,
            _ = stop.changed() => return Ok(ReceiveEnd::Stopped),
        };
        let mut next = Some(first);
        let mut done = false;
        let mut unflushed = false;
        while let Some(p) = next.take() {
            match p {
                None => bail!("connection closed"),
                Some(Err(e)) => bail!("bad packet: {e}"),
                Some(Ok(Packet::Publish(p))) => {
                    done |= on_publish(&p);
                    if p.qos == QoS::AtLeastOnce {
                        conn.feed(Packet::PubResp(PubResp::new(PubRespKind::PubAck, p.pkid)))
                            .await?;
                        unflushed = true;
                    }
                }
                Some(Ok(Packet::PingResp)) => {}
                Some(Ok(other)) => bail!("unexpected {} on a receiver", other.type_name()),
            }
            next = conn.next().now_or_never();
        }
        if unflushed {
            conn.flush().await?;
        }
        if done {
            return Ok(ReceiveEnd::Done);
        }
    }
}
