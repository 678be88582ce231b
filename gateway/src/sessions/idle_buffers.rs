//! Connection buffers sized to need (issue 10 item 4): an idle connection
//! holds no read or write buffer.
//!
//! `tokio_util`'s `Framed` starts with 8 KiB for reading and 8 KiB for
//! writing per connection and keeps whatever it grew to. Here a session's
//! connection starts with empty buffers ([`framed`]) and frames are read
//! with [`next_frame`] (never `Framed::next`): on plain TCP, while nothing
//! is buffered, it waits for the socket to become readable holding no
//! buffer, reads what is there into a [`READ_CHUNK`] buffer, decodes, and
//! gives the buffer back once it is empty again. The write buffer grows
//! while frames are written and is released once flushed.
//!
//! TLS streams (and a closed one) are read through `Framed::next` and keep
//! their read buffer: rustls may hold decrypted bytes the socket's
//! readiness does not announce.

use std::io;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio_util::codec::{Decoder, Framed};

use crate::transport::ClientStream;

/// Bytes read at once when a silent connection becomes readable (freed
/// again when all of them are decoded).
pub const READ_CHUNK: usize = 8 * 1024;

/// `Framed` over a client stream with no buffer allocated yet. The
/// session driver encodes into its write buffer and flushes after each
/// step: what one step wrote goes out in one write.
pub fn framed<C>(stream: ClientStream, codec: C) -> Framed<ClientStream, C> {
    let mut framed = Framed::new(stream, codec);
    *framed.read_buffer_mut() = BytesMut::new();
    *framed.write_buffer_mut() = BytesMut::new();
    framed
}

/// Give back the buffers that hold nothing.
fn release<C>(framed: &mut Framed<ClientStream, C>) {
    if framed.read_buffer().is_empty() && framed.read_buffer().capacity() > 0 {
        *framed.read_buffer_mut() = BytesMut::new();
    }
    if framed.write_buffer().is_empty() && framed.write_buffer().capacity() > 0 {
        *framed.write_buffer_mut() = BytesMut::new();
    }
}

/// The next frame (None: the peer closed the connection), holding no
/// buffer while the peer is silent. Cancel-safe: bytes are only ever
/// taken out of the read buffer between awaits.
pub async fn next_frame<C: Decoder>(
    framed: &mut Framed<ClientStream, C>,
) -> Option<Result<C::Item, C::Error>> {
    if !matches!(framed.get_ref(), ClientStream::Plain(_)) {
        return framed.next().await;
    }
    loop {
        if !framed.read_buffer().is_empty() {
            let mut buf = std::mem::take(framed.read_buffer_mut());
            let decoded = framed.codec_mut().decode(&mut buf);
            *framed.read_buffer_mut() = buf;
            match decoded {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
        match read_plain(framed).await {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(e.into())),
        }
    }
}

/// Read what the socket has (0 = end of stream). While nothing is
/// buffered the wait holds no buffer.
async fn read_plain<C>(framed: &mut Framed<ClientStream, C>) -> io::Result<usize> {
    loop {
        release(framed);
        let ClientStream::Plain(tcp) = framed.get_ref() else {
            return Err(io::Error::other("not a plain TCP stream"));
        };
        tcp.readable().await?;
        let mut buf = std::mem::take(framed.read_buffer_mut());
        buf.reserve(READ_CHUNK);
        let read = match framed.get_ref() {
            ClientStream::Plain(tcp) => tcp.try_read_buf(&mut buf),
            _ => Err(io::Error::other("not a plain TCP stream")),
        };
        *framed.read_buffer_mut() = buf;
        match read {
            // Readiness was stale: wait again (without the buffer).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::SinkExt;
    use imgate_codecs::pb::{PbFrame, PbFramer};
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn buffers_are_released_while_the_peer_is_silent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut c = framed(ClientStream::Plain(tcp), PbFramer::new(1 << 20));
            c.send(PbFrame::heartbeat(1)).await.unwrap();
            c.send(PbFrame::heartbeat(2)).await.unwrap();
            // Wait for the server's echo, then go silent.
            next_frame(&mut c).await.unwrap().unwrap();
            c
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut server = framed(ClientStream::Plain(tcp), PbFramer::new(1 << 20));
        assert_eq!(server.read_buffer().capacity(), 0);
        assert_eq!(server.write_buffer().capacity(), 0);
        for seq in [1, 2] {
            let frame = next_frame(&mut server).await.unwrap().unwrap();
            assert_eq!(frame.seq, seq);
        }
        server.send(PbFrame::heartbeat(3)).await.unwrap();
        let _client = client.await.unwrap();
        // Silent peer: waiting for the next frame holds nothing.
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            next_frame(&mut server),
        )
        .await;
        assert!(waiting.is_err(), "the client sent nothing more");
        assert_eq!(server.read_buffer().capacity(), 0);
        assert_eq!(server.write_buffer().capacity(), 0);
    }
}
