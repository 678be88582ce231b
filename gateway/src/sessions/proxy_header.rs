//! The PROXY protocol header on a listener behind a TCP load balancer
//! (`proxy_protocol`): read in the connection's own task, never in the
//! accept loop, within a time limit (`login_timeout_secs`) and a byte limit
//! (the decoder's, `imgate_codecs::proxy`).
//!
//! The header is read exactly: each read asks for at most the bytes the
//! decoder says it still needs at least, which never reach past a valid
//! header, so
//! the protocol stream (or the TLS handshake) after it is left untouched
//! in the socket and the session needs no replay buffer.
//!
//! [`admit_proxied`] is the second step of admission on such a listener:
//! the client's real address then goes through the per-IP limits, and is
//! the `peer` the session logs and works with.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use imgate_codecs::proxy::{self, Decoded, ProxyError};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::conn_limit::{ConnLimiter, Permit};

/// Why a connection on a PROXY protocol listener was closed before its
/// session started.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY header within {0:?}")]
    TimedOut(Duration),
    #[error("closed before the end of the PROXY header")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(io::Error),
    #[error(transparent)]
    Invalid(#[from] ProxyError),
}

/// Read the PROXY header at the start of `io`, within `limit`: the
/// client's address, or `None` when the header has none (v1 `UNKNOWN`, v2
/// `LOCAL`): then the socket's peer stands. Reads exactly the header.
pub async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
    limit: Duration,
) -> Result<Option<SocketAddr>, HeaderError> {
    match tokio::time::timeout(limit, read_exact_header(io)).await {
        Ok(r) => r,
        Err(_) => Err(HeaderError::TimedOut(limit)),
    }
}

async fn read_exact_header<S: AsyncRead + Unpin>(
    io: &mut S,
) -> Result<Option<SocketAddr>, HeaderError> {
    // Grows to the header's size at most (the decoder bounds it).
    let mut buf = Vec::with_capacity(proxy::V1_MAX_LEN);
    loop {
        match proxy::decode(&buf)? {
            Decoded::Done { source, consumed } => {
                debug_assert_eq!(consumed, buf.len(), "read past the header");
                return Ok(source);
            }
            Decoded::NeedMore { at_least } => {
                // Up to `at_least` bytes, whatever has arrived: a stream
                // that is no header is refused from its first bytes.
                let start = buf.len();
                buf.resize(start + at_least, 0);
                let n = io.read(&mut buf[start..]).await.map_err(HeaderError::Io)?;
                if n == 0 {
                    return Err(HeaderError::Closed);
                }
                buf.truncate(start + n);
            }
        }
    }
}

/// On a PROXY protocol listener: read the header of a connection from
/// `peer` (the balancer) admitted under its listener's cap with `permit`,
/// then admit the client's real address under the per-IP limits. The
/// permit and the address the session is to use, or `None` (the refusal
/// is logged) and the connection is to be closed.
pub async fn admit_proxied<S: AsyncRead + Unpin>(
    listener: &str,
    io: &mut S,
    peer: SocketAddr,
    permit: Permit,
    limiter: &ConnLimiter,
    limit: Duration,
) -> Option<(Permit, SocketAddr)> {
    let client = match read_header(io, limit).await {
        Ok(source) => source.unwrap_or(peer),
        Err(e) => {
            tracing::debug!(listener, %peer, error = %e, "connection refused: bad PROXY header");
            return None;
        }
    };
    match limiter.admit_ip(permit, client.ip()) {
        Ok(permit) => Some((permit, client)),
        Err(why) => {
            tracing::debug!(listener, peer = %client, via = %peer, ?why, "connection refused");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const HEADER: &[u8] = b"PROXY TCP4 10.0.0.7 10.0.0.1 5000 8100\r\n";

    #[tokio::test]
    async fn reads_exactly_the_header_and_leaves_the_stream() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut sent = HEADER.to_vec();
        sent.extend_from_slice(b"after");
        client.write_all(&sent).await.unwrap();
        let source = read_header(&mut server, Duration::from_secs(5)).await;
        assert_eq!(source.unwrap(), Some("10.0.0.7:5000".parse().unwrap()));
        let mut rest = [0u8; 5];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"after");
    }

    #[tokio::test]
    async fn a_header_in_pieces_is_waited_for_and_a_silent_one_times_out() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let reader =
            tokio::spawn(async move { read_header(&mut server, Duration::from_secs(5)).await });
        for piece in HEADER.chunks(7) {
            client.write_all(piece).await.unwrap();
            client.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        assert!(reader.await.unwrap().unwrap().is_some());

        let (_client, mut server) = tokio::io::duplex(1024);
        let r = read_header(&mut server, Duration::from_millis(20)).await;
        assert!(matches!(r, Err(HeaderError::TimedOut(_))), "{r:?}");
    }

    #[tokio::test]
    async fn bad_or_cut_headers_are_errors() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"\x10\x0e\x00\x04MQTT").await.unwrap();
        let r = read_header(&mut server, Duration::from_secs(5)).await;
        assert!(matches!(r, Err(HeaderError::Invalid(_))), "{r:?}");

        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&HEADER[..20]).await.unwrap();
        drop(client);
        let r = read_header(&mut server, Duration::from_secs(5)).await;
        assert!(matches!(r, Err(HeaderError::Closed)), "{r:?}");
    }

    #[tokio::test]
    async fn the_real_address_goes_through_the_per_ip_limits() {
        let limiter = ConnLimiter::new(100, 100, 1);
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let admit = |header: &'static [u8]| {
            let limiter = &limiter;
            async move {
                let (mut client, mut server) = tokio::io::duplex(1024);
                client.write_all(header).await.unwrap();
                let permit = limiter.admit_capped("pb").unwrap();
                admit_proxied(
                    "pb",
                    &mut server,
                    peer,
                    permit,
                    limiter,
                    Duration::from_secs(5),
                )
                .await
            }
        };
        let (first, addr) = admit(HEADER).await.expect("admitted");
        assert_eq!(addr, "10.0.0.7:5000".parse().unwrap());
        assert!(
            admit(HEADER).await.is_none(),
            "same client, share of 1 used"
        );
        let (_other, _) = admit(b"PROXY TCP4 10.0.0.8 10.0.0.1 5000 8100\r\n")
            .await
            .expect("another client of the same balancer");
        let (_local, addr) = admit(b"PROXY UNKNOWN\r\n").await.expect("the balancer");
        assert_eq!(addr, peer);
        drop(first);
        assert!(admit(HEADER).await.is_some(), "released on close");
    }
}
